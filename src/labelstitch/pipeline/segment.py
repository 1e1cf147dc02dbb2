"""Step 2 of the paper's workflow: segment every subvolume, on the workers.

:func:`segment_subvolume` is the code an executor runs for one subvolume: read its outer
box, mask background, ROI and preserved bodies, run the three stages, check what each
returns, and compress the labels (into the checkpoint folder when there is one).
:func:`segment_all` is the driver's loop around it, iteration by iteration, reusing
checkpoints that verify.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..checkpoints import CheckpointDir, block_name, save_block
from ..graphparts import interior_graph
from ..codec import bundle_graph, bundle_supervoxels, encode_labels, holds
from ..executors import Executor, ExecutorError
from ..geometry import Box, Subvolume, roi_mask
from ..plugins import PluginError, Stage
from ..relabel import refine_supervoxels
from ..stores import StoreError
from .predictions import read_predictions
from .progress import bar
from ..runstatus import RunStatus
from .values import BlockFailure, SegmentedSubvolume, SegmentTask

__all__ = ["BlocksFailed", "PipelineError", "SegmentStats", "background_mask", "empty_subvolume", "segment_all", "segment_subvolume"]

log = logging.getLogger("labelstitch")

class PipelineError(ValueError):
    """A stage function returned something the pipeline cannot use."""


class BlocksFailed(RuntimeError):
    """Subvolumes failed every try; nothing was written (see ``options.allow-missing-blocks``).
    ``failures`` lists them; the message ends with their table."""

    def __init__(self, message: str, failures: list[BlockFailure]) -> None:
        super().__init__(message)
        self.failures = failures


def background_mask(grayscale: NDArray[Any], value: int | None, min_width: int) -> NDArray[np.bool_]:
    """True on empty regions: voxels equal to ``value`` inside runs of at least ``min_width``
    such voxels along every axis (a morphological opening with a cube), so dark membranes
    are never mistaken for padding.

    The erosion treats the outside of the box as empty (padding that reaches the box's edge
    may go on beyond it); the dilation does not, so a lone dark voxel masks nothing, not
    even along the box's faces. Both are separable min/max filters.

    >>> g = np.full((12, 12, 12), 90, np.uint8); g[5, 5, 5] = 0; g[:, :, :4] = 0
    >>> m = background_mask(g, 0, 3)
    >>> bool(m[5, 5, 5]), bool(m[:, :, :4].all()), int(m[:, :, 4:].sum())
    (False, True, 0)
    """
    if value is None:
        return np.zeros(grayscale.shape, bool)
    empty = grayscale == value
    if not empty.any():
        return empty
    from scipy.ndimage import maximum_filter, minimum_filter

    eroded = minimum_filter(empty.view(np.uint8), size=min_width, mode="constant", cval=1)
    shift = -1 if min_width % 2 == 0 else 0  # the dilation's window mirrors the erosion's
    return maximum_filter(eroded, size=min_width, mode="constant", cval=0, origin=shift).view(bool)


def stage_grayscale(grayscale: NDArray[Any], black: float, white: float) -> NDArray[Any]:
    """The grayscale as predict-voxels functions receive it: uint8 (0 black, 255 white) when
    the intensity range is [0, 255], else float32 in [0, 1]; values outside are clipped.

    >>> stage_grayscale(np.array([0, 128, 300], np.uint16), 0, 255)
    array([  0, 128, 255], dtype=uint8)
    >>> stage_grayscale(np.array([100.0, 150.0, 300.0]), 100, 200)
    array([0. , 0.5, 1. ], dtype=float32)
    """
    if (black, white) == (0, 255):
        if grayscale.dtype == np.uint8:
            return grayscale
        values = np.rint(grayscale) if np.issubdtype(grayscale.dtype, np.floating) else grayscale
        return np.clip(values, 0, 255).astype(np.uint8)
    out = (grayscale.astype(np.float32) - np.float32(black)) / np.float32(white - black)
    return np.clip(out, 0.0, 1.0, out=out)


def _checked(name: str, result: Any, shape: tuple[int, ...], sv: Subvolume, *, floating: bool) -> NDArray[Any]:
    """A stage's result as an array, or a PipelineError naming the function and subvolume."""
    arr = np.asarray(result)
    if floating:
        if arr.shape[:3] != shape or arr.ndim not in (3, 4):
            raise PipelineError(
                f"{name} returned shape {arr.shape} for subvolume {sv.id}; expected {shape} or {shape} + (channels,)"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise PipelineError(f"{name} returned dtype {arr.dtype} for subvolume {sv.id}; expected float32 probabilities")
        finite = np.isfinite(arr)
        if not finite.all():
            where = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), arr.shape)[:3])
            raise PipelineError(
                f"{name} returned {arr.size - int(finite.sum())} NaN or infinite values for subvolume {sv.id} "
                f"(the first at {tuple(o + w for o, w in zip(sv.outer.start, where))} in the volume)"
            )
        return arr.astype(np.float32, copy=False)
    if arr.shape != shape:
        raise PipelineError(f"{name} returned shape {arr.shape} for subvolume {sv.id}; expected {shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise PipelineError(f"{name} returned dtype {arr.dtype} for subvolume {sv.id}; expected integer labels")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise PipelineError(f"{name} returned negative labels for subvolume {sv.id}")
    return arr


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Tag an exception raised inside with the step it came from (the failure table's stage)."""
    try:
        yield
    except Exception as exc:
        if not hasattr(exc, "labelstitch_step"):
            try:
                exc.labelstitch_step = name  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise


def segment_subvolume(sv: Subvolume, task: SegmentTask) -> SegmentedSubvolume:
    """Read, mask and segment one subvolume's outer box with the three stages (with
    ``task.context``, a larger box around it, cropped back to the outer box afterwards)."""
    original = sv
    if task.context:  # segment a wider box around the outer one (same interior); keep the outer box
        grown = sv.outer.grow(task.context)
        sv = replace(sv, outer=grown.intersect(Box.from_shape(task.shape)) if task.shape else grown)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with _step("read"), task.input.open() as volume:
        missing = [] if task.allow_missing_input else volume.missing_chunks(sv.outer)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise StoreError(
                f"input {task.input} has no chunk {missing[0]}{more} under subvolume {sv.id} ({sv.outer}): a chunk that "
                "was never written would be read as empty background; restore it, or set "
                "options.allow-missing-input to read missing chunks as the fill value"
            )
        grayscale = volume.read(sv.outer)
    if np.issubdtype(grayscale.dtype, np.floating) and not np.isfinite(grayscale).all():
        bad = tuple(int(i) for i in np.unravel_index(int(np.argmin(np.isfinite(grayscale))), grayscale.shape))
        raise PipelineError(
            f"input {task.input} holds NaN or infinite values in subvolume {sv.id} "
            f"(the first at {tuple(o + b for o, b in zip(sv.outer.start, bad))}); grayscale must be finite"
        )
    mask = background_mask(grayscale, task.background_value, task.background_min_width)
    if task.extra_mask is not None:
        with task.extra_mask.open() as volume:
            mask |= volume.read(sv.outer).astype(bool)
    if task.roi_block:  # an ROI run: voxels outside it are masked (runs may be empty near this subvolume)
        mask |= ~roi_mask(task.roi_runs, task.roi_block, sv.outer)
    if task.preserved is not None:
        mask |= task.preserved.in_box(sv.outer)[0]
    seconds["read"] = time.perf_counter() - start
    predict, supervoxel, agglomerate = task.stages
    shape = grayscale.shape
    grayscale = stage_grayscale(grayscale, *task.intensity_range)

    start = time.perf_counter()
    with _step("predict-voxels"):
        made = read_predictions(task.predictions, sv.outer) if task.predictions else predict(grayscale, mask)
        predictions = _checked(f"predict-voxels function {predict.name!r}", made, shape, sv, floating=True)
    seconds["predict-voxels"] = time.perf_counter() - start

    start = time.perf_counter()
    with _step("create-supervoxels"):
        svs = _checked(f"create-supervoxels function {supervoxel.name!r}", supervoxel(predictions, mask), shape, sv, floating=False)
        if np.any(svs[mask] != 0):
            raise PipelineError(
                f"create-supervoxels function {supervoxel.name!r} labelled {int(np.count_nonzero(svs[mask]))} masked "
                f"voxels in subvolume {sv.id}; supervoxels must not enter the mask"
            )
    seconds["create-supervoxels"] = time.perf_counter() - start

    start = time.perf_counter()
    graph = None
    with _step("agglomerate-supervoxels"):
        if task.graph:  # the agglomeration waits for the whole volume's graph; this block gives its part
            seg = np.where(mask, 0, svs)
            graph = interior_graph_bytes(sv, original, seg, predictions, agglomerate)
        else:
            seg = _checked(
                f"agglomerate-supervoxels function {agglomerate.name!r}", agglomerate(predictions, svs), shape, sv,
                floating=False,
            )
            seg = np.where(mask, 0, seg)  # preserved bodies and background never take part in stitching
    seconds["agglomerate-supervoxels"] = time.perf_counter() - start
    if task.keep_supervoxels:  # the interior's supervoxels, cut where the agglomeration cut them
        inner = sv.interior.slices(sv.outer)
        pieces, segment_of = refine_supervoxels(svs[inner], seg[inner])
    keep = original.outer.slices(sv.outer)  # the whole array, unless a context was segmented too
    svs, seg, mask, sv = svs[keep], np.ascontiguousarray(seg[keep]), mask[keep], original
    n_sv = int(np.unique(svs).size - (1 if (svs == 0).any() else 0))
    n_seg = int(np.unique(seg).size - (1 if (seg == 0).any() else 0))
    data = _block_bytes(seg, pieces if task.keep_supervoxels else None, segment_of if task.keep_supervoxels else None,
                        graph, task.codec)
    unmasked = int(mask.size - np.count_nonzero(mask))
    host = socket.gethostname()
    if task.checkpoint_dir is None:
        return SegmentedSubvolume(sv.id, data, n_sv, n_seg, seconds, size=len(data), unmasked=unmasked, worker=host)
    path = Path(task.checkpoint_dir) / block_name(sv.id)
    sha, size = save_block(path, data)
    return SegmentedSubvolume(sv.id, None, n_sv, n_seg, seconds, str(path), sha, size, unmasked=unmasked, worker=host)


def _block_bytes(seg: NDArray[Any], pieces: NDArray[np.uint64] | None, segment_of: NDArray[np.uint64] | None,
                 graph: bytes | None, codec: str) -> bytes:
    """A subvolume's block: its labels, with the interior's supervoxels and region graph where kept."""
    data = encode_labels(seg.astype(np.uint64), codec)
    if pieces is not None and segment_of is not None:
        data = bundle_supervoxels(data, encode_labels(pieces, codec), segment_of)
    if graph is not None:
        data = bundle_graph(data, graph)
    return data


def empty_subvolume(item: tuple[Subvolume, SegmentTask]) -> SegmentedSubvolume:
    """A failed subvolume's stand-in with ``options.allow-missing-blocks``: all background,
    in the form the run's other blocks have (supervoxels, region graph), held in memory and
    never checkpointed, so that ``--resume`` segments it."""
    sv, task = item
    seg = np.zeros(sv.outer.shape, np.uint64)
    pieces = segment_of = graph = None
    if task.keep_supervoxels:
        inner = seg[sv.interior.slices(sv.outer)]
        pieces, segment_of = refine_supervoxels(inner, inner)
    if task.graph:
        graph = interior_graph_bytes(sv, sv, seg, np.zeros(sv.outer.shape, np.float32), task.stages[2])
    data = _block_bytes(seg, pieces, segment_of, graph, task.codec)
    return SegmentedSubvolume(sv.id, data, 0, 0, {}, size=len(data), unmasked=0)


def _holds(path: Path) -> set[str]:
    """What a checkpoint block holds besides its labels (see :func:`~labelstitch.codec.holds`)."""
    with open(path, "rb") as f:
        return holds(f.read(64))


def interior_graph_bytes(sv: Subvolume, original: Subvolume, labels: NDArray[Any], predictions: NDArray[np.float32],
                         agglomerate: Stage) -> bytes:
    """The region-graph statistics of ``original``'s interior (``labels`` and ``predictions``
    cover ``sv.outer``), with the boundary probability of its six faces' planes, as
    ``.npz`` bytes. The boundary is the channel the agglomeration declares it reads as
    ``boundary`` (channel 0 if it reads none); other channels follow it. The contacts carry
    the further values the agglomeration declares (``graph_contacts``), and so do the planes."""
    channel = agglomerate.channel("boundary") or 0
    pred = predictions if predictions.ndim == 4 else predictions[..., None]
    for meaning, index in (("boundary", channel), ("mitochondria", agglomerate.channel("mitochondria"))):
        if index is not None and (index >= pred.shape[-1] or (meaning != "boundary" and index == channel)):
            raise PipelineError(f"the {meaning} channel {index} of {agglomerate.name!r}: the predictions of subvolume "
                                f"{original.id} have {pred.shape[-1]} channel(s), the boundary being channel {channel}")
    order = [channel] + [c for c in range(pred.shape[-1]) if c != channel]
    inner = original.interior.slices(sv.outer)
    inside = pred[inner] if channel == 0 else pred[inner][..., order]  # a view unless channels move
    contacts = agglomerate.graph_contacts(pred.shape[-1])
    arrays = interior_graph(labels[inner], inside, contacts).arrays()
    further = contacts is not None and bool(contacts.kinds)  # planes of the further values too (labelstitch.contacts)
    if further:
        arrays["kinds"] = np.array(contacts.kinds, np.int8)
    for axis in range(3):  # the planes the face contacts need: first and last of the interior along each axis
        arrays[f"lo{axis}"] = np.ascontiguousarray(np.take(inside[..., 0], 0, axis=axis))
        arrays[f"hi{axis}"] = np.ascontiguousarray(np.take(inside[..., 0], -1, axis=axis))
        if further:
            arrays[f"lox{axis}"], arrays[f"hix{axis}"] = contacts.planes(inside, axis)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


#: a full or read-only disk fails every block alike: the run stops at once, saying so
_MACHINE_WIDE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def refuses_everywhere(exc: BaseException) -> bool:
    """Whether an error would fail every try of every block alike, so that retrying it and
    going on with other blocks is pointless: labelstitch's own verdicts on the data or the
    plugins (a stage's result of the wrong shape or with NaN, a missing input chunk, an
    unreachable DVID after the client's retries) and a full or read-only disk."""
    if isinstance(exc, (PipelineError, StoreError, PluginError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _MACHINE_WIDE


def _segment_item(item: tuple[Subvolume, SegmentTask]) -> SegmentedSubvolume | BlockFailure:
    """Segment one subvolume on a worker; an exception raised by a stage (a bad region, a
    plugin bug) comes back as a :class:`BlockFailure` with the stage it came from and the
    worker, so one bad block never stops the others. labelstitch's own refusals, which
    every try would meet, are raised as they are (:func:`refuses_everywhere`)."""
    sv, task = item
    try:
        return segment_subvolume(sv, task)
    except Exception as exc:
        if refuses_everywhere(exc):
            raise
        line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
        error = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
        return BlockFailure(sv.id, str(sv.interior), getattr(exc, "labelstitch_step", "segment"), error,
                            f"{socket.gethostname()}:{os.getpid()}")


def describe_item(item: tuple[Any, ...]) -> str:
    """Name a per-subvolume work item (its first element is the Subvolume) in error messages."""
    return f"subvolume {item[0].id}"


@dataclass
class SegmentStats:
    """What :func:`segment_all` did: counts and seconds."""

    computed: int = 0
    restored: int = 0
    verify_seconds: float = 0.0
    iteration_seconds: list[float] = field(default_factory=list)
    #: tries beyond the first, over all subvolumes
    retried: int = 0
    #: subvolumes that failed every try
    failures: list[BlockFailure] = field(default_factory=list)


def segment_all(
    plan: Any,
    task: SegmentTask,
    pool: Executor,
    *,
    checkpoints: CheckpointDir | None = None,
    spill: str | None = None,
    progress: bool = False,
    status: RunStatus | None = None,
) -> tuple[dict[int, SegmentedSubvolume], SegmentStats]:
    """Segment every subvolume of ``plan``, iteration by iteration, on ``pool``.

    With checkpoints, each subvolume's labels are written to the checkpoint folder by the
    worker that made them, and those whose checkpoints verify are not recomputed (a
    half-written or corrupt one is logged). Without, they go to the ``spill`` folder the
    same way (so the driver holds only their paths and counts), or, with neither, come back
    to the driver compressed.

    A subvolume whose stage raises or whose worker dies is tried again up to
    ``task.retries`` times and then listed in the stats' ``failures``; the others go on.
    ``status`` (the checkpoint folder's run status) hears of every finished, retried and
    failed subvolume.
    """
    segmented: dict[int, SegmentedSubvolume] = {}
    stats = SegmentStats()
    if checkpoints is not None:
        start = time.perf_counter()
        states = checkpoints.verify()  # reads and decodes every existing checkpoint
        checkpoints.remove_staging()  # the *.partial files of a killed run (reported as half-written below)
        stats.verify_seconds = time.perf_counter() - start
        task = replace(task, checkpoint_dir=str(checkpoints.path))
        for sv in plan:
            if states[sv.id] == "ok" and (task.keep_supervoxels or task.graph):
                held = _holds(checkpoints.block_path(sv.id))
                if task.keep_supervoxels and "supervoxels" not in held:
                    states[sv.id] = "without the supervoxels this output keeps"
                elif task.graph and "graph" not in held:
                    states[sv.id] = "without the region graph agglomeration across blocks needs"
            if states[sv.id] == "ok":
                segmented[sv.id] = SegmentedSubvolume.from_checkpoint(sv.id, checkpoints.block_path(sv.id))
                stats.restored += 1
            elif states[sv.id] != "missing":
                log.warning("recomputing subvolume %d: its checkpoint is %s", sv.id, states[sv.id])
    elif spill is not None:
        task = replace(task, checkpoint_dir=spill)
    todo = [sv for sv in plan if sv.id not in segmented]
    counter = bar(len(plan), "segment", progress, initial=len(segmented))
    if status is not None:
        status.restored(stats.restored)
    try:
        for k in range(plan.iterations):
            start = time.perf_counter()
            pending = [(sv, task.near(sv)) for sv in todo if sv.iteration == k]
            tries: dict[int, int] = {}
            while pending:
                again = []
                for item, outcome in _outcomes(pool, pending):
                    sv = item[0]
                    tries[sv.id] = tries.get(sv.id, 0) + 1
                    if isinstance(outcome, SegmentedSubvolume):
                        if checkpoints is not None:
                            checkpoints.record(outcome.sv_id, outcome.sha256, outcome.size)
                        segmented[sv.id] = outcome
                        stats.computed += 1
                        counter.update(1)
                        if status is not None:
                            status.done(sv.id)
                        continue
                    outcome = replace(outcome, attempts=tries[sv.id])
                    if tries[sv.id] <= task.retries:
                        log.warning("subvolume %d failed in %s on %s (%s); trying again (%d of %d)", sv.id, outcome.stage,
                                    outcome.worker, outcome.error, tries[sv.id], task.retries)
                        stats.retried += 1
                        again.append(item)
                        if status is not None:
                            status.retried(outcome.to_dict())
                    else:
                        stats.failures.append(outcome)
                        counter.update(1)
                        if status is not None:
                            status.failed(outcome.to_dict())
                pending = again
            stats.iteration_seconds.append(time.perf_counter() - start)
    finally:
        counter.close()
    stats.failures.sort(key=lambda f: f.sv_id)
    return segmented, stats


def _outcomes(pool: Executor, items: list[tuple[Subvolume, SegmentTask]]
              ) -> Iterator[tuple[tuple[Subvolume, SegmentTask], SegmentedSubvolume | BlockFailure]]:
    """Every item with what became of it. A worker that dies costs only the item it held:
    the executor's error says which that was (else each remaining item runs alone, so that
    the one that kills its worker is found), and the items it did not get to run again."""
    seen: set[int] = set()
    try:
        for k, outcome in enumerate(pool.map(_segment_item, items, describe=describe_item)):
            seen.add(k)
            yield items[k], outcome
    except ExecutorError as exc:
        message = str(exc).split("; completed work")[0]
        for k, outcome in sorted(exc.done.items()):
            if k not in seen:
                seen.add(k)
                yield items[k], outcome
        for k in exc.lost:
            if k not in seen:
                seen.add(k)
                yield items[k], _worker_lost(items[k], message, pool)
        rest = [item for k, item in enumerate(items) if k not in seen]
        if exc.lost:
            yield from _outcomes(pool, rest)
        elif len(rest) == 1:  # it ran alone: it is the one that killed its worker
            yield rest[0], _worker_lost(rest[0], message, pool)
        else:  # the executor cannot tell which item it lost: one at a time
            for item in rest:
                yield from _outcomes(pool, [item])


def _worker_lost(item: tuple[Subvolume, SegmentTask], message: str, pool: Executor) -> BlockFailure:
    """The failure of an item whose worker died (``message``: the executor's account of it)."""
    return BlockFailure(item[0].id, str(item[0].interior), "worker", message, pool.name)
