"""How much blocking costs with sparse seeds, and how much ``options.context`` gives back.

    .venv/bin/python benchmarks/bench_context.py

Synthetic EM (96x192x192), unsmoothed naive predictions, seeded watershed with two seed
thresholds (0.1: very sparse seeds), mean-boundary agglomeration at 0.2. Each setting runs
unblocked, then in 48^3 subvolumes (halo 8) with context 0, 16 and 32, and the best
stitching rule is compared with the unblocked VI ("gap"), with each blocked run's time.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from labelstitch.pipeline import compare, run
from labelstitch.synthetic import em_volume


def main() -> None:
    g, t = em_volume((96, 192, 192), n_neurites=50, seed=3)
    out = Path(tempfile.mkdtemp())
    np.save(out/"raw.npy", g); np.save(out/"gt.npy", t)
    for st in (0.1, 0.2):
        seg = {"predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 0.0}},
               "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": st}},
               "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.2}}}
        base = {"input": str(out/"raw.npy"), "ground-truth": str(out/"gt.npy"), "options": {"segmentor": {"configuration": seg}}}
        whole = json.loads(json.dumps(base)); whole["output"] = str(out/f"whole{st}.zarr")
        whole["options"].update({"chunk-size": list(g.shape), "overlap": 0, "stitch-algorithm": "none"})
        u = run(whole).vi
        print("seed", st, "unblocked", round(u.total, 3))
        for ctx in (0, 16, 32):
            cfg = json.loads(json.dumps(base)); cfg["output"] = str(out/f"b{st}{ctx}.zarr")
            cfg["options"].update({"chunk-size": 48, "overlap": 8, "context": ctx, "checkpoint-dir": str(out/f"ck{st}{ctx}")})
            t0 = time.time(); run(cfg); dt = time.time() - t0
            rows = compare(cfg, str(out/"gt.npy"))
            best = min((r for r in rows if r.rule != "none"), key=lambda r: r.total)
            print(f"  context {ctx}: best {best.name} {best.total:.3f} (gap {best.total - u.total:+.3f}) run {dt:.1f}s")


if __name__ == "__main__":
    main()
