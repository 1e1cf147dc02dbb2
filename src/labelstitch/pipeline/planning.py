"""Step 1 of the paper's workflow: plan the subvolumes and check everything that can be
checked before any work (volumes, ROI, plan, plugins and their parameters, the stitching
rule, the output), each exactly once per run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import Box, Plan, misaligned_axis, roi_chunks
from ..plugins import PluginError, Stage, resolve_stage
from ..plugins.rules import get_rule
from ..rules import StitchRule
from ..stitching import check_stitch
from ..stores import StoreError, VolumeRef, VolumeStore, parse_volume, read_roi
from .config import RunConfig
from .predictions import check_predictions, default_channels, stored_predictions_stage
from .values import PreservedBodies, SegmentTask, run_tuples

__all__ = ["PreparedRun", "check_plan_output", "prepare", "resolve_stages", "with_stitching"]


@dataclass(frozen=True)
class PreparedRun:
    """A checked run: its configuration, its plan and what every worker needs to segment,
    and how the intensity range was chosen."""

    config: RunConfig
    plan: Plan
    task: SegmentTask
    intensity_note: str = ""
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resolution_note: str = ""
    #: where ``options.write-grayscale`` writes the grayscale (None: it is not written)
    grayscale_copy: VolumeRef | None = None
    #: the config's stitching rule, looked up once
    rule: StitchRule | None = None


def grayscale_copy(config: RunConfig) -> VolumeRef:
    """Where ``options.write-grayscale`` writes the grayscale: ``OUTPUT-grayscale.zarr`` beside
    the output."""
    base = config.output.side_file_base()
    if base is None:
        raise StoreError(f"options.write-grayscale needs an output that is a file or folder, not {config.output}")
    return parse_volume(base.with_name(base.with_suffix("").name + "-grayscale.zarr"))


def resolve_intensity_range(config: RunConfig, volume: VolumeStore, plan: Plan) -> tuple[tuple[float, float], str]:
    """The grayscale values that mean black and white, and how they were found.

    ``options.intensity-range`` ``[black, white]`` is used as given; ``dtype`` takes the
    dtype's full range ([0, 1] for floats); ``auto`` (the default) takes [0, 255] for uint8,
    else the input's ``intensity-range`` metadata, else looks at small samples of up to
    eight subvolumes: whole numbers within [0, 255] (8-bit data stored in any dtype) give
    [0, 255], values within [0, 1] give [0, 1], anything else the measured minimum and maximum.
    """
    setting = config.intensity_range
    dtype = volume.dtype
    if isinstance(setting, tuple):
        black, white = float(setting[0]), float(setting[1])
        if not white > black:
            raise ValueError(f"options.intensity-range must be [black, white] with white > black, got {list(setting)}")
        return (black, white), "as configured"
    if setting == "dtype":
        if np.issubdtype(dtype, np.integer):
            return (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)), f"the full range of {dtype}"
        return (0.0, 1.0), "[0, 1] for float data"
    if dtype == np.uint8:
        return (0.0, 255.0), "uint8"
    stored = volume.metadata.get("intensity-range")
    if isinstance(stored, list) and len(stored) == 2 and all(isinstance(v, (int, float)) for v in stored) and stored[1] > stored[0]:
        return (float(stored[0]), float(stored[1])), "the input's metadata"
    picks = list(plan)[:: max(1, len(plan) // 8)][:8]
    samples = []
    for sv in picks:
        centre = [(a + b) // 2 for a, b in zip(sv.interior.start, sv.interior.stop)]
        start = [max(a, c - 16) for a, c in zip(sv.interior.start, centre)]
        stop = [min(b, c + 16) for b, c in zip(sv.interior.stop, centre)]
        samples.append(np.asarray(volume.read(Box(tuple(start), tuple(stop)))).ravel())
    values = np.concatenate(samples)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 255.0), "no finite sample values; assumed 8-bit"
    low, high = float(values.min()), float(values.max())
    whole = bool(np.all(values == np.round(values)))
    where = f"measured on {values.size:,} voxels of {len(picks)} subvolumes"
    if whole and low >= 0 and high <= 255:
        return (0.0, 255.0), f"8-bit values ({where})"
    if low >= 0 and high <= 1:
        return (0.0, 1.0), f"values within [0, 1] ({where})"
    if high == low:
        return (low, low + 1.0), f"one value only ({where})"
    return (low, high), f"the sampled minimum and maximum ({where})"


def resolve_stages(config: RunConfig) -> tuple[Stage, Stage, Stage]:
    """The three configured stages as callables, with their parameters checked."""
    out = []
    for stage, entry in zip(("predict-voxels", "create-supervoxels", "agglomerate-supervoxels"), config.stages):
        try:
            out.append(resolve_stage(stage, entry.function, entry.parameters))
        except PluginError as exc:
            raise PluginError(f"options.segmentor.configuration.{exc}") from None
    return out[0], out[1], out[2]


def check_channels(stages: tuple[Stage, Stage, Stage]) -> None:
    """Refuse, before any work, a stage that reads a prediction channel the predict-voxels
    function does not write, or writes as something else (when it declares what it writes)."""
    predict = stages[0]
    written = {index: channel for channel, index in predict.channels("writes")}
    if not written:
        return  # a predictor that declares nothing: its answer is checked at the first subvolume
    listing = ", ".join(f"{c.meaning} (channel {i})" for i, c in sorted(written.items()))
    for stage in stages[1:]:
        for channel, index in stage.channels():
            name = f" (its `{channel.index}`)" if isinstance(channel.index, str) else ""
            if index not in written or written[index].meaning != channel.meaning:
                raise PluginError(
                    f"options.segmentor.configuration.{stage.stage}: {stage.name!r} reads {channel.meaning} from channel "
                    f"{index}{name}, but predict-voxels {predict.name!r} writes {listing}; choose a predictor that writes "
                    f"it, or another channel"
                )
            theirs = written[index].offset
            if channel.offset is not None and theirs is not None and tuple(channel.offset) != tuple(theirs):
                raise PluginError(
                    f"options.segmentor.configuration.{stage.stage}: {stage.name!r} reads channel {index} as the affinity "
                    f"at offset {list(channel.offset)}, but predict-voxels {predict.name!r} writes it for offset "
                    f"{list(theirs)}; give the stage the offsets the predictions were made for"
                )


def check_across_blocks(agglomerate: Stage, plan: Plan) -> None:
    """Refuse ``options.agglomerate-across-blocks`` with an agglomeration that cannot run on
    a region graph, or without the overlap the face contacts are read from."""
    if agglomerate.info.graph is None:
        raise PluginError(
            f"options.agglomerate-across-blocks needs an agglomerate-supervoxels function that agglomerates a region "
            f"graph (rag_agglomeration, learned_agglomeration, no_agglomeration, or one that declares a `graph` with "
            f"labelstitch.stage_function); {agglomerate.name!r} declares none"
        )
    if any(f.box.empty for f in plan.faces()):
        raise ValueError(f"options.agglomerate-across-blocks needs options.overlap of at least 1 voxel on every axis, "
                         f"got {list(plan.halo)}: the contacts across faces are read from the overlap")


def _plan(config: RunConfig, shape: tuple[int, ...]) -> tuple[Plan, tuple[tuple[int, int, int, int], ...], int]:
    """The plan over the input (a box ROI, or the blocks of a DVID ROI), with its ROI runs."""
    roi = config.roi_box
    runs: tuple[tuple[int, int, int, int], ...] = ()
    roi_block = 0
    mask = None
    if config.roi_name:
        if roi is not None:
            raise ValueError("give either roi (a box) or options.roi (a DVID roi), not both")
        found, roi_block = read_roi(config.roi_name)
        mask = roi_chunks(found, roi_block, shape, config.subvolume_size)
        if not mask.any():
            raise ValueError(f"options.roi {config.roi_name} has no block inside the input volume of shape {shape}")
        runs = run_tuples(found)
    where = mask if mask is not None else roi
    plan = Plan.grid(shape, config.subvolume_size, config.halo, roi=where, iterations=config.iterations)
    if config.iteration_size:
        iterations = -(-len(plan) // config.iteration_size)
        plan = Plan.grid(shape, config.subvolume_size, config.halo, roi=where, iterations=iterations)
    for axis, (extent, size, halo) in enumerate(zip(plan.roi.shape, plan.block, plan.halo)):
        rest = extent % size
        if 0 < rest < max(halo, 1) and extent > size:
            raise ValueError(
                f"options.chunk-size {size} leaves a {rest}-voxel sliver at the end of axis {'ZYX'[axis]} "
                f"({extent} voxels), thinner than the {halo}-voxel overlap; choose a chunk size that divides "
                f"{extent} or leaves at least {halo} voxels"
            )
    return plan, runs, roi_block


#: working memory of one subvolume per voxel of its outer box for the built-in stages, with
#: room to spare: measured 34 bytes for a whole worker (read, mask, naive predictions,
#: seeded watershed, mean agglomeration, encode; benchmarks/bench_stage_memory.py). A stage
#: function that needs more declares its ``bytes_per_voxel`` (the pixel classifier: 32).
BYTES_PER_VOXEL = 64


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def subvolume_bytes_per_voxel(stages: tuple[Stage, ...]) -> int:
    """Working memory per outer-box voxel of one subvolume with these stages: the built-in
    baseline plus the most any one stage declares beyond it (stages run one after another)."""
    declared = [stage.info.bytes_per_voxel for stage in stages]
    return BYTES_PER_VOXEL + max(declared, default=0)


def fitting_chunk_size(plan: Plan, stages: tuple[Stage, ...] = (), *, at_once: int = 1, memory: int | None = None) -> int:
    """The largest cubic ``options.chunk-size`` whose subvolumes (with the plan's halo),
    ``at_once`` at a time, fit in 80 % of this machine's memory by the stages' declared
    bytes per voxel (at least 1)."""
    memory = _physical_memory() if memory is None else memory
    per_voxel = subvolume_bytes_per_voxel(stages)
    return max(1, int((0.8 * memory / (per_voxel * at_once)) ** (1 / 3)) - 2 * max(plan.halo))


def check_subvolume_memory(plan: Plan, stages: tuple[Stage, ...] = (), *, at_once: int | None = 1,
                           memory: int | None = None, context: int = 0) -> None:
    """Refuse subvolumes whose working set, times the ``at_once`` subvolumes a machine runs
    together (a pool's workers), cannot fit in this machine's memory. ``at_once=None``
    (workers on other machines) checks nothing: their memory is the cluster's to size."""
    if at_once is None:
        return
    memory = _physical_memory() if memory is None else memory
    per_voxel = subvolume_bytes_per_voxel(stages)
    largest = max(sv.outer.grow(context).size for sv in plan)  # what a worker segments: the outer box and its context
    needed = largest * per_voxel * at_once
    if memory and needed > 0.8 * memory:
        side = fitting_chunk_size(plan, stages, at_once=at_once, memory=memory)
        workers = f" on each of {at_once} workers at once" if at_once > 1 else ""
        raise ValueError(
            f"options.chunk-size {list(plan.block)} makes subvolumes of up to {largest:,} voxels; segmenting one needs "
            f"about {largest * per_voxel / 2**30:.1f} GiB (about {per_voxel} bytes per voxel with these stages){workers}, "
            f"and this machine has {memory / 2**30:.1f} GiB: choose options.chunk-size of at most {side}"
            + (" or fewer workers" if at_once > 1 else "")
        )


def check_writable(target: VolumeRef | str, what: str) -> None:
    """Refuse, before any work, an output (or a folder, given as a path) that cannot be
    written where it goes."""
    if isinstance(target, VolumeRef):
        base = target.side_file_base()
        if base is None:
            return  # not a file (DVID): its store checks it
        folder = Path(os.path.abspath(base)).parent
    else:
        folder = Path(os.path.abspath(target))
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise StoreError(f"cannot write {what} {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StoreError(f"cannot write {what} {target}: {folder} is not writable ({exc.strerror})") from None


def prepare(
    config: RunConfig, *, stages: tuple[Stage, Stage, Stage] | None = None, extra_mask: VolumeRef | None = None
) -> PreparedRun:
    """Every check that can run before any work, except the output's (see
    :func:`check_plan_output`): the input, ROI, plan, preserved bodies, ground truth, stage
    functions and stitching rule. ``stages`` replaces the configured ones (the Python API
    passes callables); ``extra_mask`` names a bool volume of voxels to leave unlabelled."""
    with config.input.open() as volume:
        shape, dtype = volume.shape, volume.dtype
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise StoreError(f"input {config.input} has dtype {dtype}; expected integer or float grayscale")
        plan, runs, roi_block = _plan(config, shape)
        intensity, note = resolve_intensity_range(config, volume, plan)
        if config.resolution is not None:
            resolution, resolution_note = config.resolution, "as configured"
        elif volume.voxel_size is not None:
            resolution, resolution_note = volume.voxel_size, f"the input's ({config.input})"
        else:
            resolution, resolution_note = (1.0, 1.0, 1.0), "unknown: written as 1 nm; set options.resolution"
    if config.preserve_volume is not None:
        with config.preserve_volume.open() as volume:
            if volume.bounded and volume.shape != shape:
                raise StoreError(f"preserve-bodies.segmentation {config.preserve_volume} has shape {volume.shape}; input has {shape}")
            if not np.issubdtype(volume.dtype, np.integer):
                raise StoreError(f"preserve-bodies.segmentation {config.preserve_volume} has dtype {volume.dtype}; expected labels")
    if config.ground_truth is not None:
        with config.ground_truth.open() as gt:
            if gt.shape != shape:
                raise StoreError(f"ground-truth {config.ground_truth} has shape {gt.shape}; input has {shape}")
            if not np.issubdtype(gt.dtype, np.integer):
                raise StoreError(
                    f"ground-truth {config.ground_truth} has dtype {gt.dtype}; label volumes must hold integers "
                    "(a VI of float labels would mean nothing)"
                )
    stages_ = stages if stages is not None else resolve_stages(config)
    if config.predictions:  # predictions made elsewhere stand for the predict-voxels stage
        channels = config.prediction_channels or default_channels(len(config.predictions))
        check_predictions(config.predictions, channels, shape)
        stages_ = (stored_predictions_stage(channels), stages_[1], stages_[2])
    check_channels(stages_)
    task = SegmentTask(
        config.input,
        stages_,
        config.background_value,
        config.background_min_width,
        intensity,
        config.allow_missing_input,
        PreservedBodies(config.preserve_volume, config.preserve_bodies) if config.preserve_volume is not None else None,
        codec=config.codec,
        extra_mask=extra_mask,
        roi_runs=runs,
        roi_block=roi_block,
        keep_supervoxels=config.output.keeps_supervoxels(),  # asked of the output once per run
        context=max(config.context, *(stage.info.context for stage in stages_)),
        shape=tuple(plan.shape),
        graph=config.agglomerate_across_blocks,
        retries=config.retries,
        predictions=config.predictions,
    )
    if task.graph:
        check_across_blocks(task.stages[2], plan)
    check_subvolume_memory(plan, task.stages, context=task.context)
    if config.checkpoint_dir:
        for key, other in inputs_of(config).items():
            if key != "options.checkpoint-dir" and isinstance(other, VolumeRef) and other.overlaps(config.checkpoint_dir):
                raise StoreError(
                    f"options.checkpoint-dir {config.checkpoint_dir} overlaps {key} {other}; "
                    "keep checkpoints in a folder of their own"
                )
        check_writable(config.checkpoint_dir, "options.checkpoint-dir")
    rule = checked_rule(plan, config)
    return PreparedRun(
        config, plan, task, f"[{intensity[0]:g}, {intensity[1]:g}]: {note}", tuple(resolution), resolution_note,  # type: ignore[arg-type]
        grayscale_copy(config) if config.write_grayscale else None, rule,
    )


def checked_rule(plan: Plan, config: RunConfig) -> StitchRule:
    """The config's stitching rule, looked up once and checked against the plan."""
    rule = get_rule(config.rule)
    check_stitch(plan, rule, config.rule_params)
    return rule


def with_stitching(prepared: PreparedRun, config: RunConfig) -> PreparedRun:
    """The prepared run with another stitching rule or output (``config`` differs from
    ``prepared.config`` in those only): the segmentation side is the same, so only the rule
    is checked again."""
    return dataclasses.replace(prepared, config=config, rule=checked_rule(prepared.plan, config))


def inputs_of(config: RunConfig) -> dict[str, VolumeRef | str]:
    """Every volume or folder a run reads or keeps, by its config key: what no output may touch."""
    found = {"input": config.input, "ground-truth": config.ground_truth,
             "preserve-bodies.segmentation": config.preserve_volume, "options.checkpoint-dir": config.checkpoint_dir,
             **{f"predictions[{k}]": ref for k, ref in enumerate(config.predictions)}}
    return {key: value for key, value in found.items() if value}


def check_plan_output(
    prepared: PreparedRun, uri: VolumeRef, *, overwrite: bool = False, create_output: bool = False
) -> None:
    """Refuse, before any work, an output that cannot take this plan's writes: it equals,
    contains or lies inside anything the run reads or keeps (whatever the flags); it exists
    without ``overwrite``; a DVID node is committed or its instance is missing without
    ``create_output``; or the subvolume interiors are not aligned to the output's blocks."""
    for key, other in inputs_of(prepared.config).items():
        if uri.overlaps(other):
            raise StoreError(
                f"output {uri} would overwrite {key} {other} (it is the same volume, lies inside it or holds it); "
                "choose an output apart from the input, predictions, ground truth, preserved bodies and checkpoint folder"
            )
    plan = prepared.plan
    check_writable(uri, "output")
    alignment = uri.check_output(overwrite=overwrite, create_instance=create_output, shape=plan.shape, dtype=np.uint64)
    if alignment is None:
        return
    for sv in plan:
        axis = misaligned_axis(sv.interior, alignment, plan.shape)
        if axis is not None:
            n = alignment[axis]
            raise ValueError(
                f"the output {uri} takes writes of whole {n}-voxel blocks, but subvolume {sv.id}'s interior "
                f"{sv.interior} is not aligned on axis {'ZYX'[axis]}: make options.chunk-size a multiple of {n} "
                f"(it is {list(plan.block)}) and start any roi box on multiples of {n}"
            )
