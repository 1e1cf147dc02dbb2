"""Step 4 of the paper's workflow: stitch the segmented subvolumes and write the interiors.

Three mapped steps around one driver step, the same on every executor: (1) per subvolume,
cut the face slabs and list the interior labels; (2) per face, match, then on the driver
resolve the matches into bodies; (3) per subvolume, relabel the interior and write it.
Only slabs, label lists and matches travel to the driver; the output is staged and
published only when every interior is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._version import __version__
from ..codec import decode_labels, encode_labels
from ..executors import Executor
from ..geometry import Face, Plan, Subvolume
from ..agglomeration import EdgeStats, GraphPart, face_contacts
from ..matching import apply_rule, face_candidates, protective_refusals, refused_pairs, touching_pairs
from ..plugins import Stage, get_plugin_manager
from ..report import write_stitch_report
from ..stitching import (
    StitchResult, agglomerate_across, assemble, face_slabs, faces_by_subvolume, interior_labels, relabel_interior, to_bodies,
)
from ..stores import StoreError, VolumeRef, VolumeStore, staged_output
from .config import RunConfig
from .planning import PreparedRun
from .progress import progress as counted
from .segment import SegmentedSubvolume, describe_item

__all__ = ["AcrossBlocks", "across_blocks", "match_variants", "stitch_and_write"]


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
            plane = (planes[f"hi{face.axis}"] if sv.id == face.a else planes[f"lo{face.axis}"]) if self.graph else None
            pairs.append((("face", i), (sv.id, encode_labels(slab, "lz4"), plane)))
        return pairs


#: a way to stitch: (rule, its parameters, connected components)
Variant = tuple[str, dict[str, Any], bool]


@dataclass(frozen=True)
class _Matcher:
    """Step 2, per face: match the two sides' slabs with every variant, decoding them once
    (per subvolume key: hand the labels on)."""

    faces: tuple[Face, ...]
    variants: tuple[Variant, ...]
    #: agglomeration across blocks: per face, where the lower interior's last plane lies in the slab
    interiors: tuple[tuple[slice, ...], ...] = ()
    histograms: bool = True

    def __call__(self, group: tuple[tuple[str, int], list[Any]]) -> tuple[str, int, Any]:
        (kind, index), values = group
        if kind != "face":
            return kind, index, values[0]
        get_plugin_manager()  # a plugin's rule is registered in this worker process too
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
        contacts = face_contacts(a[below], sides[face.a][1], b[above], sides[face.b][1])
        if not self.histograms:
            contacts = contacts.without_histograms()
        lower = tuple(slice(0, face.plane_offset) if axis == face.axis else s for axis, s in enumerate(below))
        upper = tuple(slice(face.plane_offset, None) if axis == face.axis else s for axis, s in enumerate(below))
        touching: list[set[tuple[int, int]]] = []  # each side's touching pieces inside its interior, made once
        out = []
        for m, (rule, params, cc) in zip(matched, self.variants):
            if rule == "none":  # `none` stitches nothing: no contact crosses the face
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
    """Agglomeration across blocks with the run's agglomerate-supervoxels stage: its
    ``agglomerate_graph`` over the whole volume's region graph (see
    :func:`labelstitch.stitching.agglomerate_across`)."""

    stage: Stage

    @property
    def histograms(self) -> bool:
        """Whether the agglomeration reads the boundary histograms (else they never reach the driver)."""
        return bool(getattr(self.stage.function.agglomerate_graph, "histograms", True))

    def __call__(self, stats: EdgeStats) -> NDArray[np.int64]:
        return np.asarray(self.stage.function.agglomerate_graph(stats, **self.stage.parameters), np.int64)


@dataclass(frozen=True)
class _WriteItem:
    sv: Subvolume
    segmented: SegmentedSubvolume
    labels: NDArray[np.uint64]
    bodies: NDArray[np.uint64]
    offset: int
    preserve_volume: VolumeRef | None
    preserve_bodies: tuple[int, ...]
    writer: VolumeRef | None


def _write_item(item: _WriteItem) -> tuple[int, NDArray[np.uint64] | None]:
    """Step 3, per subvolume: relabel the interior into body ids and write it (or hand it back
    to the driver when the output cannot be written from several processes)."""
    sv = item.sv
    out = relabel_interior(sv, item.segmented.load(), item.labels, item.bodies)
    if item.offset:
        out = np.where(out != 0, out + np.uint64(item.offset), out)
    keep, original = _preserved(sv, item.preserve_volume, item.preserve_bodies)
    if keep is not None:
        out[keep] = original[keep]
    if item.writer is None:
        return sv.id, out
    with item.writer.open(read_only=False) as store:
        store.write(sv.interior, out)
        store.flush()
    return sv.id, None


def _preserved(sv: Subvolume, preserve_volume: VolumeRef | None, preserve_bodies: tuple[int, ...]) -> tuple[Any, Any]:
    """The preserved bodies' voxels in ``sv``'s interior: (mask, their ids), or (None, None)."""
    if preserve_volume is None:
        return None, None
    with preserve_volume.open() as volume:
        original = volume.read(sv.interior).astype(np.uint64)
    return np.isin(original, np.asarray(preserve_bodies, dtype=np.uint64)), original


def _count_supervoxels(item: tuple[Subvolume, SegmentedSubvolume]) -> tuple[int, int]:
    """How many supervoxels a subvolume's interior keeps (-1: its block has none kept)."""
    sv, segmented = item
    count = segmented.supervoxel_count()
    return sv.id, -1 if count is None else count


