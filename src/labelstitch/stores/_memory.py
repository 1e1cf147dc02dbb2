"""In-memory volumes (``memory://name``): for the Python API and for tests.

A name is visible to every handle in this process until it is removed: the API registers
its arrays with :func:`memory_volume`, which removes them again on exit, so nothing is left
behind (only executors that run in the calling process can see these volumes).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import Box
from ._base import Capabilities, StoreError, VolumeRef, VolumeStore

_VOLUMES: dict[str, MemoryStore] = {}
_NAMES = itertools.count()


class MemoryStore(VolumeStore):
    """A volume held in a numpy array (or read a box at a time from an array-like)."""

    scheme = "memory"

    def __init__(self, array: NDArray[Any], *, ref: VolumeRef | None = None, read_only: bool = False) -> None:
        super().__init__(ref or VolumeRef(MemoryStore, "memory://"), array.shape, array.dtype, read_only=read_only)
        self.array = array
        self._metadata: dict[str, Any] = {}

    @classmethod
    def capabilities_of(cls, ref: VolumeRef) -> Capabilities:
        return Capabilities(parallel_writes=False, bounded=True, local=False, in_process=True)

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> MemoryStore:
        if ref.text not in _VOLUMES:
            raise StoreError(f"no in-memory volume {ref}; register one with register_memory_volume()")
        shared = _VOLUMES[ref.text]
        handle = cls(shared.array, ref=ref, read_only=read_only)
        handle._metadata = shared._metadata  # one dict for every handle on this volume
        return handle

    @classmethod
    def exists(cls, ref: VolumeRef) -> bool:
        return ref.text in _VOLUMES

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: np.dtype[Any], *, chunks: tuple[int, ...] | None, staged: bool
    ) -> MemoryStore:
        store = cls(np.zeros(shape, dtype), ref=ref)
        _VOLUMES[ref.text] = store
        return store

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


def as_array_like(value: Any) -> Any:
    """``value`` itself if it has ``shape``, ``dtype`` and slicing (ndarray, zarr, dask: read
    a box at a time, never loaded whole), else ``np.asarray(value)``."""
    if all(hasattr(value, attr) for attr in ("shape", "dtype", "__getitem__")):
        return value
    return np.asarray(value)


def register_memory_volume(name: str, array: Any) -> str:
    """Make ``array`` (an ndarray, or any array-like with ``shape``, ``dtype`` and slicing)
    openable as ``memory://name`` until :func:`remove_memory_volume`; returns the URI."""
    uri = f"memory://{name}"
    _VOLUMES[uri] = MemoryStore(as_array_like(array), ref=VolumeRef(MemoryStore, uri, None, name))
    return uri


def remove_memory_volume(uri: str) -> None:
    """Forget the in-memory volume ``uri`` (no error if there is none)."""
    _VOLUMES.pop(uri, None)


def memory_volumes() -> tuple[str, ...]:
    """The URIs of every in-memory volume now registered."""
    return tuple(_VOLUMES)


@contextmanager
def memory_volume(array: Any | None = None, *, name: str = "volume") -> Iterator[str]:
    """A fresh ``memory://`` name, holding ``array`` if given (else free for an output to be
    created there), removed again on exit."""
    uri = f"memory://{name}-{os.getpid()}-{next(_NAMES)}"
    if array is not None:
        register_memory_volume(uri.removeprefix("memory://"), array)
    try:
        yield uri
    finally:
        remove_memory_volume(uri)
