"""Volume stores: every volume is named by one string, parsed once into a :class:`VolumeRef`.

============================  ===============================================
``path.zarr``                 zarr array or OME-Zarr group at ``path.zarr``
``path.zarr/name``            zarr array ``name`` inside the group ``path.zarr``
``path.npy``                  numpy file (memory-mapped)
``path.h5:dataset``           HDF5 dataset (``.hdf5`` too; ``path.h5:/group/dataset``)
``path.tif``                  TIFF stack (``.tiff`` too)
``memory://name``             an array registered with :func:`register_memory_volume`
``dvid://HOST:PORT/UUID/I``   DVID instance ``I`` (``uint8blk`` or labels) at node ``UUID``
============================  ===============================================

One registry maps a scheme to its :class:`VolumeStore` class: ``scheme://...`` strings by
their scheme, file paths by the last registered class that :meth:`~VolumeStore.claims`
them (a file suffix such as ``.npy`` or ``.h5:`` before a ``*.zarr`` folder that holds
it). :func:`parse_volume` turns a string into a :class:`VolumeRef` once, where it enters
(a config, an API argument); everything after that asks the reference. The functions
below also take a string, for callers outside labelstitch, and parse it on the spot. A
new backend is a :class:`VolumeStore` subclass passed to :func:`register_store`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._base import Capabilities, StoreError, StoreReadOnlyError, VolumeRef, VolumeStore
from ._dvid import DvidStore, volumes_from_info
from ._dvid_labelmap import LabelmapWriter
from ._dvid_client import DvidAddress, DvidError
from ._hdf5 import HDF5Store
from ._precomputed import PrecomputedShapes
from ._memory import (
    MemoryStore,
    as_array_like,
    memory_volume,
    memory_volumes,
    register_memory_volume,
    remove_memory_volume,
)
from ._npy import NpyStore
from ._staging import NoSpaceError, disk_errors, publish_folder, remove_stale_staging, staging_path
from ._tiff import TiffStore
from ._zarr import ZarrStore

__all__ = [
    "Capabilities",
    "DvidAddress",
    "DvidError",
    "DvidStore",
    "HDF5Store",
    "LabelmapWriter",
    "MemoryStore",
    "NoSpaceError",
    "NpyStore",
    "PrecomputedShapes",
    "StoreError",
    "StoreReadOnlyError",
    "TiffStore",
    "VolumeLike",
    "VolumeRef",
    "VolumeStore",
    "ZarrStore",
    "as_array_like",
    "check_output",
    "create_volume",
    "disk_errors",
    "dvid_info_volumes",
    "keeps_supervoxels",
    "memory_volume",
    "memory_volumes",
    "open_volume",
    "parse_volume",
    "publish_folder",
    "read_roi",
    "register_memory_volume",
    "register_store",
    "remove_memory_volume",
    "remove_stale_staging",
    "roi_ref",
    "side_file_base",
    "staged_output",
    "staging_path",
    "store_class",
    "volume_exists",
    "volume_signature",
]

#: a volume as the functions below take it: parsed, or a string to parse
VolumeLike = VolumeRef | str | os.PathLike[str]

_STORES: dict[str, type[VolumeStore]] = {}


def register_store(cls: type[VolumeStore]) -> type[VolumeStore]:
    """Add a backend to the registry under ``cls.scheme`` (usable as a class decorator); it
    is tried before the backends registered earlier for file names it claims.

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


for _cls in (MemoryStore, DvidStore, ZarrStore, NpyStore, HDF5Store, TiffStore):  # claims: the last first
    register_store(_cls)

_FORMS = "path.zarr, path.zarr/name, path.npy, path.h5:dataset, path.tif, memory://name or dvid://HOST:PORT/UUID/INSTANCE"


def store_class(text: VolumeLike) -> type[VolumeStore]:
    """The :class:`VolumeStore` class that handles the volume string ``text``.

    Raises
    ------
    StoreError
        Not a string, an unknown scheme, or a file name no backend claims.
    """
    if isinstance(text, VolumeRef):
        return text.store
    if not isinstance(text, (str, os.PathLike)):
        raise StoreError(f"a volume is named by a string ({_FORMS}), got {type(text).__name__}")
    text = os.fspath(text)
    scheme, sep, _ = text.partition("://")
    if sep:
        if scheme not in _STORES:
            raise StoreError(f"unknown volume scheme {scheme!r} in {text!r}; known: {', '.join(s + '://' for s in _STORES)}")
        return _STORES[scheme]
    for cls in reversed(_STORES.values()):
        if cls.claims(text):
            return cls
    raise StoreError(f"cannot tell the format of {text!r}; name volumes as {_FORMS}")


def parse_volume(text: VolumeLike, base: str | os.PathLike[str] | None = None) -> VolumeRef:
    """The :class:`VolumeRef` of a volume string (a reference is returned as it is). A
    relative file path is taken relative to ``base`` (default: the working folder), so
    that workers in other folders or on other machines open the same file.

    Raises
    ------
    StoreError
        The string names no volume (what the forms are), or is malformed for its store.
    """
    if isinstance(text, VolumeRef):
        return text
    cls = store_class(text)
    return cls.parse(os.fspath(text), Path(base) if base is not None else Path.cwd())


def volume_exists(volume: VolumeLike) -> bool:
    """Whether a volume is already stored there."""
    return parse_volume(volume).exists()