@dataclass(frozen=True)
class _SupervoxelItem:
    sv: Subvolume
    segmented: SegmentedSubvolume
    labels: NDArray[np.uint64]
    bodies: NDArray[np.uint64]
    offset: int
    first_id: int
    preserve_volume: VolumeRef | None
    preserve_bodies: tuple[int, ...]


@dataclass(frozen=True)
class _WriteSupervoxels:
    """Per subvolume: give its interior's supervoxels their global ids (``first_id`` on),
    write them, and emit the (body, supervoxel, block, voxels) rows by body bucket."""

    writer: Any  # the output's supervoxel writer (VolumeStore.supervoxel_writer)
    buckets: int

    def __call__(self, item: _SupervoxelItem) -> list[tuple[int, NDArray[np.uint64]]]:
        sv = item.sv
        kept = item.segmented.load_supervoxels()
        assert kept is not None
        pieces, segment_of = kept
        bodies = to_bodies(segment_of, item.labels, item.bodies) + np.uint64(item.offset)
        first = np.uint64(item.first_id - 1)
        out = np.where(pieces != 0, pieces + first, np.uint64(0)).astype(np.uint64)
        keep, original = _preserved(sv, item.preserve_volume, item.preserve_bodies)
        if keep is not None:
            out[keep] = original[keep]  # preserved bodies: each its own supervoxel, as they were
        sv_ids = np.arange(1, segment_of.size + 1, dtype=np.uint64) + first
        rows = self.writer.write_supervoxels(sv.interior, out, sv_ids, bodies)
        bucket = rows[:, 0] % np.uint64(self.buckets)
        return [(int(b), rows[bucket == b]) for b in np.unique(bucket)]


@dataclass(frozen=True)
class _WriteBodies:
    """Per body bucket: the label indices and mapping of its bodies."""

    writer: Any

    def __call__(self, group: tuple[int, list[NDArray[np.uint64]]]) -> dict[str, int]:
        return dict(self.writer.write_bodies(np.concatenate(group[1])))


