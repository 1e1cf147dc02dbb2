"""The volume store interface: read and write boxes of one 3-D array, and own its lifecycle.

Nothing outside ``labelstitch.stores`` knows whether a volume is zarr, npy, HDF5, TIFF or
DVID. A volume string is parsed once, where it enters (a config, an API argument), into a
:class:`VolumeRef`: the store class, the local file or folder it occupies, what lies
inside (a zarr array path, an HDF5 dataset, a DVID instance) and the store's own parsed
form. Everything after that asks the reference (:meth:`VolumeRef.open`,
:meth:`~VolumeRef.exists`, :meth:`~VolumeRef.overlaps`, ...), which asks its store class.

Lifecycle of an output: :meth:`VolumeStore.check_output` (before any work) →
:meth:`VolumeStore.create` (staged) → :meth:`~VolumeStore.write` … →
:meth:`~VolumeStore.commit` (publish atomically) or :meth:`~VolumeStore.discard` →
:meth:`~VolumeStore.close`; :func:`labelstitch.stores.staged_output` runs it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box

__all__ = ["Capabilities", "StoreError", "StoreReadOnlyError", "VolumeRef", "VolumeStore", "folder_footprint", "local_path_of"]


class StoreError(ValueError):
    """A volume cannot be opened, created, read or written as asked."""


def not_three_d(ref: object, shape: tuple[int, ...]) -> StoreError:
    """The refusal of a volume that is not 3-D, saying so when it looks like colour."""
    colour = len(shape) == 4 and shape[-1] in (3, 4)
    hint = (f"; a last axis of {shape[-1]} looks like colour channels: convert it to grey first, e.g. "
            "numpy's array.mean(axis=-1)") if colour else ""
    return StoreError(f"{ref} has {len(shape)} dimensions (shape {tuple(shape)}); volumes must be 3-D (Z, Y, X){hint}")


class StoreReadOnlyError(StoreError):
    """A write to a store opened read-only."""


def local_path_of(text: str, base: Path) -> Path:
    """A file name as the absolute path it means: relative to ``base``, ``~`` expanded,
    trailing slashes dropped, ``..`` taken lexically (``a/link/../b`` is ``a/b``) so that
    reads, writes and the overlap checks (:func:`folder_footprint`, which then resolves
    symbolic links) all mean the same file."""
    expanded = os.path.expanduser(text.rstrip("/") or "/")
    return Path(os.path.normpath(os.path.join(base, expanded)))


def folder_footprint(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """What a plain folder (a checkpoint folder) occupies, in the form of
    :meth:`VolumeRef.footprint`: its real path, symbolic links and ``..`` resolved."""
    return ("file", *Path(os.path.realpath(os.fspath(path))).parts)


@dataclass(frozen=True)
class Capabilities:
    """What a store can do with a volume, asked of the reference once (not of the string).

    ``parallel_writes``: disjoint boxes may be written from several processes at once;
    ``bounded``: reads outside the shape are refused (False where any box can be read, as
    DVID answers 0); ``local``: the volume is a file or folder on this machine (outputs there
    are staged and published atomically by ``commit``); ``in_process``: the volume lives in this process's memory, where no other process sees
    it; ``voxel_size``: the format records a physical voxel size (for viewers).
    """

    parallel_writes: bool
    bounded: bool
    local: bool
    in_process: bool = False
    voxel_size: bool = False


@dataclass(frozen=True)
class VolumeRef:
    """A volume string, parsed once by its store (:func:`labelstitch.stores.volume_ref`).

    ``text`` is the canonical string (absolute for files; what messages show and configs
    keep), ``path`` the file or folder on this machine that holds the volume (a zarr
    group's root folder, an HDF5 or npy file; None for DVID and memory volumes), ``inner``
    what lies inside it (a zarr array path, an HDF5 dataset; a DVID instance; a memory
    volume's name) and ``detail`` the store's own parsed form (a DVID address). Every
    question about the volume is a method that asks the store class; the reference is
    frozen and picklable, so workers receive it as it is and parse nothing.
    """

    store: type[VolumeStore] = field(compare=False, repr=False)
    text: str
    path: Path | None = None
    inner: str = ""
    detail: Any = None

    def __str__(self) -> str:
        return self.text

    @property
    def scheme(self) -> str:
        return self.store.scheme

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities_of(self)

    # ------------------------------------------------------------------ identity

    def exists(self) -> bool:
        """Whether a volume (for DVID: written labels) is already stored here."""
        return self.store.exists(self)

    def local_path(self) -> Path | None:
        """The file or folder that holds the volume on this machine (None: not a file)."""
        return self.store.local_path(self)

    def footprint(self) -> tuple[str, ...]:
        """What the volume occupies, as a path of names (see :meth:`overlaps`)."""
        return self.store.footprint(self)

    def overlaps(self, other: VolumeRef | str | os.PathLike[str]) -> bool:
        """Whether writing one of two volumes (or a volume and a plain folder, given as a
        path) could change the other: they are the same, one lies inside the other (a zarr
        array inside a zarr group, a folder inside a folder, through symbolic links and
        ``..`` too), they share an HDF5 file, or they name one DVID instance on one node."""
        mine = self.footprint()
        theirs = other.footprint() if isinstance(other, VolumeRef) else folder_footprint(other)
        return mine[0] == theirs[0] and self.store.footprints_overlap(mine, theirs)

    def side_file_base(self, folder: str | os.PathLike[str] | None = None) -> Path | None:
        """Where files that accompany the volume go (its stitch report, its lock): beside the
        file or folder that holds it, or, for a volume that is not a file (DVID), as
        ``folder/NAME`` (None without a folder)."""
        local = self.local_path()
        if local is not None:
            return local
        return None if folder is None else Path(folder) / self.short_name

    @property
    def short_name(self) -> str:
        """A file-name-safe name of the volume (for side files kept elsewhere)."""
        return self.store.short_name(self)

    def keeps_supervoxels(self) -> bool:
        """Whether an output here stores supervoxels and a supervoxel → body mapping (a DVID
        labelmap, unless ``write=bodies``) rather than body ids."""
        return self.store.keeps_supervoxels(self)

    def signature(self) -> dict[str, Any]:
        """What identifies the volume's content cheaply (see :meth:`VolumeStore.signature`)."""
        return self.store.signature(self)

    def served_files(self) -> Path | None:
        """A folder a web viewer can read as it is (an OME-Zarr group), or None."""
        return self.store.served_files(self)

    def with_write_mode(self, mode: str) -> VolumeRef:
        """This output written as ``supervoxels`` or ``bodies`` (a DVID labelmap's choice)."""
        return self.store.with_write_mode(self, mode)

    def supervoxel_view(self) -> VolumeRef | None:
        """This volume read as its supervoxels (itself if it reads them), or None if it keeps none."""
        return self.store.supervoxel_view(self)

    # ------------------------------------------------------------------ lifecycle

    def open(self, *, read_only: bool = True) -> VolumeStore:
        """Open the existing 3-D volume (:class:`StoreError` if there is none, or not 3-D)."""
        return self.store.open(self, read_only=read_only)

    def check_output(
        self, *, overwrite: bool = False, create_instance: bool = False, shape: tuple[int, ...] | None = None,
        dtype: DTypeLike = None,
    ) -> tuple[int, int, int] | None:
        """Every check of this output that can run before any work (see
        :meth:`VolumeStore.check_output`); with ``shape`` and ``dtype``, also that an output
        whose size is known in advance (npy, TIFF, HDF5) fits on its disk. Returns the block
        alignment writes need (None: any box)."""
        alignment = self.store.check_output(self, overwrite=overwrite, create_instance=create_instance)
        if shape is not None:
            self.store.check_space(self, tuple(shape), dtype)
        return alignment

    def create(self, shape: tuple[int, ...], dtype: DTypeLike, **options: Any) -> VolumeStore:
        """Create the volume for writing (see :meth:`VolumeStore.create`)."""
        return self.store.create(self, tuple(shape), dtype, **options)


class VolumeStore(ABC):
    """A 3-D array (Z, Y, X) that can be read and written box by box.

    The class side reads volume strings (:meth:`claims`, :meth:`parse`) and answers every
    question about a :class:`VolumeRef` (exists, footprint, output checks, create); an
    instance is one open volume. Subclasses implement :meth:`_read` and :meth:`_write`; the
    public methods check the box against the volume and the written data's shape and dtype
    first, so every backend reports bad boxes with the same message.
    """

    #: the registry key: ``scheme://...`` volume strings name this class
    scheme: ClassVar[str] = ""
    #: whether :meth:`write` can work at all for this backend
    supports_writes: bool = True
    #: whether disjoint boxes may be written from several processes at once
    supports_parallel_writes: bool = False
    #: False where any box can be read (DVID answers 0 outside what was written)
    bounded: bool = True
    #: whether the format records a physical voxel size (:meth:`set_voxel_size` keeps it)
    records_voxel_size: bool = False

    def __init__(self, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike, *, read_only: bool = True) -> None:
        self.ref = ref
        #: the volume string, for messages
        self.uri = ref.text
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.read_only = read_only

    # ------------------------------------------------------------------ volume strings

    @classmethod
    def claims(cls, text: str) -> bool:
        """Whether a volume string without ``scheme://`` names a volume of this kind (by its
        file name); stores reached only through their scheme return False."""
        return False

    @classmethod
    def parse(cls, text: str, base: Path) -> VolumeRef:
        """The reference of a volume string this class handles; a relative file path is taken
        relative to ``base``. The default: ``scheme://NAME`` names ``NAME``; a file name
        names that file.

        Raises
        ------
        StoreError
            The string is malformed for this store (say what the right form is).
        """
        scheme, sep, rest = text.partition("://")
        if sep:
            return VolumeRef(cls, text, None, rest)
        path = local_path_of(text, base)
        return VolumeRef(cls, str(path), path)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @abstractmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> VolumeStore:
        """Open an existing volume (:class:`StoreError` if there is none, or not 3-D)."""

    @classmethod
    @abstractmethod
    def exists(cls, ref: VolumeRef) -> bool:
        """Whether a volume (for DVID: written labels) is already stored at ``ref``."""

    @classmethod
    def capabilities_of(cls, ref: VolumeRef) -> Capabilities:
        """What this store can do with ``ref``'s volume."""
        local = cls.local_path(ref) is not None
        return Capabilities(cls.supports_parallel_writes, cls.bounded, local, voxel_size=cls.records_voxel_size)

    @classmethod
    def check_output(cls, ref: VolumeRef, *, overwrite: bool = False, create_instance: bool = False) -> tuple[int, int, int] | None:
        """Every check of ``ref`` as an output that can run before any work; returns the
        block shape writes must align to (None: any box).

        Raises
        ------
        StoreError
            The volume exists and ``overwrite`` is off (backends add their own refusals).
        """
        if cls.exists(ref) and not overwrite:
            raise StoreError(f"output {ref} exists already; pass overwrite=True (--overwrite) to replace it")
        return None

    @classmethod
    def check_space(cls, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike) -> None:
        """Refuse (:class:`OSError` ENOSPC) an output whose size is known in advance and does
        not fit where it goes; backends whose size depends on compression check nothing."""

    @classmethod
    def create(
        cls,
        ref: VolumeRef,
        shape: tuple[int, ...],
        dtype: DTypeLike,
        *,
        chunks: tuple[int, ...] | None = None,
        overwrite: bool = False,
        staged: bool = True,
        create_instance: bool = False,
    ) -> VolumeStore:
        """Create a volume for writing, after :meth:`check_output`.

        With ``staged`` the data goes to a hidden sibling that only :meth:`commit`
        publishes under ``ref``; ``create_instance`` is for backends whose containers must
        be created on a server (DVID).
        """
        if len(shape) != 3:
            raise StoreError(f"volumes are 3-D (Z, Y, X); cannot create {ref} with shape {tuple(shape)}")
        cls.check_output(ref, overwrite=overwrite, create_instance=create_instance)
        return cls._create(ref, tuple(int(s) for s in shape), np.dtype(dtype), chunks=chunks, staged=staged)

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: np.dtype[Any], *, chunks: tuple[int, ...] | None, staged: bool
    ) -> VolumeStore:
        """Make the volume that :meth:`check_output` allowed (replacing an existing one only
        at :meth:`commit` where staged); backends that can be written implement this."""
        raise StoreError(f"{cls.__name__} volumes cannot be created ({ref})")

    @classmethod
    def local_path(cls, ref: VolumeRef) -> Path | None:
        """The file or folder that holds the volume on this machine (None: not a file, e.g. DVID)."""
        return ref.path

    @classmethod
    def footprint(cls, ref: VolumeRef) -> tuple[str, ...]:
        """What the volume occupies, as a path of names: two volumes overlap when one's
        footprint starts with the other's. Files: the real path of their file or folder
        (symbolic links and ``..`` resolved); others: the scheme and the string."""
        local = cls.local_path(ref)
        if local is None:
            return (cls.scheme, ref.text)
        return folder_footprint(local)

    @staticmethod
    def footprints_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        """Whether two footprints overlap: one starts with the other."""
        n = min(len(a), len(b))
        return a[:n] == b[:n]

    @classmethod
    def served_files(cls, ref: VolumeRef) -> Path | None:
        """A folder a web viewer can read as it is, multiscale metadata and all (an OME-Zarr
        group), or None: the volume must be read through the store."""
        return None

    @classmethod
    def short_name(cls, ref: VolumeRef) -> str:
        """A file-name-safe name of the volume (for side files kept elsewhere, e.g. the stitch report)."""
        local = cls.local_path(ref)
        return local.name if local is not None else (ref.inner.rstrip("/").rsplit("/", 1)[-1] or cls.scheme)

    @classmethod
    def with_write_mode(cls, ref: VolumeRef, mode: str) -> VolumeRef:
        """``ref`` written as ``supervoxels`` or ``bodies``: only a DVID labelmap chooses."""
        raise StoreError(f"the output {ref} is not a DVID volume, which alone writes supervoxels or bodies")

    @classmethod
    def supervoxel_view(cls, ref: VolumeRef) -> VolumeRef | None:
        return None  # only a DVID labelmap keeps supervoxels

    @classmethod
    def signature(cls, ref: VolumeRef) -> dict[str, Any]:
        """What identifies the volume's content cheaply: recorded with checkpoints so that a
        resume refuses an input that changed. Files: size, modification time and the
        SHA-256 of a few sampled pieces."""
        local = cls.local_path(ref)
        if local is None or not local.is_file():
            return {}
        stat = local.stat()
        digest = hashlib.sha256()
        with open(local, "rb") as f:
            for k in range(8):
                f.seek(stat.st_size * k // 8)
                digest.update(f.read(1 << 16))
        return {"bytes": stat.st_size, "modified": stat.st_mtime_ns, "sampled-sha256": digest.hexdigest()}

    @classmethod
    def keeps_supervoxels(cls, ref: VolumeRef) -> bool:
        """Whether an output at ``ref`` stores *supervoxels* in its voxels and bodies as a
        supervoxel → body mapping (a DVID labelmap) instead of body ids (every other store).
        Such an output is written through :meth:`supervoxel_writer`."""
        return False

    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        """Nanometres per voxel along Z, Y, X where the format records it (None: unknown)."""
        return None

    def set_voxel_size(self, size: tuple[float, float, float]) -> None:
        """Record the physical voxel size where the format can (ignored elsewhere)."""
        self._check_writable()

    def build_pyramid(self, mapper: Any) -> int:
        """Write the lower levels of a multiscale volume through ``mapper(fn, items)``; the
        number of levels (1: the format keeps one)."""
        return 1

    def missing_chunks(self, box: Box) -> list[tuple[int, ...]]:
        """Storage chunks under ``box`` that were never written (and so read as the fill
        value); empty where the backend cannot tell or has no chunks."""
        return []

    def supervoxel_writer(self) -> Any:
        """The writer of an output that keeps supervoxels (see :meth:`keeps_supervoxels`):
        an object with ``write_supervoxels(box, supervoxels, sv_ids, body_ids)`` (returns
        rows of (body, supervoxel, storage block key, voxels)) and ``write_bodies(rows)``,
        picklable so that workers write through it; stores of body ids have none."""
        raise StoreError(f"{self.uri} stores bodies, not supervoxels and a mapping")

    def commit(self) -> None:
        """Publish a staged volume under its final name, atomically where the backend can
        (nothing to do for volumes written in place)."""

    def discard(self) -> None:
        """Drop a staged volume that will not be published (nothing to do for in-place volumes)."""

    # ------------------------------------------------------------------ voxels

    @abstractmethod
    def _read(self, box: Box) -> NDArray[Any]:
        """Voxels of ``box`` (already checked to lie inside the volume)."""

    @abstractmethod
    def _write(self, box: Box, data: NDArray[Any]) -> None:
        """Store ``data`` at ``box`` (already checked)."""

    @property
    def writer(self) -> VolumeRef | None:
        """A reference other processes can open to write into this volume before it is
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
