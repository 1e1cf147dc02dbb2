"""The demo behind ``labelstitch demo`` (and ``make demo``): the whole pipeline on a
synthetic EM volume with known truth, stitched with every rule (the paper's Table 2, in
small). It is a short script over the public API: :func:`labelstitch.run` once, with
checkpoints, then :func:`labelstitch.compare`.

It writes into the output folder: ``grayscale.zarr`` and ``truth.zarr`` (the input),
``segmentation.zarr`` (the run, stitched with ``medium``), ``checkpoints/``,
``compare/<rule>.zarr`` for every rule, ``summary.json`` and ``slices.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .api import compare, run, write_comparison_slices, write_heatmaps
from .geometry import Box
from .metrics import Score
from .stores import staged_output
from .synthetic import em_volume

__all__ = ["DEMO_SEGMENTOR", "demo_config", "run_demo"]

#: the synthetic volume's voxel size in nanometres (FIB-SEM-like, isotropic)
VOXEL_SIZE = (8.0, 8.0, 8.0)

#: built-in plugin settings chosen for the synthetic volumes (found by a small grid search)
DEMO_SEGMENTOR = {
    "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3, "min_segment_size": 20}},
    "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.2}},
}


def demo_config(folder: Path, *, block: int, halo: int) -> dict[str, Any]:
    """The run configuration the demo uses (inputs inside ``folder``)."""
    return {
        "input": str(folder / "grayscale.zarr"),
        "output": str(folder / "segmentation.zarr"),
        "ground-truth": str(folder / "truth.zarr"),
        "options": {
            "segmentor": {"configuration": DEMO_SEGMENTOR},
            "chunk-size": block,
            "overlap": halo,
            "checkpoint-dir": str(folder / "checkpoints"),
            "resolution": list(VOXEL_SIZE),
        },
    }


def run_demo(
    shape: Sequence[int] = (96, 160, 160),
    *,
    block: int = 48,
    halo: int = 8,
    n_neurites: int = 120,
    seed: int = 0,
    output: str | Path = "demo-output",
    progress: bool = False,
) -> tuple[list[Score], dict[str, Any]]:
    """Run the demo; return one :class:`~labelstitch.metrics.Score` per rule and a
    description of the set-up."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    depth, height, width = (int(v) for v in shape)
    artifact = Box((int(depth * 0.55), 0, 0), (int(depth * 0.75), height // 2, width // 2))
    grayscale, truth = em_volume(shape, n_neurites=n_neurites, artifact=artifact, seed=seed)
    for name, data in (("grayscale.zarr", grayscale), ("truth.zarr", truth)):
        with staged_output(folder / name, data.shape, data.dtype, chunks=(block,) * 3, overwrite=True) as store:
            store.write(store.box, data)
            store.set_voxel_size(VOXEL_SIZE)
            store.build_pyramid(map)  # so a viewer shows the whole volume at any zoom
    made = time.perf_counter() - start

    config = demo_config(folder, block=block, halo=halo)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the demo's own: its volume was just made anew
    result = run(config, overwrite=True, progress=progress)
    rows = compare(config, str(folder / "truth.zarr"), folder=str(folder / "compare"), write=True, progress=progress)
    setup = {
        "shape": list(grayscale.shape),
        "block": block,
        "halo": halo,
        "subvolumes": len(result.plan),
        "faces": len(result.plan.faces()),
        "true_bodies": int(np.unique(truth[truth > 0]).size),
        "artifact": artifact.to_list(),
        "supervoxels": result.counts["supervoxels"],
        "seconds_make_volume": round(made, 2),
        "seconds_segment": round(result.seconds["segment"], 2),
        "segmentor": DEMO_SEGMENTOR,
    }
    summary = {"setup": setup, "rows": [r.to_dict() for r in rows]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_comparison_slices(folder / "slices.png", str(folder / "grayscale.zarr"), str(folder / "truth.zarr"), rows)
    for part in ("merge", "split"):  # the paper's Figure 9 for the demo
        write_heatmaps(folder / f"vi-{part}.png", [(r.name or "", r.regional) for r in rows], part=part,
                       resolution=VOXEL_SIZE)
    return rows, setup
