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
from dataclasses import dataclass, field, replace
from pathlib import Path
import logging
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import __version__
from ._kernels.hashing import pair_sum
from .codec import decode_labels, encode_labels
from .config import load_config
from .contingency import count_pairs
from .checkpoints import CheckpointDir, CheckpointError, config_hash, save_block
from .report import report_paths, write_stitch_report
from .executors import Executor, SerialExecutor, get_executor
from .matching import FaceMatches, FaceReport, match_slabs
from .geometry import Face, Plan, Subvolume, misaligned_axis, roi_chunks, roi_mask, roi_runs_near
from .metrics import VI, RegionalVI, _entropies_from_pairs, regional_vi
from .plugins import PluginError, Stage, resolve_stage
from .stitching import (
    StitchResult,
    assemble,
    check_stitch,
    face_slabs,
    faces_by_subvolume,
    interior_labels,
    relabel_interior,
)
from .stores import (
    DvidAddress,
    StoreError,
    VolumeStore,
    check_output,
    create_volume,
    dvid_roi_runs,
    open_volume,
    volume_exists,
)

__all__ = [
    "RunResult",
    "SegmentTask",
    "background_mask",
    "check_plan_output",
    "evaluate_regions",
    "evaluate_volumes",
    "run",
    "segment_blocks",
    "segment_subvolume",
    "stitch_and_write",
    "restitch",
    "compare",
    "CompareRow",
]

T = TypeVar("T")
log = logging.getLogger("labelstitch")


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
    codec: str = "lz4"
    checkpoint_dir: str | None = None
    extra_mask: str | None = None
    roi_runs: tuple[tuple[int, int, int, int], ...] = ()
    roi_block: int = 0


@dataclass(frozen=True)
class SegmentedBlock:
    """A segmented subvolume: its labels over the outer box (compressed, in memory or in a
    checkpoint file) and a few counts."""

    sv_id: int
    data: bytes | None
    supervoxels: int
    segments: int
    seconds: dict[str, float]
    path: str | None = None
    sha256: str = ""
    size: int = 0

    def load(self) -> NDArray[np.uint64]:
        """The labels over the outer box."""
        if self.data is not None:
            return decode_labels(self.data)
        assert self.path is not None
        with open(self.path, "rb") as f:
            return decode_labels(f.read())

    @classmethod
    def from_checkpoint(cls, sv_id: int, path: Path) -> SegmentedBlock:
        return cls(sv_id, None, 0, 0, {}, str(path), "", path.stat().st_size)


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
    if task.extra_mask is not None:
        with open_volume(task.extra_mask) as volume:
            mask |= volume.read(sv.outer).astype(bool)
    if task.roi_block:  # an ROI run: voxels outside it are masked (runs may be empty near this subvolume)
        mask |= ~roi_mask(task.roi_runs, task.roi_block, sv.outer)
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
    data = encode_labels(seg.astype(np.uint64), task.codec)
    if task.checkpoint_dir is None:
        return SegmentedBlock(sv.id, data, n_sv, n_seg, seconds, size=len(data))
    path = Path(task.checkpoint_dir) / f"sv-{sv.id}.blk"
    sha, size = save_block(path, data)
    return SegmentedBlock(sv.id, None, n_sv, n_seg, seconds, str(path), sha, size)


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
    return regional_vi(seg.shape, region, lambda box: (seg.read(box), gt.read(box)), ignore_gt_zero=ignore_gt_zero)


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
    checkpoints : str or None
        The checkpoint folder, if the run had one.
    report : str or None
        The stitch report (``OUT.stitch.md``; ``.json`` and ``.npz`` beside it), if written.
    """

    output: str
    plan: Plan
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vi: VI | None = None
    stitch: dict[str, Any] = field(default_factory=dict)
    checkpoints: str | None = None
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "checkpoints": self.checkpoints,
            "report": self.report,
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


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar on stderr (work already done, e.g. restored from checkpoints, counts as done)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", leave=False)


def _progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    bar = _bar(total, desc, enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


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
    roi_runs: tuple[tuple[int, int, int, int], ...] = ()
    roi_block = 0
    if options.get("roi"):
        if roi is not None:
            raise ValueError("give either roi (a box) or options.roi (a DVID roi), not both")
        roi_uri = _roi_uri(options["roi"], config["input"])
        runs, roi_block = dvid_roi_runs(roi_uri)
        roi = roi_chunks(runs, roi_block, shape, options["chunk-size"])
        if not roi.any():
            raise ValueError(f"options.roi {roi_uri} has no block inside the input volume of shape {shape}")
        roi_runs = _run_tuples(runs)
    plan = Plan.grid(shape, options["chunk-size"], options["overlap"], roi=roi, iterations=options["iterations"])
    if options.get("iteration-size"):
        iterations = -(-len(plan) // options["iteration-size"])
        plan = Plan.grid(shape, options["chunk-size"], options["overlap"], roi=roi, iterations=iterations)
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
            if volume.bounded and volume.shape != shape:
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
        config["input"],
        _stages(config),
        options["background-value"],
        options["background-min-width"],
        preserve_uri,
        bodies,
        codec=options["codec"],
        roi_runs=roi_runs,
        roi_block=roi_block,
    )
    check_stitch(plan, options["stitch-algorithm"], options["stitch-parameters"])
    return plan, task, gt


def _roi_uri(roi: str, input_uri: str) -> str:
    """``options.roi`` as a dvid:// string: a bare name lives on the input's DVID node."""
    if "://" in roi:
        return roi
    if not input_uri.startswith("dvid://"):
        raise ValueError(
            f"options.roi {roi!r} names a DVID roi, but the input {input_uri} is not on DVID; "
            "write it as dvid://HOST:PORT/UUID/NAME, or give a box as the top-level roi"
        )
    return DvidAddress.parse(input_uri).sibling(roi).uri


