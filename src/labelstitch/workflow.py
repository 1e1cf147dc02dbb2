"""The segmentation pipeline: grayscale volume in, stitched segmentation out.

``run(config)`` checks everything it can first (config, volumes, plugins and their
parameters, output), then:

1. plans the subvolumes (``options.chunk-size``, ``options.overlap``, ``roi``);
2. segments each subvolume over its outer box with the three stages, masking empty
   background and preserved bodies, and keeps the result lz4-compressed in memory;
3. stitches with ``options.stitch-algorithm``;
4. relabels each interior (new ids start above the largest preserved id, preserved voxels
   keep their ids) and writes it to a staged output, published atomically at the end;
5. scores against ``ground-truth`` if given, block by block in bounded memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import __version__
from ._kernels.hashing import pair_sum
from .codec import decode_labels, encode_labels
from .config import load_config
from .contingency import count_pairs
from .executors import get_executor
from .geometry import Plan, Subvolume
from .metrics import VI, RegionalVI, _entropies_from_pairs, vi
from .plugins import PluginError, Stage, resolve_stage
from .stitching import StitchResult, stitch
from .stores import StoreError, VolumeStore, create_volume, open_volume, volume_exists

__all__ = [
    "RunResult",
    "SegmentTask",
    "background_mask",
    "evaluate_regions",
    "evaluate_volumes",
    "run",
    "segment_blocks",
    "segment_subvolume",
    "stitch_and_write",
]

T = TypeVar("T")


class PipelineError(ValueError):
    """A stage function returned something the pipeline cannot use."""


# ----------------------------------------------------------------------------- one subvolume


def background_mask(grayscale: NDArray[Any], value: int | None, min_width: int) -> NDArray[np.bool_]:
    """True on empty regions: voxels equal to ``value`` inside runs of at least ``min_width``
    such voxels along every axis (a morphological opening with a cube), so dark membranes
    are never mistaken for padding."""
    if value is None:
        return np.zeros(grayscale.shape, bool)
    empty = grayscale == value
    if not empty.any():
        return empty
    from scipy.ndimage import binary_opening

    return binary_opening(empty, structure=np.ones((min_width,) * 3, bool), border_value=1)


@dataclass(frozen=True)
class SegmentTask:
    """Everything a worker needs to segment one subvolume; picklable."""

    input: str
    stages: tuple[Stage, Stage, Stage]
    background_value: int | None
    background_min_width: int
    preserve_uri: str | None = None
    preserve_bodies: tuple[int, ...] = ()


@dataclass(frozen=True)
class SegmentedBlock:
    """A segmented subvolume: compressed labels over its outer box and a few counts."""

    sv_id: int
    data: bytes
    supervoxels: int
    segments: int
    seconds: dict[str, float]


def _check_output(name: str, result: Any, shape: tuple[int, ...], sv: Subvolume, *, floating: bool) -> NDArray[Any]:
    arr = np.asarray(result)
    if floating:
        if arr.shape[:3] != shape or arr.ndim not in (3, 4):
            raise PipelineError(
                f"{name} returned shape {arr.shape} for subvolume {sv.id}; expected {shape} or {shape} + (channels,)"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise PipelineError(f"{name} returned dtype {arr.dtype} for subvolume {sv.id}; expected float32 probabilities")
        return arr.astype(np.float32, copy=False)
    if arr.shape != shape:
        raise PipelineError(f"{name} returned shape {arr.shape} for subvolume {sv.id}; expected {shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise PipelineError(f"{name} returned dtype {arr.dtype} for subvolume {sv.id}; expected integer labels")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise PipelineError(f"{name} returned negative labels for subvolume {sv.id}")
    return arr


def segment_subvolume(sv: Subvolume, task: SegmentTask) -> SegmentedBlock:
    """Read, mask and segment one subvolume's outer box with the three stages."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with open_volume(task.input) as volume:
        grayscale = volume.read(sv.outer)
    mask = background_mask(grayscale, task.background_value, task.background_min_width)
    preserved = None
    if task.preserve_uri is not None:
        with open_volume(task.preserve_uri) as volume:
            preserved = np.isin(volume.read(sv.outer), np.asarray(task.preserve_bodies, dtype=np.uint64))
        mask |= preserved
    seconds["read"] = time.perf_counter() - start
    predict, supervoxel, agglomerate = task.stages
    shape = grayscale.shape

    start = time.perf_counter()
    predictions = _check_output(f"predict-voxels function {predict.name!r}", predict(grayscale, mask), shape, sv, floating=True)
    seconds["predict-voxels"] = time.perf_counter() - start

    start = time.perf_counter()
    svs = _check_output(
        f"create-supervoxels function {supervoxel.name!r}", supervoxel(predictions, mask), shape, sv, floating=False
    )
    if np.any(svs[mask] != 0):
        raise PipelineError(
            f"create-supervoxels function {supervoxel.name!r} labelled {int(np.count_nonzero(svs[mask]))} masked voxels "
            f"in subvolume {sv.id}; supervoxels must not enter the mask"
        )
    seconds["create-supervoxels"] = time.perf_counter() - start

    start = time.perf_counter()
    seg = _check_output(
        f"agglomerate-supervoxels function {agglomerate.name!r}", agglomerate(predictions, svs), shape, sv, floating=False
    )
    seg = np.where(mask, 0, seg)  # preserved bodies and background never take part in stitching
    seconds["agglomerate-supervoxels"] = time.perf_counter() - start
    n_sv = int(np.unique(svs).size - (1 if (svs == 0).any() else 0))
    n_seg = int(np.unique(seg).size - (1 if (seg == 0).any() else 0))
    return SegmentedBlock(sv.id, encode_labels(seg.astype(np.uint64)), n_sv, n_seg, seconds)