def _write_supervoxels(
    store: VolumeStore, plan: Plan, result: StitchResult, segmented: dict[int, SegmentedSubvolume], offset: int,
    prepared: PreparedRun, pool: Executor, progress: bool,
) -> dict[str, int]:
    """Write every interior as supervoxels, then every body's index and mapping (the order
    DVID needs: a mapping never points at supervoxels that are not written yet)."""
    task = prepared.task
    counted_svs = dict(pool.map(_count_supervoxels, [(sv, segmented[sv.id]) for sv in plan], describe=describe_item))
    if any(n < 0 for n in counted_svs.values()):
        raise StoreError(
            f"the output {prepared.config.output} keeps supervoxels, but the segmented subvolumes hold none (they "
            "were made for an output of bodies): rerun without those checkpoints, or write bodies "
            "(options.dvid-write: bodies)"
        )
    first = offset + result.n_bodies + 1  # supervoxel ids come after every body id and preserved id
    items = []
    for sv in plan:
        labels, bodies = result.mapping.for_subvolume(sv.id)
        items.append(_SupervoxelItem(sv, segmented[sv.id], labels, bodies, offset, first, task.preserve_volume,
                                     task.preserve_bodies))
        first += counted_svs[sv.id]
    writer = store.supervoxel_writer()
    buckets = max(1, min(len(plan), 4096))
    totals = {"bodies": 0, "supervoxels": 0, "voxels": 0}
    grouped = pool.map_grouped(
        _WriteSupervoxels(writer, buckets), items, _WriteBodies(writer), describe=lambda i: f"subvolume {i.sv.id}"
    )
    for counts in counted(grouped, buckets, "write", progress):
        for key in totals:
            totals[key] += counts[key]
    totals["max id"] = first - 1
    return totals


def match_variants(
    plan: Plan, segmented: dict[int, SegmentedSubvolume], pool: Executor, variants: list[Variant], progress: bool = False,
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
    graphs: dict[int, GraphPart] = {}
    per_face: list[list[Any]] = [[] for _ in faces]
    step1 = [(sv, segmented[sv.id], tuple(faces_of[sv.id])) for sv in plan]
    interiors = tuple(_last_plane_in_slab(f, plan[f.a]) for f in faces) if across is not None else ()
    histograms = bool(getattr(across, "histograms", True))
    matcher = _Matcher(faces, tuple((rule, dict(params), cc) for rule, params, cc in variants), interiors, histograms)
    grouped = pool.map_grouped(_EmitSlabs(tables, across is not None, histograms), step1, matcher, describe=describe_item)
    steps = len(plan) * (1 + (tables is not None) + (across is not None)) + len(faces)
    for kind, index, value in counted(grouped, steps, "match", progress):
        if kind == "nodes":
            nodes_of[index] = value
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
            plan, rule, params, cc, [found[k][0] for found in per_face], [found[k][1] for found in per_face], nodes_of,
            lambda sv: segmented[sv.id].load(),
        )
        if across is not None:
            result = agglomerate_across(result, graphs, [found[k][2] for found in per_face], across)
        out.append((result, time.perf_counter() - start))
    return out


def across_blocks(prepared: PreparedRun) -> AcrossBlocks | None:
    """The run's agglomeration across blocks, or None when it agglomerates each block."""
    return AcrossBlocks(prepared.task.stages[2]) if prepared.task.graph else None


def _match_all(prepared: PreparedRun, segmented: dict[int, SegmentedSubvolume], pool: Executor, progress: bool) -> StitchResult:
    """Steps 1 and 2, then resolution on the driver (and agglomeration across blocks)."""
    config = prepared.config
    variant = (config.rule, dict(config.rule_params), config.connected_components)
    return match_variants(prepared.plan, segmented, pool, [variant], progress, across=across_blocks(prepared))[0][0]


def _describe_chunk(item: Any) -> str:
    return f"pyramid chunk {item[2][0]} of {item[1]}"


