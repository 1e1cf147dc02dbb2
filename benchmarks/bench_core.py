"""Core kernel benchmarks, side by side with their baselines in one run.

    .venv/bin/python benchmarks/bench_core.py            # everything (about 5 minutes)
    .venv/bin/python benchmarks/bench_core.py --quick    # smaller sizes, for a smoke test

Prints a Markdown table (voxels or matches per second, and the ratio to each baseline) that
goes into docs/benchmarks.md. Every timing is the best of several runs after a warm-up
call, so numba compilation is not counted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import labelstitch as ls
from labelstitch.synthetic import blockwise_segmentation, neurite_labels



def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    fn()  # warm-up (compiles numba kernels)
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


ROWS: list[tuple[str, str, float, str]] = []


def record(task: str, impl: str, seconds: float, units: float, unit: str) -> float:
    rate = units / seconds
    ROWS.append((task, impl, rate, unit))
    print(f"  {task:<34} {impl:<36} {rate / 1e6:10.1f} M{unit}/s  ({seconds * 1e3:8.1f} ms)", flush=True)
    return rate


def bench_overlaps(shape: tuple[int, int, int]) -> None:
    from skimage.metrics import contingency_table

    a = neurite_labels(shape, n_neurites=400, seed=1).astype(np.uint64)
    b = np.roll(a, 3, axis=2) * np.uint64(3)  # another segmentation, shifted and renamed
    n = a.size

    def numpy_pairs() -> Any:
        key = a * np.uint64(1 << 32) + b
        return np.unique(key, return_counts=True)

    def numpy_rows() -> Any:
        return np.unique(np.stack([a.ravel(), b.ravel()], axis=1), axis=0, return_counts=True)

    ours = record("overlaps (neurite labels)", "labelstitch.overlaps", best_time(lambda: ls.overlaps(a, b)), n, "vox")
    base = record("overlaps (neurite labels)", "np.unique on packed pairs (< 2**32 only)", best_time(numpy_pairs), n, "vox")
    rows = record("overlaps (neurite labels)", "np.unique(pairs, axis=0) (any uint64)", best_time(numpy_rows, 1), n, "vox")
    skim = record(
        "overlaps (neurite labels)",
        "skimage contingency_table",
        best_time(lambda: contingency_table(a, b), repeat=1),
        n,
        "vox",
    )
    print(f"    ratio vs packed numpy {ours / base:.1f}x, vs numpy rows {ours / rows:.1f}x, vs skimage {ours / skim:.1f}x")
    rng = np.random.default_rng(0)
    ra = rng.integers(1, 10_000, shape).astype(np.uint64)
    rb = rng.integers(1, 10_000, shape).astype(np.uint64)

    def numpy_random() -> Any:
        return np.unique(ra * np.uint64(1 << 32) + rb, return_counts=True)

    ours = record("overlaps (random labels, worst case)", "labelstitch.overlaps", best_time(lambda: ls.overlaps(ra, rb)), n, "vox")
    base = record("overlaps (random labels, worst case)", "np.unique on packed pairs", best_time(numpy_random), n, "vox")
    print(f"    ratio vs numpy {ours / base:.1f}x")


def bench_remap(shape: tuple[int, int, int]) -> None:
    import fastremap

    labels = neurite_labels(shape, n_neurites=400, seed=2).astype(np.uint64) * np.uint64(1_000_003)
    keys = np.unique(labels)
    vals = np.random.default_rng(0).permutation(keys.size).astype(np.uint64) + np.uint64(1)
    mapping = dict(zip(keys.tolist(), vals.tolist()))
    n = labels.size

    def numpy_searchsorted() -> Any:
        return vals[np.searchsorted(keys, labels)]

    ours = record("remap (uint64, 400 labels)", "labelstitch.remap", best_time(lambda: ls.remap(labels, (keys, vals))), n, "vox")
    fr = record(
        "remap (uint64, 400 labels)",
        "fastremap.remap",
        best_time(lambda: fastremap.remap(labels, mapping, preserve_missing_labels=True)),
        n,
        "vox",
    )
    npy = record("remap (uint64, 400 labels)", "numpy searchsorted + take", best_time(numpy_searchsorted), n, "vox")
    work = labels.copy()
    ours_ip = record(
        "remap (uint64, 400 labels)",
        "labelstitch.remap in_place",
        best_time(lambda: ls.remap(work, (keys, vals), in_place=True)),
        n,
        "vox",
    )
    print(f"    ratio vs fastremap {ours / fr:.1f}x (in place {ours_ip / fr:.1f}x), vs numpy {ours / npy:.1f}x")


def bench_vi(shape: tuple[int, int, int]) -> None:
    from skimage.metrics import variation_of_information

    gt = neurite_labels(shape, n_neurites=400, seed=3)
    seg = np.roll(gt, 2, axis=1)
    n = gt.size
    ours = record("VI (split + merge)", "labelstitch.vi", best_time(lambda: ls.vi(seg, gt)), n, "vox")
    sk = record(
        "VI (split + merge)",
        "skimage variation_of_information",
        best_time(lambda: variation_of_information(gt, seg, ignore_labels=[0]), repeat=1),
        n,
        "vox",
    )
    print(f"    ratio vs skimage {ours / sk:.1f}x")


def bench_resolve(n_matches: int) -> None:
    rng = np.random.default_rng(0)
    n_sv = 10_000
    sa = rng.integers(0, n_sv, n_matches).astype(np.uint64)
    la = rng.integers(1, 5_000, n_matches).astype(np.uint64)
    sb = sa + np.uint64(1)
    lb = rng.integers(1, 5_000, n_matches).astype(np.uint64)
    ls.resolve([1], [1], [2], [2])  # compile the kernels before timing
    start = time.perf_counter()
    mapping = ls.resolve(sa, la, sb, lb)
    seconds = time.perf_counter() - start
    record(f"resolve ({n_matches:.0e} random matches)", "labelstitch.resolve", seconds, n_matches, "match")
    print(f"    {mapping.n_bodies} bodies from {len(mapping)} nodes in {seconds:.1f} s")
    del sa, la, sb, lb, mapping
    gc.collect()


def bench_stitch(side: int, block: int, halo: int) -> None:
    t0 = time.perf_counter()
    truth = neurite_labels((side, side, side), n_neurites=side * 3, seed=4)
    plan = ls.Plan.grid(truth.shape, block, halo)
    blocks = blockwise_segmentation(truth, plan, jitter=0.1, split_prob=0.02, artifact_blocks=plan.ids[:2], seed=4)
    print(f"  (made {side}^3 truth and {len(plan)} spoiled blocks in {time.perf_counter() - t0:.0f} s)")
    warm = ls.Plan.grid((32, 32, 32), 16, 4)  # compile the kernels before timing
    ls.stitch(warm, {sv.id: np.ones(sv.outer.shape, np.uint64) for sv in warm}).to_array()
    n = truth.size
    start = time.perf_counter()
    result = ls.stitch(plan, blocks, "medium")
    t_match = time.perf_counter() - start
    out = result.to_array()
    t_total = time.perf_counter() - start
    record(f"stitch {side}^3 in {block}^3 blocks, halo {halo}", "match + resolve", t_match, n, "vox")
    record(f"stitch {side}^3 in {block}^3 blocks, halo {halo}", "match + resolve + relabel all", t_total, n, "vox")
    score = ls.vi(out, truth)
    print(
        f"    {len(plan)} subvolumes, {len(plan.faces())} faces, {len(result.matches)} matches, "
        f"{result.n_bodies} bodies; VI merge {score.merge:.3f} split {score.split:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    side = 64 if args.quick else 256
    print(f"# labelstitch {ls.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print("overlaps:")
    bench_overlaps((side // 2, side, side))
    print("remap:")
    bench_remap((side // 2, side, side))
    print("vi:")
    bench_vi((side // 2, side, side))
    print("resolve:")
    for n in ([10**5] if args.quick else [10**7, 10**8]):
        bench_resolve(n)
    print("stitch:")
    if args.quick:
        bench_stitch(96, 32, 8)
    else:
        bench_stitch(512, 128, 20)
    print("\n| task | implementation | rate |")
    print("|---|---|---:|")
    for task, impl, rate, unit in ROWS:
        print(f"| {task} | {impl} | {rate / 1e6:.1f} M{unit}/s |")


if __name__ == "__main__":
    main()