def check_plan_output(
    plan: Plan, uri: str, *, overwrite: bool = False, create_output: bool = False
) -> None:
    """Refuse, before any work, an output that cannot take this plan's writes: it exists
    without ``overwrite``, a DVID node is committed or its instance is missing without
    ``create_output``, or the subvolume interiors are not aligned to the output's blocks."""
    alignment = check_output(uri, overwrite=overwrite, create_instance=create_output)
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


def _writes_own_output(config: dict[str, Any]) -> bool:
    """Whether the output exists and was written by this same config (a run to resume)."""
    if not volume_exists(config["output"]):
        return False
    with open_volume(config["output"]) as store:
        return bool(store.metadata.get("config-hash") == config_hash(config))


def _describe(item: tuple[Any, ...]) -> str:
    """Name a per-subvolume work item (its first element is the Subvolume) in error messages."""
    return f"subvolume {item[0].id}"


def segment_blocks(
    plan: Plan,
    task: SegmentTask,
    *,
    executor: str | Executor = "serial",
    workers: int | None = None,
    checkpoints: CheckpointDir | None = None,
    progress: bool = False,
) -> tuple[dict[int, SegmentedBlock], dict[str, Any]]:
    """Segment every subvolume, iteration by iteration.

    Without checkpoints the compressed blocks stay in memory. With them, each block is
    written to the checkpoint folder by the worker that made it, and blocks whose
    checkpoints verify are not recomputed (a half-written or corrupt one is logged). Returns
    the blocks and the counts ``computed`` and ``restored``, the seconds spent verifying
    checkpoints and the seconds of each iteration.
    """
    blocks: dict[int, SegmentedBlock] = {}
    counts: dict[str, Any] = {"computed": 0, "restored": 0}
    todo = list(plan)
    if checkpoints is not None:
        start = time.perf_counter()
        states = checkpoints.verify()  # reads and decodes every existing block
        counts["verify seconds"] = time.perf_counter() - start
        task = replace(task, checkpoint_dir=str(checkpoints.path))
        for sv in plan:
            if states[sv.id] == "ok":
                blocks[sv.id] = SegmentedBlock.from_checkpoint(sv.id, checkpoints.block_path(sv.id))
                counts["restored"] += 1
            elif states[sv.id] != "missing":
                log.warning("recomputing subvolume %d: its checkpoint is %s", sv.id, states[sv.id])
        todo = [sv for sv in plan if sv.id not in blocks]
    pool = get_executor(executor, workers=workers) if isinstance(executor, str) else executor
    bar = _bar(len(plan), "segment", progress, initial=len(blocks))
    try:
        counts["iteration seconds"] = []
        for k in range(plan.iterations):
            start = time.perf_counter()
            items = [(sv, _task_for(sv, task)) for sv in todo if sv.iteration == k]
            for block in pool.map(_segment_star, items, describe=_describe):
                if checkpoints is not None:
                    checkpoints.record(block.sv_id, block.sha256, block.size)
                blocks[block.sv_id] = block
                counts["computed"] += 1
                bar.update(1)
            counts["iteration seconds"].append(time.perf_counter() - start)
    finally:
        bar.close()
        if isinstance(executor, str):
            pool.close()
    return blocks, counts


