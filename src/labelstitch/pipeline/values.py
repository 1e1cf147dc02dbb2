"""The values the pipeline's steps hand each other, in one place.

=====================  ===================================================================
``SegmentTask``        everything a worker needs to segment one subvolume
``SegmentedSubvolume`` one subvolume's labels (compressed, in memory or a checkpoint) and counts
``BlockFailure``       a subvolume that could not be segmented: its box, the stage, the error, the worker
``PreservedBodies``    proofread bodies kept as they are: their volume and ids
``Variant``            one way to stitch: a name, a rule, its parameters, connected components
``ExecutorChoice``     where the work runs: an executor by name with its options, or an open one
``RunResult``          what a run did: timings, counts, scores
=====================  ===================================================================

All are frozen (but ``RunResult``) and picklable: they travel to workers as they are.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..graphparts import GraphPart
from ..checkpoints import read_block
from ..codec import DEFAULT_CODEC, decode_labels, split_graph, split_supervoxels
from ..executors import Executor
from ..geometry import Box, Plan, Subvolume, roi_runs_near
from ..metrics import Score
from ..plugins import Stage, get_executor
from ..runstatus import failure_table
from ..stores import VolumeRef

__all__ = ["BlockFailure", "ExecutorChoice", "PreservedBodies", "RunResult", "SegmentTask", "SegmentedSubvolume", "Variant",
           "load_graph", "run_tuples"]

#: ROI block runs ``(z, y, x0, x1)`` as plain tuples (frozen, picklable, comparable)
Runs = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class PreservedBodies:
    """Proofread bodies that a run keeps as they are (``preserve-bodies``): masked before
    segmentation, written back with their own ids, never stitched; stitched bodies are
    numbered after the largest of them (:attr:`offset`)."""

    volume: VolumeRef
    ids: tuple[int, ...]

    @property
    def offset(self) -> int:
        """The largest preserved id: stitched bodies are numbered after it."""
        return max(self.ids, default=0)

    def in_box(self, box: Box) -> tuple[NDArray[np.bool_], NDArray[np.uint64]]:
        """The preserved voxels of ``box`` and the volume's ids there."""
        with self.volume.open() as volume:
            original = volume.read(box).astype(np.uint64)
        return np.isin(original, np.asarray(self.ids, dtype=np.uint64)), original

    def write_back(self, box: Box, labels: NDArray[np.uint64]) -> NDArray[np.bool_]:
        """Put the preserved bodies' own ids into ``labels`` (of ``box``), in place; returns
        where they are."""
        keep, original = self.in_box(box)
        labels[keep] = original[keep]
        return keep


@dataclass(frozen=True)
class SegmentTask:
    """Everything a worker needs to segment one subvolume; picklable."""

    input: VolumeRef
    stages: tuple[Stage, Stage, Stage]
    background_value: int | None
    background_min_width: int
    intensity_range: tuple[float, float] = (0, 255)
    allow_missing_input: bool = False
    preserved: PreservedBodies | None = None
    codec: str = DEFAULT_CODEC
    checkpoint_dir: str | None = None
    extra_mask: VolumeRef | None = None
    roi_runs: Runs = ()
    roi_block: int = 0
    #: keep the interior's supervoxels too, for an output that stores supervoxels and a mapping
    keep_supervoxels: bool = False
    #: voxels segmented beyond the outer box (then cropped away), and the volume's shape
    context: int = 0
    shape: tuple[int, ...] = ()
    #: agglomerate across blocks: keep the supervoxels as the labels, with the region-graph
    #: statistics of the interior; the agglomeration runs once, over the whole volume's graph
    graph: bool = False
    #: times a failed subvolume is tried again (``options.retries``)
    retries: int = 2
    #: predictions made elsewhere, one volume per channel, read instead of running predict-voxels
    predictions: tuple[VolumeRef, ...] = ()

    def near(self, sv: Subvolume) -> SegmentTask:
        """This task with only the ROI runs near ``sv``, so a large ROI is not shipped with every item."""
        if not self.roi_block:
            return self
        return replace(self, roi_runs=run_tuples(roi_runs_near(self.roi_runs, self.roi_block, sv.outer.grow(self.context))))


