"""``.npy`` volumes, memory-mapped so that only the boxes asked for are read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._base import StoreError, VolumeRef
from ._staging import MemmapStore, staging_path


class NpyStore(MemmapStore):
    """A ``.npy`` file; metadata lives in a ``<file>.json`` sidecar."""

    scheme = "npy"
    suffixes = (".npy",)
    described = ".npy file"

    def __init__(self, ref: VolumeRef, array: np.memmap, *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(ref, array, read_only=read_only, staging=staging)
        self._path = self._file(ref)
        self._metadata: dict[str, Any] | None = None

    @classmethod
    def _map(cls, path: str, *, read_only: bool) -> np.memmap:
        with open(path, "rb") as f:  # a file cut short (a copy that stopped) says so, not "mmap length ..."
            try:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(f)
                needed = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
            except (ValueError, OSError, SyntaxError):
                needed = 0  # not readable as .npy at all: np.load says why
        size = os.path.getsize(path)
        if size < needed:
            raise StoreError(f"{path} is truncated: {size:,} bytes, its header needs {needed:,} (a copy or write that "
                             "stopped part way); copy or write it again")
        return np.load(path, mmap_mode="r" if read_only else "r+")

    @classmethod
    def _map_new(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.memmap:
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    @property
    def _sidecar(self) -> Path:
        return self._path.with_name(self._path.name + ".json")

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is not None:
            return dict(self._metadata)
        return json.loads(self._sidecar.read_text()) if self._sidecar.exists() else {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._check_writable()
        self._metadata = dict(metadata)
        if self._staging is None:
            self._sidecar.write_text(json.dumps(metadata, indent=1))

    def _publish_extras(self) -> None:
        if self._metadata is not None:
            tmp = staging_path(self._sidecar)
            tmp.write_text(json.dumps(self._metadata, indent=1))
            os.replace(tmp, self._sidecar)