def _task_for(sv: Subvolume, task: SegmentTask) -> SegmentTask:
    """The task with only the ROI runs near ``sv``, so a large ROI is not shipped with every item."""
    if not task.roi_block:
        return task
    return replace(task, roi_runs=_run_tuples(roi_runs_near(task.roi_runs, task.roi_block, sv.outer)))


def _run_tuples(runs: NDArray[np.int64]) -> tuple[tuple[int, int, int, int], ...]:
    """ROI runs as plain tuples, for the frozen (picklable, comparable) task."""
    return tuple((z, y, x0, x1) for z, y, x0, x1 in runs.tolist())


def _emit_slabs(item: tuple[Subvolume, SegmentedBlock, tuple[tuple[int, Face], ...]]) -> list[tuple[tuple[str, int], Any]]:
    """Step 1 of stitching, per subvolume: its interior labels (keyed by the subvolume) and
    its compressed face slabs (keyed by the face)."""
    sv, block, faces = item
    labels = block.load()
    pairs: list[tuple[tuple[str, int], Any]] = [(("nodes", sv.id), interior_labels(sv, labels))]
    pairs += [(("face", i), (sv.id, encode_labels(slab))) for i, slab in face_slabs(sv, labels, list(faces))]
    return pairs


@dataclass(frozen=True)
class _Matcher:
    """Step 2, per face: match the two sides' slabs (per subvolume key: hand the labels on)."""

    faces: tuple[Face, ...]
    rule: str
    params: dict[str, Any]
    cc: bool

    def __call__(self, group: tuple[tuple[str, int], list[Any]]) -> tuple[str, int, Any]:
        (kind, index), values = group
        if kind == "nodes":
            return kind, index, values[0]
        face = self.faces[index]
        sides = dict(values)
        matches, report = match_slabs(
            decode_labels(sides[face.a]),
            decode_labels(sides[face.b]),
            axis=face.axis,
            plane=face.plane_offset,
            rule=self.rule,
            connected_components=self.cc,
            **self.params,
        )
        return kind, index, (matches, report)


@dataclass(frozen=True)
class _WriteItem:
    sv: Subvolume
    block: SegmentedBlock
    labels: NDArray[np.uint64]
    bodies: NDArray[np.uint64]
    offset: int
    preserve_uri: str | None
    preserve_bodies: tuple[int, ...]
    writer_uri: str | None