def run_tuples(runs: NDArray[np.int64]) -> Runs:
    """ROI runs as plain tuples, for the frozen task."""
    return tuple((z, y, x0, x1) for z, y, x0, x1 in runs.tolist())


@dataclass(frozen=True)
class BlockFailure:
    """A subvolume that could not be segmented: its interior box, the stage that raised
    (``worker`` when its worker died), the error's one line, the worker (``host:pid``) and
    how many times it was tried."""

    sv_id: int
    box: str
    stage: str
    error: str
    worker: str
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"subvolume": self.sv_id, "box": self.box, "stage": self.stage, "error": self.error,
                "worker": self.worker, "attempts": self.attempts}


@dataclass(frozen=True)
class SegmentedSubvolume:
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
    unmasked: int = -1  # voxels left to the stages (-1: not known, restored from a checkpoint)
    worker: str = ""  # the host that segmented it ("" restored from a checkpoint)

    def _bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return read_block(self.path)

    def load(self) -> NDArray[np.uint64]:
        """The labels over the outer box."""
        return decode_labels(self._bytes())

    def supervoxel_count(self) -> int | None:
        """How many supervoxels the interior keeps (None: none were kept), without decoding them."""
        _, supervoxels, segment_of = split_supervoxels(self._bytes())
        return None if supervoxels is None or segment_of is None else int(segment_of.size)

    def load_supervoxels(self) -> tuple[NDArray[np.uint64], NDArray[np.uint64]] | None:
        """The interior's supervoxels (numbered 1, 2, ... each within one segment) and the
        segment (a label of :meth:`load`) of each; None if they were not kept."""
        _, supervoxels, segment_of = split_supervoxels(self._bytes())
        if supervoxels is None or segment_of is None:
            return None
        return decode_labels(supervoxels).astype(np.uint64, copy=False), segment_of

    def load_with_graph(self) -> tuple[NDArray[np.uint64], tuple[GraphPart, dict[str, NDArray[np.float32]]] | None]:
        """The labels over the outer box, and the interior's region-graph statistics and
        face planes (agglomeration across blocks; None if they were not kept), from one
        read of the block."""
        data = self._bytes()
        graph = split_graph(data)[1]
        return decode_labels(data), None if graph is None else load_graph(graph)

    @classmethod
    def from_checkpoint(cls, sv_id: int, path: Path) -> SegmentedSubvolume:
        return cls(sv_id, None, 0, 0, {}, str(path), "", path.stat().st_size)


