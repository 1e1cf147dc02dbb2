"""Meshes and skeletons made subvolume by subvolume, against making them of the whole volume
at once with zmesh and kimimaro directly, in the same run.

    .venv/bin/python benchmarks/bench_meshes.py                      # 128^3, 256^3 and 384^3
    .venv/bin/python benchmarks/bench_meshes.py --sides 256 512 --block 128
    .venv/bin/python benchmarks/bench_meshes.py --sides 512 --blockwise-only   # no whole-volume runs
    .venv/bin/python benchmarks/bench_meshes.py --scaling 256 512 1024         # 2 workers, tiled volumes

Volumes: densely packed synthetic neurites (``labelstitch.synthetic.neurite_labels``, every
voxel in some body, the number of bodies growing with the cross-section so that their width
stays the same), in a zarr output with the given subvolume size and 8x4x4 nm voxels.

For each side it reports, on one core (serial executor; zmesh and kimimaro single-threaded):
the seconds and voxels/s of ``labelstitch mesh`` and of zmesh on the whole array (marching
cubes, then the same simplification of every body), their ratio, the total area and volume
of the meshes against zmesh's, and the same for ``labelstitch skeletonize`` against kimimaro
(total cable length). Then ``labelstitch mesh`` with the processes executor (2 workers), and
the peak memory of one subvolume's first pass (read, make the pieces, write them), per voxel
it reads, from a fresh process (resident set sampled every 2 ms, less what it held before).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.geometry import Box, Plan
from labelstitch.meshing import enclosed_volume, mesh_labels, simplify, surface_area
from labelstitch.skeletons import cable_length, skeletonize_labels
from labelstitch.stores import staged_output
from labelstitch.stores._precomputed import PrecomputedShapes
from labelstitch.synthetic import neurite_labels

RESOLUTION = (8.0, 4.0, 4.0)

PEAK = r'''
import json, os, sys, threading, time
import numpy as np
from labelstitch.pipeline.shapes import _MakePieces, _Meshes, _Skeletons
from labelstitch.geometry import Box, Plan
from labelstitch.stores import PrecomputedShapes, parse_volume, open_volume
out, root, kind, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ref = parse_volume(out)
with open_volume(ref) as v:
    grid = Plan.grid(v.shape, block, 0)
how = _Meshes(4.0) if kind == "mesh" else _Skeletons(16, 1.5, None)
shapes = PrecomputedShapes(root)
shapes.prepare(how.kind, v.shape, (8.0, 4.0, 4.0), grid.block)
small = _MakePieces(ref, shapes, how, (8.0, 4.0, 4.0), None, False)
small(Plan.grid(v.shape, 16, 0).subvolumes[0])  # imports, allocator pools
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
before = rss()
peak = [before]
done = threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
watcher = threading.Thread(target=watch)
watcher.start()
middle = grid.subvolumes[len(grid.subvolumes) // 2]
small(middle)
done.set(); watcher.join()
after = peak[0]
box = how.read_box(middle, v.shape)[0]
print(json.dumps({"kind": kind, "voxels": box.size, "rise": after - before}))
'''


def _volume(side: int, seed: int = 0) -> np.ndarray:
    return neurite_labels((side,) * 3, n_neurites=max(8, side * side // 330), seed=seed).astype(np.uint64)


def _write(path: Path, labels: np.ndarray, block: int) -> None:
    with staged_output(str(path), labels.shape, np.uint64, chunks=(block,) * 3, overwrite=True) as store:
        store.write(store.box, labels)
        store.set_voxel_size(RESOLUTION)
        store.set_metadata({"plan": Plan.grid(labels.shape, block, 8).to_dict()})


def blockwise_only(side: int, block: int, folder: Path) -> dict:
    """Only the blockwise runs (serial and 2 workers): for sides whose whole-volume runs
    would not fit this machine's time or memory."""
    labels = _volume(side)
    out = folder / f"seg{side}.zarr"
    _write(out, labels, block)
    row: dict = {"side": side, "voxels": labels.size}
    del labels
    for name, kwargs in (("mesh", {}), ("mesh 2 workers", {"executor": "processes", "workers": 2})):
        start = time.perf_counter()
        ls.mesh(str(out), overwrite=True, **kwargs)
        row[f"{name} s"] = time.perf_counter() - start
        row[f"{name} MVx/s"] = row["voxels"] / row[f"{name} s"] / 1e6
    start = time.perf_counter()
    ls.skeletonize(str(out), overwrite=True, executor="processes", workers=2)
    row["skeletonize 2 workers s"] = time.perf_counter() - start
    return row


