"""Meshes of a segmentation's bodies, made block by block (``labelstitch mesh``).

Two passes over the same executors as a run:

1. every subvolume of the output's grid meshes the bodies of its cells (:mod:`labelstitch.meshing`)
   and keeps the pieces in a fragment file, with a fingerprint of the labels it read;
2. every body's pieces are welded into one closed mesh, simplified to the stated error, and
   written in Neuroglancer's precomputed format.

The driver holds only which bodies each subvolume holds. With ``resume`` a subvolume whose
labels are unchanged keeps its fragments, and a body whose pieces are unchanged keeps its
mesh, so after a re-stitch or a crash only what changed is meshed again.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..executors import Executor
from ..geometry import Plan, Subvolume
from ..locks import hold
from ..meshing import Mesh, mesh_labels, mesh_read_box, open_edges, simplify, weld
from ..stores import StoreError, VolumeRef, open_volume, parse_volume
from ..stores import PrecomputedMeshes
from ..stores._meshes import piece_digest
from .progress import bar
from .scoring import plan_of_output
from .values import ExecutorChoice

__all__ = ["MeshSummary", "mesh"]

#: changes when the meshes this module makes change, so fingerprints from older ones mismatch
_FORMAT = "labelstitch-mesh-1"


@dataclass
class MeshSummary:
    """What :func:`mesh` did: where the meshes are, how many subvolumes and bodies were
    meshed or kept from before, and the bodies whose welded mesh is not closed."""

    root: str
    subvolumes: int = 0
    subvolumes_kept: int = 0
    bodies: int = 0
    bodies_kept: int = 0
    removed: int = 0
    triangles: int = 0
    not_closed: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        text = (f"meshes of {self.bodies} bodies in {self.root} ({self.triangles} triangles); "
                f"{self.subvolumes} subvolumes meshed, {self.subvolumes_kept} kept, "
                f"{self.bodies_kept} bodies unchanged")
        if self.removed:
            text += f", {self.removed} meshes of bodies no longer present removed"
        if self.not_closed:
            text += f"\nwarning: {len(self.not_closed)} bodies are not closed surfaces (e.g. {self.not_closed[:5]})"
        return text


@dataclass(frozen=True)
class _MeshSubvolume:
    """Step 1 for one subvolume (runs in workers): its fragments, unless they are current."""

    source: VolumeRef
    meshes: PrecomputedMeshes
    resolution: tuple[float, float, float]
    max_error: float  # 0: the pieces are not simplified (the welded body is)
    bodies: tuple[int, ...] | None
    resume: bool

    def __call__(self, sv: Subvolume) -> tuple[int, np.ndarray, np.ndarray, bool]:
        with self.source.open() as volume:
            box, low, high = mesh_read_box(sv.interior, volume.shape)
            labels = volume.read(box).astype(np.uint64, copy=False)
        digest = hashlib.blake2b(labels.tobytes(), digest_size=16)
        digest.update(repr((_FORMAT, box, low, high, self.resolution, self.max_error, self.bodies)).encode())
        fingerprint = digest.hexdigest()
        if self.resume:
            found = self.meshes.fragment_fingerprint(sv.id)
            if found is not None and found[0] == fingerprint:
                return sv.id, found[1], found[2], True
        wanted = None if self.bodies is None else np.array(self.bodies, np.uint64)
        pieces = mesh_labels(labels, box.start, self.resolution, pad_low=low, pad_high=high,
                             max_error=self.max_error, bodies=wanted)
        self.meshes.write_fragments(sv.id, fingerprint, pieces)
        ordered = sorted(pieces)
        return sv.id, np.array(ordered, np.uint64), np.array([piece_digest(pieces[b]) for b in ordered], "S32"), False


@dataclass(frozen=True)
class _WeldBodies:
    """Step 2 for a batch of bodies (runs in workers): weld, simplify, write; skip the
    bodies whose pieces are those their mesh was made from."""

    meshes: PrecomputedMeshes
    lod_error: float
    resume: bool

    def __call__(self, batch: list[tuple[int, list[int], str]]) -> list[tuple[int, int, int, bool]]:
        out = []
        cached: dict[int, dict[int, Mesh]] = {}
        for body, sv_ids, fingerprint in batch:
            if self.resume and self.meshes.body_fingerprint(body) == fingerprint:
                out.append((body, -1, 0, True))
                continue
            pieces = []
            for sv_id in sv_ids:
                if sv_id not in cached:
                    if len(cached) > 8:  # a batch's bodies share subvolumes; keep a few of them
                        cached.pop(next(iter(cached)))
                    cached[sv_id] = self.meshes.read_fragments(sv_id)
                pieces.append(cached[sv_id][body])
            welded = simplify(weld(pieces), self.lod_error)
            self.meshes.write_body(body, welded, fingerprint)
            out.append((body, len(welded.faces), open_edges(welded), False))
        return out


def _describe(sv: Subvolume) -> str:
    return f"subvolume {sv.id}"


def _batches(holders: dict[int, list[tuple[int, bytes]]], error: float, size: int) -> list[list[tuple[int, list[int], str]]]:
    """Bodies in batches of about ``size`` pieces, ordered by their first subvolume so that a
    batch reads few fragment files; each with the fingerprint of its pieces."""
    order = sorted(holders, key=lambda b: (holders[b][0][0], b))
    batches: list[list[tuple[int, list[int], str]]] = [[]]
    weight = 0
    for body in order:
        sv_ids = [sv_id for sv_id, _ in holders[body]]
        digest = hashlib.blake2b(repr((_FORMAT, error)).encode(), digest_size=16)
        for sv_id, piece in holders[body]:
            digest.update(f"{sv_id}:".encode() + piece)
        batches[-1].append((body, sv_ids, digest.hexdigest()))
        weight += len(sv_ids)
        if weight >= size:
            batches.append([])
            weight = 0
    return [b for b in batches if b]


def mesh(
    output: str,
    *,
    bodies: list[int] | None = None,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_error: float | None = None,
    subvolume_size: int | tuple[int, int, int] | None = None,
    progress: bool = False,
) -> MeshSummary:
    """Mesh the bodies of the segmentation ``output`` (all, or ``bodies``), block by block on
    ``executor``, into Neuroglancer's precomputed mesh format beside it (``labelstitch mesh``).

    ``max_error`` is how far (physical units) simplification may move a vertex: default one
    voxel's smallest side; 0 keeps every marching-cubes triangle. ``resume`` keeps what is
    current and meshes only the subvolumes and bodies that changed; without it, existing
    meshes are refused unless ``overwrite``. The grid is the output's own (its plan), or
    ``subvolume_size``. Returns a :class:`MeshSummary`.
    """
    ref = parse_volume(output)
    meshes = PrecomputedMeshes.of(ref)
    if meshes.exists() and not (resume or overwrite):
        raise StoreError(f"{output} already has meshes ({meshes.root}): add --resume to mesh only what changed, "
                         "or --overwrite to make them all again")
    if max_error is not None and max_error < 0:
        raise ValueError(f"max_error must be 0 or more physical units, got {max_error}")
    with hold(ref, f"output {output}"):
        with open_volume(ref) as volume:
            if np.dtype(volume.dtype).kind not in "iu":
                raise StoreError(f"{output} holds {volume.dtype} values, not labels: meshes are made of label volumes")
            try:
                block = plan_of_output(volume, subvolume_size).block
            except StoreError:
                block = (256, 256, 256)  # a volume labelstitch did not make
            grid = Plan.grid(volume.shape, block, 0)
            resolution = tuple(float(r) for r in (volume.voxel_size or (1.0, 1.0, 1.0)))
            shape = volume.shape
        error = min(resolution) if max_error is None else float(max_error)
        if overwrite and not resume:
            meshes.clear()
        meshes.prepare(shape, resolution, grid.block)
        with ExecutorChoice(executor, workers, spark_master, dask_scheduler).opened() as pool:
            return _mesh_all(ref, meshes, grid, pool, resolution, error, bodies, resume, progress)


def _mesh_all(ref: VolumeRef, meshes: PrecomputedMeshes, grid: Plan, pool: Executor, resolution: tuple[float, ...],
              error: float, bodies: list[int] | None, resume: bool, progress: bool) -> MeshSummary:
    """The two passes. The pieces are kept as marching cubes made them: simplified pieces
    simplified again once welded lose 3-5 % of their area (measured), while one
    simplification of the welded body matches simplifying the unblocked mesh within 0.5 %."""
    summary = MeshSummary(str(meshes.root))
    wanted = None if bodies is None else tuple(sorted(int(b) for b in bodies))
    step1 = _MeshSubvolume(ref, meshes, resolution, 0.0, wanted, resume)  # type: ignore[arg-type]
    holders: dict[int, list[tuple[int, bytes]]] = defaultdict(list)  # body: (subvolume, digest of its piece)
    counter = bar(len(grid), "mesh subvolumes", progress)
    try:
        for sv_id, found, digests, kept in pool.map(step1, list(grid), describe=_describe):
            for body, piece in zip(found.tolist(), digests.tolist()):
                holders[body].append((sv_id, piece))
            summary.subvolumes_kept += kept
            summary.subvolumes += not kept
            counter.update()
    finally:
        counter.close()
    meshes.prune_fragments({sv.id for sv in grid})
    pieces = sum(len(v) for v in holders.values())
    batches = _batches(holders, error, max(16, pieces // 64))
    step2 = _WeldBodies(meshes, error, resume)
    counter = bar(len(holders), "weld bodies", progress)
    try:
        for done in pool.map(step2, batches, describe=lambda b: f"bodies {b[0][0]}..{b[-1][0]}"):
            for body, triangles, holes, kept in done:
                summary.bodies += 1
                summary.bodies_kept += kept
                if not kept:
                    summary.triangles += triangles
                    if holes:
                        summary.not_closed.append(body)
                counter.update()
    finally:
        counter.close()
    if wanted is None:
        for body in meshes.bodies():
            if body not in holders:
                meshes.remove_body(body)
                summary.removed += 1
    return summary
