"""Where a segmentation's meshes and skeletons live: Neuroglancer's precomputed formats in a
folder beside the volume, with the per-subvolume pieces that made them.

Layout, under ``ROOT`` (``seg.zarr.precomputed`` beside ``seg.zarr``, ``seg.npy.precomputed``
beside ``seg.npy``: outside the volume, so that publishing a re-stitched volume in its place
keeps them for ``--resume`` to update)::

    info                  a precomputed segmentation "info" naming the two folders below
                          (cloud-volume opens ROOT and finds both; no voxel chunks are kept here)
    mesh/info             {"@type": "neuroglancer_legacy_mesh"} (Neuroglancer opens ROOT/mesh)
    mesh/ID:0             a body's manifest: {"fragments": ["ID:0:0"]}
    mesh/ID:0:0           its welded mesh: uint32 vertex count, float32 XYZ vertices in physical
                          units, uint32 triangles
    (or, with several levels of detail, Neuroglancer's multi-resolution format:)
    mesh/info             {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": 16, ...}
    mesh/ID.index         the body's manifest: one octree node per level of detail
    mesh/ID               the levels' Draco-encoded meshes, finest first
    skeletons/info        {"@type": "neuroglancer_skeletons", ...} with a radius per vertex
    skeletons/ID          a body's skeleton: uint32 vertex and edge counts, float32 XYZ vertices,
                          uint32 edges, float32 radii
    (with sharding, KIND/ holds its info and N.shard files, packed from the per-body files
    above, which are kept in unsharded/KIND/)
    fragments/KIND/SV.npz one subvolume's pieces of every body it holds, with the fingerprint of
                          the labels it read (what ``--resume`` checks)
    fingerprints/KIND/ID  what a body's mesh or skeleton was made from

Every file is written under a temporary name and renamed into place, and a body's
fingerprint is written after the body's files, so a crash leaves either the old shape with its
fingerprint or a shape that ``--resume`` makes again.

For a DVID output the folder is kept locally (``WORK/NAME.precomputed``, or
``WORK/NAME_supervoxels.precomputed`` for a labelmap's supervoxels: the pieces need a file
system), and every shape also goes where FlyEM's tools read it (:mod:`._dvid_shapes`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray

from ..meshing import Mesh, stack
from ..skeletons import Skeleton
from ._base import StoreError, VolumeRef
from ._dvid_shapes import DvidShapes
from ._shape_formats import (QUANTIZATION_BITS, SKELETON_INFO, decode_legacy_mesh, decode_multilod, decode_skeleton,
                             encode_legacy_mesh, encode_multilod, encode_shard, encode_skeleton, encode_swc, read_shard_chunk,
                             read_skeletons, shard_location, sharding_spec)

__all__ = ["KINDS", "PrecomputedShapes", "decode_legacy_mesh", "decode_multilod", "decode_skeleton", "encode_legacy_mesh",
           "encode_multilod", "read_skeletons",
           "encode_skeleton", "encode_swc", "piece_digest", "write_swc"]

#: the kinds of shape, and the folder each lives in
KINDS = {"mesh": "mesh", "skeletons": "skeletons"}

_KIND_INFO = {
    "mesh": {"@type": "neuroglancer_legacy_mesh"},
    "multilod": {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": QUANTIZATION_BITS,
                 "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "lod_scale_multiplier": 1.0},
    "skeletons": SKELETON_INFO,
}


def piece_digest(arrays: dict[str, NDArray[Any]]) -> bytes:
    """What identifies a piece of a body's shape (a body whose pieces all have the same
    digests as before keeps its shape)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest().encode()


