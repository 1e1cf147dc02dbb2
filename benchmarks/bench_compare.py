"""Rule comparison and tuning from checkpoints: scoring without writing against writing.

    .venv/bin/python benchmarks/bench_compare.py [--side 256] [--chunk 64] [--executor processes]

One checkpointed run on synthetic EM (the naive plugins), then, from its checkpoints:

- ``compare`` of the four built-in rules scoring per-subvolume contingency tables (the
  default: nothing written),
- the same with ``write=True`` (each rule's volume written and scored from disk, as before),
- ``tune``: every setting of the default grid, scored the fast way.

Prints the seconds of each against the run's, and checks that both ways of comparing give
the same VI.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from labelstitch.pipeline import compare, run, tune
from labelstitch.synthetic import em_volume


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--executor", default="processes")
    args = parser.parse_args()
    shape = (args.side // 2, args.side, args.side)
    gray, truth = em_volume(shape, n_neurites=max(20, args.side // 4), seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "gray.npy", gray)
        np.save(folder / "truth.npy", truth)
        config = {
            "input": str(folder / "gray.npy"), "output": str(folder / "seg.zarr"),
            "options": {"chunk-size": args.chunk, "overlap": 8, "checkpoint-dir": str(folder / "ckpt"),
                        "segmentor": {"configuration": {
                            "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                            "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}}}}},
        }
        start = time.perf_counter()
        result = run(config, executor=args.executor)
        run_s = time.perf_counter() - start
        timings = {}
        for name, kwargs in [("compare, 4 rules, nothing written", {}),
                             ("compare, 4 rules, --write", {"write": True, "folder": str(folder / "cmp")})]:
            start = time.perf_counter()
            rows = compare(config, str(folder / "truth.npy"), executor=args.executor, **kwargs)
            timings[name] = (time.perf_counter() - start, rows)
        fast, written = timings["compare, 4 rules, nothing written"][1], timings["compare, 4 rules, --write"][1]
        assert all(abs(a.total - b.total) < 1e-9 for a, b in zip(fast, written)), "the two ways disagree"
        start = time.perf_counter()
        scores, front = tune(config, str(folder / "truth.npy"), executor=args.executor)
        timings[f"tune, {len(scores)} settings"] = (time.perf_counter() - start, front)
    print(f"volume {shape}, chunk {args.chunk}, {result.counts['subvolumes']} subvolumes, executor {args.executor}")
    print(f"{'':<36}{'seconds':>9}{'x run':>8}")
    print(f"{'run (segment + stitch + write)':<36}{run_s:>9.2f}{1.0:>8.2f}")
    for name, (seconds, _) in timings.items():
        print(f"{name:<36}{seconds:>9.2f}{seconds / run_s:>8.2f}")
    print("\nVI of each rule (both ways agree): " + ", ".join(f"{r.name} {r.total:.3f}" for r in fast))
    print(f"tune's Pareto front: {len(front)} settings, from {front[0].name} (merge {front[0].merge:.3f}, split "
          f"{front[0].split:.3f}) to {front[-1].name} (merge {front[-1].merge:.3f}, split {front[-1].split:.3f})")


if __name__ == "__main__":
    main()