def _write_item(item: _WriteItem) -> tuple[int, NDArray[np.uint64] | None]:
    """Step 3, per subvolume: relabel the interior into body ids and write it (or hand it back
    to the driver when the output cannot be written from several processes)."""
    sv = item.sv
    out = relabel_interior(sv, item.block.load(), item.labels, item.bodies)
    if item.offset:
        out = np.where(out != 0, out + np.uint64(item.offset), out)
    if item.preserve_uri is not None:
        with open_volume(item.preserve_uri) as volume:
            original = volume.read(sv.interior).astype(np.uint64)
        keep = np.isin(original, np.asarray(item.preserve_bodies, dtype=np.uint64))
        out[keep] = original[keep]
    if item.writer_uri is None:
        return sv.id, out
    with open_volume(item.writer_uri, read_only=False) as store:
        store.write(sv.interior, out)
        store.flush()
    return sv.id, None


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
    create_output: bool = False,
    executor: str | Executor = "serial",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch segmented blocks and write the interiors to a staged output, then publish it.

    Three mapped steps around one driver step, the same on every executor: (1) per
    subvolume, cut the face slabs and list the interior labels; (2) per face, match; on the
    driver, resolve the matches into bodies; (3) per subvolume, relabel and write. Only
    slabs, label lists and matches travel to the driver. ``output``, ``rule`` and
    ``rule_params`` default to the config's.
    """
    options = config["options"]
    rule = options["stitch-algorithm"] if rule is None else rule
    params = options["stitch-parameters"] if rule_params is None else rule_params
    cc = bool(options["stitch-connected-components"])
    check_stitch(plan, rule, params)
    uri = config["output"] if output is None else output
    check_plan_output(plan, uri, overwrite=overwrite, create_output=create_output)
    pool = get_executor(executor, workers=workers) if isinstance(executor, str) else executor
    store = create_volume(
        uri, plan.shape, np.uint64, chunks=plan.block, overwrite=overwrite, staged=True, create_instance=create_output
    )
    seconds: dict[str, float] = {}
    identity = {"labelstitch": __version__, "config-hash": config_hash(config)}
    try:
        store.set_metadata({**identity, "complete": False})  # lets `run --resume` recognise its own output
        start = time.perf_counter()
        faces = plan.faces()
        faces_of = faces_by_subvolume(plan)
        nodes_of: dict[int, NDArray[np.uint64]] = {}
        per_face: list[FaceMatches] = [None] * len(faces)  # type: ignore[list-item]
        reports: list[FaceReport] = [None] * len(faces)  # type: ignore[list-item]
        step1 = [(sv, blocks[sv.id], tuple(faces_of[sv.id])) for sv in plan]
        matcher = _Matcher(faces, rule, dict(params), cc)
        grouped = pool.map_grouped(_emit_slabs, step1, matcher, describe=_describe)
        for kind, index, value in _progress(grouped, len(plan) + len(faces), "match", progress):
            if kind == "nodes":
                nodes_of[index] = value
            else:
                per_face[index], reports[index] = value
        result = assemble(plan, rule, params, cc, per_face, reports, nodes_of, lambda sv: blocks[sv.id].load())
        mapping = result.mapping
        seconds["stitch"] = time.perf_counter() - start

        start = time.perf_counter()
        offset = max(task.preserve_bodies, default=0)
        writer = store.writer_uri if store.supports_parallel_writes and not isinstance(pool, SerialExecutor) else None
        step3 = []
        for sv in plan:
            labels, bodies = mapping.for_subvolume(sv.id)
            step3.append(_WriteItem(sv, blocks[sv.id], labels, bodies, offset, task.preserve_uri, task.preserve_bodies, writer))
        for sv_id, data in _progress(pool.map(_write_item, step3, describe=lambda w: f"subvolume {w.sv.id}"), len(plan), "write", progress):
            if data is not None:
                store.write(plan[sv_id].interior, data)
        store.set_metadata(
            {**identity, "complete": True, "config": config, "plan": plan.to_dict(), "stitch": result.summary()}
        )
        store.commit()
        write_stitch_report(result, uri, offset=offset, folder=options["checkpoint-dir"])
        seconds["write"] = time.perf_counter() - start
    except BaseException:
        store.discard()
        raise
    finally:
        store.close()
        if isinstance(executor, str):
            pool.close()
    return result, seconds


def restitch(
    config: str | dict[str, Any],
    *,
    rule: str | None = None,
    rule_params: dict[str, Any] | None = None,
    output: str | None = None,
    overwrite: bool = False,
    create_output: bool = False,
    executor: str | Executor = "serial",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch again from a finished run's checkpoints, with another rule or parameters,
    without segmenting anything. The output's metadata records the rule and parameters.

    Raises
    ------
    CheckpointError
        If the config has no checkpoint folder, or a subvolume's checkpoint is missing or
        does not verify (finish the run with ``labelstitch run --resume`` first).
    """
    config = load_config(config)
    plan, task, gt = prepare(config)
    if gt is not None:
        gt.close()
    folder = config["options"]["checkpoint-dir"]
    if not folder:
        raise CheckpointError("re-stitching needs options.checkpoint-dir: the segmented blocks are read from there")
    checkpoints = CheckpointDir.open(folder, plan, config, resume=True)
    states = checkpoints.verify()
    bad = {sv: state for sv, state in states.items() if state != "ok"}
    if bad:
        listed = ", ".join(f"{sv} ({state})" for sv, state in list(bad.items())[:5])
        raise CheckpointError(
            f"{len(bad)} subvolumes have no usable checkpoint in {folder}: {listed}; "
            "finish the run with `labelstitch run CONFIG --resume` first"
        )
    blocks = {sv.id: SegmentedBlock.from_checkpoint(sv.id, checkpoints.block_path(sv.id)) for sv in plan}
    if rule is not None:
        check_stitch(plan, rule, rule_params or {})
    return stitch_and_write(
        config, plan, task, blocks, output=output, rule=rule, rule_params=rule_params if rule is not None else None,
        overwrite=overwrite, create_output=create_output, executor=executor, workers=workers, progress=progress,
    )