def load_graph(data: bytes) -> tuple[GraphPart, dict[str, NDArray[np.float32]]]:
    """The interior's :class:`~labelstitch.graphparts.GraphPart` and boundary planes
    (``lo0``..``hi2``) from :func:`interior_graph_bytes`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        arrays = {k: found[k] for k in found.files}
    return GraphPart.from_arrays(arrays), {k: v for k, v in arrays.items() if k[:2] in ("lo", "hi") or k == "kinds"}


@dataclass(frozen=True)
class Variant:
    """One way to stitch: a name, a rule, its parameters and connected components."""

    name: str
    rule: str
    params: dict[str, Any]
    connected_components: bool = False


@dataclass(frozen=True)
class ExecutorChoice:
    """Where the work runs: an executor by name with its options (``--executor``,
    ``--workers``, ``--spark-master``, ``--dask-scheduler``), or an open :class:`~labelstitch.executors.Executor`."""

    executor: str | Executor = "serial"
    workers: int | None = None
    master: str | None = None
    scheduler: str | None = None

    @contextmanager
    def opened(self) -> Iterator[Executor]:
        """The executor: an open one as it is (left open), or one made by name and closed at
        the end (aborted, without waiting for running items, when the block raises)."""
        if isinstance(self.executor, Executor):
            yield self.executor
            return
        pool = get_executor(self.executor, workers=self.workers, master=self.master, scheduler=self.scheduler)
        try:
            yield pool
        except BaseException:  # an error or a signal: running items are not waited for
            pool.abort()
            raise
        pool.close()


@dataclass
class RunResult:
    """What :func:`run` did.

    Attributes
    ----------
    output : str
        Where the segmentation was written.
    seconds : dict
        Wall time per step (the paper's Table 1): ``check and plan``, ``segment``,
        ``stitch``, ``write``, ..., ``total``.
    segment_seconds : dict
        Inside ``segment``: ``verify checkpoints`` and each iteration's wall time, and
        ``stages`` (``read``, ``predict-voxels``, ...), summed over the workers, so that
        with several workers their sum exceeds the wall time.
    counts : dict
        Subvolumes, supervoxels, segments, matches and final bodies.
    vi : Score or None
        Score against the config's ground truth.
    stitch : dict
        ``StitchResult.summary()``.
    checkpoints : str or None
        The checkpoint folder, if the run had one.
    report : str or None
        The stitch report (``OUT.stitch.md``; ``.json`` and ``.npz`` beside it), if written.
    intensity_range : str
        The grayscale values taken as black and white, and how they were chosen.
    warnings : list of str
        Results that look wrong (subvolumes with no segment, a run with one body or none),
        logged to the ``labelstitch`` logger as they are found (the command line prints
        each once, on stderr).
    failures : list of BlockFailure
        Subvolumes that failed every try and were left empty (only with
        ``options.allow-missing-blocks``; without it such a run raises
        :class:`~labelstitch.pipeline.BlocksFailed` and writes nothing).
    """

    output: str
    plan: Plan
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vi: Score | None = None
    stitch: dict[str, Any] = field(default_factory=dict)
    checkpoints: str | None = None
    report: str | None = None
    intensity_range: str = ""
    warnings: list[str] = field(default_factory=list)
    segment_seconds: dict[str, Any] = field(default_factory=dict)
    failures: list[BlockFailure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def rounded(values: dict[str, Any]) -> dict[str, Any]:
            return {k: rounded(v) if isinstance(v, dict) else round(v, 3) for k, v in values.items()}

        return {
            "output": self.output,
            "checkpoints": self.checkpoints,
            "report": self.report,
            "seconds": rounded(self.seconds),
            "segment seconds": rounded(self.segment_seconds),
            "counts": dict(self.counts),
            "vi": self.vi.to_dict() if self.vi else None,
            "stitch": self.stitch,
            "intensity-range": self.intensity_range,
            "warnings": list(self.warnings),
            "failures": [f.to_dict() for f in self.failures],
        }

    def table(self) -> str:
        """The summary as text: time per stage, then counts and scores."""
        lines = [f"{'step':<28}{'seconds':>10}"]
        for step, sec in self.seconds.items():
            lines.append(f"{step:<28}{sec:>10.2f}")
            if step == "segment":
                parts = {k: v for k, v in self.segment_seconds.items() if not isinstance(v, dict)}
                lines += [f"  {name:<26}{value:>10.2f}" for name, value in parts.items()]
                stages = self.segment_seconds.get("stages", {})
                if stages:
                    lines.append("  stages, summed over workers (may exceed the wall time):")
                    lines += [f"    {name:<24}{value:>10.2f}" for name, value in stages.items()]
        lines.append("")
        lines += [f"{name:<28}{value:>10}" for name, value in self.counts.items()]
        if self.vi is not None:
            lines.append("")
            lines.append(f"VI merge {self.vi.merge:.3f}  split {self.vi.split:.3f}  total {self.vi.total:.3f} bits")
        if self.intensity_range:
            lines.append(f"\nintensity range {self.intensity_range}")
        if self.failures:
            lines.append(f"\n{len(self.failures)} subvolumes failed and were left empty (options.allow-missing-blocks):")
            lines.append(failure_table([f.to_dict() for f in self.failures]))
        lines.append(f"view it: labelstitch view {self.output}")
        lines.append(f"\nwrote {self.output}" + (f" ({len(self.warnings)} warning{'s' * (len(self.warnings) > 1)} above)"
                                                  if self.warnings else ""))
        return "\n".join(lines)

    __str__ = table


