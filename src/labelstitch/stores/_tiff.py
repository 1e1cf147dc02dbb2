"""TIFF stacks: ``path.tif`` / ``path.tiff`` (pages are Z slices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._base import StoreError, VolumeRef
from ._staging import MemmapStore


class TiffStore(MemmapStore):
    """A TIFF stack, memory-mapped when the file allows it (uncompressed, contiguous)."""

    scheme = "tif"
    suffixes = (".tif", ".tiff")
    described = "TIFF file"

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> MemmapStore:
        """Open a grey TIFF stack; a colour image (an RGB or multi-sample photometric, whose
        samples would be read as a third axis) is refused with how to convert it."""
        cls._refuse_colour(ref)
        return super().open(ref, read_only=read_only)

    @classmethod
    def _refuse_colour(cls, ref: VolumeRef) -> None:
        import tifffile

        path = cls._file(ref)
        if not path.is_file():
            return  # open() says there is none
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape, photometric = series.axes, series.shape, tif.pages[0].photometric
        except Exception:  # not a TIFF: the reader says so
            return
        colour = "S" in axes or getattr(photometric, "name", str(photometric)) in ("RGB", "YCBCR", "CMYK", "PALETTE")
        if colour:
            raise StoreError(
                f"{ref} is a colour image (axes {axes}, shape {tuple(shape)}, photometric "
                f"{getattr(photometric, 'name', photometric)}); labelstitch reads grey volumes (Z, Y, X): convert it, e.g. "
                f"tifffile.imwrite('grey.tif', tifffile.imread('{path.name}').mean(axis=-1).round().astype('uint8'))"
            )

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
