"""Segmentation quality on real EM (the gala FIB-SEM volumes), blocked and stitched vs unblocked.

    .venv/bin/python benchmarks/quality_gala.py [--out quality-output] [--trained [--two-stage]]

1. Train the pixel classifier on gala_train (its ground truth gives membranes).
2. Tune the built-in plugins on gala_train only: a small grid over the watershed seed
   threshold and the agglomeration threshold, scored by VI of an unblocked run.
   With ``--trained``, steps 1 and 2 are ``labelstitch.train`` on gala_train instead (voxel
   classifier, supervoxel stage, learned agglomeration, tuned on gala_train's last quarter).
3. With those settings, segment gala_test unblocked and in overlapping blocks (checkpointed),
   then compare every stitching rule from the checkpoints.
Prints Markdown for docs/quality.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.metrics import vi
from labelstitch.plugins.builtin import rag_agglomeration, seeded_watershed
from labelstitch.pipeline import compare, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def segmentor(clf: Path, seed: float, agglo: float) -> dict:
    return {
        "predict-voxels": {"function": "pixel_classifier", "parameters": {"classifier_path": str(clf)}},
        "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": seed, "seed_size": 5, "min_segment_size": 20}},
        "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": agglo}},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="quality-output")
    parser.add_argument("--trained", action="store_true", help="use labelstitch.train on gala_train (learned agglomeration)")
    parser.add_argument("--two-stage", action="store_true", help="with --trained: a two-stage voxel classifier")
    parser.add_argument("--affinities", action="store_true", help="with --trained: the affinity forest among the choices")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(exist_ok=True)
    train = np.load(SHARED / "gala_train.npz")
    test = np.load(SHARED / "gala_test.npz")

    if args.trained:
        from labelstitch import train as train_segmentor

        np.save(out / "train-raw.npy", train["raw"])
        np.save(out / "train-gt.npy", train["gt"])
        start = time.perf_counter()
        trained = train_segmentor(str(out / "train-raw.npy"), str(out / "train-gt.npy"), str(out / "model"),
                                  two_stage=args.two_stage, affinities=args.affinities, overwrite=True)
        print(f"labelstitch.train on gala_train in {time.perf_counter() - start:.0f} s")
        print(trained.table())
        configuration = trained.segmentor
    else:
        start = time.perf_counter()
        clf = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]), n_estimators=50, max_samples=200_000)
        clf_path = out / "membranes.clf"
        clf.save(clf_path)
        print(f"trained the pixel classifier on gala_train in {time.perf_counter() - start:.0f} s")

        # tune on gala_train only: predictions once, then the watershed and agglomeration grid
        pred = clf.predict(train["raw"])
        mask = np.zeros(pred.shape, bool)
        grid = []
        for seed, agglo in itertools.product([0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]):
            svs = seeded_watershed(pred, mask, seed_threshold=seed, seed_size=5, min_segment_size=20)
            seg = rag_agglomeration(pred, svs, threshold=agglo)
            score = vi(seg, train["gt"])
            grid.append((score.total, seed, agglo, score.merge, score.split))
        grid.sort()
        best_total, seed, agglo, _, _ = grid[0]
        print(f"tuned on gala_train: seed_threshold {seed}, agglomeration threshold {agglo} (train VI {best_total:.3f})")
        configuration = segmentor(clf_path, seed, agglo)

    np.save(out / "raw.npy", test["raw"])
    np.save(out / "gt.npy", test["gt"])
    base = {"input": str(out / "raw.npy"), "ground-truth": str(out / "gt.npy"), "options": {"segmentor": {"configuration": configuration}}}
    whole = json.loads(json.dumps(base))
    whole["output"] = str(out / "unblocked.zarr")
    whole["options"].update({"chunk-size": [50, 100, 200], "overlap": 0, "stitch-algorithm": "none"})
    start = time.perf_counter()
    unblocked = run(whole, overwrite=True)
    t_unblocked = time.perf_counter() - start
    rows = []
    for (block, halo), across in itertools.product((([25, 50, 100], 8), ([25, 50, 50], 8)), (False, True)):
        blocked = json.loads(json.dumps(base))
        blocked["output"] = str(out / f"blocked-{block[2]}{'-across' if across else ''}.zarr")
        if across:  # the agglomeration once over the whole volume's graph, seeds seeing 8 voxels beyond the halo
            blocked["options"].update({"agglomerate-across-blocks": True, "context": 8})
        ckpt = out / f"ckpt-{block[2]}{'-across' if across else ''}"
        if ckpt.exists():
            import shutil

            shutil.rmtree(ckpt)
        blocked["options"].update({"chunk-size": block, "overlap": halo, "checkpoint-dir": str(ckpt)})
        start = time.perf_counter()
        first = run(blocked, overwrite=True)
        t_run = time.perf_counter() - start
        start = time.perf_counter()
        compared = compare(blocked, str(out / "gt.npy"))
        print(f"blocks {block}{' across' if across else ''}: run {t_run:.1f} s, compare of {len(compared)} rules {time.perf_counter() - start:.2f} s")
        for row in compared:
            rows.append((f"{block} halo {halo}{' across blocks, context 8' if across else ''}", len(first.plan), row, t_run))
    print()
    print("| run | subvolumes | stitching | f.merge VI | f.split VI | VI | bodies | stitch s | full run s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print(f"| unblocked | 1 | - | {unblocked.vi.merge:.3f} | {unblocked.vi.split:.3f} | {unblocked.vi.total:.3f} | "
          f"{unblocked.counts['bodies']} | - | {t_unblocked:.1f} |")
    for blocking, n, row, t_run in rows:
        print(f"| {blocking} | {n} | {row.name} | {row.merge:.3f} | {row.split:.3f} | {row.total:.3f} | {row.bodies} | "
              f"{row.seconds:.2f} | {t_run:.1f} |")
    best = min((r for _, _, r, _ in rows if r.rule != "none"), key=lambda r: r.total)
    print(f"\nstitching penalty (best blocked-and-stitched minus unblocked): {best.total - unblocked.vi.total:+.3f} bits")


if __name__ == "__main__":
    main()
