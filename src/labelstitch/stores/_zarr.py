"""zarr volumes: OME-Zarr 0.5 multiscale groups (``path.zarr``), any of their arrays
(``path.zarr/1``), and plain zarr arrays (``path.zarr`` or ``path.zarr/name``).

A volume string names a zarr volume when one of its path components ends with ``.zarr``:
the first such component is the container (the root group's folder) and the rest the
array or group inside it. ``proj.zarrs/seg.zarr`` is the container ``seg.zarr`` inside the
plain folder ``proj.zarrs``, never an array ``s/seg.zarr`` of a group ``proj.zarr``.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box, Plan
from ..pyramid import downsample_image, downsample_labels, level_shapes
from ._base import StoreError, VolumeRef, VolumeStore, not_three_d, local_path_of
from ._staging import no_space, publish_folder, remove_stale_staging, staging_path

#: the OME-Zarr version written (zarr v3, metadata under the ``ome`` attribute)
OME_VERSION = "0.5"
#: labelstitch's own metadata in an OME-Zarr group's attributes
ATTR = "labelstitch"
#: the axes of every volume, as OME-Zarr and zarr's dimension names spell them
AXES = ("z", "y", "x")

#: one chunk of a pyramid level: (level above, this level, (start, stop) in this level, labels?)
PyramidItem = tuple[str, str, tuple[tuple[int, ...], tuple[int, ...]], bool]


def _is_label_dtype(dtype: np.dtype[Any]) -> bool:
    """Integers of 32 bits or more are segmentations (label images); smaller ones grayscale."""
    return bool(np.issubdtype(dtype, np.integer) and dtype.itemsize >= 4)


def multiscales(name: str, shapes: list[tuple[int, ...]], voxel_size: tuple[float, ...]) -> dict[str, Any]:
    """OME-Zarr ``multiscales`` metadata: level k is 2**k times coarser and offset by half
    its extra voxel size, so every level covers the same physical box."""
    datasets = []
    for level in range(len(shapes)):
        factor = 2.0**level
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(v) * factor for v in voxel_size]}]
        if level:
            transforms.append({"type": "translation", "translation": [float(v) * (factor - 1) / 2 for v in voxel_size]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    axes = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in AXES]
    return {"name": name, "axes": axes, "datasets": datasets}


def downsample_chunk(item: PyramidItem) -> None:
    """One chunk of one pyramid level, from twice its box in the level above (runs in workers)."""
    import zarr

    source, target, (start, stop), labels = item
    src = zarr.open_array(source, mode="r")
    dst = zarr.open_array(target, mode="r+")
    above = tuple(slice(2 * a, min(2 * b, n)) for a, b, n in zip(start, stop, src.shape))
    data = np.asarray(src[above])
    try:
        dst[tuple(slice(a, b) for a, b in zip(start, stop))] = downsample_labels(data) if labels else downsample_image(data)
    except OSError as exc:
        raise no_space(exc, target, target) from exc


class ZarrStore(VolumeStore):
    """A zarr v3 volume on the local file system; the embedded default for outputs.

    Volumes it creates are OME-Zarr 0.5 multiscale images: a group whose array ``0`` holds
    the data (chunked like the plan's subvolumes, so every subvolume writes whole chunks and
    processes writing different subvolumes never touch the same file), and arrays ``1``,
    ``2``, ... each half the size of the one before, down to one chunk (labels by DVID's
    downsampling rule, grayscale by the mean), built by :meth:`build_pyramid`. Integer
    volumes of 32 bits or more are written as label images (``image-label``). It opens such a
    group (its array ``0``), any of its arrays (``seg.zarr/1``) and plain zarr arrays.
    """

    scheme = "zarr"
    supports_parallel_writes = True
    records_voxel_size = True

    def __init__(
        self,
        ref: VolumeRef,
        array: Any,
        *,
        read_only: bool,
        folder: Path,
        group: Any = None,
        staging: Path | None = None,
        final: Path | None = None,
    ) -> None:
        super().__init__(ref, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._group = group
        self._folder = folder  # the group's (or plain array's) folder: the staged one until commit
        self._staging = staging
        self._final = final

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def claims(cls, text: str) -> bool:
        return any(part.endswith(".zarr") for part in text.rstrip("/").split("/"))

    @classmethod
    def parse(cls, text: str, base: Path) -> VolumeRef:
        """``path`` is the first folder named ``*.zarr``, ``inner`` the array path below it."""
        path = local_path_of(text, base)
        parts = path.parts
        root = next(i for i, part in enumerate(parts) if part.endswith(".zarr"))
        return VolumeRef(cls, str(path), Path(*parts[: root + 1]), "/".join(parts[root + 1 :]))

    @staticmethod
    def _folder_of(ref: VolumeRef) -> Path:
        assert ref.path is not None
        return ref.path / ref.inner if ref.inner else ref.path

    @classmethod
    def exists(cls, ref: VolumeRef) -> bool:
        folder = cls._folder_of(ref)
        return (folder / "zarr.json").exists() or (folder / ".zarray").exists()

    @classmethod
    def local_path(cls, ref: VolumeRef) -> Path:
        return cls._folder_of(ref)

    @classmethod
    def served_files(cls, ref: VolumeRef) -> Path | None:
        try:
            store = cls.open(ref)
        except StoreError:
            return None
        return store._folder if store._group is not None else None

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> ZarrStore:
        import zarr

        folder = cls._folder_of(ref)
        if not folder.exists():
            raise StoreError(f"no zarr volume at {ref} ({folder} does not exist)")
        try:
            node = zarr.open(store=str(folder), mode="r" if read_only else "r+")
        except Exception as exc:  # zarr raises several types for "not an array"
            raise StoreError(f"cannot open {ref} as a zarr volume: {exc}") from exc
        group = None
        if isinstance(node, zarr.Group):
            scales = node.attrs.get("ome", node.attrs).get("multiscales")
            if not scales:
                names = ", ".join(sorted(node.array_keys())) or "none"
                raise StoreError(f"{ref} is a zarr group without OME-Zarr multiscales; name one of its arrays ({names})")
            group, node = node, node[scales[0]["datasets"][0]["path"]]
        if node.ndim != 3:
            raise not_three_d(ref, tuple(node.shape))
        return cls(ref, node, read_only=read_only, folder=folder, group=group)

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> ZarrStore:
        import zarr

        final = cls._folder_of(ref)
        remove_stale_staging(final)
        target = staging_path(final) if staged else final
        if target.exists():
            shutil.rmtree(target)
        dtype = np.dtype(dtype)
        try:
            group = zarr.open_group(str(target), mode="w", zarr_format=3)
            array = group.create_array(
                "0", shape=shape, dtype=dtype, fill_value=0, dimension_names=AXES,
                chunks=tuple(min(c, s) for c, s in zip(chunks or (64, 64, 64), shape)),
            )
            ome: dict[str, Any] = {"version": OME_VERSION, "multiscales": [multiscales(final.name, [shape], (1.0, 1.0, 1.0))]}
            if _is_label_dtype(dtype):
                ome["image-label"] = {}
            group.attrs["ome"] = ome
        except BaseException:
            if staged:
                shutil.rmtree(target, ignore_errors=True)
            raise
        return cls(ref, array, read_only=False, folder=target, group=group, staging=target if staged else None, final=final)

    def commit(self) -> None:
        """Publish a staged output: rename it over the final path, replacing an old one. Its
        metadata lists the levels built so far (:meth:`build_pyramid`), level 0 at least."""
        if self._staging is None or self._final is None:
            return
        publish_folder(self._staging, self._final)
        self._folder = self._final
        self._staging = None

    def discard(self) -> None:
        """Remove a staged output that will not be published."""
        if self._staging is not None and self._staging.exists():
            shutil.rmtree(self._staging)
        self._staging = None

    @property
    def writer(self) -> VolumeRef:
        """Where other processes open this volume to write into it (the staged array until commit)."""
        if self._group is not None:
            return VolumeRef(ZarrStore, str(self._folder / "0"), self._folder, "0")
        if self._staging is not None:
            return VolumeRef(ZarrStore, str(self._staging), self._staging)
        return self.ref

    # ------------------------------------------------------------------ what it holds

    @property
    def _array_folder(self) -> Path:
        return self._folder / "0" if self._group is not None else self._folder

    def _grid(self) -> tuple[int, ...]:
        return tuple(getattr(self._array, "shards", None) or self._array.chunks)

    def _chunks_under(self, box: Box) -> list[tuple[int, ...]]:
        grid = self._grid()
        ranges = [range(a // g, (b - 1) // g + 1) for a, b, g in zip(box.start, box.stop, grid)]
        return list(itertools.product(*ranges))

    def missing_chunks(self, box: Box) -> list[tuple[int, ...]]:
        encode = self._array.metadata.encode_chunk_key
        return [idx for idx in self._chunks_under(box) if not (self._array_folder / encode(idx)).exists()]

    @classmethod
    def signature(cls, ref: VolumeRef) -> dict[str, Any]:
        """The array's metadata file and eight sampled chunk files (their SHA-256)."""
        try:
            store = cls.open(ref)
        except StoreError:
            return {}
        array, folder = store._array, store._array_folder
        counts = [-(-n // g) for n, g in zip(array.shape, store._grid())]
        total = int(np.prod(counts))
        digest = hashlib.sha256()
        for k in range(min(8, total)):
            idx = np.unravel_index(total * k // min(8, total), counts)
            path = folder / array.metadata.encode_chunk_key(tuple(int(i) for i in idx))
            digest.update(path.read_bytes() if path.exists() else b"missing")
        meta = folder / "zarr.json" if (folder / "zarr.json").exists() else folder / ".zarray"
        modified = meta.stat().st_mtime_ns if meta.exists() else 0
        return {"metadata-modified": modified, "sampled-sha256": digest.hexdigest()}

    def _read(self, box: Box) -> NDArray[Any]:
        try:
            return np.asarray(self._array[box.slices()])
        except OSError:
            raise
        except Exception as exc:  # a codec failing on a damaged chunk: find and name it
            encode = self._array.metadata.encode_chunk_key
            grid = self._grid()
            for idx in self._chunks_under(box):
                chunk = Box(tuple(i * g for i, g in zip(idx, grid)),
                            tuple(min((i + 1) * g, n) for i, g, n in zip(idx, grid, self.shape)))
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
        if self._group is not None:
            return dict(self._group.attrs.get(ATTR, {}))
        return dict(self._array.attrs.asdict())

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._check_writable()
        if self._group is not None:
            self._group.attrs[ATTR] = metadata
            return
        self._array.attrs.clear()
        self._array.attrs.update(metadata)

    # ------------------------------------------------------------------ physical size and pyramid

    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        """Nanometres per voxel along Z, Y, X, from the OME-Zarr metadata (None: not recorded)."""
        if self._group is None:
            return None
        ome = self._group.attrs.get("ome", self._group.attrs)
        for transform in ome["multiscales"][0]["datasets"][0].get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                size = tuple(float(v) for v in transform["scale"])
                return size if len(size) == 3 else None  # type: ignore[return-value]
        return None

    def set_voxel_size(self, size: tuple[float, float, float]) -> None:
        """Record the physical voxel size (nanometres, Z, Y, X) in the OME-Zarr metadata."""
        self._check_writable()
        if self._group is None:
            return
        self._write_multiscales(size, len(self._levels()))

    def _levels(self) -> list[str]:
        ome = self._group.attrs.get("ome", {})
        return [d["path"] for d in ome["multiscales"][0]["datasets"]]

    def _write_multiscales(self, size: tuple[float, ...], count: int) -> None:
        ome = dict(self._group.attrs["ome"])
        shapes = level_shapes(self.shape, self.chunks)[:count]
        name = (self._final or self._folder).name
        ome["multiscales"] = [multiscales(name, shapes, size)]
        self._group.attrs["ome"] = ome

    def build_pyramid(self, mapper: Callable[[Callable[[PyramidItem], None], Iterable[PyramidItem]], Iterable[Any]]) -> int:
        """Write every lower level of a created multiscale volume, level by level, one chunk
        per item through ``mapper(downsample_chunk, items)`` (``map``, or an executor's map,
        so that workers build it); nothing larger than two chunks is ever in memory. Returns
        the number of levels."""
        self._check_writable()
        if self._group is None:
            return 1
        shapes = level_shapes(self.shape, self.chunks)
        labels = _is_label_dtype(self.dtype)
        size = self.voxel_size or (1.0, 1.0, 1.0)
        for level in range(1, len(shapes)):
            chunks = tuple(min(c, n) for c, n in zip(self.chunks, shapes[level]))
            if str(level) not in self._group:
                self._group.create_array(
                    str(level), shape=shapes[level], dtype=self.dtype, chunks=chunks, fill_value=0, dimension_names=AXES
                )
            items = [
                (str(self._folder / str(level - 1)), str(self._folder / str(level)),
                 (sv.interior.start, sv.interior.stop), labels)
                for sv in Plan.grid(shapes[level], chunks, 0)
            ]
            for _ in mapper(downsample_chunk, items):
                pass
        self._write_multiscales(size, len(shapes))
        return len(shapes)
