"""Volume stores: every volume is named by one string.

============================  ===============================================
``path.zarr``                 zarr array at the root of ``path.zarr``
``path.zarr/name``            zarr array ``name`` inside the group ``path.zarr``
``path.npy``                  numpy file (memory-mapped)
``path.h5:dataset``           HDF5 dataset (``.hdf5`` too)
``path.tif``                  TIFF stack (``.tiff`` too)
``memory://name``             an array registered with :func:`register_memory_volume`
``dvid://HOST:PORT/UUID/I``   DVID instance ``I`` (``uint8blk`` or labels) at node ``UUID``
============================  ===============================================
"""

from __future__ import annotations

import os
from pathlib import Path

from numpy.typing import DTypeLike

from ._base import StoreError, StoreReadOnlyError, VolumeStore
from ._dvid import DvidAddress, DvidError, DvidStore, check_dvid_output, dvid_alignment, dvid_roi_runs, dvid_volume_has_data
from ._hdf5 import HDF5Store, split_h5_uri
from ._memory import _REGISTRY, MemoryStore, register_memory_volume
from ._npy import NpyStore
from ._tiff import TiffStore
from ._zarr import ZarrStore, split_zarr_uri

__all__ = [
    "DvidAddress",
    "DvidError",
    "DvidStore",
    "HDF5Store",
    "MemoryStore",
    "NpyStore",
    "StoreError",
    "StoreReadOnlyError",
    "TiffStore",
    "VolumeStore",
    "ZarrStore",
    "check_output",
    "create_volume",
    "dvid_roi_runs",
    "open_volume",
    "register_memory_volume",
    "volume_exists",
]

_FORMS = "path.zarr, path.zarr/name, path.npy, path.h5:dataset, path.tif, memory://name or dvid://HOST:PORT/UUID/INSTANCE"


def _kind(uri: str) -> str:
    if not isinstance(uri, (str, os.PathLike)):
        raise StoreError(f"a volume is named by a string ({_FORMS}), got {type(uri).__name__}")
    uri = os.fspath(uri)
    if uri.startswith("memory://"):
        return "memory"
    if uri.startswith("dvid://"):
        return "dvid"
    if ".zarr" in uri:
        return "zarr"
    if uri.endswith(".npy"):
        return "npy"
    if ".h5" in uri or ".hdf5" in uri:
        return "h5"
    if uri.endswith((".tif", ".tiff")):
        return "tif"
    raise StoreError(f"cannot tell the format of {uri!r}; name volumes as {_FORMS}")


def volume_exists(uri: str) -> bool:
    """Whether a volume is already stored at ``uri``."""
    kind = _kind(uri)
    if kind == "memory":
        return uri in _REGISTRY
    if kind == "dvid":
        return dvid_volume_has_data(uri)
    if kind == "zarr":
        root, name = split_zarr_uri(uri)
        return (root / name / "zarr.json").exists() or (root / name / ".zarray").exists()
    if kind == "h5":
        import h5py

        path, name = split_h5_uri(uri)
        if not os.path.isfile(path):
            return False
        with h5py.File(path, "r") as f:
            return name in f
    return Path(uri).exists()


def open_volume(uri: str, *, read_only: bool = True) -> VolumeStore:
    """Open an existing 3-D volume.

    Raises
    ------
    StoreError
        If nothing is stored there, the format is unknown, or the array is not 3-D.
    """
    kind = _kind(uri)
    uri = os.fspath(uri)
    if kind == "memory":
        if uri not in _REGISTRY:
            raise StoreError(f"no in-memory volume {uri}; register one with register_memory_volume()")
        return _REGISTRY[uri].handle(read_only=read_only)
    opener = {"dvid": DvidStore, "zarr": ZarrStore, "npy": NpyStore, "h5": HDF5Store, "tif": TiffStore}[kind]
    return opener.open(uri, read_only=read_only)


def create_volume(
    uri: str,
    shape: tuple[int, ...],
    dtype: DTypeLike,
    *,
    chunks: tuple[int, ...] | None = None,
    overwrite: bool = False,
    staged: bool = True,
    create_instance: bool = False,
) -> VolumeStore:
    """Create a volume for writing.

    With ``staged`` (the default) the data goes to a temporary sibling, and only the store's
    ``commit()`` publishes it under ``uri`` (by an atomic rename where the backend allows),
    so a crash never leaves a half-written volume in place of a good one; ``discard()``
    drops it.

    A DVID output is written in place (DVID has no staging). ``create_instance`` lets a
    missing DVID labels instance be created (files are always created).

    Raises
    ------
    StoreError
        If a volume exists at ``uri`` and ``overwrite`` is False (checked before anything
        is written), or a DVID output cannot be written (see :func:`check_output`).
    """
    kind = _kind(uri)
    uri = os.fspath(uri)
    if len(shape) != 3:
        raise StoreError(f"volumes are 3-D (Z, Y, X); cannot create {uri} with shape {tuple(shape)}")
    if kind == "dvid":
        return DvidStore.create(uri, tuple(shape), dtype, overwrite=overwrite, create_instance=create_instance)
    check_output(uri, overwrite=overwrite)
    if kind == "memory":
        import numpy as np

        store = MemoryStore(np.zeros(shape, dtype), uri=uri)
        _REGISTRY[uri] = store
        return store
    if kind == "zarr":
        return ZarrStore.create(uri, tuple(shape), dtype, chunks=chunks, staged=staged)
    if kind == "h5":
        return HDF5Store.create(uri, tuple(shape), dtype, chunks=chunks, staged=staged)
    if kind == "npy":
        return NpyStore.create(uri, tuple(shape), dtype, staged=staged)
    return TiffStore.create(uri, tuple(shape), dtype, staged=staged)


def check_output(uri: str, *, overwrite: bool = False, create_instance: bool = False) -> tuple[int, int, int] | None:
    """Every check of an output that can run before any work: returns the block alignment
    writes to it need (None: any box).

    Raises
    ------
    StoreError
        The output exists (or, for DVID, holds labels) and ``overwrite`` is off; a DVID
        node is committed, or its instance is missing without ``create_instance``, or is
        not a labels instance.
    """
    kind = _kind(uri)
    uri = os.fspath(uri)
    if kind == "dvid":
        return dvid_alignment(uri, check_dvid_output(uri, overwrite=overwrite, create_instance=create_instance))
    if volume_exists(uri) and not overwrite:
        raise StoreError(f"output {uri} exists already; pass overwrite=True (--overwrite) to replace it")
    return None
