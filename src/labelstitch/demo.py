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
from numpy.typing import NDArray

from .api import compare, run
from .geometry import Box
from .metrics import Score
from .stores import create_volume, open_volume
from .synthetic import em_volume

__all__ = ["DEMO_SEGMENTOR", "demo_config", "run_demo"]

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
        store = create_volume(str(folder / name), data.shape, data.dtype, chunks=(block,) * 3, overwrite=True)
        store.write(store.box, data)
        store.commit()
        store.close()
    made = time.perf_counter() - start

    config = demo_config(folder, block=block, halo=halo)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the demo's own: its volume was just made anew
    result = run(config, overwrite=True, progress=progress)
    rows = compare(config, str(folder / "truth.zarr"), folder=str(folder / "compare"), progress=progress)
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
    _write_slices(folder / "slices.png", grayscale, truth, folder / "compare", [r.rule or "" for r in rows], z=depth // 2)
    return rows, setup


def _colours(labels: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Random but stable RGB colours per label; 0 is black."""
    h = labels.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 32, 48)], axis=-1).astype(np.uint8)
    rgb[labels == 0] = 0
    return rgb


def _overlay(gray: NDArray[np.uint8], labels: NDArray[np.integer]) -> NDArray[np.uint8]:
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    mixed = 0.55 * base + 0.45 * _colours(labels).astype(np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _write_slices(path: Path, grayscale: NDArray[np.uint8], truth: NDArray[np.integer], folder: Path, rules: list[str], z: int) -> None:
    """One Z slice: grayscale, truth, then each rule's result over the grayscale."""
    import imageio.v3 as iio

    gray = grayscale[z]
    gap = np.full((gray.shape[0], 4, 3), 255, np.uint8)
    panels = [np.repeat(gray[..., None], 3, axis=-1), gap, _overlay(gray, truth[z])]
    for rule in rules:
        with open_volume(str(folder / f"{rule}.zarr")) as seg:
            labels = seg.read(Box((z, 0, 0), (z + 1, *seg.shape[1:])))[0]
        panels += [gap, _overlay(gray, labels)]
    iio.imwrite(path, np.concatenate(panels, axis=1))
