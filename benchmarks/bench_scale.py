"""Scale: (a) the whole pipeline through the CLI on mirror-tiled real FIB-SEM at growing
sizes, and (b) the seed paper's 3,375-subvolume plan pushed through the driver's resolve and
mapping step with synthetic matches, with an extrapolation to the paper's Table 1.

    .venv/bin/python benchmarks/bench_scale.py                  # (a) 256^3, 512^3, 1024^3 and (b)
    .venv/bin/python benchmarks/bench_scale.py --sides 256 512  # smaller (a)
    .venv/bin/python benchmarks/bench_scale.py --only resolve --matches 1e7
    .venv/bin/python benchmarks/bench_scale.py --only pipeline --sides 512 --chunk 256 --serial-side 0 \
        --trained quality-output/model/segmentor.json --across     # the trained pipeline

(a) runs ``labelstitch run CONFIG --executor processes --workers 2 --json`` (naive plugins,
128^3 subvolumes + 20 voxels of halo, no checkpoint folder) in a fresh process per size, after
one small warm-up run that fills numba's disk cache, and reports wall time per stage, MVx/s per
core, and the driver's and the largest worker's peak RSS. With ``--trained SEGMENTOR.json``
(what ``labelstitch train`` wrote) the runs use that segmentor instead of the naive plugins
(and ``--across`` agglomerates across blocks, as a multicut should be run). (b) builds ``Plan.grid((7680,)*3,
block=512, halo=20)``, gives every subvolume ``--segments`` labels and every face ``matches /
n_faces`` matches between random labels of its two sides, and times ``resolve`` plus the
per-subvolume mapping lookups the write step does, in a fresh process (peak RSS is its own).
Needs ``../shared/data/gala_test.npz`` for (a).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_driver_memory import tiled  # noqa: E402

CORES = 2
PAPER = {"bytes": 453e9, "cores": 512, "segment h": 42.0, "stitch h": 1.0, "write h": 20.0}

RESOLVE = r'''
import json, resource, sys, time
import numpy as np
from labelstitch import Plan
from labelstitch.resolve import resolve

n_matches, segments, seed = int(float(sys.argv[1])), int(sys.argv[2]), 0
plan = Plan.grid((7680,) * 3, block=512, halo=20)
faces = plan.faces()
rng = np.random.default_rng(seed)
start = time.perf_counter()
per_face = -(-n_matches // len(faces))
sa = np.repeat(np.array([f.a for f in faces], np.uint64), per_face)
sb = np.repeat(np.array([f.b for f in faces], np.uint64), per_face)
la = rng.integers(1, segments + 1, sa.size, dtype=np.uint64)
lb = rng.integers(1, segments + 1, sb.size, dtype=np.uint64)
node_sv = np.repeat(np.arange(len(plan), dtype=np.uint64), segments)
node_label = np.tile(np.arange(1, segments + 1, dtype=np.uint64), len(plan))
made = time.perf_counter() - start
rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
mapping = resolve(sa, la, sb, lb, nodes=(node_sv, node_label))
resolved = time.perf_counter() - start
del sa, sb, la, lb, node_sv, node_label
start = time.perf_counter()
total = 0
for sv in plan:
    labels, bodies = mapping.for_subvolume(sv.id)
    total += labels.size
lookups = time.perf_counter() - start
print(json.dumps({
    "subvolumes": len(plan), "faces": len(faces), "matches": per_face * len(faces),
    "nodes": total, "bodies": mapping.n_bodies, "make s": made, "resolve s": resolved,
    "lookup s": lookups, "inputs MB": rss_inputs,
    "peak MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
'''


def run_cli(config: dict, folder: Path, name: str, executor: str = "processes") -> dict:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    cmd = [str(ROOT / ".venv" / "bin" / "labelstitch"), "run", str(path), "--executor", executor,
           "--workers", str(CORES), "--json", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    report["wall s"] = time.perf_counter() - start
    return report


def end_to_end(sides: list[int], serial_side: int | None, chunk: int = 128, trained: str = "",
               across: bool = False) -> list[tuple[int, dict]]:
    raw = np.load(ROOT.parent / "shared" / "data" / "gala_test.npz")["raw"]
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    options: dict = {"chunk-size": chunk, "overlap": 20, "resolution": [10, 10, 10]}
    if trained:
        options["segmentor"] = {"configuration": json.loads(Path(trained).read_text())}
    if across:
        options.update({"agglomerate-across-blocks": True, "context": 8})
    np.save(folder / "warm.npy", tiled(raw, 128))
    run_cli({"input": str(folder / "warm.npy"), "output": str(folder / "warm.zarr"), "options": options}, folder, "warm")
    rows = []
    what = f"the trained segmentor {trained}{' across blocks' if across else ''}" if trained else "naive plugins"
    print(f"(a) end to end, processes executor on {CORES} cores, {chunk}^3 subvolumes + 20 halo, {what}")
    print(f"{'volume':>8} {'subvol':>6} {'wall s':>7} {'segment':>8} {'stitch':>7} {'write':>7} "
          f"{'MVx/s/core':>10} {'driver MB':>9} {'worker MB':>9} {'ckpt ratio':>10}")
    for side in sides:
        gray = folder / f"gray{side}.npy"
        np.save(gray, tiled(raw, side))
        report = run_cli({"input": str(gray), "output": str(folder / f"seg{side}.zarr"), "options": options}, folder, f"c{side}")
        s, c = report["seconds"], report["counts"]
        rows.append((side, report))
        print(f"{side:>6}^3 {c['subvolumes']:>6} {report['wall s']:>7.1f} {s['segment']:>8.1f} {s['stitch']:>7.1f} "
              f"{s['write']:>7.1f} {side**3 / report['wall s'] / 1e6 / CORES:>10.2f} {c['driver peak MB']:>9.0f} "
              f"{c['worker peak MB']:>9.0f} {c['uncompressed label bytes'] / c['checkpoint bytes']:>10.0f}", flush=True)
        if side == serial_side:
            serial = run_cli({"input": str(gray), "output": str(folder / f"serial{side}.zarr"), "options": options},
                             folder, f"s{side}", executor="serial")
            print(f"{'':8} serial executor: {serial['wall s']:.1f} s (segment {serial['seconds']['segment']:.1f}, stitch "
                  f"{serial['seconds']['stitch']:.1f}, write {serial['seconds']['write']:.1f}); processes on {CORES} cores is "
                  f"{serial['wall s'] / report['wall s']:.2f}x faster", flush=True)
        for stale in folder.glob(f"*{side}*"):
            subprocess.run(["rm", "-rf", str(stale)], check=True)
    if len(rows) > 1:
        (a, ra), (b, rb) = rows[0], rows[-1]
        grow = (b / a) ** 3
        print(f"volume x{grow:.0f}: wall time x{rb['wall s'] / ra['wall s']:.1f}, driver peak "
              f"x{rb['counts']['driver peak MB'] / ra['counts']['driver peak MB']:.2f} "
              f"(+{rb['counts']['driver peak MB'] - ra['counts']['driver peak MB']:.0f} MB)")
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    return rows


def paper_plan(n_matches: float, segments: int) -> dict:
    done = subprocess.run([sys.executable, "-c", RESOLVE, str(n_matches), str(segments)],
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"(b) the paper's plan: {row['subvolumes']:,} subvolumes of 512^3 + 20, {row['faces']:,} faces, "
          f"{row['matches']:,} matches, {row['nodes']:,} nodes -> {row['bodies']:,} bodies")
    print(f"    resolve {row['resolve s']:.1f} s, per-subvolume mapping lookups {row['lookup s']:.2f} s; "
          f"peak RSS {row['peak MB'] / 1024:.1f} GB ({row['inputs MB'] / 1024:.1f} GB of it the synthetic inputs)")
    return row


def extrapolate(rows: list[tuple[int, dict]], plan_row: dict | None) -> None:
    side, report = rows[-1]
    voxels = side**3
    s = report["seconds"]
    per_core = {k: voxels / (s[k] * CORES) for k in ("segment", "stitch", "write")}
    cores = PAPER["cores"]
    print(f"extrapolated from {side}^3 to the paper's {PAPER['bytes'] / 1e9:.0f} GB (uint8 voxels) on {cores} cores, "
          "if throughput per core holds:")
    for k in ("segment", "stitch", "write"):
        hours = PAPER["bytes"] / (per_core[k] * cores) / 3600
        print(f"    {k:8} {hours:6.2f} h  (paper, Table 1: {PAPER[k + ' h']:.0f} h)")
    if plan_row:
        print(f"    resolve  {plan_row['resolve s'] / 3600:6.3f} h  on the driver alone (measured in (b))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--matches", type=float, default=1e8)
    parser.add_argument("--chunk", type=int, default=128, help="options.chunk-size of (a)")
    parser.add_argument("--segments", type=int, default=30_000, help="labels per subvolume in (b)")
    parser.add_argument("--only", choices=["pipeline", "resolve"])
    parser.add_argument("--serial-side", type=int, default=512, help="also run the serial executor at this size (0: never)")
    parser.add_argument("--trained", default="", help="a segmentor.json from labelstitch train instead of the naive plugins")
    parser.add_argument("--across", action="store_true", help="options.agglomerate-across-blocks (and context 8)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = (end_to_end(args.sides, args.serial_side or None, args.chunk, args.trained, args.across)
            if args.only != "resolve" else [])
    plan_row = paper_plan(args.matches, args.segments) if args.only != "pipeline" else None
    if rows:
        extrapolate(rows, plan_row)
    print(f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