def scaling(side: int, block: int, folder: Path, tile: int = 256) -> dict:
    """``labelstitch mesh`` with 2 workers on a volume of ``side``^3 made of ``tile``^3 tiles
    of synthetic neurites (eight seeds, labels offset so that no two tiles share a body),
    written tile by tile: a 1024^3 volume is never held in memory, and each subvolume holds
    the same kind of content at every side, so seconds per voxel should not grow with it."""
    out = folder / f"tiled{side}.zarr"
    tiles = [_volume(min(tile, side), seed) for seed in range(8)]
    n = max(side // tile, 1)
    with staged_output(str(out), (side,) * 3, np.uint64, chunks=(block,) * 3, overwrite=True) as store:
        offset = 0
        for k, corner in enumerate(np.ndindex(n, n, n)):
            labels = tiles[k % 8]
            start = tuple(int(c) * labels.shape[0] for c in corner)
            box = Box(start, tuple(s + labels.shape[0] for s in start))
            store.write(box, labels + np.uint64(offset))
            offset += int(labels.max())
        store.set_voxel_size(RESOLUTION)
        store.set_metadata({"plan": Plan.grid((side,) * 3, block, 8).to_dict()})
    del tiles
    row: dict = {"side": side, "voxels": side**3}
    start = time.perf_counter()
    summary = ls.mesh(str(out), executor="processes", workers=2)
    row["mesh 2 workers s"] = time.perf_counter() - start
    row["MVx/s"] = side**3 / row["mesh 2 workers s"] / 1e6
    row["bodies"] = summary.bodies
    row["triangles"] = summary.size
    row["us per voxel"] = row["mesh 2 workers s"] / side**3 * 1e6
    return row


def measure(side: int, block: int, folder: Path) -> dict:
    labels = _volume(side)
    out = folder / f"seg{side}.zarr"
    _write(out, labels, block)
    row: dict = {"side": side, "voxels": labels.size, "bodies": int(len(np.unique(labels)) - (0 in labels))}
    error = min(RESOLUTION)

    start = time.perf_counter()
    whole = {b: simplify(m, error) for b, m in mesh_labels(labels, (0, 0, 0), RESOLUTION).items()}
    row["zmesh s"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = ls.mesh(str(out), overwrite=True)
    row["mesh s"] = time.perf_counter() - start
    row["mesh / zmesh"] = row["mesh s"] / row["zmesh s"]
    row["mesh MVx/s"] = labels.size / row["mesh s"] / 1e6
    shapes = PrecomputedShapes(folder / f"seg{side}.zarr.precomputed")
    mine = {b: shapes.read_mesh(b) for b in whole}
    area = [surface_area(mine[b]) / surface_area(whole[b]) for b in whole]
    row["area ratio (total)"] = sum(surface_area(m) for m in mine.values()) / sum(surface_area(m) for m in whole.values())
    row["area ratio (worst body)"] = max(area, key=lambda a: abs(a - 1))
    row["volume ratio (total)"] = sum(enclosed_volume(m) for m in mine.values()) / sum(enclosed_volume(m) for m in whole.values())
    row["meshes not closed"] = len(summary.flawed)
    del whole, mine

    start = time.perf_counter()
    ls.mesh(str(out), overwrite=True, executor="processes", workers=2)
    row["mesh 2 workers s"] = time.perf_counter() - start

    start = time.perf_counter()
    skeletons = skeletonize_labels(labels, (0, 0, 0), RESOLUTION)
    row["kimimaro s"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = ls.skeletonize(str(out), overwrite=True)
    row["skeletonize s"] = time.perf_counter() - start
    row["skeletonize / kimimaro"] = row["skeletonize s"] / row["kimimaro s"]
    cable = {b: cable_length(shapes.read_skeleton(b)) for b in skeletons}
    row["cable ratio (total)"] = sum(cable.values()) / sum(cable_length(s) for s, _ in skeletons.values())
    row["skeletons in pieces"] = len(summary.flawed)
    row["skeleton pieces (unblocked)"] = sum(1 for s, _ in skeletons.values() if len(s.edges) != len(s.vertices) - 1)
    return row


def peak_per_voxel(out: Path, block: int, folder: Path) -> dict:
    found = {}
    for kind in ("mesh", "skeletons"):
        root = folder / f"peak-{kind}"
        shutil.rmtree(root, ignore_errors=True)
        result = subprocess.run([sys.executable, "-c", PEAK, str(out), str(root), kind, str(block)],
                                check=True, capture_output=True, text=True)
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        found[kind] = round(probe["rise"] / probe["voxels"], 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 256, 384])
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--blockwise-only", action="store_true", help="skip zmesh and kimimaro on the whole volume")
    parser.add_argument("--scaling", type=int, nargs="+", metavar="SIDE",
                        help="only the scaling runs: 2 workers on volumes of 256^3 tiles (no whole-volume runs, no peaks)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-meshes-"))
    if args.scaling:
        try:
            rows = []
            for side in args.scaling:
                rows.append(scaling(side, args.block, folder))
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(folder / f"tiled{side}.zarr", ignore_errors=True)
                shutil.rmtree(folder / f"tiled{side}.zarr.precomputed", ignore_errors=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        rows = [(blockwise_only if args.blockwise_only else measure)(side, args.block, folder) for side in args.sides]
        peaks = peak_per_voxel(folder / f"seg{max(args.sides)}.zarr", args.block, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": rows, "peak bytes per voxel": peaks}))
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    print(f"\npeak memory of one {args.block}^3 subvolume's work, bytes per voxel of what it reads: {peaks}")


if __name__ == "__main__":
    main()