# ----------------------------------------------------------------------------- evaluation


def evaluate_volumes(seg: VolumeStore, gt: VolumeStore, *, block: int = 256, ignore_gt_zero: bool = True) -> VI:
    """VI of two stored volumes, accumulated block by block (never loads a whole volume)."""
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation {seg.uri} has shape {seg.shape} but ground truth {gt.uri} has shape {gt.shape}")
    plan = Plan.grid(seg.shape, block, 0)
    parts: list[tuple[NDArray[Any], ...]] = []
    for sv in plan:
        s = np.ascontiguousarray(seg.read(sv.interior)).reshape(-1)
        g = np.ascontiguousarray(gt.read(sv.interior)).reshape(-1)
        ks, kg, cnt, first = count_pairs(s.astype(np.uint64, copy=False), g.astype(np.uint64, copy=False))
        parts.append((ks, kg, cnt, first))
        if len(parts) > 16:  # keep the partial tables small
            parts = [pair_sum(*(np.concatenate(c) for c in zip(*parts)))]
    ks, kg, cnt, _ = pair_sum(*(np.concatenate(c) for c in zip(*parts)))
    return _entropies_from_pairs(ks, kg, cnt, ignore_gt_zero)


def evaluate_regions(seg: VolumeStore, gt: VolumeStore, region: int = 32, *, ignore_gt_zero: bool = True) -> RegionalVI:
    """VI of every ``region``-sized block of two stored volumes (the paper's Figure 9)."""
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation {seg.uri} has shape {seg.shape} but ground truth {gt.uri} has shape {gt.shape}")
    plan = Plan.grid(seg.shape, region, 0)
    merge = np.zeros(plan.grid_shape)
    split = np.zeros(plan.grid_shape)
    for sv in plan:
        score = vi(seg.read(sv.interior), gt.read(sv.interior), ignore_gt_zero=ignore_gt_zero)
        merge[sv.index], split[sv.index] = score.merge, score.split
    return RegionalVI(merge, split, plan.block, tuple(sv.interior for sv in plan))


