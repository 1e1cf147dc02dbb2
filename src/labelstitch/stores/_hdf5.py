"""HDF5 volumes: ``path.h5:dataset`` (also ``.hdf5``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box
from ._base import StoreError, VolumeStore
from ._staging import check_free_space, no_space, remove_stale_staging, staging_path

_ATTR = "labelstitch"


def split_h5_uri(uri: str) -> tuple[str, str]:
    path, sep, dataset = uri.rpartition(":")
    if not sep or not dataset or not path.endswith((".h5", ".hdf5")):
        raise StoreError(f"name the dataset inside the HDF5 file as PATH.h5:DATASET, got {uri!r}")
    return path, dataset.strip("/")


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
        self, uri: str, file: Any, name: str, *, read_only: bool, staging: Path | None = None, final: Path | None = None
    ) -> None:
        dataset = file[name]
        super().__init__(uri, dataset.shape, dataset.dtype, read_only=read_only)
        self._file = file
        self._name = name
        self._staging = staging
        self._final = final

    @property
    def _dataset(self) -> Any:
        return self._file[self._name]

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> HDF5Store:
        import h5py

        path, name = split_h5_uri(uri)
        if not os.path.isfile(path):
            raise StoreError(f"no HDF5 file at {path} (from {uri})")
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
            ndim = file[name].ndim
            file.close()
            raise StoreError(f"{uri} has {ndim} dimensions; volumes must be 3-D (Z, Y, X)")
        return cls(uri, file, name, read_only=read_only)

    @classmethod
    def claims(cls, uri: str) -> bool:
        return ".h5" in uri or ".hdf5" in uri

    @classmethod
    def exists(cls, uri: str) -> bool:
        import h5py

        path, name = split_h5_uri(uri)
        if not os.path.isfile(path):
            return False
        with h5py.File(path, "r") as f:
            return name in f

    @classmethod
    def local_path(cls, uri: str) -> Path:
        return Path(split_h5_uri(uri)[0])

    @classmethod
    def check_space(cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike) -> None:
        check_free_space(Path(split_h5_uri(uri)[0]), shape, dtype, uri)

    @classmethod
    def _create(
        cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> HDF5Store:
        import h5py

        path, name = split_h5_uri(uri)
        final = Path(os.path.abspath(path))
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        cls.check_space(uri, shape, dtype)
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
        return cls(uri, file, name, read_only=False, staging=target if staged else None, final=final)

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