def write_swc(path: Path, skeleton: Skeleton, body: int) -> None:
    """A body's skeleton as an SWC file, written whole or not at all."""
    _atomic_write(path, encode_swc(skeleton, body).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PrecomputedShapes:
    """The meshes and skeletons of one segmentation, in a folder (picklable: it holds only
    the path). ``kind`` arguments are ``"mesh"`` or ``"skeletons"``."""

    def __init__(self, root: str | os.PathLike[str], dvid: str | None = None, lods: int = 1, sharded: bool = False) -> None:
        self.root = Path(root)
        self.dvid = dvid  # a DVID volume's address: its shapes are posted beside it too
        self.lods = lods  # levels of detail of the meshes
        self.sharded = sharded  # shard files for viewers; the per-body files are kept under unsharded/
        self._dvid = DvidShapes(dvid) if dvid is not None else None
        self._held: list[tuple[Path, bytes]] | None = None  # fingerprints written once their shapes are posted

    def with_options(self, lods: int = 1, sharded: bool = False) -> PrecomputedShapes:
        return PrecomputedShapes(self.root, self.dvid, lods, sharded)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_held": None}

    @property
    def multires(self) -> bool:
        """Whether meshes are in the multi-resolution format (several levels, or sharded:
        Neuroglancer shards only that format)."""
        return self.lods > 1 or self.sharded

    @classmethod
    def of(cls, ref: VolumeRef, work: str | os.PathLike[str] | None = None) -> PrecomputedShapes:
        """The shapes of the volume ``ref``: beside its folder or file; for a DVID volume, in
        ``work`` (a local folder for the pieces) and in DVID keyvalue instances."""
        local = ref.local_path()
        if local is not None:
            return cls(Path(f"{local}.precomputed"))
        base = ref.side_file_base(work)
        if ref.scheme != "dvid" or base is None:
            raise StoreError(f"{ref} is not a local volume: give a local folder for the meshes' and skeletons' pieces "
                             "(--work DIR)")
        if ref.detail.options.get("supervoxels") == "true":
            return cls(Path(f"{base}_supervoxels.precomputed"), dvid=ref.text)
        return cls(Path(f"{base}.precomputed"), dvid=ref.text)

    def __repr__(self) -> str:
        return f"PrecomputedShapes({str(self.root)!r}, dvid={self.dvid!r})"

    # ------------------------------------------------------------------ DVID

    @contextmanager
    def batched_posts(self) -> Iterator[None]:
        """Supervoxel meshes written inside are posted together at the end, as tars
        (``POST load``), and only then get their fingerprints, so that a crash before the post
        leaves them to be made again; other shapes are posted one by one as they are written."""
        if self._dvid is None or not self._dvid.supervoxels:
            yield
            return
        self._held = []
        try:
            with self._dvid.batched():
                yield
            for path, data in self._held:
                _atomic_write(path, data)
        finally:
            self._held = None

    def fetch_dvid(self, kind: str, body: int) -> bytes:
        """A body's shape as DVID serves it (the ``.ngmesh`` bytes, the SWC text, or a
        supervoxel's ``.drc``)."""
        if self._dvid is None:
            raise StoreError(f"{self.root} belongs to no DVID volume")
        return self._dvid.fetch(kind, body)

    def _post(self, kind: str, body: int, data: bytes | None) -> None:
        if self._dvid is not None:
            self._dvid.post(kind, body, data)

    def _dvid_mesh(self, mesh: Mesh) -> bytes:
        return self._dvid.mesh_bytes(mesh) if self._dvid is not None else b""

    def folder(self, kind: str) -> Path:
        """Where viewers read ``kind``: its ``info`` and the per-body files or the shards."""
        return self.root / KINDS[kind]

    def body_folder(self, kind: str) -> Path:
        """Where the per-body files are: the viewers' folder, or ``unsharded/`` with shards."""
        return self.root / "unsharded" / KINDS[kind] if self.sharded else self.folder(kind)

    def exists(self, kind: str) -> bool:
        return (self.folder(kind) / "info").exists()

    # ------------------------------------------------------------------ lifecycle

    def prepare(self, kind: str, shape_zyx: tuple[int, ...], resolution_zyx: tuple[float, ...], block: tuple[int, ...]) -> None:
        """Create the folders and the ``info`` files (the volume's size and voxel size; the
        root's names every kind made so far)."""
        for folder in (self.folder(kind), self.body_folder(kind), self.root / "fragments" / kind, self.root / "fingerprints" / kind):
            folder.mkdir(parents=True, exist_ok=True)
        info = {
            "@type": "neuroglancer_multiscale_volume", "type": "segmentation", "data_type": "uint64", "num_channels": 1,
            **{k: KINDS[k] for k in KINDS if k == kind or self.exists(k)},
            "scales": [{"key": "voxels", "resolution": [float(r) for r in resolution_zyx[::-1]],
                        "size": [int(n) for n in shape_zyx[::-1]], "voxel_offset": [0, 0, 0],
                        "chunk_sizes": [[int(b) for b in block[::-1]]], "encoding": "raw"}],
        }
        kind_info = _KIND_INFO["multilod" if kind == "mesh" and self.multires else kind]
        if self.sharded:  # the shards' parameters are added once the bodies are known (shard_layout)
            kind_info = {**kind_info, "sharding": self.shard_spec(kind) or sharding_spec(0)}
        for path, content in ((self.root / "info", info), (self.folder(kind) / "info", kind_info)):
            data = json.dumps(content, indent=1).encode()
            if not path.exists() or path.read_bytes() != data:
                _atomic_write(path, data)
        if self._dvid is not None:
            self._dvid.create(kind)

    def clear(self, kind: str) -> None:
        """Remove every shape of ``kind`` and its pieces (``--overwrite``)."""
        for folder in (self.folder(kind), self.root / "unsharded" / KINDS[kind], self.root / "fragments" / kind,
                       self.root / "fingerprints" / kind):
            if folder.exists():
                shutil.rmtree(folder)

    # ------------------------------------------------------------------ per-subvolume pieces

    def _fragment_file(self, kind: str, sv_id: int) -> Path:
        return self.root / "fragments" / kind / f"{sv_id}.npz"

    def write_fragments(self, kind: str, sv_id: int, fingerprint: str,
                        pieces: dict[int, dict[str, NDArray[Any]]]) -> tuple[NDArray[np.uint64], NDArray[Any]]:
        """One subvolume's pieces: per body, arrays by name (the same names for every body).
        Returns the bodies and their pieces' digests, as :meth:`fragment_fingerprint` reads them."""
        bodies = sorted(pieces)
        arrays: dict[str, Any] = {"fingerprint": np.array(fingerprint), "bodies": np.array(bodies, np.uint64),
                                  "digests": np.array([piece_digest(pieces[b]) for b in bodies], "S32")}
        names = sorted(pieces[bodies[0]]) if bodies else []
        for name in names:
            parts = [pieces[b][name] for b in bodies]
            arrays[f"n_{name}"] = np.array([len(p) for p in parts], np.int64)
            arrays[f"a_{name}"] = np.concatenate(parts)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _atomic_write(self._fragment_file(kind, sv_id), buffer.getvalue())
        return arrays["bodies"], arrays["digests"]

    def fragment_fingerprint(self, kind: str, sv_id: int) -> tuple[str, NDArray[np.uint64], NDArray[Any]] | None:
        """The fingerprint, bodies and piece digests of a subvolume's pieces, or None if it
        has none yet (or they cannot be read)."""
        path = self._fragment_file(kind, sv_id)
        if not path.exists():
            return None
        try:
            with np.load(path) as found:
                return str(found["fingerprint"]), found["bodies"], found["digests"]
        except (OSError, ValueError, KeyError):  # unreadable: made again
            return None

    def prune_fragments(self, kind: str, keep: set[int]) -> None:
        """Remove the pieces of subvolumes not in ``keep`` (left by a grid since changed)."""
        for path in (self.root / "fragments" / kind).glob("*.npz"):
            if path.stem.isdigit() and int(path.stem) not in keep:
                path.unlink(missing_ok=True)

    def read_fragments(self, kind: str, sv_id: int) -> dict[int, dict[str, NDArray[Any]]]:
        """Every body's piece in one subvolume."""
        with np.load(self._fragment_file(kind, sv_id)) as found:
            bodies = found["bodies"]
            names = [k[2:] for k in found.files if k.startswith("a_")]
            columns = {name: (found[f"a_{name}"], np.concatenate([[0], np.cumsum(found[f"n_{name}"])])) for name in names}
        return {int(b): {name: a[s[i]:s[i + 1]] for name, (a, s) in columns.items()} for i, b in enumerate(bodies)}

    # ------------------------------------------------------------------ per-body shapes

    def _fingerprint_file(self, kind: str, body: int) -> Path:
        return self.root / "fingerprints" / kind / str(body)

    def mesh_format(self) -> str:
        """``"legacy"`` or ``"multilod"``: what the mesh folder holds (its ``info``)."""
        try:
            found = json.loads((self.folder("mesh") / "info").read_text()).get("@type")
        except (OSError, ValueError):
            return "multilod" if self.multires else "legacy"
        return "multilod" if found == "neuroglancer_multilod_draco" else "legacy"

    def write_mesh(self, body: int, levels: list[Mesh], fingerprint: str) -> None:
        """The body's mesh (its levels of detail, finest first), its manifest (which makes it
        visible), then its fingerprint."""
        folder = self.body_folder("mesh")
        if self.multires:
            index, data = encode_multilod(levels)
            _atomic_write(folder / str(body), data)
            _atomic_write(folder / f"{body}.index", index)
        else:
            _atomic_write(folder / f"{body}:0:0", encode_legacy_mesh(levels[0]))
            _atomic_write(folder / f"{body}:0", json.dumps({"fragments": [f"{body}:0:0"]}).encode())
        self._post("mesh", body, self._dvid_mesh(levels[0]))
        self._set_fingerprint("mesh", body, fingerprint)

    def _set_fingerprint(self, kind: str, body: int, fingerprint: str) -> None:
        if self._held is not None:
            self._held.append((self._fingerprint_file(kind, body), fingerprint.encode()))
        else:
            _atomic_write(self._fingerprint_file(kind, body), fingerprint.encode())

    def write_skeleton(self, body: int, skeleton: Skeleton, fingerprint: str) -> None:
        """The body's skeleton, then its fingerprint."""
        _atomic_write(self.body_folder("skeletons") / str(body), encode_skeleton(skeleton))
        self._post("skeletons", body, encode_swc(skeleton, body).encode())
        _atomic_write(self._fingerprint_file("skeletons", body), fingerprint.encode())

    def _body_files(self, kind: str, body: int) -> list[Path]:
        if kind == "mesh" and self.multires:
            names: tuple[str, ...] = (f"{body}.index", str(body))
        else:
            names = (f"{body}:0", f"{body}:0:0") if kind == "mesh" else (str(body),)
        return [self.body_folder(kind) / name for name in names]

    def body_fingerprint(self, kind: str, body: int) -> str | None:
        """What the body's shape was made from (None: it has none, or its files are gone)."""
        try:
            found = self._fingerprint_file(kind, body).read_text()
        except OSError:
            return None
        return found if all(path.exists() for path in self._body_files(kind, body)) else None

    def read_mesh(self, body: int, lod: int = 0) -> Mesh:
        """The body's mesh (all fragments its manifest lists, joined), at level of detail
        ``lod`` where the folder has several."""
        folder = self.body_folder("mesh")
        if self.mesh_format() == "multilod":
            try:
                return decode_multilod((folder / f"{body}.index").read_bytes(), (folder / str(body)).read_bytes(), lod)
            except FileNotFoundError:
                raise StoreError(f"body {body} has no mesh in {self.root}") from None
        try:
            manifest = json.loads((folder / f"{body}:0").read_text())
        except FileNotFoundError:
            raise StoreError(f"body {body} has no mesh in {self.root}") from None
        pieces = [decode_legacy_mesh((folder / name).read_bytes()) for name in manifest["fragments"]]
        if len(pieces) == 1:
            return pieces[0]
        vertices, faces = stack([p.vertices for p in pieces], [p.faces for p in pieces])
        return Mesh(vertices.astype(np.float32), faces.astype(np.uint32))

    def read_skeleton(self, body: int) -> Skeleton:
        try:
            return decode_skeleton((self.body_folder("skeletons") / str(body)).read_bytes())
        except FileNotFoundError:
            raise StoreError(f"body {body} has no skeleton in {self.root}") from None

    def bodies(self, kind: str) -> list[int]:
        """Every body with a shape of ``kind``."""
        folder = self.root / "fingerprints" / kind
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []

    def fingerprints(self, kind: str) -> dict[str, int]:
        """What each body's shape was made from: ``{fingerprint: body}`` (a body renumbered by
        a re-stitch, with the same voxels, finds its old shape here)."""
        return {found: body for body in self.bodies(kind) if (found := self.body_fingerprint(kind, body)) is not None}

    def _staged(self, kind: str, body: int) -> list[Path]:
        return [self.root / "staging" / kind / f"{body}.{k}" for k in range(len(self._body_files(kind, body)))]

    def stage_copy(self, kind: str, donor: int, body: int) -> None:
        """Copy ``donor``'s shape files aside for ``body`` (the same voxels under a new id), before
        anything overwrites the donor's files: :meth:`adopt_staged` then puts them in place."""
        for source, target in zip(self._body_files(kind, donor), self._staged(kind, body)):
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, source.read_bytes())

    def adopt_staged(self, kind: str, body: int, fingerprint: str) -> None:
        """Give ``body`` the shape :meth:`stage_copy` set aside for it, byte for byte."""
        staged, target = self._staged(kind, body), self._body_files(kind, body)
        if kind == "mesh" and not self.multires:  # the manifest names the fragment: made anew
            staged[0].unlink(missing_ok=True)
            staged, target = staged[1:], target[1:]
        for a, b in zip(staged, target):
            os.replace(a, b)
        if kind == "mesh":
            if not self.multires:
                _atomic_write(self._body_files(kind, body)[0], json.dumps({"fragments": [f"{body}:0:0"]}).encode())
            self._post("mesh", body, self._dvid_mesh(self.read_mesh(body)))
        else:
            self._post("skeletons", body, encode_swc(self.read_skeleton(body), body).encode())
        self._set_fingerprint(kind, body, fingerprint)

    def clear_staging(self, kind: str) -> None:
        shutil.rmtree(self.root / "staging" / kind, ignore_errors=True)

    def remove_body(self, kind: str, body: int) -> None:
        """Forget a body that is no longer in the segmentation (in DVID first, then its
        fingerprint: a crash in between leaves it listed, to be removed again)."""
        self._post(kind, body, None)
        self._fingerprint_file(kind, body).unlink(missing_ok=True)
        for path in self._body_files(kind, body):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ shards

    def shard_spec(self, kind: str) -> dict[str, Any] | None:
        """The sharding parameters ``kind``'s ``info`` records (None: not sharded yet)."""
        try:
            return json.loads((self.folder(kind) / "info").read_text()).get("sharding")
        except (OSError, ValueError):
            return None

    def shard_layout(self, kind: str, bodies: list[int]) -> dict[str, list[int]]:
        """The shard file of every body, under the parameters the ``info`` records, or new ones
        sized for ``bodies`` (written into the ``info``) when it records none for any body yet."""
        spec = self.shard_spec(kind)
        if spec is None or not any((self.folder(kind)).glob("*.shard")):
            spec = sharding_spec(len(bodies))
            path = self.folder(kind) / "info"
            info = json.loads(path.read_text())
            _atomic_write(path, json.dumps({**info, "sharding": spec}, indent=1).encode())
        layout: dict[str, list[int]] = {}
        for body in bodies:
            layout.setdefault(shard_location(body, spec)[0], []).append(body)
        return layout

    def pack_shard(self, kind: str, name: str, bodies: list[int]) -> int:
        """Write the shard file ``name`` of ``bodies`` from their per-body files (removed when
        it holds none); returns its size in bytes."""
        spec = self.shard_spec(kind)
        assert spec is not None
        chunks = {}
        for body in bodies:
            if kind == "mesh":
                folder = self.body_folder("mesh")
                chunks[body] = ((folder / str(body)).read_bytes(), (folder / f"{body}.index").read_bytes())
            else:
                chunks[body] = (b"", (self.body_folder("skeletons") / str(body)).read_bytes())
        path = self.folder(kind) / name
        if not chunks:
            path.unlink(missing_ok=True)
            return 0
        data = encode_shard(chunks, spec)
        _atomic_write(path, data)
        return len(data)

    def read_sharded(self, kind: str, body: int) -> bytes | None:
        """A body's chunk as a viewer reads it from the shards (a multi-resolution mesh's
        manifest, or the skeleton)."""
        spec = self.shard_spec(kind)
        if spec is None:
            return None
        path = self.folder(kind) / shard_location(body, spec)[0]
        return read_shard_chunk(path.read_bytes(), body, spec) if path.exists() else None

