"""Score stitching variants without writing them (``labelstitch compare``, ``labelstitch tune``).

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
from ..metrics import RegionalVI, Score, score_table
from ..stitching import StitchResult, to_bodies
from ..stores import VolumeRef
from .planning import PreparedRun
from .segment import SegmentedSubvolume
from .stitch import _preserved, across_blocks, match_variants

__all__ = ["Variant", "score_variants"]

#: marks a table key that is already a final id (background 0, a preserved body)
FINAL = np.uint64(1 << 63)


@dataclass(frozen=True)
class Variant:
    """One way to stitch: a name, a rule, its parameters and connected components."""

    name: str
    rule: str
    params: dict[str, Any]
    connected_components: bool = False


@dataclass(frozen=True)
class _InteriorTable:
    """Per subvolume: the contingency table of its interior against the ground truth, by region."""

    ground_truth: VolumeRef
    region: int
    grid_shape: tuple[int, ...]  # regions per axis
    preserve_volume: VolumeRef | None
    preserve_bodies: tuple[int, ...]

    def __call__(self, sv: Subvolume, block: NDArray[Any]) -> NDArray[np.uint64]:
        labels = block[sv.interior.slices(sv.outer)].astype(np.uint64)
        final = labels == 0
        keep, original = _preserved(sv, self.preserve_volume, self.preserve_bodies)
        if keep is not None:
            labels[keep] = original[keep]
            final |= keep
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
    table_of = _InteriorTable(ground_truth, region, grid.grid_shape, task.preserve_volume, task.preserve_bodies)
    tables: dict[int, NDArray[np.uint64]] = {}
    wanted = [(v.rule, v.params, v.connected_components) for v in variants]
    results = match_variants(plan, segmented, pool, wanted, progress, tables=table_of, tables_of=tables,
                             across=across_blocks(prepared))
    seconds["tables and matching"] = time.perf_counter() - start
    start = time.perf_counter()
    offset = max(task.preserve_bodies, default=0)
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
