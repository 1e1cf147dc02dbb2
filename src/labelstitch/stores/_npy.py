"""``.npy`` volumes, memory-mapped so that only the boxes asked for are read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._base import StoreError
from ._staging import MemmapStore, staging_path


class NpyStore(MemmapStore):
    """A ``.npy`` file; metadata lives in a ``<file>.json`` sidecar."""

    def __init__(self, uri: str, array: np.memmap, *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(uri, array, read_only=read_only, staging=staging)
        self._path = Path(uri)
        self._metadata: dict[str, Any] | None = None

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> NpyStore:
        if not Path(uri).is_file():
            raise StoreError(f"no .npy file at {uri}")
        try:
            array = np.load(uri, mmap_mode="r" if read_only else "r+")
        except ValueError as exc:
            raise StoreError(f"cannot read {uri} as a .npy array: {exc}") from exc
        if array.ndim != 3:
            raise StoreError(f"{uri} has {array.ndim} dimensions; volumes must be 3-D (Z, Y, X)")
        return cls(uri, array, read_only=read_only)

    @classmethod
    def create(cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, staged: bool) -> NpyStore:
        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        target = staging_path(final) if staged else final
        array = np.lib.format.open_memmap(target, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        return cls(uri, array, read_only=False, staging=target if staged else None)

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
