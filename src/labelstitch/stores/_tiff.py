"""TIFF stacks: ``path.tif`` / ``path.tiff`` (pages are Z slices)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box
from ._base import StoreError, VolumeStore


class TiffStore(VolumeStore):
    """A TIFF stack, memory-mapped when the file allows it (uncompressed, contiguous)."""

    supports_parallel_writes = True

    def __init__(self, uri: str, array: NDArray[Any], *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(uri, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._staging = staging

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> TiffStore:
        import tifffile

        if not Path(uri).is_file():
            raise StoreError(f"no TIFF file at {uri}")
        try:
            array = tifffile.memmap(uri, mode="r" if read_only else "r+")
        except ValueError:
            if not read_only:
                raise StoreError(f"{uri} is compressed or not contiguous and cannot be written in place") from None
            array = tifffile.imread(uri)  # compressed stacks are read whole
        if array.ndim != 3:
            raise StoreError(f"{uri} has {array.ndim} dimensions; volumes must be 3-D (Z, Y, X)")
        return cls(uri, array, read_only=read_only)

    @classmethod
    def create(cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, staged: bool) -> TiffStore:
        import tifffile

        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        target = final.with_name(f".partial-{os.getpid()}-{final.name}") if staged else final
        array = tifffile.memmap(target, shape=tuple(shape), dtype=np.dtype(dtype), photometric="minisblack")
        return cls(uri, array, read_only=False, staging=target if staged else None)

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

    def commit(self) -> None:
        if self._staging is None:
            return
        self.flush()
        os.replace(self._staging, self.uri)
        self._staging = None

    def discard(self) -> None:
        if self._staging is not None and self._staging.exists():
            self._staging.unlink()
        self._staging = None
