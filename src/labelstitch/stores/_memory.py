"""An in-memory volume: for the Python API and for tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import Box
from ._base import VolumeStore


class MemoryStore(VolumeStore):
    """A volume held in a numpy array (``memory://`` URIs name shared instances)."""

    def handle(self, *, read_only: bool) -> MemoryStore:
        """Another handle on the same array and metadata."""
        other = MemoryStore(self.array, uri=self.uri, read_only=read_only)
        other._metadata = self._metadata
        return other

    def __init__(self, array: NDArray[Any], *, uri: str = "memory://", read_only: bool = False) -> None:
        super().__init__(uri, array.shape, array.dtype, read_only=read_only)
        self.array = array
        self._metadata: dict[str, Any] = {}

    def _read(self, box: Box) -> NDArray[Any]:
        return np.array(self.array[box.slices()])  # array-likes (zarr, dask) are sliced, never loaded whole

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        self.array[box.slices()] = data

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._check_writable()
        self._metadata.clear()  # in place: every handle on this volume shares the dict
        self._metadata.update(metadata)

    def commit(self) -> None:
        """Nothing to publish: memory volumes are visible at once."""

    def discard(self) -> None:
        """Nothing to remove."""


_REGISTRY: dict[str, MemoryStore] = {}


def as_array_like(value: Any) -> Any:
    """``value`` itself if it has ``shape``, ``dtype`` and slicing (ndarray, zarr, dask: read
    a box at a time, never loaded whole), else ``np.asarray(value)``."""
    if all(hasattr(value, attr) for attr in ("shape", "dtype", "__getitem__")):
        return value
    return np.asarray(value)


def register_memory_volume(name: str, array: Any) -> str:
    """Make ``array`` (an ndarray, or any array-like with ``shape``, ``dtype`` and slicing)
    openable as ``memory://name``; returns the URI."""
    uri = f"memory://{name}"
    _REGISTRY[uri] = MemoryStore(as_array_like(array), uri=uri)
    return uri
