"""Meshes and skeletons of a segmentation's bodies, made block by block (``labelstitch mesh``,
``labelstitch skeletonize``).

Two passes over the same executors as a run:

1. every subvolume of the output's grid makes the pieces of the bodies it holds (marching
   cubes on its cells, :mod:`labelstitch.meshing`; TEASAR over its interior and some context,
   :mod:`labelstitch.skeletons`) and keeps them in a fragment file, with a fingerprint of the
   labels it read;
2. every body's pieces are joined (meshes welded into one closed surface and simplified to
   the stated error; skeletons snapped into one tree) and written in Neuroglancer's
   precomputed formats.

The driver holds only which bodies each subvolume holds (and a digest of each piece). With
``resume`` a subvolume whose labels are unchanged keeps its pieces, and a body whose pieces
are unchanged keeps its shape, so after a re-stitch or a crash only what changed is made again.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..executors import Executor
from ..geometry import Box, Plan, Subvolume
from ..locks import hold
from ..meshing import Mesh, mesh_labels, mesh_read_box, open_edges, simplify, weld
from ..skeletons import Skeleton, components, join_skeletons, skeletonize_labels
from ..stores import PrecomputedShapes, StoreError, VolumeRef, open_volume, parse_volume
from ..stores._precomputed import shard_location, write_swc
from .progress import bar
from .scoring import plan_of_output
from .values import ExecutorChoice

__all__ = ["ShapeSummary", "check_shapes_work", "keeps_supervoxels", "mesh", "skeletonize"]

#: changes when the shapes this module makes change, so fingerprints from older ones mismatch
_FORMAT = "labelstitch-shapes-2"


@dataclass
class ShapeSummary:
    """What :func:`mesh` or :func:`skeletonize` did: where the shapes are, how many
    subvolumes and bodies were made or kept from before, how big the shapes are (triangles
    or vertices), and the bodies whose shape is not what it should be (a mesh that is not a
    closed surface; a skeleton in more than one piece)."""

    kind: str
    root: str
    subvolumes: int = 0
    subvolumes_kept: int = 0
    bodies: int = 0
    bodies_kept: int = 0
    removed: int = 0
    size: int = 0
    flawed: list[int] = field(default_factory=list)
    shards: int = 0  # shard files written (sharded output)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        noun = "meshes" if self.kind == "mesh" else "skeletons"
        unit = "triangles" if self.kind == "mesh" else "vertices"
        text = (f"{noun} of {self.bodies} bodies in {self.root} ({self.size} {unit} made); "
                f"{self.subvolumes} subvolumes made, {self.subvolumes_kept} kept, {self.bodies_kept} bodies unchanged")
        if self.removed:
            text += f", {self.removed} {noun} of bodies no longer present removed"
        if self.shards:
            text += f", {self.shards} shard files written"
        if self.flawed:
            what = "are not closed surfaces" if self.kind == "mesh" else "are in more than one piece (disconnected bodies)"
            text += f"\nwarning: {len(self.flawed)} {noun} {what} (e.g. bodies {self.flawed[:5]})"
        return text


@dataclass(frozen=True)
class _Meshes:
    """How a subvolume's mesh pieces are made and a body's mesh from them."""

    max_error: float | None  # None: one voxel's smallest side, set once the volume is open
    lods: int = 1
    sharded: bool = False
    kind: str = "mesh"
    supervoxels: bool = False  # of a DVID labelmap's supervoxels

    def read_box(self, sv: Subvolume, shape: tuple[int, ...]) -> tuple[Box, Any]:
        box, low, high = mesh_read_box(sv.interior, shape)
        return box, (low, high)

    def pieces(self, labels: NDArray[Any], box: Box, sv: Subvolume, extra: Any, resolution: tuple[float, ...],
               bodies: NDArray[np.uint64] | None) -> dict[int, dict[str, NDArray[Any]]]:
        # the pieces are kept as marching cubes made them: pieces simplified and simplified
        # again once welded lose 3-5 % of their area (measured); one simplification of the
        # welded body matches simplifying the unblocked mesh within 0.5 %
        low, high = extra
        found = mesh_labels(labels, box.start, resolution, pad_low=low, pad_high=high, bodies=bodies)
        return {b: {"vertices": m.vertices, "faces": m.faces} for b, m in found.items()}

    def join(self, pieces: list[dict[str, NDArray[Any]]], resolution: tuple[float, ...]) -> list[Mesh]:
        """The welded body simplified to the error, then each coarser level of detail from
        the one before with twice the error."""
        half_voxel = np.asarray(resolution[::-1], np.float64) / 2  # the lattice of marching cubes' vertices
        levels = [simplify(weld([Mesh(p["vertices"], p["faces"]) for p in pieces], half_voxel), self.max_error)]
        for lod in range(1, self.lods):
            levels.append(simplify(levels[-1], max(self.max_error, min(resolution)) * 2**lod))
        return levels

    def write(self, shapes: PrecomputedShapes, body: int, shape: list[Mesh], fingerprint: str) -> tuple[int, bool]:
        shapes.write_mesh(body, shape, fingerprint)
        return len(shape[0].faces), open_edges(shape[0]) > 0


@dataclass(frozen=True)
class _Skeletons:
    """How a subvolume's skeleton pieces are made and a body's skeleton from them."""

    context: int
    scale: float
    const: float | None
    swc: str | None = field(default=None, repr=False)  # where SWC files go: not part of what a skeleton is made from
    sharded: bool = field(default=False, repr=False)  # how they are packed, not what they are
    kind: str = "skeletons"

    def read_box(self, sv: Subvolume, shape: tuple[int, ...]) -> tuple[Box, Any]:
        return sv.interior.grow(self.context).clip(Box.from_shape(shape)), None

    def pieces(self, labels: NDArray[Any], box: Box, sv: Subvolume, extra: Any, resolution: tuple[float, ...],
               bodies: NDArray[np.uint64] | None) -> dict[int, dict[str, NDArray[Any]]]:
        found = skeletonize_labels(labels, box.start, resolution, interior=(sv.interior.start, sv.interior.stop),
                                   bodies=bodies, scale=self.scale, const=self.const)
        return {b: {"vertices": s.vertices, "edges": s.edges, "radii": s.radii, "inside": m} for b, (s, m) in found.items()}

    def join(self, pieces: list[dict[str, NDArray[Any]]], resolution: tuple[float, ...]) -> Skeleton:
        parts = [(Skeleton(p["vertices"], p["edges"].reshape(-1, 2), p["radii"]), p["inside"]) for p in pieces]
        return join_skeletons(parts, voxel=float(np.linalg.norm(resolution)))

    def write(self, shapes: PrecomputedShapes, body: int, shape: Skeleton, fingerprint: str) -> tuple[int, bool]:
        shapes.write_skeleton(body, shape, fingerprint)
        if self.swc:
            self.write_swc(body, shape)
        return len(shape.vertices), components(shape) > 1

    def write_swc(self, body: int, shape: Skeleton) -> None:
        assert self.swc is not None
        write_swc(Path(self.swc) / f"{body}.swc", shape, body)


@dataclass(frozen=True)
class _MakePieces:
    """Pass 1 for one subvolume (runs in workers): its pieces, unless they are current."""

    source: VolumeRef
    shapes: PrecomputedShapes
    how: Any  # _Meshes or _Skeletons
    resolution: tuple[float, float, float]
    bodies: tuple[int, ...] | None
    resume: bool

    def __call__(self, sv: Subvolume) -> tuple[int, NDArray[np.uint64], NDArray[Any], bool]:
        with self.source.open() as volume:
            box, extra = self.how.read_box(sv, volume.shape)
            labels = volume.read(box).astype(np.uint64, copy=False)
        digest = hashlib.blake2b(labels.tobytes(), digest_size=16)
        digest.update(repr((_FORMAT, self.how, box, extra, self.resolution, self.bodies)).encode())
        fingerprint = digest.hexdigest()
        kind = self.how.kind
        if self.resume:
            found = self.shapes.fragment_fingerprint(kind, sv.id)
            if found is not None and found[0] == fingerprint:
                return sv.id, found[1], found[2], True
        wanted = None if self.bodies is None else np.array(self.bodies, np.uint64)
        pieces = self.how.pieces(labels, box, sv, extra, self.resolution, wanted)
        bodies, digests = self.shapes.write_fragments(kind, sv.id, fingerprint, pieces)
        return sv.id, bodies, digests, False


@dataclass(frozen=True)
class _JoinBodies:
    """Pass 2 for a batch of bodies (runs in workers): join, write; skip the bodies whose
    pieces are those their shape was made from."""

    shapes: PrecomputedShapes
    how: Any
    resolution: tuple[float, float, float]
    resume: bool

    def __call__(self, batch: list[tuple[int, list[int], str, int | None]]) -> list[tuple[int, int, bool, bool]]:
        with self.shapes.batched_posts():
            return self._join(batch)

    def _join(self, batch: list[tuple[int, list[int], str, int | None]]) -> list[tuple[int, int, bool, bool]]:
        out = []
        cached: dict[int, dict[int, dict[str, NDArray[Any]]]] = {}
        kind = self.how.kind
        for body, sv_ids, fingerprint, donor in batch:
            if self.resume and (donor is not None or self.shapes.body_fingerprint(kind, body) == fingerprint):
                if donor is not None and donor != body:  # the same voxels under an old id: its shape, set aside before
                    self.shapes.adopt_staged(kind, body, fingerprint)
                if kind == "skeletons" and self.how.swc and (donor not in (None, body) or not (Path(self.how.swc) / f"{body}.swc").exists()):
                    self.how.write_swc(body, self.shapes.read_skeleton(body))
                out.append((body, 0, False, True))
                continue
            pieces = []
            for sv_id in sv_ids:
                if sv_id not in cached:
                    if len(cached) > 8:  # a batch's bodies share subvolumes; keep a few of them
                        cached.pop(next(iter(cached)))
                    cached[sv_id] = self.shapes.read_fragments(kind, sv_id)
                pieces.append(cached[sv_id][body])
            size, flawed = self.how.write(self.shapes, body, self.how.join(pieces, self.resolution), fingerprint)
            out.append((body, size, flawed, False))
        return out


def _batches(holders: dict[int, list[tuple[int, bytes]]], salt: str, size: int,
             made: dict[str, int] | None = None) -> list[list[tuple[int, list[int], str, int | None]]]:
    """Bodies in batches of about ``size`` pieces, ordered by their first subvolume so that a
    batch reads few fragment files; each with the fingerprint of its pieces (which does not
    depend on the body's id) and, from ``made`` (``{fingerprint: body}`` of the shapes there
    are), the body whose shape it can have as it is: itself, or an old id of the same voxels."""
    fingerprints = {}
    for body in holders:
        digest = hashlib.blake2b(salt.encode(), digest_size=16)
        for sv_id, piece in holders[body]:
            digest.update(f"{sv_id}:".encode() + piece)
        fingerprints[body] = digest.hexdigest()
    made = made or {}
    order = sorted(holders, key=lambda b: (holders[b][0][0], b))
    batches: list[list[tuple[int, list[int], str, int | None]]] = [[]]
    weight = 0
    for body in order:
        donor = made.get(fingerprints[body])
        batches[-1].append((body, [sv_id for sv_id, _ in holders[body]], fingerprints[body], donor))
        weight += len(holders[body])
        if weight >= size:
            batches.append([])
            weight = 0
    return [b for b in batches if b]


def _work_folder(ref: VolumeRef, work: str | None) -> str | None:
    """Where a volume that is not a file (DVID) keeps its shapes' pieces: ``work``, else the
    checkpoint folder of the run that made it (from its provenance)."""
    if work is not None or ref.local_path() is not None:
        return work
    with open_volume(ref) as volume:
        return ((volume.metadata.get("config") or {}).get("options") or {}).get("checkpoint-dir")


def _make(
    output: str, how: Any, *, bodies: list[int] | None, choice: ExecutorChoice, resume: bool, overwrite: bool,
    subvolume_size: int | tuple[int, int, int] | None, progress: bool, work: str | None = None,
) -> ShapeSummary:
    """Both passes for ``how`` (meshes or skeletons) over ``output``'s grid, under the
    output's lock."""
    ref = parse_volume(output)
    noun = "meshes" if how.kind == "mesh" else "skeletons"
    if getattr(how, "supervoxels", False):
        view = _supervoxels_of(ref)
        if view is None:
            raise StoreError(f"{output} keeps no supervoxels (only a DVID labelmap output written with supervoxels does): "
                             "drop --supervoxels to mesh its bodies")
        ref = view
    elif how.kind != "mesh" and ref.supervoxel_view() is ref:
        raise StoreError(f"{output}: skeletons are made of bodies, not supervoxels: drop ?supervoxels=true")
    shapes = PrecomputedShapes.of(ref, _work_folder(ref, work)).with_options(getattr(how, "lods", 1), how.sharded)
    if shapes.exists(how.kind) and not (resume or overwrite):
        raise StoreError(f"{output} already has {noun} ({shapes.folder(how.kind)}): add --resume to make only what "
                         "changed, or --overwrite to make them all again")
    if shapes.exists(how.kind) and not overwrite:
        made = (shapes.mesh_format() == "multilod" if how.kind == "mesh" else False, shapes.shard_spec(how.kind) is not None)
        wanted = (shapes.multires if how.kind == "mesh" else False, shapes.sharded)
        if made != wanted:
            def say(multires: bool, sharded: bool) -> str:
                return ("multi-resolution" if multires else "single-resolution") + (", sharded" if sharded else "")
            raise StoreError(f"{output}'s {noun} are {say(*made)}, and this asks for {say(*wanted)} (--lods, --sharded): "
                             "add --overwrite to make them all again")
    with hold(ref, f"output {output}"):
        with open_volume(ref) as volume:
            if np.dtype(volume.dtype).kind not in "iu":
                raise StoreError(f"{output} holds {volume.dtype} values, not labels: {noun} are made of label volumes")
            try:
                block = plan_of_output(volume, subvolume_size).block
            except StoreError:
                block = (256, 256, 256)  # a volume labelstitch did not make
            grid = Plan.grid(volume.shape, block, 0)
            resolution = tuple(float(r) for r in (volume.voxel_size or (1.0, 1.0, 1.0)))
            shape = volume.shape
        if getattr(how, "max_error", 0.0) is None:
            how = replace(how, max_error=min(resolution))
        if overwrite and not resume:
            shapes.clear(how.kind)
        shapes.prepare(how.kind, shape, resolution, grid.block)
        with choice.opened() as pool:
            return _both_passes(ref, shapes, how, grid, pool, resolution, bodies, resume, progress)  # type: ignore[arg-type]