def open_volume(volume: VolumeLike, *, read_only: bool = True) -> VolumeStore:
    """Open an existing 3-D volume.

    Raises
    ------
    StoreError
        If nothing is stored there, the format is unknown, or the array is not 3-D.
    """
    return parse_volume(volume).open(read_only=read_only)


def create_volume(volume: VolumeLike, shape: tuple[int, ...], dtype: DTypeLike, **options: Any) -> VolumeStore:
    """Create a volume for writing: :meth:`VolumeStore.create` of the volume's backend, whose
    keyword options (``chunks``, ``overwrite``, ``staged``, ``create_instance``) it takes.

    With ``staged`` (the default) the data goes to a temporary sibling, and only the store's
    ``commit()`` publishes it (by an atomic rename where the backend allows), so a crash
    never leaves a half-written volume in place of a good one; ``discard()`` drops it.
    :func:`staged_output` runs that lifecycle. A DVID output is written in place (DVID has
    no staging); ``create_instance`` lets a missing DVID labels instance be created.

    Raises
    ------
    StoreError
        If a volume exists there and ``overwrite`` is False (checked before anything is
        written), or a DVID output cannot be written (see :func:`check_output`).
    """
    return parse_volume(volume).create(tuple(shape), dtype, **options)


@contextmanager
def staged_output(
    volume: VolumeLike, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None = None,
    overwrite: bool = False, create_instance: bool = False,
) -> Iterator[VolumeStore]:
    """An output's whole lifecycle: create it staged, hand it to the block, then publish it
    atomically (``commit``) when the block ends normally, or drop it (``discard``) when
    the block raises, and close it either way. A full disk met anywhere inside the block
    (a worker's write included) is one :class:`NoSpaceError` that names the output.

    >>> import numpy as np, tempfile
    >>> out = tempfile.mkdtemp() + "/seg.zarr"
    >>> with staged_output(out, (2, 3, 4), np.uint32) as store:
    ...     store.write(store.box, np.ones((2, 3, 4), np.uint32))
    ...     volume_exists(out)  # not before the block ends
    False
    >>> volume_exists(out)
    True
    """
    ref = parse_volume(volume)
    with disk_errors(ref):
        store = ref.create(tuple(shape), dtype, chunks=chunks, overwrite=overwrite, staged=True,
                           create_instance=create_instance)
        try:
            yield store
            store.commit()
        except BaseException:
            store.discard()
            raise
        finally:
            store.close()


def check_output(
    volume: VolumeLike,
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
    return parse_volume(volume).check_output(overwrite=overwrite, create_instance=create_instance, shape=shape, dtype=dtype)


def keeps_supervoxels(volume: VolumeLike) -> bool:
    """Whether an output stores supervoxels and a supervoxel → body mapping (a DVID
    labelmap, unless its volume string says ``write=bodies``) rather than body ids.

    Raises
    ------
    StoreError
        Supervoxels were asked of an output that cannot keep them.
    """
    return parse_volume(volume).keeps_supervoxels()


def side_file_base(volume: VolumeLike, folder: str | os.PathLike[str] | None = None) -> Path | None:
    """Where files that accompany a volume go (its stitch report): beside the file or folder
    that holds it, or, for a volume that is not a file (DVID), as ``folder/NAME`` (None
    without a folder)."""
    return parse_volume(volume).side_file_base(folder)


def volume_signature(volume: VolumeLike) -> dict[str, object]:
    """Shape, dtype and the backend's cheap content signature of a volume (see
    :meth:`VolumeStore.signature`): equal signatures, (almost surely) equal content."""
    ref = parse_volume(volume)
    with ref.open() as store:
        shape, dtype = list(store.shape), str(store.dtype)
    return {"shape": shape, "dtype": dtype, **ref.signature()}


def roi_ref(roi: str, *, beside: VolumeRef) -> VolumeRef:
    """The DVID roi instance ``roi`` names: a full ``dvid://`` string, or the name of a roi on
    the node of the DVID volume ``beside`` (the run's input).

    Raises
    ------
    StoreError
        A bare name while ``beside`` is not on DVID, or a malformed string.
    """
    if "://" in roi:
        ref = parse_volume(roi)
        if not isinstance(ref.detail, DvidAddress):
            raise StoreError(f"options.roi {roi!r} is not a DVID roi; write it as dvid://HOST:PORT/UUID/NAME")
        return ref
    if beside.store is not DvidStore:
        raise StoreError(
            f"options.roi {roi!r} names a DVID roi, but the input {beside} is not on DVID; "
            "write it as dvid://HOST:PORT/UUID/NAME, or give a box as the top-level roi"
        )
    return DvidStore.roi_sibling(beside, roi)


def read_roi(roi: VolumeRef) -> tuple[NDArray[np.int64], int]:
    """A DVID ROI's ``[z, y, x0, x1]`` block runs (x1 inclusive) and block size."""
    return DvidStore.roi_runs(roi)


def dvid_info_volumes(info: dict[str, Any], roi: str | None = None) -> dict[str, str | None]:
    """The volume strings the seed paper's ``dvid-info`` config section names: ``input``,
    ``output`` and ``roi`` (see :func:`labelstitch.stores._dvid.volumes_from_info`)."""
    return volumes_from_info(info, roi)
