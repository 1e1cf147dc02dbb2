"""The driver's side of agglomeration across blocks: summing a region graph and
agglomerating it, by graph size (time, bytes per edge, peak RSS).

    .venv/bin/python benchmarks/bench_graph.py [--sizes 20 40 60]

A supervoxel graph is made from a real label volume: a cubic lattice of S^3 supervoxels
(each a 4^3 cube) whose surface voxels carry a boundary probability drawn per supervoxel, so
every supervoxel has six neighbours as in a watershed oversegmentation and a contact's mean
is the mean of its two sides' draws. Its interior graphs are cut into 8 parts
and summed with ``sum_graph`` as the driver does, then agglomerated with the
graph form of ``rag_agglomeration`` (threshold 0.3).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from labelstitch.graphparts import GraphPart, interior_graph, sum_graph
from labelstitch.hookspecs import describe_stage
from labelstitch.plugins.builtin import rag_agglomeration


def lattice(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    cube = 4
    n = side * cube
    index = np.arange(n) // cube
    labels = (index[:, None, None] * side * side + index[None, :, None] * side + index[None, None, :] + 1).astype(np.uint64)
    rng = np.random.default_rng(seed)
    weight = rng.random(side**3 + 1).astype(np.float32)
    edge = np.zeros(labels.shape, bool)  # voxels on a supervoxel's surface carry its weight
    for axis in range(3):
        change = np.diff(labels, axis=axis) != 0
        edge[tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))] |= change
        edge[tuple(slice(1, None) if a == axis else slice(None) for a in range(3))] |= change
    boundary = np.where(edge, weight[labels], 0.05).astype(np.float32)
    return labels, boundary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 60])
    args = parser.parse_args()
    print("| supervoxels | edges | merged | parts MB, with histograms | without | MB per million edges, without | sum s | agglomerate s | supervoxels/s | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in args.sizes:
        labels, boundary = lattice(side)
        half = labels.shape[0] // 2
        parts = []
        for z in (slice(0, half), slice(half, None)):  # parts as subvolume interiors would give them
            for y in (slice(0, half), slice(half, None)):
                for x in (slice(0, half), slice(half, None)):
                    parts.append(interior_graph(labels[z, y, x], boundary[z, y, x]))
        full = sum(p.nbytes for p in parts)  # with the histograms a learned agglomeration reads
        parts = [p.without_histograms() for p in parts]  # what reaches the driver for rag_agglomeration
        start = time.perf_counter()
        stats = sum_graph(parts, side**3)
        t_sum = time.perf_counter() - start
        nbytes = sum(p.nbytes for p in parts)
        start = time.perf_counter()
        roots = describe_stage(rag_agglomeration).graph(stats, threshold=0.3)  # the driver's call
        t_agg = time.perf_counter() - start
        bodies = np.unique(roots[1:]).size
        merged = 1 - bodies / side**3
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert isinstance(parts[0], GraphPart) and bodies < side**3
        print(f"| {side**3:,} | {stats.u.size:,} | {merged:.0%} | {full / 1e6:.1f} | {nbytes / 1e6:.1f} | {nbytes / 1e6 / (stats.u.size / 1e6):.0f} | "
              f"{t_sum:.2f} | {t_agg:.1f} | {side**3 / t_agg:,.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
