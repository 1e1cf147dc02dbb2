"""Segmentation kernels against scikit-image, side by side in one run, on real EM.

    .venv/bin/python benchmarks/bench_segment.py

1. seeded watershed: labelstitch.watershed vs skimage.segmentation.watershed on the gala_test
   membrane probabilities and on a 128x256x256 synthetic volume (voxels/s, and VI of both
   results against the ground truth, to show the same quality);
2. agglomeration: rag_agglomeration vs skimage.graph.rag_boundary + merge_hierarchical (the
   scikit-image documentation's boundary-RAG merging) on the same supervoxels;
3. re-stitch from checkpoints vs the full run (gala_test in 8 blocks).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import label

from labelstitch import vi, watershed
from labelstitch.plugins.builtin import rag_agglomeration
from labelstitch.synthetic import em_volume
from labelstitch.pipeline import restitch, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def best(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bench_watershed(name, pred, gt, seed_threshold):
    from skimage.segmentation import watershed as sk

    seeds = label(pred < seed_threshold, connectivity=1)
    t_ours, ours = best(lambda: watershed(pred, seeds))
    t_sk, theirs = best(lambda: sk(pred, seeds, connectivity=1))
    n = pred.size
    print(f"| watershed, {name} | labelstitch.watershed | {n / t_ours / 1e6:.1f} Mvox/s | {vi(ours, gt).total:.3f} |")
    print(f"| | skimage watershed | {n / t_sk / 1e6:.1f} Mvox/s | {vi(theirs, gt).total:.3f} |")
    print(f"| | ratio | **{t_sk / t_ours:.1f}x** | |")
    return seeds, ours


def bench_agglomeration(pred, supervoxels, gt):
    from skimage import graph

    t_ours, ours = best(lambda: rag_agglomeration(pred, supervoxels, threshold=0.5), repeat=1)

    def weight_boundary(g, src, dst, n):
        default = {"weight": 0.0, "count": 0}
        count_src = g[src].get(n, default)["count"]
        count_dst = g[dst].get(n, default)["count"]
        weight_src = g[src].get(n, default)["weight"]
        weight_dst = g[dst].get(n, default)["weight"]
        count = count_src + count_dst
        return {"count": count, "weight": (count_src * weight_src + count_dst * weight_dst) / count}

    def merge_boundary(g, src, dst):
        pass

    def skimage_merge():
        rag = graph.rag_boundary(supervoxels, pred)
        return graph.merge_hierarchical(supervoxels, rag, thresh=0.5, rag_copy=False, in_place_merge=True,
                                        merge_func=merge_boundary, weight_func=weight_boundary)

    t_sk, theirs = best(skimage_merge, repeat=1)
    n = pred.size
    print(f"| mean-boundary agglomeration, gala_test, threshold 0.5 | rag_agglomeration | {n / t_ours / 1e6:.2f} Mvox/s | {vi(ours, gt).total:.3f} |")
    print(f"| | skimage rag_boundary + merge_hierarchical | {n / t_sk / 1e6:.2f} Mvox/s | {vi(theirs, gt).total:.3f} |")
    print(f"| | ratio | **{t_sk / t_ours:.1f}x** | |")


def bench_restitch(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "raw.npy", data["raw"])
        config = {"input": str(folder / "raw.npy"), "output": str(folder / "seg.zarr"),
                  "options": {"chunk-size": [25, 50, 100], "overlap": 8, "checkpoint-dir": str(folder / "ckpt"),
                              "segmentor": {"configuration": {
                                  "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                                  "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}}}}}}
        run({**config, "output": str(folder / "warm.zarr"), "options": {**config["options"], "checkpoint-dir": str(folder / "warm")}})
        start = time.perf_counter()
        run(config)
        t_run = time.perf_counter() - start
        start = time.perf_counter()
        restitch(config, rule="aggressive", output=str(folder / "again.zarr"))
        t_re = time.perf_counter() - start
    print(f"| re-stitch from checkpoints vs full run, gala_test in 8 blocks | restitch | {t_re:.3f} s | |")
    print(f"| | full run | {t_run:.3f} s | |")
    print(f"| | share | **{100 * t_re / t_run:.1f}%** | |")


def main():
    data = np.load(SHARED / "gala_test.npz")
    print("| task | implementation | speed | VI vs truth |")
    print("|---|---|---:|---:|")
    pred = data["pred"].astype(np.float32)
    seeds, supervoxels = bench_watershed("gala_test (1M voxels)", pred, data["gt"], 0.1)
    gray, truth = em_volume((128, 256, 256), n_neurites=400, seed=0)
    synthetic = ndimage.gaussian_filter(1 - gray / 255.0, 1.0).astype(np.float32)
    bench_watershed("synthetic 128x256x256", synthetic, truth, 0.3)
    bench_agglomeration(pred, supervoxels.astype(np.int64), data["gt"])
    bench_restitch(data)


if __name__ == "__main__":
    main()
