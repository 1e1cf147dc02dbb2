"""zarr volumes: ``path.zarr`` (the array at the root) or ``path.zarr/name`` (an array in a group)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box
from ._base import StoreError, VolumeStore
from ._staging import no_space, remove_stale_staging, staging_path


def split_zarr_uri(uri: str) -> tuple[Path, str]:
    """``"a/b.zarr/c/d"`` -> ``(Path("a/b.zarr"), "c/d")``."""
    head, _, tail = uri.partition(".zarr")
    return Path(head + ".zarr"), tail.strip("/")


class ZarrStore(VolumeStore):
    """A zarr v3 array on the local file system; the embedded default for outputs.

    Outputs are chunked like the plan's blocks, so every subvolume writes whole chunks and
    processes writing different subvolumes never touch the same file.
    """

    scheme = "zarr"
    supports_parallel_writes = True

    def __init__(self, uri: str, array: Any, *, read_only: bool, staging: Path | None = None, final: Path | None = None):
        super().__init__(uri, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._staging = staging
        self._final = final

    @classmethod
    def open(cls, uri: str, *, read_only: bool = True) -> ZarrStore:
        import zarr

        root, name = split_zarr_uri(uri)
        if not (root / name).exists():
            raise StoreError(f"no zarr array at {uri} ({root / name} does not exist)")
        try:
            array = zarr.open_array(store=str(root), path=name, mode="r" if read_only else "r+")
        except Exception as exc:  # zarr raises several types for "not an array"
            raise StoreError(f"cannot open {uri} as a zarr array: {exc}") from exc
        if array.ndim != 3:
            raise StoreError(f"{uri} has {array.ndim} dimensions; volumes must be 3-D (Z, Y, X)")
        return cls(uri, array, read_only=read_only)

    @classmethod
    def claims(cls, uri: str) -> bool:
        return ".zarr" in uri

    @classmethod
    def exists(cls, uri: str) -> bool:
        root, name = split_zarr_uri(uri)
        return (root / name / "zarr.json").exists() or (root / name / ".zarray").exists()

    @classmethod
    def local_path(cls, uri: str) -> Path:
        return Path(uri)

    @classmethod
    def _create(
        cls, uri: str, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> ZarrStore:
        import zarr

        root, name = split_zarr_uri(uri)
        final = root / name
        remove_stale_staging(final)
        target = staging_path(final) if staged else final
        if target.exists():
            shutil.rmtree(target)
        try:
            array = zarr.create_array(
                store=str(target),
                shape=shape,
                dtype=np.dtype(dtype),
                chunks=tuple(min(c, s) for c, s in zip(chunks or (64, 64, 64), shape)),
                fill_value=0,
            )
        except BaseException:
            if staged:
                shutil.rmtree(target, ignore_errors=True)
            raise
        return cls(uri, array, read_only=False, staging=target if staged else None, final=final)

    @property
    def writer_uri(self) -> str:
        """Where other processes open this volume to write into it (the staged copy until commit)."""
        return str(self._staging) if self._staging is not None else self.uri

    @property
    def _folder(self) -> Path:
        root, name = split_zarr_uri(self.uri) if self._final is None else (self._final, "")
        return Path(self._staging) if self._staging is not None else root / name

    def _grid(self) -> tuple[int, ...]:
        return tuple(getattr(self._array, "shards", None) or self._array.chunks)

    def _chunks_under(self, box: Box) -> list[tuple[int, ...]]:
        grid = self._grid()
        ranges = [range(a // g, (b - 1) // g + 1) for a, b, g in zip(box.start, box.stop, grid)]
        return list(itertools.product(*ranges))

    def missing_chunks(self, box: Box) -> list[tuple[int, ...]]:
        encode = self._array.metadata.encode_chunk_key
        return [idx for idx in self._chunks_under(box) if not (self._folder / encode(idx)).exists()]

    @classmethod
    def signature(cls, uri: str) -> dict[str, Any]:
        """The array's metadata file and eight sampled chunk files (size, time, SHA-256)."""
        import zarr

        root, name = split_zarr_uri(uri)
        folder = root / name
        try:
            array = zarr.open_array(store=str(root), path=name, mode="r")
        except Exception:
            return {}
        grid = tuple(getattr(array, "shards", None) or array.chunks)
        counts = [-(-n // g) for n, g in zip(array.shape, grid)]
        total = int(np.prod(counts))
        digest = hashlib.sha256()
        for k in range(min(8, total)):
            idx = np.unravel_index(total * k // min(8, total), counts)
            path = folder / array.metadata.encode_chunk_key(tuple(int(i) for i in idx))
            digest.update(path.read_bytes() if path.exists() else b"missing")
        meta = next((folder / m for m in ("zarr.json", ".zarray") if (folder / m).exists()), None)
        modified = meta.stat().st_mtime_ns if meta is not None else 0
        return {"metadata-modified": modified, "sampled-sha256": digest.hexdigest()}

    def _read(self, box: Box) -> NDArray[Any]:
        try:
            return np.asarray(self._array[box.slices()])
        except OSError:
            raise
        except Exception as exc:  # a codec failing on a damaged chunk
            encode = self._array.metadata.encode_chunk_key
            for idx in self._chunks_under(box):
                chunk = Box(tuple(i * g for i, g in zip(idx, self._grid())),
                            tuple(min((i + 1) * g, n) for i, g, n in zip(idx, self._grid(), self.shape)))
                try:
                    self._array[chunk.slices()]
                except Exception:
                    raise StoreError(
                        f"cannot read {self.uri}: its chunk {encode(idx)} is damaged ({type(exc).__name__}: {exc})"
                    ) from None
            raise StoreError(f"cannot read {self.uri} at {box}: {type(exc).__name__}: {exc}") from None

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        try:
            self._array[box.slices()] = data
        except OSError as exc:
            raise no_space(exc, self.uri, self._staging or self._final or self.uri) from exc

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._array.chunks)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._array.attrs.asdict())

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._check_writable()
        self._array.attrs.clear()
        self._array.attrs.update(metadata)

    def commit(self) -> None:
        """Publish a staged output: rename it over the final path (replacing an old one)."""
        if self._staging is None or self._final is None:
            return
        self._final.parent.mkdir(parents=True, exist_ok=True)
        if self._final.exists():
            old = self._final.with_name(f".old-{os.getpid()}-{self._final.name}")
            os.replace(self._final, old)
            os.replace(self._staging, self._final)
            shutil.rmtree(old)
        else:
            os.replace(self._staging, self._final)
        self._staging = None

    def discard(self) -> None:
        """Remove a staged output that will not be published."""
        if self._staging is not None and self._staging.exists():
            shutil.rmtree(self._staging)
        self._staging = None
