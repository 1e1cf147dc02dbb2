"""Step 4 of the paper's workflow: stitch the segmented subvolumes.

Two mapped steps and a driver step, the same on every executor: (1) per subvolume, cut
the face slabs and list the interior labels; (2) per face, match; then, on the driver,
resolve the matches into bodies (:func:`match_variants`). Only slabs, label lists and
matches travel to the driver. :func:`stitch` (``labelstitch.stitch``) is the same steps on
in-memory blocks, on the serial executor: one stitching engine for the Python API and the
pipeline. Writing the result is :mod:`labelstitch.pipeline.write`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..across import agglomerate_across, face_contacts, protective_refusals, refused_pairs, touching_pairs
from ..agglomeration import BINS, EdgeStats
from ..graphparts import GraphPart
from ..codec import decode_labels, encode_labels
from ..executors import Executor, SerialExecutor
from ..geometry import Face, Plan, Subvolume
from ..matching import apply_rule, face_candidates
from ..plugins import Stage
from ..plugins.rules import get_rule
from ..rules import StitchRule
from ..stitching import BlockSource, StitchResult, assemble, block_loader, check_stitch, face_slabs, faces_by_subvolume, interior_labels
from ..stores import StoreError
from .planning import PreparedRun
from .progress import progress as counted
from .segment import describe_item
from .values import SegmentedSubvolume

__all__ = ["AcrossBlocks", "Stitching", "across_blocks", "match_variants", "stitch", "stitch_run"]


@dataclass(frozen=True)
class _EmitSlabs:
    """Step 1, per subvolume: its interior labels (keyed by the subvolume), its compressed
    face slabs (keyed by the face) and, with ``table``, ``table(sv, labels)`` (keyed by the
    subvolume too: whatever else needs the decoded labels, made in the same pass)."""

    table: Callable[[Subvolume, NDArray[Any]], Any] | None = None
    #: agglomeration across blocks: also the interior's region graph, and with each slab
    #: the boundary probability of the interior's plane next to the face
    graph: bool = False
    #: whether the graph keeps its boundary histograms (only what the agglomeration uses travels)
    histograms: bool = True

    def __call__(self, item: tuple[Subvolume, SegmentedSubvolume, tuple[tuple[int, Face], ...]]) -> list[tuple[tuple[str, int], Any]]:
        sv, segmented, faces = item
        labels, found = segmented.load_with_graph() if self.graph else (segmented.load(), None)
        pairs: list[tuple[tuple[str, int], Any]] = [(("nodes", sv.id), interior_labels(sv, labels))]
        if self.table is not None:
            pairs.append((("table", sv.id), self.table(sv, labels)))
        planes: dict[str, NDArray[np.float32]] = {}
        if self.graph:
            if found is None:
                raise StoreError(f"subvolume {sv.id} was segmented without the region graph that "
                                 "options.agglomerate-across-blocks needs; segment it again")
            pairs.append((("graph", sv.id), found[0] if self.histograms else found[0].without_histograms()))
            planes = found[1]
        # slabs live only until their face is matched: lz4, the fastest codec, not the densest
        face_of = dict(faces)
        for i, slab in face_slabs(sv, labels, list(faces)):
            face = face_of[i]
            side = "hi" if sv.id == face.a else "lo"  # the plane next to the face, and its further values
            plane = (planes[f"{side}{face.axis}"], planes.get(f"{side}x{face.axis}"), planes.get("kinds")) if self.graph else None
            pairs.append((("face", i), (sv.id, encode_labels(slab, "lz4"), plane)))
        return pairs


#: a way to stitch, resolved: (rule, its parameters, connected components)
Stitching = tuple[StitchRule, dict[str, Any], bool]


@dataclass(frozen=True)
class _Matcher:
    """Step 2, per face: match the two sides' slabs with every variant, decoding them once
    (per subvolume key: hand the labels on)."""

    faces: tuple[Face, ...]
    variants: tuple[Stitching, ...]
    #: agglomeration across blocks: per face, where the lower interior's last plane lies in the slab
    interiors: tuple[tuple[slice, ...], ...] = ()
    histograms: bool = True

    def __call__(self, group: tuple[tuple[str, int], list[Any]]) -> tuple[str, int, Any]:
        (kind, index), values = group
        if kind != "face":
            return kind, index, values[0]
        face = self.faces[index]
        sides = {sv_id: (slab, plane) for sv_id, slab, plane in values}
        a, b = decode_labels(sides[face.a][0]), decode_labels(sides[face.b][0])
        candidates = {  # the overlaps are counted once per face, whatever the number of rules
            cc: face_candidates(a, b, axis=face.axis, plane=face.plane_offset, connected_components=cc)
            for cc in {cc for _, _, cc in self.variants}
        }
        matched = [apply_rule(candidates[cc], rule, **params) for rule, params, cc in self.variants]
        if not self.interiors:
            return kind, index, matched
        below = self.interiors[index]  # the lower interior's last plane; the upper's first is the next one
        above = tuple(slice(s.stop, s.stop + 1) if axis == face.axis else s for axis, s in enumerate(below))
        (boundary_a, further_a, kinds), (boundary_b, further_b, _) = sides[face.a][1], sides[face.b][1]
        contacts = face_contacts(a[below], boundary_a, b[above], boundary_b, further_a, further_b,
                                 () if kinds is None else tuple(int(k) for k in kinds))
        if not self.histograms:
            contacts = contacts.without_histograms()
        lower = tuple(slice(0, face.plane_offset) if axis == face.axis else s for axis, s in enumerate(below))
        upper = tuple(slice(face.plane_offset, None) if axis == face.axis else s for axis, s in enumerate(below))
        touching: list[set[tuple[int, int]]] = []  # each side's touching pieces inside its interior, made once
        out = []
        for m, (rule, params, cc) in zip(matched, self.variants):
            if rule.name == "none":  # `none` stitches nothing: no contact crosses the face
                out.append((*m, contacts.empty()))
                continue
            refused = refused_pairs(candidates[cc], rule, **params)
            if refused[0].size and not touching:
                touching = [touching_pairs(a[lower]), touching_pairs(b[upper])]
            if refused[0].size:
                refused = protective_refusals(candidates[cc], refused, *touching)
            out.append((*m, contacts.without_pairs(*refused)))
        return kind, index, out


def _last_plane_in_slab(face: Face, lower: Subvolume) -> tuple[slice, ...]:
    """The slices of ``face``'s slab that hold ``lower``'s last interior plane along the
    face's axis, over its interior's extent on the other two axes."""
    out = []
    for axis, (start, stop, origin) in enumerate(zip(lower.interior.start, lower.interior.stop, face.box.start)):
        out.append(slice(stop - origin - 1, stop - origin) if axis == face.axis else slice(start - origin, stop - origin))
    return tuple(out)


@dataclass(frozen=True)
class AcrossBlocks:
    """Agglomeration across blocks with the run's agglomerate-supervoxels stage: the
    ``graph`` it declares, over the whole volume's region graph (see
    :func:`labelstitch.across.agglomerate_across`)."""

    stage: Stage

    @property
    def histograms(self) -> bool:
        """Whether the agglomeration reads the boundary histograms (else they never reach the driver)."""
        return self.stage.info.graph_histograms

    def __call__(self, stats: EdgeStats) -> NDArray[np.int64]:
        graph = self.stage.info.graph
        assert graph is not None  # checked by planning.check_across_blocks
        contacts = self.stage.graph_contacts(stats.inside.shape[1])
        wanted = () if contacts is None else contacts.names()
        assert stats.extra is not None and stats.inside_hist is not None
        regions = 0 if contacts is None else stats.inside.shape[1] * BINS  # and the regions' histograms
        if stats.extra.shape[1] != len(wanted) * (1 + BINS) or stats.inside_hist.shape[1] != regions:
            needs = [f"the contacts' {name}" for name in wanted] + (["the regions' histograms"] if regions else [])
            has = f"{stats.extra.shape[1] // (1 + BINS)} further contact value(s)" + (
                " and the regions' histograms" if stats.inside_hist.shape[1] else "")
            raise StoreError(f"{self.stage.name} reads {' and '.join(needs) or 'the boundary only'}, but the region graph kept "
                             f"with the checkpoints has {has}; segment again (without --resume) to keep what it reads")
        return np.asarray(graph(stats, **self.stage.parameters), np.int64)


def match_variants(
    plan: Plan, segmented: dict[int, SegmentedSubvolume], pool: Executor, variants: list[Stitching], progress: bool = False,
    *, tables: Callable[[Subvolume, NDArray[Any]], Any] | None = None, tables_of: dict[int, Any] | None = None,
    across: Callable[[EdgeStats], NDArray[np.int64]] | None = None,
) -> list[tuple[StitchResult, float]]:
    """Steps 1 and 2 for every variant in one pass over the subvolumes (each face's slabs
    cut, moved and decoded once), then each variant's resolution on the driver: its
    :class:`StitchResult` and the seconds its resolution took. With ``tables``,
    ``tables_of[sv.id]`` receives ``tables(sv, labels)`` of every subvolume, made by the
    workers while they hold its labels. With ``across`` (agglomeration across blocks: the
    labels are supervoxels), each variant's stitched supervoxels are then agglomerated
    once over the whole volume's region graph by ``across``."""
    faces = plan.faces()
    faces_of = faces_by_subvolume(plan)
    nodes_of: dict[int, NDArray[np.uint64]] = {}
    voxels_of: dict[int, NDArray[np.int64]] = {}
    graphs: dict[int, GraphPart] = {}
    per_face: list[list[Any]] = [[] for _ in faces]
    step1 = [(sv, segmented[sv.id], tuple(faces_of[sv.id])) for sv in plan]
    interiors = tuple(_last_plane_in_slab(f, plan[f.a]) for f in faces) if across is not None else ()
    histograms = bool(getattr(across, "histograms", True))
    matcher = _Matcher(faces, tuple((rule, dict(params), cc) for rule, params, cc in variants), interiors, histograms)
    grouped = pool.map_grouped(_EmitSlabs(tables, across is not None, histograms), step1, matcher, describe=describe_item)
    steps = len(plan) * (1 + (tables is not None) + (across is not None)) + len(faces)
    for kind, index, value in counted(grouped, steps, "match (subvolumes, then faces)", progress):
        if kind == "nodes":
            nodes_of[index], voxels_of[index] = value
        elif kind == "table":
            assert tables_of is not None
            tables_of[index] = value
        elif kind == "graph":
            graphs[index] = value
        else:
            per_face[index] = value
    out = []
    for k, (rule, params, cc) in enumerate(variants):
        start = time.perf_counter()
        result = assemble(
            plan, rule.name, params, cc, [found[k][0] for found in per_face], [found[k][1] for found in per_face], nodes_of,
            lambda sv: segmented[sv.id].load(), voxels_of,
        )
        if across is not None:
            result = agglomerate_across(result, graphs, [found[k][2] for found in per_face], across)
        out.append((result, time.perf_counter() - start))
    return out


