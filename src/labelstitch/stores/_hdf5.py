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

_ATTR = "labelstitch"


def split_h5_uri(uri: str) -> tuple[str, str]:
    path, sep, dataset = uri.rpartition(":")
    if not sep or not dataset or not path.endswith((".h5", ".hdf5")):
        raise StoreError(f"name the dataset inside the HDF5 file as PATH.h5:DATASET, got {uri!r}")
    return path, dataset.strip("/")


class HDF5Store(VolumeStore):
    """A dataset in an HDF5 file (h5py). Writes go through one process at a time."""

    scheme = "h5"

    def __init__(self, uri: str, file: Any, name: str, *, read_only: bool, staging: str | None = None) -> None:
        dataset = file[staging or name]
        super().__init__(uri, dataset.shape, dataset.dtype, read_only=read_only)
        self._file = file
        self._name = name
        self._staging = staging

    @property
    def _dataset(self) -> Any:
        return self._file[self._staging or self._name]

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> HDF5Store:
        import h5py

        path, name = split_h5_uri(uri)
        if not os.path.isfile(path):
            raise StoreError(f"no HDF5 file at {path} (from {uri})")
        file = h5py.File(path, "r" if read_only else "r+")
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
    def _create(
        cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> HDF5Store:
        import h5py

        path, name = split_h5_uri(uri)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        file = h5py.File(path, "a")
        target = f"{name}.partial-{os.getpid()}" if staged else name
        if target in file:
            del file[target]
        file.create_dataset(
            target,
            shape=tuple(shape),
            dtype=np.dtype(dtype),
            chunks=tuple(min(c, s) for c, s in zip(chunks, shape)) if chunks else True,
            compression="gzip",
            compression_opts=1,
            fillvalue=0,
        )
        return cls(uri, file, name, read_only=False, staging=target if staged else None)

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
        """Publish a staged dataset: move it to its final name within the file."""
        if self._staging is None:
            return
        if self._name in self._file:
            del self._file[self._name]
        self._file.move(self._staging, self._name)
        self._staging = None
        self._file.flush()

    def discard(self) -> None:
        if self._staging is not None and self._staging in self._file:
            del self._file[self._staging]
        self._staging = None

    def close(self) -> None:
        self._file.close()
