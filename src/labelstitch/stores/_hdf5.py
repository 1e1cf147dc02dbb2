"""HDF5 volumes: ``path.h5:dataset`` (also ``.hdf5``; ``path.h5:/group/dataset`` too)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box
from ._base import StoreError, VolumeRef, VolumeStore, local_path_of, not_three_d
from ._staging import check_free_space, no_space, remove_stale_staging, staging_path

_ATTR = "labelstitch"


_SUFFIXES = (".h5", ".hdf5")


class HDF5Store(VolumeStore):
    """A dataset in an HDF5 file (h5py). Writes go through one process at a time.

    A staged output is written to a new file (``.partial-PID-FILE``); :meth:`commit` copies
    the file's other objects into it and renames it over the file, so the file at the
    output path is always whole, whatever happens while writing (HDF5 files are not safe
    against crashes mid-write). The HDF5 library crashes (SIGSEGV) when its disk fills
    up, so an output is refused before any work unless its disk has room for the
    uncompressed volume (the compressed file is usually far smaller).
    """

    scheme = "h5"

    def __init__(
        self, ref: VolumeRef, file: Any, name: str, *, read_only: bool, staging: Path | None = None, final: Path | None = None
    ) -> None:
        dataset = file[name]
        super().__init__(ref, dataset.shape, dataset.dtype, read_only=read_only)
        self._file = file
        self._name = name
        self._staging = staging
        self._final = final

    @property
    def _dataset(self) -> Any:
        return self._file[self._name]

    @classmethod
    def claims(cls, text: str) -> bool:
        path, sep, _ = text.rpartition(":")
        return (bool(sep) and path.endswith(_SUFFIXES)) or text.rstrip("/").endswith(_SUFFIXES)

    @classmethod
    def parse(cls, text: str, base: Path) -> VolumeRef:
        """``path`` is the file, ``inner`` the dataset's path inside it (no leading slash)."""
        path, sep, dataset = text.rpartition(":")
        if not sep or not dataset.strip("/") or not path.endswith(_SUFFIXES):
            raise StoreError(f"name the dataset inside the HDF5 file as PATH.h5:DATASET, got {text!r}")
        file = local_path_of(path, base)
        inner = dataset.strip("/")
        return VolumeRef(cls, f"{file}:{inner}", file, inner)

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> HDF5Store:
        import h5py

        path, name = ref.path, ref.inner
        assert path is not None
        if not path.is_file():
            raise StoreError(f"no HDF5 file at {path} (from {ref})")
        try:
            file = h5py.File(path, "r" if read_only else "r+")
        except OSError as exc:
            raise StoreError(f"cannot open {path} as an HDF5 file: {exc}") from None
        if name not in file or not isinstance(file[name], h5py.Dataset):
            datasets: list[str] = []
            file.visititems(lambda k, v: datasets.append(k) if isinstance(v, h5py.Dataset) else None)
            file.close()
            raise StoreError(f"{path} has no dataset {name!r}; it has: {', '.join(datasets) or 'none'}")
        if file[name].ndim != 3:
            shape = tuple(file[name].shape)
            file.close()
            raise not_three_d(ref, shape)
        return cls(ref, file, name, read_only=read_only)

    @classmethod
    def exists(cls, ref: VolumeRef) -> bool:
        import h5py

        assert ref.path is not None
        if not ref.path.is_file():
            return False
        with h5py.File(ref.path, "r") as f:
            return ref.inner in f

    @classmethod
    def check_space(cls, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike) -> None:
        assert ref.path is not None
        check_free_space(ref.path, shape, dtype, ref.text)

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> HDF5Store:
        import h5py

        assert ref.path is not None
        final, name = ref.path, ref.inner
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        cls.check_space(ref, shape, dtype)
        target = staging_path(final) if staged else final
        file = h5py.File(target, "w" if staged else "a")
        if name in file:
            del file[name]
        file.create_dataset(
            name,
            shape=tuple(shape),
            dtype=np.dtype(dtype),
            chunks=tuple(min(c, s) for c, s in zip(chunks, shape)) if chunks else True,
            compression="gzip",
            compression_opts=1,
            fillvalue=0,
        )
        return cls(ref, file, name, read_only=False, staging=target if staged else None, final=final)

    def _read(self, box: Box) -> NDArray[Any]:
        return np.asarray(self._dataset[box.slices()])

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        self._dataset[box.slices()] = data

    @property
    def chunks(self) -> tuple[int, ...] | None:
        chunks = self._dataset.chunks
        return tuple(chunks) if chunks else None

    @property
    def metadata(self) -> dict[str, Any]:
        raw = self._dataset.attrs.get(_ATTR)
        return json.loads(raw) if raw else {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._check_writable()
        self._dataset.attrs[_ATTR] = json.dumps(metadata)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> None:
        """Publish a staged dataset: copy the final file's other objects into the staging
        file, then rename it over the final file (one atomic step)."""
        if self._staging is None or self._final is None:
            return
        import h5py

        try:
            if self._final.exists():
                with h5py.File(self._final, "r") as old:
                    _copy_all_but(old, self._file, self._name)
            self._file.flush()
            self._file.close()
        except OSError as exc:
            raise no_space(exc, self.uri, self._staging) from exc
        os.replace(self._staging, self._final)
        self._staging = None
        self._file = h5py.File(self._final, "r+")

    def discard(self) -> None:
        """Drop the staging file."""
        if self._staging is not None:
            self._file.close()
            self._staging.unlink(missing_ok=True)
            self._staging = None

    def close(self) -> None:
        self._file.close()


def _copy_all_but(source: Any, target: Any, skip: str) -> None:
    """Copy every object and attribute of ``source`` (an h5py group) into ``target`` except
    the dataset at path ``skip``."""
    import h5py

    head, _, rest = skip.partition("/")
    for key, value in source.attrs.items():
        if key not in target.attrs:
            target.attrs[key] = value
    for key in source:
        if key != head:
            source.copy(source[key], target, name=key)
        elif rest and isinstance(source[key], h5py.Group):
            _copy_all_but(source[key], target.require_group(key), rest)
