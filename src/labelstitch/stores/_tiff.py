"""TIFF stacks: ``path.tif`` / ``path.tiff`` (pages are Z slices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._base import StoreError
from ._staging import MemmapStore


class TiffStore(MemmapStore):
    """A TIFF stack, memory-mapped when the file allows it (uncompressed, contiguous)."""

    scheme = "tif"
    suffixes = (".tif", ".tiff")
    described = "TIFF file"

    @classmethod
    def _map(cls, path: str, *, read_only: bool) -> NDArray[Any]:
        import tifffile

        try:
            return tifffile.memmap(path, mode="r" if read_only else "r+")
        except ValueError:
            if not read_only:
                raise StoreError(f"{path} is compressed or not contiguous and cannot be written in place") from None
            return tifffile.imread(path)  # compressed stacks are read whole

    @classmethod
    def _map_new(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        import tifffile

        return tifffile.memmap(path, shape=shape, dtype=dtype, photometric="minisblack")
