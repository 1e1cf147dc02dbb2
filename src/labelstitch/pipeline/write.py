"""Step 5 of the paper's workflow: relabel every interior with the stitch's body ids and
write it to a staged output, published only when every interior is written.

Per subvolume, a worker relabels its interior and writes it (or hands it back to the
driver when the output takes writes from one process only); an output that keeps
supervoxels (a DVID labelmap) is written as supervoxels, then each body's label index and
mapping, through the store's supervoxel writer. ``options.write-grayscale`` copies the
grayscale beside the output the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._version import __version__
from ..executors import Executor
from ..geometry import Plan, Subvolume
from ..report import write_stitch_report
from ..stitching import StitchResult, relabel_interior, to_bodies
from ..stores import StoreError, VolumeRef, VolumeStore, staged_output
from .planning import PreparedRun
from .progress import progress as counted
from .provenance import finish
from .segment import describe_item
from .stitch import stitch_run
from .values import PreservedBodies, SegmentedSubvolume

__all__ = ["stitch_and_write", "write_grayscale"]


@dataclass(frozen=True)
class _Interior:
    """One subvolume to write: its segmented labels, the stitch's mapping of its labels
    (``labels[i]`` is body ``bodies[i]``), the first stitched id after the preserved
    bodies' (``offset``) and the preserved bodies to write back."""

    sv: Subvolume
    segmented: SegmentedSubvolume
    labels: NDArray[np.uint64]
    bodies: NDArray[np.uint64]
    offset: int
    preserved: PreservedBodies | None


@dataclass(frozen=True)
class _WriteItem(_Interior):
    #: where the worker writes it (None: the driver writes what it hands back)
    writer: VolumeRef | None = None


def _write_item(item: _WriteItem) -> tuple[int, NDArray[np.uint64] | None]:
    """Step 3, per subvolume: relabel the interior into body ids and write it (or hand it back
    to the driver when the output cannot be written from several processes)."""
    sv = item.sv
    out = relabel_interior(sv, item.segmented.load(), item.labels, item.bodies)
    if item.offset:
        out = np.where(out != 0, out + np.uint64(item.offset), out)
    if item.preserved is not None:
        item.preserved.write_back(sv.interior, out)
    if item.writer is None:
        return sv.id, out
    with item.writer.open(read_only=False) as store:
        store.write(sv.interior, out)
        store.flush()
    return sv.id, None


def _count_supervoxels(item: tuple[Subvolume, SegmentedSubvolume]) -> tuple[int, int]:
    """How many supervoxels a subvolume's interior keeps (-1: its block has none kept)."""
    sv, segmented = item
    count = segmented.supervoxel_count()
    return sv.id, -1 if count is None else count


@dataclass(frozen=True)
class _SupervoxelItem(_Interior):
    #: the global id of this interior's first supervoxel
    first_id: int = 0


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
        if item.preserved is not None:  # preserved bodies: each its own supervoxel, as they were
            item.preserved.write_back(sv.interior, out)
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
        items.append(_SupervoxelItem(sv, segmented[sv.id], labels, bodies, offset, task.preserved, first))
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
    provenance: tuple[list[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch the segmented subvolumes with the config's rule and write the interiors to a
    staged ``config.output``, then publish it. The output has been checked by
    :func:`~labelstitch.pipeline.planning.check_plan_output`; it is created here.
    ``provenance`` is the output's history so far and this run's entry, completed here and
    recorded in the output's metadata and the stitch report."""
    config, plan, task = prepared.config, prepared.plan, prepared.task
    seconds: dict[str, float] = {}
    identity = {"labelstitch": __version__, "config-hash": config.settings_hash}
    offset = task.preserved.offset if task.preserved is not None else 0
    with staged_output(config.output, plan.shape, np.uint64, chunks=plan.block, overwrite=overwrite,
                       create_instance=create_output) as store:
        store.set_metadata({**identity, "complete": False})  # lets `run --resume` recognise its own output
        start = time.perf_counter()
        result = stitch_run(prepared, segmented, pool, progress)
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
                step3.append(_WriteItem(sv, segmented[sv.id], labels, bodies, offset, task.preserved, writer))
            written = pool.map(_write_item, step3, describe=lambda w: f"subvolume {w.sv.id}")
            for sv_id, data in counted(written, len(plan), "write", progress):
                if data is not None:
                    store.write(plan[sv_id].interior, data)
        store.set_voxel_size(prepared.resolution)
        store.build_pyramid(lambda fn, items: counted(pool.map(fn, items, describe=_describe_chunk), len(items), "pyramid", progress))
        seconds["write"] = time.perf_counter() - start
        history: list[dict[str, Any]] = []
        if provenance is not None:
            done, record = provenance
            summary = result.summary()
            record = finish(record, **{"stitch": {"rule": summary["rule"], "params": summary["params"]},
                                       "seconds": {**record.get("seconds", {}),
                                                   **{k: round(v, 3) for k, v in seconds.items()}},
                                       "counts": {**record.get("counts", {}), "matches": summary["matches"],
                                                  "bodies": summary["bodies"]}})
            history = [*done, record]
        store.set_metadata({
            **identity, "complete": True, "config": config.to_dict(), "plan": plan.to_dict(), "stitch": result.summary(),
            "image": (prepared.grayscale_copy or config.input).text,
            "resolution": list(prepared.resolution),
            **({"supervoxels": kept} if kept is not None else {}),
            **({"provenance": history} if history else {}),
        })
    write_stitch_report(result, config.output, offset=offset, folder=config.checkpoint_dir, provenance=history)
    return result, seconds
