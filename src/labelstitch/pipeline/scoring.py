"""Scoring: VI of stored volumes read box by box, and of stitching variants without writing
them (``labelstitch compare``, ``labelstitch tune``, with the tuning grid and its Pareto front),
and the expected run length along ground-truth skeletons (``evaluate --skeletons``).

Every variant of a finished run (another rule, other thresholds, connected components on
or off) relabels the same segmented subvolumes through its own mapping, so its VI against
a ground truth follows from one contingency table per subvolume interior, made once:
``(region, label, ground-truth id, voxels)`` rows, where a label is the subvolume's local
segment (to be pushed through the variant's mapping) or a final id (background, preserved
bodies). The workers make the tables in the same pass that cuts and matches the faces for
every variant (each subvolume's labels decoded once); scoring a variant is then arithmetic
on the driver, no voxel read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contingency import count_pairs
from ..executors import Executor
from ..geometry import Box, Plan, Subvolume
from ..metrics import RegionalVI, Score, floor_blockwise, regional_vi, score_table, vi_blockwise
from ..plugins.rules import get_rule, rule_parameters
from ..stitching import StitchResult, to_bodies
from ..seams import Agreement, SeamAudit, agreement_blockwise, audit_bands, seam_bands
from ..skeletons import ErlScore, expected_run_length
from ..stores import StoreError, VolumeRef, VolumeStore, open_volume
from ..stores._precomputed import read_skeletons
from .planning import PreparedRun
from .progress import bar
from .stitch import across_blocks, match_variants
from .values import PreservedBodies, SegmentedSubvolume, Variant

__all__ = ["Audit", "audit", "default_grid", "evaluate_skeletons", "pareto_front", "plan_of_output", "score_floor", "score_regions", "score_variants", "score_volumes"]

#: marks a table key that is already a final id (background 0, a preserved body)
FINAL = np.uint64(1 << 63)


@dataclass(frozen=True)
class _InteriorTable:
    """Per subvolume: the contingency table of its interior against the ground truth, by region."""

    ground_truth: VolumeRef
    region: int
    grid_shape: tuple[int, ...]  # regions per axis
    preserved: PreservedBodies | None

    def __call__(self, sv: Subvolume, block: NDArray[Any]) -> NDArray[np.uint64]:
        labels = block[sv.interior.slices(sv.outer)].astype(np.uint64)
        final = labels == 0
        if self.preserved is not None:
            final |= self.preserved.write_back(sv.interior, labels)
        labels[final] |= FINAL
        with self.ground_truth.open() as gt:
            truth = gt.read(sv.interior).astype(np.uint64)
        rows = []
        lo = [s // self.region for s in sv.interior.start]
        hi = [-(-e // self.region) for e in sv.interior.stop]
        for index in np.ndindex(*(h - l for l, h in zip(lo, hi))):
            cell = tuple(l + i for l, i in zip(lo, index))
            box = Box(tuple(c * self.region for c in cell), tuple((c + 1) * self.region for c in cell)).intersect(sv.interior)
            inner = box.slices(sv.interior)
            ks, kg, cnt, _ = count_pairs(np.ascontiguousarray(labels[inner]).reshape(-1),
                                         np.ascontiguousarray(truth[inner]).reshape(-1))
            number = int(np.ravel_multi_index(cell, self.grid_shape))
            rows.append(np.column_stack([np.full(ks.size, number, np.uint64), ks, kg, cnt.astype(np.uint64)]))
        return np.concatenate(rows) if rows else np.zeros((0, 4), np.uint64)


def _bodies_of(rows: NDArray[np.uint64], labels: NDArray[np.uint64], bodies: NDArray[np.uint64], offset: int) -> NDArray[np.uint64]:
    """The final id of each row's key: final keys as they are, local labels through the mapping."""
    keys = rows[:, 1]
    final = (keys & FINAL) != 0
    out = keys & ~FINAL
    out[~final] = to_bodies(keys[~final], labels, bodies) + np.uint64(offset)
    return out


