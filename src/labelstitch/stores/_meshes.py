"""Where a segmentation's meshes live: Neuroglancer's precomputed mesh format beside the
volume, with the per-subvolume fragments that made them.

Layout, under ``ROOT``, a folder beside the volume (``seg.zarr.precomputed`` for ``seg.zarr``,
``seg.npy.precomputed`` for ``seg.npy``: outside the volume, so that publishing a re-stitched
volume in its place keeps the meshes for ``--resume`` to update)::

    info                  a precomputed segmentation "info" naming the mesh folder (cloud-volume
                          opens ROOT and finds the meshes; no voxel chunks are kept here)
    mesh/info             {"@type": "neuroglancer_legacy_mesh"} (Neuroglancer opens ROOT/mesh)
    mesh/ID:0             the body's manifest: {"fragments": ["ID:0:0"]}, plus the fingerprint
                          of the labels it was made from
    mesh/ID:0:0           the body's welded mesh: uint32 vertex count, float32 XYZ vertices in
                          physical units, uint32 triangles
    fragments/SV.npz      one subvolume's pieces of every body it holds, with the fingerprint
                          of the labels it read (what ``--resume`` checks)

Every file is written under a temporary name and renamed into place, and a body's manifest
is written after its mesh, so a crash leaves either the old mesh or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..meshing import Mesh
from ._base import StoreError, VolumeRef

__all__ = ["PrecomputedMeshes", "decode_legacy_mesh", "encode_legacy_mesh", "piece_digest"]


def encode_legacy_mesh(mesh: Mesh) -> bytes:
    """A mesh in Neuroglancer's legacy single-resolution fragment format.

    >>> m = Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.uint32))
    >>> len(encode_legacy_mesh(m)), decode_legacy_mesh(encode_legacy_mesh(m)).faces.tolist()
    (52, [[0, 1, 2]])
    """
    return (struct.pack("<I", len(mesh.vertices)) + mesh.vertices.astype("<f4").tobytes()
            + mesh.faces.astype("<u4").tobytes())


def decode_legacy_mesh(data: bytes) -> Mesh:
    """The inverse of :func:`encode_legacy_mesh`."""
    (n,) = struct.unpack_from("<I", data)
    vertices = np.frombuffer(data, "<f4", 3 * n, 4).reshape(n, 3)
    faces = np.frombuffer(data, "<u4", offset=4 + 12 * n).reshape(-1, 3)
    return Mesh(vertices.astype(np.float32), faces.astype(np.uint32))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def piece_digest(mesh: Mesh) -> bytes:
    """What identifies a piece of a body's mesh (a body whose pieces all have the same
    digests as before keeps its mesh)."""
    digest = hashlib.blake2b(mesh.vertices.astype("<f4").tobytes(), digest_size=16)
    digest.update(mesh.faces.astype("<u4").tobytes())
    return digest.hexdigest().encode()


class PrecomputedMeshes:
    """The meshes of one segmentation, in a folder (picklable: it holds only the path)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, ref: VolumeRef) -> PrecomputedMeshes:
        """The meshes of the volume ``ref``: beside its folder or file."""
        local = ref.local_path()
        if local is None:
            raise StoreError(f"meshes are written beside local volumes only, and {ref} is not one; "
                             "write the run to a local zarr output (\"output\": \"seg.zarr\") and mesh that")
        return cls(Path(f"{local}.precomputed"))

    def __repr__(self) -> str:
        return f"PrecomputedMeshes({str(self.root)!r})"

    @property
    def mesh_folder(self) -> Path:
        return self.root / "mesh"

    def exists(self) -> bool:
        return (self.mesh_folder / "info").exists()

    # ------------------------------------------------------------------ lifecycle

    def prepare(self, shape_zyx: tuple[int, ...], resolution_zyx: tuple[float, ...], block: tuple[int, ...]) -> None:
        """Create the folders and the two ``info`` files (the volume's size and voxel size)."""
        for folder in (self.root, self.mesh_folder, self.root / "fragments"):
            folder.mkdir(parents=True, exist_ok=True)
        info = {
            "@type": "neuroglancer_multiscale_volume", "type": "segmentation", "data_type": "uint64",
            "num_channels": 1, "mesh": "mesh",
            "scales": [{"key": "voxels", "resolution": [float(r) for r in resolution_zyx[::-1]],
                        "size": [int(n) for n in shape_zyx[::-1]], "voxel_offset": [0, 0, 0],
                        "chunk_sizes": [[int(b) for b in block[::-1]]], "encoding": "raw"}],
        }
        for path, content in ((self.root / "info", info), (self.mesh_folder / "info", {"@type": "neuroglancer_legacy_mesh"})):
            data = json.dumps(content, indent=1).encode()
            if not path.exists() or path.read_bytes() != data:
                _atomic_write(path, data)

    def clear(self) -> None:
        """Remove every mesh and fragment (``--overwrite``)."""
        if self.root.exists():
            shutil.rmtree(self.root)

    # ------------------------------------------------------------------ per-subvolume fragments

    def _fragment_file(self, sv_id: int) -> Path:
        return self.root / "fragments" / f"{sv_id}.npz"

    def write_fragments(self, sv_id: int, fingerprint: str, pieces: dict[int, Mesh]) -> None:
        bodies = np.array(sorted(pieces), np.uint64)
        ordered = [pieces[int(b)] for b in bodies]
        arrays: dict[str, Any] = {
            "fingerprint": np.array(fingerprint),
            "bodies": bodies,
            "vertex_counts": np.array([len(m.vertices) for m in ordered], np.int64),
            "face_counts": np.array([len(m.faces) for m in ordered], np.int64),
            "digests": np.array([piece_digest(m) for m in ordered], "S32"),
            "vertices": np.concatenate([m.vertices for m in ordered]) if ordered else np.zeros((0, 3), np.float32),
            "faces": np.concatenate([m.faces for m in ordered]) if ordered else np.zeros((0, 3), np.uint32),
        }
        path = self._fragment_file(sv_id)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def fragment_fingerprint(self, sv_id: int) -> tuple[str, NDArray[np.uint64], NDArray[Any]] | None:
        """The fingerprint, bodies and piece digests of a subvolume's fragments, or None if it
        has none yet."""
        path = self._fragment_file(sv_id)
        if not path.exists():
            return None
        try:
            with np.load(path) as found:
                return str(found["fingerprint"]), found["bodies"], found["digests"]
        except (OSError, ValueError, KeyError):  # unreadable: made again
            return None

    def prune_fragments(self, keep: set[int]) -> None:
        """Remove the fragments of subvolumes not in ``keep`` (left by a grid since changed)."""
        for path in (self.root / "fragments").glob("*.npz"):
            if path.stem.isdigit() and int(path.stem) not in keep:
                path.unlink(missing_ok=True)

    def read_fragments(self, sv_id: int) -> dict[int, Mesh]:
        """Every body's piece in one subvolume."""
        with np.load(self._fragment_file(sv_id)) as found:
            bodies, nv, nf = found["bodies"], found["vertex_counts"], found["face_counts"]
            vertices, faces = found["vertices"], found["faces"]
        v0 = np.concatenate([[0], np.cumsum(nv)])
        f0 = np.concatenate([[0], np.cumsum(nf)])
        return {int(b): Mesh(vertices[v0[i]:v0[i + 1]], faces[f0[i]:f0[i + 1]]) for i, b in enumerate(bodies)}

    # ------------------------------------------------------------------ per-body meshes

    def write_body(self, body: int, mesh: Mesh, fingerprint: str) -> None:
        """The body's mesh, then its manifest (which makes it visible)."""
        _atomic_write(self.mesh_folder / f"{body}:0:0", encode_legacy_mesh(mesh))
        manifest = {"fragments": [f"{body}:0:0"], "labelstitch": {"fingerprint": fingerprint}}
        _atomic_write(self.mesh_folder / f"{body}:0", json.dumps(manifest).encode())

    def body_fingerprint(self, body: int) -> str | None:
        try:
            manifest = json.loads((self.mesh_folder / f"{body}:0").read_text())
        except (OSError, ValueError):
            return None
        return manifest.get("labelstitch", {}).get("fingerprint") if isinstance(manifest, dict) else None

    def read_body(self, body: int) -> Mesh:
        """The body's mesh (all fragments its manifest lists, joined)."""
        try:
            manifest = json.loads((self.mesh_folder / f"{body}:0").read_text())
        except FileNotFoundError:
            raise StoreError(f"body {body} has no mesh in {self.root}") from None
        pieces = [decode_legacy_mesh((self.mesh_folder / name).read_bytes()) for name in manifest["fragments"]]
        if len(pieces) == 1:
            return pieces[0]
        starts = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
        return Mesh(np.concatenate([p.vertices for p in pieces]),
                    np.concatenate([p.faces + np.uint32(s) for p, s in zip(pieces, starts)]))

    def bodies(self) -> list[int]:
        """Every body with a mesh."""
        if not self.mesh_folder.exists():
            return []
        return sorted(int(p.name[:-2]) for p in self.mesh_folder.iterdir() if p.name.endswith(":0") and p.name[:-2].isdigit())

    def remove_body(self, body: int) -> None:
        """Forget a body that is no longer in the segmentation (manifest first)."""
        for name in (f"{body}:0", f"{body}:0:0"):
            (self.mesh_folder / name).unlink(missing_ok=True)
