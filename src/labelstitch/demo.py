"""The demo behind ``labelstitch demo``: stitch a synthetic, imperfectly segmented volume
with every rule and score each result against the truth (the paper's Table 2, in small).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .geometry import Plan
from .matching import available_rules
from .metrics import vi
from .stitching import stitch
from .synthetic import blockwise_segmentation, neurite_labels

__all__ = ["DemoRow", "run_demo", "format_table"]


@dataclass(frozen=True)
class DemoRow:
    rule: str
    bodies: int
    matches: int
    merge: float
    split: float
    seconds: float

    @property
    def total(self) -> float:
        return self.merge + self.split


def run_demo(
    shape: Sequence[int] = (96, 192, 192),
    *,
    block: int = 64,
    halo: int = 8,
    n_neurites: int = 150,
    n_artifacts: int = 2,
    seed: int = 0,
    output: str | Path | None = "demo-output",
) -> tuple[list[DemoRow], dict[str, Any]]:
    """Run the demo; return one row per rule and a description of the set-up.

    With ``output``, also write ``summary.json`` and ``slices.png`` (one Z slice of the
    truth and of each rule's result, in random colours) into that folder.
    """
    truth = neurite_labels(shape, n_neurites=n_neurites, seed=seed)
    plan = Plan.grid(truth.shape, block, halo)
    rng = np.random.default_rng(seed)
    artifacts = sorted(rng.choice(plan.ids, size=min(n_artifacts, len(plan)), replace=False).tolist())
    blocks = blockwise_segmentation(truth, plan, artifact_blocks=artifacts, seed=seed)
    rows = []
    results = {}
    for rule in available_rules():
        start = time.perf_counter()
        result = stitch(plan, blocks, rule)
        volume = result.to_array()
        seconds = time.perf_counter() - start
        score = vi(volume, truth)
        rows.append(DemoRow(rule, result.n_bodies, len(result.matches), score.merge, score.split, seconds))
        results[rule] = volume
    setup = {
        "shape": list(truth.shape),
        "block": block,
        "halo": halo,
        "subvolumes": len(plan),
        "faces": len(plan.faces()),
        "true_bodies": int(np.unique(truth).size),
        "artifact_subvolumes": artifacts,
    }
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"setup": setup, "rows": [{**r.__dict__, "total": r.total} for r in rows]}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_slices(out / "slices.png", truth, results)
    return rows, setup


def format_table(rows: list[DemoRow]) -> str:
    """The rows as a plain-text table like the paper's Table 2."""
    lines = [
        f"{'stitching rule':<16}{'bodies':>8}{'matches':>9}{'f.merge VI':>12}{'f.split VI':>12}{'VI':>8}{'time s':>8}",
    ]
    for r in rows:
        lines.append(
            f"{r.rule:<16}{r.bodies:>8}{r.matches:>9}{r.merge:>12.3f}{r.split:>12.3f}{r.total:>8.3f}{r.seconds:>8.2f}"
        )
    return "\n".join(lines)


def _colours(labels: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Random but stable RGB colours per label; 0 is black."""
    h = labels.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 32, 48)], axis=-1).astype(np.uint8)
    rgb[labels == 0] = 0
    return rgb


def _write_slices(path: Path, truth: NDArray[np.integer], results: dict[str, NDArray[np.integer]]) -> None:
    import imageio.v3 as iio

    z = truth.shape[0] // 2
    gap = np.full((truth.shape[1], 4, 3), 255, np.uint8)
    panels = [_colours(truth[z])]
    for volume in results.values():
        panels += [gap, _colours(volume[z])]
    iio.imwrite(path, np.concatenate(panels, axis=1))