def score_variants(
    prepared: PreparedRun,
    segmented: dict[int, SegmentedSubvolume],
    pool: Executor,
    ground_truth: VolumeRef,
    variants: list[Variant],
    *,
    region: int = 32,
    progress: bool = False,
) -> tuple[list[tuple[Score, StitchResult]], dict[str, float]]:
    """Score every variant against ``ground_truth`` without writing anything: the VI (and
    the VI per ``region``-sized box, the paper's Figure 9) each variant's output would have.
    Returns one (Score, StitchResult) per variant (its ``seconds``: resolving and scoring
    it) and the seconds of the shared steps (tables, matching) and of all scoring."""
    plan, task = prepared.plan, prepared.task
    seconds = {}
    start = time.perf_counter()
    grid = Plan.grid(plan.shape, region, 0)
    table_of = _InteriorTable(ground_truth, region, grid.grid_shape, task.preserved)
    tables: dict[int, NDArray[np.uint64]] = {}
    wanted = [(get_rule(v.rule), v.params, v.connected_components) for v in variants]
    results = match_variants(plan, segmented, pool, wanted, progress, tables=table_of, tables_of=tables,
                             across=across_blocks(prepared))
    seconds["tables and matching"] = time.perf_counter() - start
    start = time.perf_counter()
    offset = task.preserved.offset if task.preserved is not None else 0
    boxes = tuple(sv.interior for sv in grid)
    out = []
    for variant, (result, match_seconds) in zip(variants, results):
        begin = time.perf_counter()
        parts = []
        for sv in plan:
            rows = tables[sv.id]
            labels, bodies = result.mapping.for_subvolume(sv.id)
            parts.append(np.column_stack([rows[:, 0], _bodies_of(rows, labels, bodies, offset), rows[:, 2], rows[:, 3]]))
        table = np.concatenate(parts)
        total, merge, split = score_table(table[:, 1], table[:, 2], table[:, 3], regions=table[:, 0], n_regions=len(grid))
        regional = RegionalVI(merge.reshape(grid.grid_shape), split.reshape(grid.grid_shape), grid.block, boxes)
        score = Score(total.merge, total.split, bodies=result.n_bodies, name=variant.name,
                      rule=variant.rule, params=dict(variant.params), matches=len(result.matches),
                      seconds=match_seconds + time.perf_counter() - begin, regional=regional)
        out.append((score, result))
    seconds["score"] = time.perf_counter() - start
    return out, seconds


# ----------------------------------------------------------------------------- stored volumes


def _check_labels(seg: VolumeStore, gt: VolumeStore) -> None:
    """Two label volumes that can be scored against each other, or one clear error."""
    if seg.shape != gt.shape:
        raise StoreError(f"segmentation {seg.uri} has shape {seg.shape} but ground truth {gt.uri} has shape {gt.shape}")
    for role, store in (("segmentation", seg), ("ground truth", gt)):
        if not (np.issubdtype(store.dtype, np.integer) or store.dtype == np.bool_):
            raise StoreError(f"{role} {store.uri} has dtype {store.dtype}; label volumes must hold integers")


def score_volumes(seg: VolumeStore, gt: VolumeStore, *, ignore_gt_zero: bool = True) -> Score:
    """VI and body count of two stored volumes, read box by box (never whole)."""
    _check_labels(seg, gt)
    return vi_blockwise(seg.shape, lambda box: (seg.read(box), gt.read(box)), ignore_gt_zero=ignore_gt_zero)


def score_floor(supervoxels: VolumeStore, gt: VolumeStore, *, ignore_gt_zero: bool = True) -> Score:
    """The perfect-agglomeration floor of a stored supervoxel volume, read box by box."""
    _check_labels(supervoxels, gt)
    return floor_blockwise(supervoxels.shape, lambda box: (supervoxels.read(box), gt.read(box)), ignore_gt_zero=ignore_gt_zero)


