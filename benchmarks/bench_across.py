"""Agglomeration across blocks against agglomeration per block, on real and synthetic EM.

    .venv/bin/python benchmarks/bench_across.py [--out across-output] [--only gala|synthetic] [--context N]

For each volume a segmentor is trained with ``labelstitch.train`` on a *training* volume
(gala_train; a synthetic volume of another seed) and scored on the *test* volume (gala_test;
the demo's synthetic volume, with its artifact region): unblocked, then in overlapping blocks
with every stitching rule, agglomerating each block (the default) and across blocks. Two
segmentors per volume: what ``train`` chooses (the default margin), and its best learned
agglomeration (``margin=-inf``), whose blocked penalty was the largest. Prints Markdown
for docs/quality.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from labelstitch.geometry import Box
from labelstitch.pipeline import compare, run
from labelstitch.plugins.training import train_segmentor
from labelstitch.synthetic import em_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def volumes(which: str, out: Path) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    """(training grayscale, training truth, test grayscale path, test truth path)."""
    if which == "gala":
        train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
        np.save(out / "raw.npy", test["raw"])
        np.save(out / "gt.npy", test["gt"])
        return train["raw"], train["gt"], out / "raw.npy", out / "gt.npy"
    shape = (96, 160, 160)  # the demo's volume and artifact (make demo)
    artifact = Box((int(shape[0] * 0.55), 0, 0), (int(shape[0] * 0.75), shape[1] // 2, shape[2] // 2))
    gray, truth = em_volume(shape, n_neurites=120, artifact=artifact, seed=0)
    train_gray, train_truth = em_volume((64, 128, 128), n_neurites=80, seed=11)
    np.save(out / "raw.npy", gray)
    np.save(out / "gt.npy", truth)
    return train_gray, train_truth, out / "raw.npy", out / "gt.npy"


def score(which: str, out: Path, segmentor: dict, blocks: list[tuple[list[int], int]], context: int = 0) -> list[tuple[str, ...]]:
    base = {"input": str(out / "raw.npy"), "ground-truth": str(out / "gt.npy"),
            "options": {"segmentor": {"configuration": segmentor}, "background-value": None}}
    whole = json.loads(json.dumps(base))
    whole["output"] = str(out / "unblocked.zarr")
    shape = list(np.load(out / "raw.npy", mmap_mode="r").shape)
    whole["options"].update({"chunk-size": shape, "overlap": 0, "stitch-algorithm": "none"})
    start = time.perf_counter()
    unblocked = run(whole, overwrite=True)
    rows = [("unblocked", "-", "-", f"{unblocked.vi.merge:.3f}", f"{unblocked.vi.split:.3f}", f"{unblocked.vi.total:.3f}",
             "-", f"{time.perf_counter() - start:.1f}")]
    best = {}
    for block, halo in blocks:
        for across in (False, True):
            cfg = json.loads(json.dumps(base))
            tag = f"{'x'.join(map(str, block))}-{'across' if across else 'per-block'}"
            cfg["output"] = str(out / f"{tag}.zarr")
            ckpt = out / f"ckpt-{tag}"
            shutil.rmtree(ckpt, ignore_errors=True)
            cfg["options"].update({"chunk-size": block, "overlap": halo, "checkpoint-dir": str(ckpt),
                                   "agglomerate-across-blocks": across, "context": context})
            start = time.perf_counter()
            first = run(cfg, overwrite=True)
            t_run = time.perf_counter() - start
            for row in compare(cfg, str(out / "gt.npy")):
                rows.append((f"{block} halo {halo}, {len(first.plan)} blocks", "across blocks" if across else "per block",
                             row.name, f"{row.merge:.3f}", f"{row.split:.3f}", f"{row.total:.3f}",
                             f"{row.seconds:.2f}", f"{t_run:.1f}"))
                if row.rule != "none":
                    key = (str(block), across)
                    best[key] = min(best.get(key, math.inf), row.total)
            if across:
                info = first.stitch["agglomeration"]
                print(f"{which} {block} across: graph of {info['supervoxels']} supervoxels, {info['edges']} edges, "
                      f"{info['graph_bytes'] / 1e6:.2f} MB on the driver")
    for (block, across), total in sorted(best.items()):
        print(f"{which} {block} {'across' if across else 'per block'}: best rule {total:.3f}, "
              f"{total - unblocked.vi.total:+.3f} bits against unblocked")
    return rows


def print_table(header: list[str], rows: list[tuple[str, ...]], text: int) -> None:
    """``rows`` as a Markdown table: the first ``text`` columns left-aligned, numbers right."""
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * text + "---:|" * (len(header) - text))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="across-output")
    parser.add_argument("--only", choices=["gala", "synthetic"])
    parser.add_argument("--context", type=int, default=0, help="options.context of the blocked runs")
    args = parser.parse_args()
    root = Path(args.out).resolve()
    for which in ("gala", "synthetic"):
        if args.only and which != args.only:
            continue
        out = root / which
        out.mkdir(parents=True, exist_ok=True)
        train_gray, train_truth, _, _ = volumes(which, out)
        blocks = [([25, 50, 50], 8), ([25, 50, 100], 8)] if which == "gala" else [([48, 48, 48], 8)]
        done = []
        for name, margin in (("train's choice", 0.05), ("best learned", -math.inf)):
            start = time.perf_counter()
            trained = train_segmentor(train_gray, train_truth, out / f"model-{margin}", margin=margin)
            chosen = [(stage["function"], stage["parameters"].get("threshold")) for stage in trained.segmentor.values()]
            if chosen in done:
                print(f"\n## {which}: {name} is train's choice (above)")
                continue
            done.append(chosen)
            print(f"\n## {which}: {name} ({time.perf_counter() - start:.0f} s to train), context {args.context}\n")
            print("```\n" + json.dumps(trained.segmentor) + "\n```\n")
            rows = score(which, out, trained.segmentor, blocks, args.context)
            print_table(["blocks", "agglomeration", "stitching", "f.merge VI", "f.split VI", "VI",
                         "stitch + agglomerate s", "run s"], rows, text=3)


if __name__ == "__main__":
    main()
