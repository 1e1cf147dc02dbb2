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

One registry maps a scheme to its :class:`VolumeStore` class (:func:`store_class`):
``scheme://...`` strings by their scheme, file paths by the first class that
:meth:`~VolumeStore.claims` them. Every function below asks the registry once and calls
the class; nothing else in labelstitch looks inside a volume string. A new backend is a
:class:`VolumeStore` subclass passed to :func:`register_store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._base import StoreError, StoreReadOnlyError, VolumeStore
from ._dvid import DvidAddress, DvidError, DvidStore, dvid_roi_runs
from ._hdf5 import HDF5Store
from ._memory import (
    MemoryStore,
    as_array_like,
    memory_volume,
    memory_volumes,
    register_memory_volume,
    remove_memory_volume,
)
from ._npy import NpyStore
from ._staging import NoSpaceError, disk_errors, staging_path
from ._tiff import TiffStore
from ._zarr import ZarrStore

__all__ = [
    "DvidAddress",
    "DvidError",
    "DvidStore",
    "HDF5Store",
    "MemoryStore",
    "NoSpaceError",
    "NpyStore",
    "StoreError",
    "StoreReadOnlyError",
    "TiffStore",
    "VolumeStore",
    "ZarrStore",
    "keeps_supervoxels",
    "as_array_like",
    "check_output",
    "create_volume",
    "disk_errors",
    "memory_volume",
    "memory_volumes",
    "open_volume",
    "read_roi",
    "register_memory_volume",
    "register_store",
    "remove_memory_volume",
    "side_file_base",
    "staging_path",
    "store_class",
    "volume_exists",
    "volume_signature",
    "volumes_overlap",
]

_STORES: dict[str, type[VolumeStore]] = {}


def register_store(cls: type[VolumeStore]) -> type[VolumeStore]:
    """Add a backend to the registry under ``cls.scheme`` (usable as a class decorator).

    Raises
    ------
    ValueError
        ``cls`` is not a VolumeStore, has no scheme, or its scheme is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, VolumeStore)) or not cls.scheme:
        raise ValueError(f"a store must be a VolumeStore subclass with a `scheme`, got {cls!r}")
    if cls.scheme in _STORES and _STORES[cls.scheme] is not cls:
        raise ValueError(f"the store scheme {cls.scheme!r} is taken by {_STORES[cls.scheme].__name__}")
    _STORES[cls.scheme] = cls
    return cls


for _cls in (MemoryStore, DvidStore, ZarrStore, NpyStore, HDF5Store, TiffStore):  # file claims are tried in this order
    register_store(_cls)

_FORMS = "path.zarr, path.zarr/name, path.npy, path.h5:dataset, path.tif, memory://name or dvid://HOST:PORT/UUID/INSTANCE"


def store_class(uri: str | os.PathLike[str]) -> type[VolumeStore]:
    """The :class:`VolumeStore` class that handles the volume string ``uri``.

    Raises
    ------
    StoreError
        Not a string, an unknown scheme, or a file name no backend claims.
    """
    if not isinstance(uri, (str, os.PathLike)):
        raise StoreError(f"a volume is named by a string ({_FORMS}), got {type(uri).__name__}")
    uri = os.fspath(uri)
    scheme, sep, _ = uri.partition("://")
    if sep:
        if scheme not in _STORES:
            raise StoreError(f"unknown volume scheme {scheme!r} in {uri!r}; known: {', '.join(s + '://' for s in _STORES)}")
        return _STORES[scheme]
    for cls in _STORES.values():
        if cls.claims(uri):
            return cls
    raise StoreError(f"cannot tell the format of {uri!r}; name volumes as {_FORMS}")


def volume_exists(uri: str) -> bool:
    """Whether a volume is already stored at ``uri``."""
    return store_class(uri).exists(os.fspath(uri))


def open_volume(uri: str, *, read_only: bool = True) -> VolumeStore:
    """Open an existing 3-D volume.

    Raises
    ------
    StoreError
        If nothing is stored there, the format is unknown, or the array is not 3-D.
    """
    return store_class(uri).open(os.fspath(uri), read_only=read_only)


def create_volume(uri: str, shape: tuple[int, ...], dtype: DTypeLike, **options: Any) -> VolumeStore:
    """Create a volume for writing: :meth:`VolumeStore.create` of the volume's backend, whose
    keyword options (``chunks``, ``overwrite``, ``staged``, ``create_instance``) it takes.

    With ``staged`` (the default) the data goes to a temporary sibling, and only the store's
    ``commit()`` publishes it under ``uri`` (by an atomic rename where the backend allows),
    so a crash never leaves a half-written volume in place of a good one; ``discard()``
    drops it. A DVID output is written in place (DVID has no staging); ``create_instance``
    lets a missing DVID labels instance be created (files are always created).

    Raises
    ------
    StoreError
        If a volume exists at ``uri`` and ``overwrite`` is False (checked before anything
        is written), or a DVID output cannot be written (see :func:`check_output`).
    """
    return store_class(uri).create(os.fspath(uri), tuple(shape), dtype, **options)


def check_output(
    uri: str,
    *,
    overwrite: bool = False,
    create_instance: bool = False,
    shape: tuple[int, ...] | None = None,
    dtype: DTypeLike = None,
) -> tuple[int, int, int] | None:
    """Every check of an output that can run before any work: returns the block alignment
    writes to it need (None: any box). With ``shape`` and ``dtype``, an output whose size
    is known in advance (npy, TIFF) must also fit on its disk.

    Raises
    ------
    StoreError
        The output exists (or, for DVID, holds labels) and ``overwrite`` is off; a DVID
        node is committed, or its instance is missing without ``create_instance``, or is
        not a labels instance.
    NoSpaceError
        The output would not fit on its disk.
    """
    cls = store_class(uri)
    alignment = cls.check_output(os.fspath(uri), overwrite=overwrite, create_instance=create_instance)
    if shape is not None:
        cls.check_space(os.fspath(uri), tuple(shape), dtype)
    return alignment


def keeps_supervoxels(uri: str) -> bool:
    """Whether an output at ``uri`` stores supervoxels and a supervoxel → body mapping (a DVID
    labelmap, unless its volume string says ``write=bodies``) rather than body ids.

    Raises
    ------
    StoreError
        Supervoxels were asked of an output that cannot keep them.
    """
    return store_class(uri).keeps_supervoxels(os.fspath(uri))


def side_file_base(uri: str, folder: str | os.PathLike[str] | None = None) -> Path | None:
    """Where files that accompany a volume go (its stitch report): beside the file or folder
    that holds it, or, for a volume that is not a file (DVID), as ``folder/NAME`` (None
    without a folder)."""
    cls = store_class(uri)
    local = cls.local_path(os.fspath(uri))
    if local is not None:
        return Path(str(local).rstrip("/"))
    return None if folder is None else Path(folder) / cls.short_name(os.fspath(uri))


def _footprint(uri: str | os.PathLike[str]) -> tuple[str, ...]:
    """A volume string's footprint, or a plain folder's (a checkpoint folder)."""
    try:
        return store_class(uri).footprint(os.fspath(uri))
    except StoreError:
        return ("file", *Path(os.path.abspath(os.fspath(uri))).parts)


def volumes_overlap(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether writing one of two volume strings (or folders) could change the other: they
    are the same, one lies inside the other (a zarr array inside a zarr group, a folder
    inside a folder), they share an HDF5 file, or they name one DVID instance on one node
    (a unique prefix of a UUID names the node as well)."""
    fa, fb = _footprint(a), _footprint(b)
    if fa[0] == "dvid" and fb[0] == "dvid":
        return fa[1:3] == fb[1:3] and (fa[3].startswith(fb[3]) or fb[3].startswith(fa[3]))
    n = min(len(fa), len(fb))
    return fa[:n] == fb[:n]


def volume_signature(uri: str) -> dict[str, object]:
    """Shape, dtype and the backend's cheap content signature of a volume (see
    :meth:`VolumeStore.signature`): equal signatures, (almost surely) equal content."""
    with open_volume(uri) as store:
        shape, dtype = list(store.shape), str(store.dtype)
    return {"shape": shape, "dtype": dtype, **store_class(uri).signature(os.fspath(uri))}


def read_roi(roi: str, *, beside: str) -> tuple[NDArray[np.int64], int]:
    """A DVID ROI's ``[z, y, x0, x1]`` block runs and block size; ``roi`` is a full
    ``dvid://`` string or the name of a roi on the node of the DVID volume ``beside``."""
    return dvid_roi_runs(roi, beside)