def _copy_interior(item: tuple[VolumeRef, VolumeRef, Subvolume]) -> None:
    """Copy one subvolume's interior of the grayscale into the staged copy (runs in workers)."""
    source, target, sv = item
    with source.open() as volume:
        data = volume.read(sv.interior)
    with target.open(read_only=False) as copy:
        copy.write(sv.interior, data)


def write_grayscale(prepared: PreparedRun, pool: Executor, *, overwrite: bool = False, progress: bool = False) -> VolumeRef:
    """Write the run's grayscale as an OME-Zarr image (with its pyramid) beside the output,
    for viewers; staged and published like the output. Returns where it went."""
    config, plan = prepared.config, prepared.plan
    uri = prepared.grayscale_copy
    assert uri is not None
    with config.input.open() as volume:
        dtype = volume.dtype
    with staged_output(uri, plan.shape, dtype, chunks=plan.block, overwrite=overwrite) as store:
        if store.writer is None:
            raise StoreError(f"the grayscale copy {uri} cannot be written by workers")
        items = [(config.input, store.writer, sv) for sv in plan]
        for _ in counted(pool.map(_copy_interior, items, describe=lambda i: f"subvolume {i[2].id}"), len(items), "grayscale", progress):
            pass
        store.set_voxel_size(prepared.resolution)
        store.build_pyramid(lambda fn, items: pool.map(fn, items, describe=_describe_chunk))
        store.set_metadata({"labelstitch": __version__, "source": config.input.text})
    return uri


def stitch_and_write(
    prepared: PreparedRun,
    segmented: dict[int, SegmentedSubvolume],
    pool: Executor,
    *,
    overwrite: bool = False,
    create_output: bool = False,
    progress: bool = False,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch the segmented subvolumes with the config's rule and write the interiors to a
    staged ``config.output``, then publish it. The output has been checked by
    :func:`~labelstitch.pipeline.planning.check_plan_output`; it is created here."""
    config, plan, task = prepared.config, prepared.plan, prepared.task
    seconds: dict[str, float] = {}
    identity = {"labelstitch": __version__, "config-hash": config.settings_hash}
    offset = max(task.preserve_bodies, default=0)
    with staged_output(config.output, plan.shape, np.uint64, chunks=plan.block, overwrite=overwrite,
                       create_instance=create_output) as store:
        store.set_metadata({**identity, "complete": False})  # lets `run --resume` recognise its own output
        start = time.perf_counter()
        result = _match_all(prepared, segmented, pool, progress)
        seconds["stitch"] = time.perf_counter() - start

        start = time.perf_counter()
        kept = None
        if task.keep_supervoxels:
            kept = _write_supervoxels(store, plan, result, segmented, offset, prepared, pool, progress)
        else:
            parallel = store.supports_parallel_writes and not pool.in_process
            writer = store.writer if parallel else None
            step3 = []
            for sv in plan:
                labels, bodies = result.mapping.for_subvolume(sv.id)
                step3.append(_WriteItem(sv, segmented[sv.id], labels, bodies, offset, task.preserve_volume,
                                        task.preserve_bodies, writer))
            written = pool.map(_write_item, step3, describe=lambda w: f"subvolume {w.sv.id}")
            for sv_id, data in counted(written, len(plan), "write", progress):
                if data is not None:
                    store.write(plan[sv_id].interior, data)
        store.set_voxel_size(prepared.resolution)
        store.build_pyramid(lambda fn, items: counted(pool.map(fn, items, describe=_describe_chunk), len(items), "pyramid", progress))
        store.set_metadata({
            **identity, "complete": True, "config": config.to_dict(), "plan": plan.to_dict(), "stitch": result.summary(),
            "image": (prepared.grayscale_copy or config.input).text,
            "resolution": list(prepared.resolution),
            **({"supervoxels": kept} if kept is not None else {}),
        })
    write_stitch_report(result, config.output, offset=offset, folder=config.checkpoint_dir)
    seconds["write"] = time.perf_counter() - start
    return result, seconds