@dataclass(frozen=True)
class CompareRow:
    """One stitching variant scored against ground truth (a row of the paper's Table 2)."""

    name: str
    rule: str
    params: dict[str, Any]
    merge: float
    split: float
    bodies: int
    seconds: float
    regional: RegionalVI

    @property
    def total(self) -> float:
        return self.merge + self.split

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "params": self.params, "merge": self.merge,
                "split": self.split, "total": self.total, "bodies": self.bodies, "seconds": round(self.seconds, 3)}


def compare(
    config: str | dict[str, Any],
    ground_truth: str,
    *,
    variants: list[tuple[str, str, dict[str, Any]]] | None = None,
    region: int = 32,
    folder: str | None = None,
    executor: str | Executor = "serial",
) -> list[CompareRow]:
    """Stitch a finished run's checkpoints with every rule (and any extra ``(name, rule,
    params)`` variants) and score each against ``ground_truth``: VI merge/split/total,
    bodies, time, and VI per ``region``-sized block for Figure 9. Results are written to
    ``folder`` (default: ``compare/`` inside the checkpoint folder), one volume per variant.
    """
    from .matching import available_rules

    config = load_config(config)
    chosen = [(rule, rule, {}) for rule in available_rules()] + list(variants or [])
    where = Path(folder or Path(config["options"]["checkpoint-dir"] or ".") / "compare")
    where.mkdir(parents=True, exist_ok=True)
    rows = []
    with open_volume(ground_truth) as gt:
        for name, rule, params in chosen:
            uri = str(where / f"{name}.zarr")
            start = time.perf_counter()
            result, _ = restitch(config, rule=rule, rule_params=params, output=uri, overwrite=True, executor=executor)
            seconds = time.perf_counter() - start
            with open_volume(uri) as seg:
                score = evaluate_volumes(seg, gt)
                regional = evaluate_regions(seg, gt, region)
            rows.append(CompareRow(name, rule, dict(params), score.merge, score.split, result.n_bodies, seconds, regional))
    return rows


