"""What file-backed volumes share: staged creation and memory-mapped access."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import Box
from ._base import StoreError, VolumeStore


def staging_path(final: Path) -> Path:
    """The hidden sibling an output is written to before it is published. The name keeps the
    final name's suffix, so it is itself a valid volume string for worker processes."""
    return final.with_name(f".partial-{os.getpid()}-{final.name}")


class MemmapStore(VolumeStore):
    """A memory-mapped file (npy, TIFF): reads and writes touch only the boxes asked for;
    a staged output is renamed over the final path by :meth:`commit`."""

    supports_parallel_writes = True

    #: file name endings this class claims
    suffixes: tuple[str, ...] = ()

    def __init__(self, uri: str, array: NDArray[Any], *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(uri, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._staging = staging

    #: the format's name in messages (".npy file")
    described: str = "file"

    @classmethod
    def claims(cls, uri: str) -> bool:
        return uri.endswith(cls.suffixes)

    @classmethod
    def _map(cls, path: str, *, read_only: bool) -> NDArray[Any]:
        """The file's array, memory-mapped where possible (ValueError if it is not one)."""
        raise NotImplementedError

    @classmethod
    def _map_new(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A new zero-filled file of ``shape`` and ``dtype``, memory-mapped for writing."""
        raise NotImplementedError

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> MemmapStore:
        if not Path(uri).is_file():
            raise StoreError(f"no {cls.described} at {uri}")
        try:
            array = cls._map(uri, read_only=read_only)
        except ValueError as exc:
            raise StoreError(f"cannot read {uri} as a {cls.described}: {exc}") from exc
        if array.ndim != 3:
            raise StoreError(f"{uri} has {array.ndim} dimensions; volumes must be 3-D (Z, Y, X)")
        return cls(uri, array, read_only=read_only)

    @classmethod
    def _create(
        cls, uri: str, shape: tuple[int, ...], dtype: np.dtype[Any], *, chunks: tuple[int, ...] | None, staged: bool
    ) -> MemmapStore:
        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        target = staging_path(final) if staged else final
        return cls(uri, cls._map_new(target, tuple(shape), np.dtype(dtype)), read_only=False, staging=target if staged else None)

    @classmethod
    def exists(cls, uri: str) -> bool:
        return Path(uri).exists()

    @classmethod
    def local_path(cls, uri: str) -> Path:
        return Path(uri)

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