def across_blocks(prepared: PreparedRun) -> AcrossBlocks | None:
    """The run's agglomeration across blocks, or None when it agglomerates each block."""
    return AcrossBlocks(prepared.task.stages[2]) if prepared.task.graph else None


def stitch_run(prepared: PreparedRun, segmented: dict[int, SegmentedSubvolume], pool: Executor, progress: bool) -> StitchResult:
    """Steps 1 and 2 with the run's rule, then resolution on the driver (and agglomeration
    across blocks)."""
    config = prepared.config
    assert prepared.rule is not None
    variant = (prepared.rule, dict(config.rule_params), config.connected_components)
    return match_variants(prepared.plan, segmented, pool, [variant], progress, across=across_blocks(prepared))[0][0]


@dataclass(frozen=True)
class _InMemory:
    """A block given in memory, loaded (and checked) through the engine's steps."""

    sv: Subvolume
    load_block: Any

    def load(self) -> NDArray[np.unsignedinteger]:
        return self.load_block(self.sv)  # type: ignore[no-any-return]


def stitch(
    plan: Plan,
    blocks: BlockSource,
    rule: str | StitchRule = "medium",
    *,
    connected_components: bool = False,
    **rule_params: Any,
) -> StitchResult:
    """Stitch the blocks of a plan into one consistent segmentation: cut the overlap slabs,
    match segments across every face with a rule, resolve the matches into global body
    ids. The pipeline's own steps, run serially on in-memory blocks.

    Parameters
    ----------
    plan : Plan
    blocks : mapping or callable
        ``blocks[sv.id]`` (or ``blocks(sv)``) gives subvolume ``sv``'s labels over its
        outer box, in local ids of its own (any non-negative integers; 0 is background).
        Each block is requested once here, and once more per subvolume by
        :meth:`StitchResult.to_array`.
    rule : str
        ``"none"``, ``"conservative"``, ``"medium"`` (default), ``"aggressive"`` or a rule
        added with :func:`labelstitch.register_rule` or a plugin; see :mod:`labelstitch.matching`.
    connected_components : bool
        Let each connected piece of a segment inside the overlap seek its own match.
    **rule_params
        Thresholds of the rule (e.g. ``min_overlap=50``).

    Returns
    -------
    StitchResult

    Raises
    ------
    ValueError
        Before any block is read: an unknown rule or parameter, a missing block, a halo of
        0 with a rule that needs overlap. While reading: a block of the wrong shape or with
        float or negative labels, naming the subvolume.

    Examples
    --------
    Two blocks of a 1x1x8 volume that agree on their 2-voxel overlap:

    >>> from labelstitch import Plan, stitch
    >>> plan = Plan.grid((1, 1, 8), block=(1, 1, 4), halo=(0, 0, 1))
    >>> left = np.array([[[1, 1, 2, 2, 2]]])      # x 0..4 in its own ids
    >>> right = np.array([[[9, 9, 9, 9, 3]]])     # x 3..7: label 9 is left's 2
    >>> result = stitch(plan, {0: left, 1: right})
    >>> result.to_array()
    array([[[1, 1, 2, 2, 2, 2, 2, 3]]], dtype=uint64)
    """
    if not isinstance(plan, Plan):
        raise ValueError(f"`plan` must be a labelstitch.Plan, got {type(plan).__name__}")
    resolved = rule if isinstance(rule, StitchRule) else get_rule(rule)
    check_stitch(plan, resolved, rule_params)
    load = block_loader(plan, blocks)
    sources = {sv.id: _InMemory(sv, load) for sv in plan}
    with SerialExecutor() as pool:
        result, _ = match_variants(plan, sources, pool, [(resolved, dict(rule_params), connected_components)])[0]  # type: ignore[arg-type]
    return result