def _both_passes(ref: VolumeRef, shapes: PrecomputedShapes, how: Any, grid: Plan, pool: Executor,
                 resolution: tuple[float, float, float], bodies: list[int] | None, resume: bool, progress: bool) -> ShapeSummary:
    summary = ShapeSummary(how.kind, str(shapes.root))
    wanted = None if bodies is None else tuple(sorted(int(b) for b in bodies))
    step1 = _MakePieces(ref, shapes, how, resolution, wanted, resume)
    holders: dict[int, list[tuple[int, bytes]]] = defaultdict(list)  # body: (subvolume, digest of its piece)
    counter = bar(len(grid), f"{how.kind} subvolumes", progress)
    try:
        for sv_id, found, digests, kept in pool.map(step1, list(grid), describe=lambda sv: f"subvolume {sv.id}"):
            for body, piece in zip(found.tolist(), digests.tolist()):
                holders[body].append((sv_id, piece))
            summary.subvolumes_kept += kept
            summary.subvolumes += not kept
            counter.update()
    finally:
        counter.close()
    shapes.prune_fragments(how.kind, {sv.id for sv in grid})
    pieces = sum(len(v) for v in holders.values())
    batches = _batches(holders, repr((_FORMAT, how)), max(16, pieces // 64), shapes.fingerprints(how.kind) if resume else None)
    # renumbered bodies: their old shapes set aside first, since other bodies may take those ids now
    moves = [(donor, body) for batch in batches for body, _, _, donor in batch if donor is not None and donor != body]
    for _ in pool.map(_StageCopies(shapes, how.kind), [moves[k:k + 64] for k in range(0, len(moves), 64)],
                      describe=lambda chunk: f"shapes of bodies {chunk[0][1]}..{chunk[-1][1]}"):
        pass
    step2 = _JoinBodies(shapes, how, resolution, resume)
    counter = bar(len(holders), f"join {how.kind}", progress)
    changed: set[int] = {body for _, body in moves}  # renumbered: the same shape under a new id
    try:
        for done in pool.map(step2, batches, describe=lambda b: f"bodies {b[0][0]}..{b[-1][0]}"):
            for body, size, flawed, kept in done:
                summary.bodies += 1
                summary.bodies_kept += kept
                summary.size += size
                if flawed:
                    summary.flawed.append(body)
                if not kept:
                    changed.add(body)
                counter.update()
    finally:
        counter.close()
    if wanted is None:
        for body in shapes.bodies(how.kind):
            if body not in holders:
                shapes.remove_body(how.kind, body)
                summary.removed += 1
                changed.add(body)
    shapes.clear_staging(how.kind)
    if shapes.sharded:
        summary.shards = _pack_shards(shapes, how.kind, changed, resume, pool, progress)
    return summary


@dataclass(frozen=True)
class _StageCopies:
    """Set renumbered bodies' old shapes aside (runs in workers)."""

    shapes: PrecomputedShapes
    kind: str

    def __call__(self, moves: list[tuple[int, int]]) -> None:
        for donor, body in moves:
            self.shapes.stage_copy(self.kind, donor, body)


@dataclass(frozen=True)
class _PackShard:
    """Pass 3 for one shard file (runs in workers): its bodies' files packed into it."""

    shapes: PrecomputedShapes
    kind: str

    def __call__(self, item: tuple[str, list[int]]) -> int:
        return self.shapes.pack_shard(self.kind, *item)


def _pack_shards(shapes: PrecomputedShapes, kind: str, changed: set[int], resume: bool, pool: Executor, progress: bool) -> int:
    """Pack the per-body files into shard files: every shard, or with ``resume`` the shards
    holding a body made or removed (and those missing)."""
    layout = shapes.shard_layout(kind, shapes.bodies(kind))
    spec = shapes.shard_spec(kind)
    assert spec is not None
    touched = {shard_location(body, spec)[0] for body in changed}
    todo = [(name, sorted(bodies)) for name, bodies in sorted(layout.items())
            if not resume or name in touched or not (shapes.folder(kind) / name).exists()]
    todo += [(name, []) for name in sorted(touched - set(layout))]  # shards whose bodies are all gone
    counter = bar(len(todo), f"{kind} shards", progress)
    try:
        for _ in pool.map(_PackShard(shapes, kind), todo, describe=lambda item: f"shard {item[0]}"):
            counter.update()
    finally:
        counter.close()
    return len(todo)


def check_shapes_work(output: str, work: str | None) -> None:
    """Refuse, before a run, to mesh an output that is not a local volume (DVID) without a
    local folder for the pieces (``work``, or the run's checkpoint folder)."""
    if work is None and parse_volume(output).local_path() is None:
        raise StoreError(f"{output} is not a local volume: meshing it keeps the pieces in a local folder; set "
                         "options.checkpoint-dir or give --work DIR")


def keeps_supervoxels(output: str) -> bool:
    """Whether ``output`` keeps supervoxels and a supervoxel → body mapping (a DVID labelmap
    written with supervoxels), so that :func:`mesh` can mesh each supervoxel too."""
    return _supervoxels_of(parse_volume(output)) is not None


def _supervoxels_of(ref: VolumeRef) -> VolumeRef | None:
    """The supervoxels of a volume read as bodies that keeps them; None for any other (one
    that keeps none, or that already reads its supervoxels)."""
    view = ref.supervoxel_view()
    return None if view is ref else view


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
    lods: int = 1,
    sharded: bool = False,
    subvolume_size: int | tuple[int, int, int] | None = None,
    work: str | None = None,
    supervoxels: bool = False,
    progress: bool = False,
) -> ShapeSummary:
    """Mesh the bodies of the segmentation ``output`` (all, or ``bodies``), block by block on
    ``executor``, into Neuroglancer's precomputed mesh format beside it (``labelstitch mesh``).

    ``max_error`` is how far (physical units) simplification may move a vertex: default one
    voxel's smallest side; 0 keeps every marching-cubes triangle. ``lods`` above 1 writes
    Neuroglancer's multi-resolution format (Draco) with that many levels of detail, each
    simplified with twice the error of the one before; ``sharded`` packs them into
    Neuroglancer's shard files (for volumes with many bodies). ``resume`` keeps what is
    current and meshes only the subvolumes and bodies that changed; without it, existing
    meshes are refused unless ``overwrite``. The grid is the output's own (its plan), or
    ``subvolume_size``. A DVID output's meshes also go to its ``NAME_meshes`` keyvalue
    instance (``ID.ngmesh``), its pieces to ``work`` (default: its run's checkpoint folder).
    ``supervoxels`` meshes a DVID labelmap output's supervoxels instead (``bodies`` are then
    supervoxel ids), one Draco file each in its ``NAME_sv_meshes`` tarsupervoxels instance.
    Returns a :class:`ShapeSummary`.
    """
    if max_error is not None and max_error < 0:
        raise ValueError(f"max_error must be 0 or more physical units, got {max_error}")
    if not 1 <= lods <= 8:
        raise ValueError(f"lods must be 1 to 8 levels of detail, got {lods}")
    error = None if max_error is None else float(max_error)
    return _make(output, _Meshes(error, int(lods), bool(sharded), supervoxels=bool(supervoxels)), bodies=bodies, choice=ExecutorChoice(executor, workers, spark_master, dask_scheduler),
                 resume=resume, overwrite=overwrite, subvolume_size=subvolume_size, progress=progress, work=work)


def skeletonize(
    output: str,
    *,
    bodies: list[int] | None = None,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    swc: str | None = None,
    context: int = 16,
    scale: float = 1.5,
    const: float | None = None,
    sharded: bool = False,
    subvolume_size: int | tuple[int, int, int] | None = None,
    work: str | None = None,
    progress: bool = False,
) -> ShapeSummary:
    """Skeletonise the bodies of ``output`` (all, or ``bodies``) with kimimaro's TEASAR, block
    by block on ``executor``, into Neuroglancer's precomputed skeleton format beside it, and
    as one SWC file per body in ``swc`` if given (``labelstitch skeletonize``).

    Each subvolume reads ``context`` voxels around its interior (the pieces agree with the
    unblocked skeleton where it is at least the body's width); ``scale`` and ``const``
    (physical units, default 10 voxels) are TEASAR's: no branch starts within
    ``scale * radius + const`` of a path. ``resume``, ``overwrite``, ``sharded``, ``work``
    and the grid as for :func:`mesh`; a DVID output's skeletons also go to its ``NAME_skeletons`` keyvalue
    instance (``ID_swc``). Returns a :class:`ShapeSummary`.
    """
    if context < 0:
        raise ValueError(f"context must be 0 or more voxels, got {context}")
    if swc:
        Path(swc).mkdir(parents=True, exist_ok=True)
    how = _Skeletons(int(context), float(scale), None if const is None else float(const), str(Path(swc).resolve()) if swc else None,
                     bool(sharded))
    return _make(output, how, bodies=bodies, choice=ExecutorChoice(executor, workers, spark_master, dask_scheduler),
                 resume=resume, overwrite=overwrite, subvolume_size=subvolume_size, progress=progress, work=work)