def run(
    config: str | dict[str, Any],
    *,
    executor: str | Executor = "serial",
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    create_output: bool = False,
    progress: bool = False,
) -> RunResult:
    """Run the whole pipeline for a config (a dict or a JSON/YAML file).

    ``executor`` is ``"serial"``, ``"processes"``, ``"spark"`` or a plugin's name, or an open
    :class:`~labelstitch.executors.Executor` (whose warm workers are then reused and left
    open); the output is the same whatever the executor and worker count. With ``options.checkpoint-dir`` every finished
    subvolume is checkpointed; ``resume=True`` continues a run that crashed, and may write
    over an output that this same config had started to write. ``create_output`` creates a
    missing DVID labels instance.

    Raises
    ------
    ConfigError, StoreError, PluginError, CheckpointError, ValueError
        Before anything is written: a bad config, a missing or malformed volume, an unknown
        plugin or parameter, an existing output without ``overwrite``, checkpoints of
        another config or plan, a committed DVID node, a missing DVID output without
        ``create_output``, a plan not aligned to a DVID output's blocks.
    PipelineError
        A stage function returned the wrong shape or dtype (the staged output is discarded).
    """
    t0 = time.perf_counter()
    config = load_config(config)
    plan, task, gt = prepare(config)
    overwrite = overwrite or (resume and _writes_own_output(config))
    check_plan_output(plan, config["output"], overwrite=overwrite, create_output=create_output)
    checkpoints = None
    if config["options"]["checkpoint-dir"]:
        checkpoints = CheckpointDir.open(config["options"]["checkpoint-dir"], plan, config, resume=resume)
    elif resume:
        raise ValueError("resume needs options.checkpoint-dir: there is nothing to resume from")
    pool = get_executor(executor, workers=workers) if isinstance(executor, str) else executor
    seconds = {"check and plan": time.perf_counter() - t0}
    try:
        start = time.perf_counter()
        blocks, restored = segment_blocks(plan, task, executor=pool, checkpoints=checkpoints, progress=progress)
        seconds["segment"] = time.perf_counter() - start
        if restored["restored"]:
            seconds["  verify checkpoints"] = restored["verify seconds"]
        if plan.iterations > 1:
            for k, sec in enumerate(restored["iteration seconds"]):
                seconds[f"  iteration {k}"] = sec
        for stage in ("read", "predict-voxels", "create-supervoxels", "agglomerate-supervoxels"):
            seconds[f"  {stage}"] = sum(b.seconds.get(stage, 0.0) for b in blocks.values())
        result, more = stitch_and_write(
            config, plan, task, blocks, overwrite=overwrite, create_output=create_output, executor=pool, progress=progress
        )
        seconds.update(more)
        vi = None
        if gt is not None:
            start = time.perf_counter()
            with open_volume(config["output"]) as seg:
                vi = evaluate_volumes(seg, gt)
            seconds["evaluate"] = time.perf_counter() - start
    finally:
        if isinstance(executor, str):
            pool.close()
        if gt is not None:
            gt.close()
    seconds["total"] = time.perf_counter() - t0
    stored = sum(b.size for b in blocks.values())
    raw = sum(sv.outer.size * 8 for sv in plan)
    counts: dict[str, Any] = {
        "subvolumes": len(plan),
        "segmented now": restored["computed"],
        "restored from checkpoints": restored["restored"],
        "supervoxels": sum(b.supervoxels for b in blocks.values()),
        "segments": sum(b.segments for b in blocks.values()),
        "matches": len(result.matches),
        "bodies": result.n_bodies + len(task.preserve_bodies),
        "checkpoint bytes": stored,
        "uncompressed label bytes": raw,
        "compression ratio": round(raw / stored, 1) if stored else 0,
    }
    if restored["restored"] and restored.get("verify seconds"):
        restored_bytes = sum(plan[sv].outer.size * 8 for sv, b in blocks.items() if not b.seconds)
        counts["restore MB/s"] = round(restored_bytes / 1e6 / restored["verify seconds"], 1)
    paths = report_paths(config["output"], config["options"]["checkpoint-dir"])
    return RunResult(
        config["output"],
        plan,
        seconds,
        counts,
        vi,
        result.summary(),
        str(checkpoints.path) if checkpoints is not None else None,
        str(paths["md"]) if paths is not None else None,
    )


def _segment_star(args: tuple[Subvolume, SegmentTask]) -> SegmentedBlock:
    return segment_subvolume(*args)
