"""The volume store interface: read and write boxes of one 3-D array, and own its lifecycle.

Nothing outside ``labelstitch.stores`` knows whether a volume is zarr, npy, HDF5, TIFF or
DVID. A store is opened from one string (see :func:`labelstitch.stores.open_volume`), and
the registry there picks the class by the string's scheme (``dvid://``, ``memory://``) or,
for files, by the classes' :meth:`VolumeStore.claims`.

Lifecycle of an output: :meth:`VolumeStore.check_output` (before any work) →
:meth:`VolumeStore.create` (staged) → :meth:`~VolumeStore.write` … →
:meth:`~VolumeStore.commit` (publish atomically) or :meth:`~VolumeStore.discard` →
:meth:`~VolumeStore.close`.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

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

    #: the registry key: ``scheme://...`` volume strings name this class
    scheme: ClassVar[str] = ""
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

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def claims(cls, uri: str) -> bool:
        """Whether a volume string without ``scheme://`` names a volume of this kind (by its
        file name); stores reached only through their scheme return False."""
        return False

    @classmethod
    @abstractmethod
    def open(cls, uri: str, *, read_only: bool = True) -> VolumeStore:
        """Open an existing volume (:class:`StoreError` if there is none, or not 3-D)."""

    @classmethod
    @abstractmethod
    def exists(cls, uri: str) -> bool:
        """Whether a volume (for DVID: written labels) is already stored at ``uri``."""

    @classmethod
    def check_output(cls, uri: str, *, overwrite: bool = False, create_instance: bool = False) -> tuple[int, int, int] | None:
        """Every check of ``uri`` as an output that can run before any work; returns the
        block shape writes must align to (None: any box).

        Raises
        ------
        StoreError
            The volume exists and ``overwrite`` is off (backends add their own refusals).
        """
        if cls.exists(uri) and not overwrite:
            raise StoreError(f"output {uri} exists already; pass overwrite=True (--overwrite) to replace it")
        return None

    @classmethod
    def check_space(cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike) -> None:
        """Refuse (:class:`OSError` ENOSPC) an output whose size is known in advance and does
        not fit where it goes; backends whose size depends on compression check nothing."""

    @classmethod
    def create(
        cls,
        uri: str,
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
        publishes under ``uri``; ``create_instance`` is for backends whose containers must
        be created on a server (DVID).
        """
        if len(shape) != 3:
            raise StoreError(f"volumes are 3-D (Z, Y, X); cannot create {uri} with shape {tuple(shape)}")
        cls.check_output(uri, overwrite=overwrite, create_instance=create_instance)
        return cls._create(uri, tuple(int(s) for s in shape), np.dtype(dtype), chunks=chunks, staged=staged)

    @classmethod
    def _create(
        cls, uri: str, shape: tuple[int, ...], dtype: np.dtype[Any], *, chunks: tuple[int, ...] | None, staged: bool
    ) -> VolumeStore:
        """Make the volume that :meth:`check_output` allowed (replacing an existing one only
        at :meth:`commit` where staged); backends that can be written implement this."""
        raise StoreError(f"{cls.__name__} volumes cannot be created ({uri})")

    @classmethod
    def local_path(cls, uri: str) -> Path | None:
        """The file or folder that holds the volume on this machine (None: not a file, e.g. DVID)."""
        return None

    @classmethod
    def footprint(cls, uri: str) -> tuple[str, ...]:
        """What the volume occupies, as a path of names: two volumes overlap when one's
        footprint starts with the other's. Files: the absolute path of their file or folder."""
        local = cls.local_path(uri)
        if local is None:
            return (cls.scheme, uri)
        return ("file", *Path(os.path.abspath(local)).parts)

    @classmethod
    def served_files(cls, uri: str) -> Path | None:
        """A folder a web viewer can read as it is, multiscale metadata and all (an OME-Zarr
        group), or None: the volume must be read through the store."""
        return None

    @classmethod
    def short_name(cls, uri: str) -> str:
        """A file-name-safe name of the volume (for side files kept elsewhere, e.g. the stitch report)."""
        return uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def signature(cls, uri: str) -> dict[str, Any]:
        """What identifies the volume's content cheaply: recorded with checkpoints so that a
        resume refuses an input that changed. Files: size, modification time and the
        SHA-256 of a few sampled pieces."""
        local = cls.local_path(uri)
        if local is None or not local.is_file():
            return {}
        stat = local.stat()
        digest = hashlib.sha256()
        with open(local, "rb") as f:
            for k in range(8):
                f.seek(stat.st_size * k // 8)
                digest.update(f.read(1 << 16))
        return {"bytes": stat.st_size, "modified": stat.st_mtime_ns, "sampled-sha256": digest.hexdigest()}

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

    @classmethod
    def keeps_supervoxels(cls, uri: str) -> bool:
        """Whether an output at ``uri`` stores *supervoxels* in its voxels and bodies as a
        supervoxel → body mapping (a DVID labelmap) instead of body ids (every other store).
        Such an output is written with :meth:`write_supervoxels` and :meth:`write_bodies`."""
        return False

    def write_supervoxels(
        self, box: Box, supervoxels: NDArray[np.uint64], sv_ids: NDArray[np.uint64], body_ids: NDArray[np.uint64]
    ) -> NDArray[np.uint64]:
        """Write supervoxel ids at ``box`` (``sv_ids[i]`` belongs to body ``body_ids[i]``;
        supervoxels not listed are bodies of their own) and return the rows
        ``(body, supervoxel, storage block key, voxels)`` of every storage block written,
        for :meth:`write_bodies`."""
        raise StoreError(f"{self.uri} stores bodies, not supervoxels and a mapping")

    def write_bodies(self, rows: NDArray[np.uint64]) -> dict[str, int]:
        """Record the bodies of ``rows`` (all the rows of each of them, from
        :meth:`write_supervoxels`): what each is made of, and where. Returns counts."""
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
