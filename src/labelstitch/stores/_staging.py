"""What file-backed volumes share: staged creation and memory-mapped access."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import Box
from ._base import VolumeStore


def staging_path(final: Path) -> Path:
    """The hidden sibling an output is written to before it is published. The name keeps the
    final name's suffix, so it is itself a valid volume string for worker processes."""
    return final.with_name(f".partial-{os.getpid()}-{final.name}")


class MemmapStore(VolumeStore):
    """A memory-mapped file (npy, TIFF): reads and writes touch only the boxes asked for;
    a staged output is renamed over the final path by :meth:`commit`."""

    supports_parallel_writes = True

    def __init__(self, uri: str, array: NDArray[Any], *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(uri, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._staging = staging

    @property
    def writer_uri(self) -> str:
        """Where other processes open this volume to write into it (the staged copy until commit)."""
        return str(self._staging) if self._staging is not None else self.uri

    def _read(self, box: Box) -> NDArray[Any]:
        return np.array(self._array[box.slices()])

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        self._array[box.slices()] = data

    def flush(self) -> None:
        if isinstance(self._array, np.memmap):
            self._array.flush()

    def _publish_extras(self) -> None:
        """Hook for files that accompany the volume (run just before the rename)."""

    def commit(self) -> None:
        """Publish a staged output: flush it and rename it over the final path."""
        if self._staging is None:
            return
        self.flush()
        self._publish_extras()
        os.replace(self._staging, self.uri)
        self._staging = None

    def discard(self) -> None:
        """Remove a staged output that will not be published."""
        if self._staging is not None and self._staging.exists():
            self._staging.unlink()
        self._staging = None
