"""TIFF stacks: ``path.tif`` / ``path.tiff`` (pages are Z slices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from ._base import StoreError
from ._staging import MemmapStore, staging_path


class TiffStore(MemmapStore):
    """A TIFF stack, memory-mapped when the file allows it (uncompressed, contiguous)."""

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
        target = staging_path(final) if staged else final
        array = tifffile.memmap(target, shape=tuple(shape), dtype=np.dtype(dtype), photometric="minisblack")
        return cls(uri, array, read_only=False, staging=target if staged else None)
