"""The volume store interface: read and write boxes of one 3-D array.

Nothing outside ``labelstitch.stores`` knows whether a volume is zarr, npy, HDF5, TIFF or
DVID. A store is opened from one string (see :func:`labelstitch.stores.open_volume`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box

__all__ = ["VolumeStore", "StoreError", "StoreReadOnlyError"]


class StoreError(ValueError):
    """A volume cannot be opened, created, read or written as asked."""


class StoreReadOnlyError(StoreError):
    """A write to a store opened read-only."""


class VolumeStore(ABC):
    """A 3-D array (Z, Y, X) that can be read and written box by box.

    Subclasses implement :meth:`_read` and :meth:`_write`; the public methods check the box
    against the volume and the written data's shape and dtype first, so every backend
    reports bad boxes with the same message.
    """

    #: whether :meth:`write` can work at all for this backend
    supports_writes: bool = True
    #: whether disjoint boxes may be written from several processes at once
    supports_parallel_writes: bool = False
    #: False where any box can be read (DVID answers 0 outside what was written)
    bounded: bool = True

    def __init__(self, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, read_only: bool = True) -> None:
        self.uri = uri
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.read_only = read_only

    # ------------------------------------------------------------------ the interface

    @abstractmethod
    def _read(self, box: Box) -> NDArray[Any]:
        """Voxels of ``box`` (already checked to lie inside the volume)."""

    @abstractmethod
    def _write(self, box: Box, data: NDArray[Any]) -> None:
        """Store ``data`` at ``box`` (already checked)."""

    @property
    def writer_uri(self) -> str | None:
        """A volume string other processes can open to write into this volume before it is
        committed, or None when only this handle may write (``supports_parallel_writes`` off)."""
        return None

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The storage chunk shape, if the backend has one."""
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form JSON metadata kept with the volume (empty where unsupported)."""
        return {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the volume's metadata (ignored where unsupported)."""
        self._check_writable()

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None:
        """Release files; the store must not be used afterwards."""

    # ------------------------------------------------------------------ concrete helpers

    @property
    def box(self) -> Box:
        return Box.from_shape(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, box: Box | None = None) -> NDArray[Any]:
        """The voxels of ``box`` (the whole volume if None) as a new ndarray."""
        box = self.box if box is None else box
        self._check_box(box)
        return np.asarray(self._read(box))

    def write(self, box: Box, data: NDArray[Any]) -> None:
        """Write ``data`` (of ``box.shape``) at ``box``, cast to the store's dtype if lossless."""
        self._check_writable()
        self._check_box(box)
        data = np.asarray(data)
        if data.shape != box.shape:
            raise StoreError(f"cannot write data of shape {data.shape} to box {box} of shape {box.shape} in {self.uri}")
        if data.dtype != self.dtype:
            if not np.can_cast(data.dtype, self.dtype, casting="safe") and not (
                np.issubdtype(data.dtype, np.integer)
                and np.issubdtype(self.dtype, np.integer)
                and (data.size == 0 or (data.min() >= np.iinfo(self.dtype).min and data.max() <= np.iinfo(self.dtype).max))
            ):
                raise StoreError(f"cannot write {data.dtype} data into the {self.dtype} volume {self.uri} without loss")
            data = data.astype(self.dtype)
        self._write(box, data)

    def _check_box(self, box: Box) -> None:
        if box.ndim != self.ndim or not self.box.contains(box):
            raise StoreError(f"box {box} is outside the volume {self.uri} of shape {self.shape}")

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"{self.uri} was opened read-only")
        if not self.supports_writes:
            raise StoreReadOnlyError(f"{type(self).__name__} volumes cannot be written ({self.uri})")

    def __enter__(self) -> VolumeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri} shape={self.shape} dtype={self.dtype}>"