def score_regions(seg: VolumeStore, gt: VolumeStore, region: int = 32, *, ignore_gt_zero: bool = True) -> RegionalVI:
    """VI of every ``region``-sized block of two stored volumes (the paper's Figure 9)."""
    _check_labels(seg, gt)
    return regional_vi(seg.shape, region, lambda box: (seg.read(box), gt.read(box)), ignore_gt_zero=ignore_gt_zero)


# ----------------------------------------------------------------------------- tuning


def default_grid(rule: str) -> dict[str, list[Any]]:
    """The values ``tune`` tries for a rule's numeric parameters: half, once and twice the
    default for counts; for fractions in (0, 1), the default and one step either way
    towards 2d - 1 and 1.

    >>> default_grid("conservative")
    {'min_overlap': [25, 50, 100], 'min_fraction': [0.8, 0.9, 0.95]}
    """
    grid: dict[str, list[Any]] = {}
    for key, value in rule_parameters(rule).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            continue
        if isinstance(value, int):
            grid[key] = sorted({max(1, value // 2), value, value * 2})
        elif value < 1:
            grid[key] = sorted({round(max(0.0, 2 * value - 1), 4), value, round((1 + value) / 2, 4)})
        else:
            grid[key] = [value / 2, value, value * 2]
    return grid


def pareto_front(scores: list[Score]) -> list[Score]:
    """The scores no other score beats on both false merge and false split VI (ties kept
    once), sorted by false merge.

    >>> s = [Score(0.1, 0.9, name="a"), Score(0.2, 0.5, name="b"), Score(0.3, 0.6, name="c"), Score(0.5, 0.1, name="d")]
    >>> [x.name for x in pareto_front(s)]
    ['a', 'b', 'd']
    """
    front: list[Score] = []
    best_split = float("inf")
    for score in sorted(scores, key=lambda x: (x.merge, x.split)):
        if score.split < best_split:
            front.append(score)
            best_split = score.split
    return front


# ----------------------------------------------------------------------------- seam audit


@dataclass(frozen=True)
class Audit:
    """What ``labelstitch audit`` found: the seam bands against the ground truth and/or
    another run, and how far the two runs agree."""

    output: str
    plan: Plan
    ground_truth: SeamAudit | None = None
    against: SeamAudit | None = None
    agreement: Agreement | None = None
    whole: Score | None = None
    other: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"output": self.output, "subvolume": list(self.plan.block), "faces": len(self.plan.faces())}
        if self.whole is not None:
            out["whole"] = self.whole.to_dict()
        if self.ground_truth is not None:
            out["ground-truth"] = self.ground_truth.to_dict()
        if self.agreement is not None:
            out["against"] = {"other": self.other, **self.agreement.to_dict(),
                              "bands": self.against.to_dict() if self.against is not None else None}
        return out

    def __str__(self) -> str:
        lines = [f"seam audit of {self.output}: subvolumes of {'x'.join(map(str, self.plan.block))} voxels, "
                 f"{len(self.plan)} subvolumes, {len(self.plan.faces())} faces"]
        if self.ground_truth is not None:
            lines += ["", "against the ground truth:"]
            if self.whole is not None:
                lines.append(f"whole volume: VI {self.whole.total:.4f} bits (merge {self.whole.merge:.4f}, split {self.whole.split:.4f})")
            lines += [str(self.ground_truth), self.ground_truth.verdict]
        if self.agreement is not None:
            lines += ["", f"against {self.other} (another run of the volume):", str(self.agreement)]
            if self.against is not None:
                lines += [str(self.against), self.against.verdict.replace("error", "disagreement")]
        return "\n".join(lines)


def plan_of_output(output: VolumeStore, subvolume_size: int | tuple[int, int, int] | None = None) -> Plan:
    """The subvolume plan an output was made with, as it records it (or a grid of
    ``subvolume_size`` for an output labelstitch did not make, or to audit another grid)."""
    if subvolume_size is not None:
        return Plan.grid(output.shape, subvolume_size, 0)
    recorded = output.metadata.get("plan")
    if not recorded:
        raise StoreError(f"{output.uri} records no subvolume plan (labelstitch did not make it): give the subvolume "
                         "size it was made with (--subvolume-size)")
    return Plan.from_dict(recorded)


def audit(
    output: str,
    *,
    ground_truth: str | None = None,
    against: str | None = None,
    width: int = 8,
    min_contact: int = 10,
    subvolume_size: int | tuple[int, int, int] | None = None,
    ignore_gt_zero: bool = True,
    progress: bool = False,
) -> Audit:
    """Audit the seams of ``output`` (``labelstitch audit``): bands ``width`` voxels each side
    of every subvolume face against bands around every subvolume's middle, scored against
    ``ground_truth`` and/or ``against`` (another run, e.g. with other subvolume sizes, whose
    agreement with ``output`` is measured too). Only the bands are read, box by box."""
    if ground_truth is None and against is None:
        raise ValueError("audit needs a reference: --ground-truth GT, --against OTHER_OUTPUT, or both")
    with open_volume(output) as seg:
        plan = plan_of_output(seg, subvolume_size)
        found: dict[str, Any] = {}
        for key, reference, zero in (("ground_truth", ground_truth, ignore_gt_zero), ("against", against, False)):
            if reference is None:
                continue
            with open_volume(reference) as ref:
                _check_labels(seg, ref)
                n_bands = sum(len(b) for b in seam_bands(plan, width))
                counter = bar(n_bands, f"seam bands ({key.replace('_', ' ')})", progress)
                try:
                    found[key] = audit_bands(plan, lambda box: (seg.read(box), ref.read(box)), width=width,
                                             min_contact=min_contact, ignore_gt_zero=zero, tick=counter.update)
                finally:
                    counter.close()
                if key == "ground_truth":
                    found["whole"] = score_volumes(seg, ref, ignore_gt_zero=ignore_gt_zero)
                else:
                    found["agreement"] = agreement_blockwise(seg.shape, lambda box: (seg.read(box), ref.read(box)))
    return Audit(str(output), plan, other=against, **found)


def evaluate_skeletons(segmentation: str, skeletons: str, *, block: int = 64) -> ErlScore:
    """Expected run length of ``segmentation`` along the ground-truth ``skeletons`` (an SWC
    file, a folder of ``ID.swc``, or a precomputed skeleton folder; physical units, mapped to
    voxels with the segmentation's voxel size), with the merging segments and the splits along
    them (``labelstitch evaluate SEG --skeletons GT_SKELETONS``). The segmentation is read
    only around the skeletons' nodes, ``block`` voxels at a time."""
    found = read_skeletons(skeletons)
    if not found:
        raise StoreError(f"{skeletons} holds no skeletons")
    with open_volume(segmentation) as volume:
        resolution = np.asarray(volume.voxel_size or (1.0, 1.0, 1.0), np.float64)
        ids = list(found)
        points = np.concatenate([found[i].vertices for i in ids]).astype(np.float64)[:, ::-1]  # XYZ -> ZYX
        voxels = np.floor(points / resolution).astype(np.int64)
        inside = np.all((voxels >= 0) & (voxels < np.asarray(volume.shape)), axis=1)
        if not inside.any():
            raise StoreError(f"no node of {skeletons} lies inside {segmentation} (shape {volume.shape}, voxel size "
                             f"{tuple(resolution)}): are the skeletons in physical units of the same volume?")
        labels = np.zeros(len(voxels), np.uint64)
        cells = voxels[inside] // block
        order = np.flatnonzero(inside)
        keys, group = np.unique(cells, axis=0, return_inverse=True)
        for k in range(len(keys)):
            rows = order[group.reshape(-1) == k]
            lo, hi = voxels[rows].min(axis=0), voxels[rows].max(axis=0) + 1
            data = volume.read(Box(tuple(lo), tuple(hi)))
            local = voxels[rows] - lo
            labels[rows] = data[local[:, 0], local[:, 1], local[:, 2]].astype(np.uint64)
    starts = np.cumsum([0] + [len(found[i].vertices) for i in ids])
    return expected_run_length(found, {i: labels[starts[k]:starts[k + 1]] for k, i in enumerate(ids)})