# ----------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    """What :func:`run` did.

    Attributes
    ----------
    output : str
        Where the segmentation was written.
    seconds : dict
        Wall time per stage (the paper's Table 1).
    counts : dict
        Subvolumes, supervoxels, segments, matches and final bodies.
    vi : VI or None
        Score against the config's ground truth.
    stitch : dict
        ``StitchResult.summary()``.
    """

    output: str
    plan: Plan
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vi: VI | None = None
    stitch: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "counts": dict(self.counts),
            "vi": self.vi.to_dict() if self.vi else None,
            "stitch": self.stitch,
        }

    def table(self) -> str:
        """The summary as text: time per stage, then counts and scores."""
        lines = [f"{'stage':<28}{'seconds':>10}"]
        lines += [f"{stage:<28}{sec:>10.2f}" for stage, sec in self.seconds.items()]
        lines.append("")
        lines += [f"{name:<28}{value:>10}" for name, value in self.counts.items()]
        if self.vi is not None:
            lines.append("")
            lines.append(f"VI merge {self.vi.merge:.3f}  split {self.vi.split:.3f}  total {self.vi.total:.3f} bits")
        lines.append(f"\nwrote {self.output}")
        return "\n".join(lines)


def _progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="subvolume", leave=False)


def _stages(config: dict[str, Any]) -> tuple[Stage, Stage, Stage]:
    conf = config["options"]["segmentor"]["configuration"]
    out = []
    for stage in ("predict-voxels", "create-supervoxels", "agglomerate-supervoxels"):
        entry = conf[stage]
        try:
            out.append(resolve_stage(stage, entry["function"], entry.get("parameters", {})))
        except PluginError as exc:
            raise PluginError(f"options.segmentor.configuration.{exc}") from None
    return out[0], out[1], out[2]


def prepare(config: dict[str, Any]) -> tuple[Plan, SegmentTask, VolumeStore | None]:
    """Every check that can run before any work: volumes, plan, plugins. Returns the plan,
    the segmentation task and the opened ground truth (if any)."""
    with open_volume(config["input"]) as volume:
        shape, dtype = volume.shape, volume.dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise StoreError(f"input {config['input']} has dtype {dtype}; expected integer or float grayscale")
    options = config["options"]
    roi = config.get("roi")
    plan = Plan.grid(shape, options["chunk-size"], options["overlap"], roi=roi, iterations=options["iterations"])
    for axis, (extent, block, halo) in enumerate(zip(plan.roi.shape, plan.block, plan.halo)):
        rest = extent % block
        if 0 < rest < max(halo, 1) and extent > block:
            raise ValueError(
                f"options.chunk-size {block} leaves a {rest}-voxel sliver at the end of axis {'ZYX'[axis]} "
                f"({extent} voxels), thinner than the {halo}-voxel overlap; choose a chunk size that divides "
                f"{extent} or leaves at least {halo} voxels"
            )
    preserve_uri, bodies = None, ()
    if "preserve-bodies" in config:
        preserve_uri = config["preserve-bodies"]["segmentation"]
        bodies = tuple(int(b) for b in config["preserve-bodies"]["bodies"])
        with open_volume(preserve_uri) as volume:
            if volume.shape != shape:
                raise StoreError(f"preserve-bodies.segmentation {preserve_uri} has shape {volume.shape}; input has {shape}")
            if not np.issubdtype(volume.dtype, np.integer):
                raise StoreError(f"preserve-bodies.segmentation {preserve_uri} has dtype {volume.dtype}; expected labels")
    gt = None
    if "ground-truth" in config:
        gt = open_volume(config["ground-truth"])
        if gt.shape != shape:
            gt.close()
            raise StoreError(f"ground-truth {config['ground-truth']} has shape {gt.shape}; input has {shape}")
    task = SegmentTask(
        config["input"], _stages(config), options["background-value"], options["background-min-width"], preserve_uri, bodies
    )
    from .matching import check_rule_params, get_rule

    get_rule(options["stitch-algorithm"])
    check_rule_params(options["stitch-algorithm"], options["stitch-parameters"])
    return plan, task, gt


def segment_blocks(
    plan: Plan, task: SegmentTask, *, executor: str = "serial", workers: int | None = None, progress: bool = False
) -> dict[int, SegmentedBlock]:
    """Segment every subvolume of the plan; results stay lz4-compressed in memory."""
    blocks: dict[int, SegmentedBlock] = {}
    with get_executor(executor, workers=workers) as pool:
        tasks = ((sv, task) for sv in plan)
        for block in _progress(pool.map(_segment_star, tasks), len(plan), "segment", progress):
            blocks[block.sv_id] = block
    return blocks


def stitch_and_write(
    config: dict[str, Any],
    plan: Plan,
    task: SegmentTask,
    blocks: dict[int, SegmentedBlock],
    *,
    output: str | None = None,
    rule: str | None = None,
    rule_params: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch segmented blocks and write the interiors to a staged output, then publish it.

    ``output``, ``rule`` and ``rule_params`` default to the config's.
    """
    options = config["options"]
    rule = options["stitch-algorithm"] if rule is None else rule
    params = options["stitch-parameters"] if rule_params is None else rule_params
    uri = config["output"] if output is None else output
    store = create_volume(uri, plan.shape, np.uint64, chunks=plan.block, overwrite=overwrite, staged=True)
    seconds: dict[str, float] = {}
    try:
        start = time.perf_counter()
        result = stitch(
            plan,
            lambda sv: decode_labels(blocks[sv.id].data),
            rule,
            connected_components=options["stitch-connected-components"],
            **params,
        )
        seconds["stitch"] = time.perf_counter() - start
        start = time.perf_counter()
        offset = max(task.preserve_bodies, default=0)
        for sv in _progress(plan, len(plan), "write", progress):
            store.write(sv.interior, _final_labels(result, sv, blocks[sv.id].data, offset, task))
        store.set_metadata(
            {"labelstitch": __version__, "config": config, "plan": plan.to_dict(), "stitch": result.summary()}
        )
        store.commit()
        seconds["write"] = time.perf_counter() - start
    except BaseException:
        store.discard()
        raise
    finally:
        store.close()
    return result, seconds


def run(
    config: str | dict[str, Any],
    *,
    executor: str = "serial",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> RunResult:
    """Run the whole pipeline for a config (a dict or a JSON/YAML file).

    Raises
    ------
    ConfigError, StoreError, PluginError, ValueError
        Before anything is written: a bad config, a missing or malformed volume, an unknown
        plugin or parameter, an existing output without ``overwrite``.
    PipelineError
        A stage function returned the wrong shape or dtype (the staged output is discarded).
    """
    t0 = time.perf_counter()
    config = load_config(config)
    plan, task, gt = prepare(config)
    get_executor(executor, workers=workers).close()
    if volume_exists(config["output"]) and not overwrite:
        raise StoreError(f"output {config['output']} exists already; pass overwrite=True (--overwrite) to replace it")
    seconds = {"check and plan": time.perf_counter() - t0}
    try:
        start = time.perf_counter()
        blocks = segment_blocks(plan, task, executor=executor, workers=workers, progress=progress)
        seconds["segment"] = time.perf_counter() - start
        for stage in ("read", "predict-voxels", "create-supervoxels", "agglomerate-supervoxels"):
            seconds[f"  {stage}"] = sum(b.seconds.get(stage, 0.0) for b in blocks.values())
        result, more = stitch_and_write(config, plan, task, blocks, overwrite=overwrite, progress=progress)
        seconds.update(more)
        vi = None
        if gt is not None:
            start = time.perf_counter()
            with open_volume(config["output"]) as seg:
                vi = evaluate_volumes(seg, gt)
            seconds["evaluate"] = time.perf_counter() - start
    finally:
        if gt is not None:
            gt.close()
    seconds["total"] = time.perf_counter() - t0
    counts = {
        "subvolumes": len(plan),
        "supervoxels": sum(b.supervoxels for b in blocks.values()),
        "segments": sum(b.segments for b in blocks.values()),
        "matches": len(result.matches),
        "bodies": result.n_bodies + len(task.preserve_bodies),
    }
    return RunResult(config["output"], plan, seconds, counts, vi, result.summary())


def _segment_star(args: tuple[Subvolume, SegmentTask]) -> SegmentedBlock:
    return segment_subvolume(*args)


def _final_labels(result: StitchResult, sv: Subvolume, data: bytes, offset: int, task: SegmentTask) -> NDArray[np.uint64]:
    """The interior in output ids: stitched bodies above ``offset``, preserved bodies as they were."""
    labels = result.relabel(sv.id, decode_labels(data))
    if offset:
        labels = np.where(labels != 0, labels + np.uint64(offset), labels)
    if task.preserve_uri is not None:
        with open_volume(task.preserve_uri) as volume:
            original = volume.read(sv.interior).astype(np.uint64)
        keep = np.isin(original, np.asarray(task.preserve_bodies, dtype=np.uint64))
        labels[keep] = original[keep]
    return labels

