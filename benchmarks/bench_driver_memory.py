"""The driver's peak memory against the volume's size: the same pipeline on a mirror-tiled
real volume (gala_test) of 128^3 and 384^3 voxels (27 times more), processes executor, no
checkpoint folder (segmented subvolumes wait in a run folder beside the output).

    .venv/bin/python benchmarks/bench_driver_memory.py

Each run is a fresh Python process that reports its own peak RSS (the driver) and its
workers' largest (RUSAGE_CHILDREN)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DRIVER = r'''
import json, resource, sys, time
import labelstitch as ls
config = json.loads(sys.argv[1])
start = time.perf_counter()
result = ls.run(config, executor="processes", workers=2)
print(json.dumps({"seconds": time.perf_counter() - start, "subvolumes": result.counts["subvolumes"],
                  "driver MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker MB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
'''


def tiled(raw: np.ndarray, side: int) -> np.ndarray:
    """``raw`` mirrored along every axis until it fills a cube of ``side``."""
    reps = [-(-side // n) for n in raw.shape]
    out = raw
    for axis, r in enumerate(reps):
        out = np.concatenate([np.flip(out, axis) if k % 2 else out for k in range(r)], axis=axis)
    return np.ascontiguousarray(out[:side, :side, :side])


def main() -> None:
    raw = np.load(ROOT.parent / "shared" / "data" / "gala_test.npz")["raw"]
    folder = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    rows = []
    for side in (128, 384):
        np.save(folder / f"gray{side}.npy", tiled(raw, side))
        config = {"input": str(folder / f"gray{side}.npy"), "output": str(folder / f"seg{side}.zarr"),
                  "options": {"chunk-size": 64, "overlap": 8, "resolution": [10, 10, 10]}}
        done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((side, row))
        print(f"{side}^3: {row['subvolumes']} subvolumes in {row['seconds']:.1f} s, "
              f"{side**3 / row['seconds'] / 1e6 / 2:.2f} MVx/s per core, driver peak {row['driver MB']:.0f} MB, "
              f"largest worker {row['worker MB']:.0f} MB", flush=True)
    (small, a), (large, b) = rows
    print(f"volume x{(large / small) ** 3:.0f}: driver peak x{b['driver MB'] / a['driver MB']:.2f} "
          f"(+{b['driver MB'] - a['driver MB']:.0f} MB), time x{b['seconds'] / a['seconds']:.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s in all)")
