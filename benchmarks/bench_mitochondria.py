"""Mitochondria: a mitochondria channel and context-aware agglomeration (NeuroProof's), on
synthetic EM with mitochondria (neither gala volume has them labelled).

    .venv/bin/python benchmarks/bench_mitochondria.py [--out mito-output] [--trees 50]

Two segmentors are trained with ``labelstitch.train`` on one synthetic volume (seed 11):
one from the ground truth alone, one also from the mitochondria mask (``--mitochondria``:
a mitochondria channel, every agglomeration tried plainly and context-aware). Both are
scored on another volume (seed 12): unblocked, and in 8 overlapping blocks with the best
stitching rule, agglomerating per block and across blocks. For the segmentor trained with
mitochondria, the same settings are also scored with the context-aware switch flipped
(when it chose the mitochondria channel), so the switch's own effect shows. Then a voxel
classifier with the mitochondria channel and supervoxels grown from thresholded seeds
(where mitochondria become supervoxels of their own), with mean-boundary agglomeration,
plainly and context-aware. Prints Markdown for docs/quality.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_across import print_table, score  # benchmarks/ is on the path when a script runs
from labelstitch.plugins.classifier import load_classifier, membrane_annotations, train_pixel_classifier
from labelstitch.plugins.training import train_segmentor
from labelstitch.synthetic import em_volume

SHAPE = (64, 128, 128)
NEURITES = 80
MITOCHONDRIA = 260  # about 4 % of the volume, 1 per 4,000 voxels


def scores(out: Path, segmentor: dict) -> list[tuple[str, str, str, str]]:
    """(where, f.merge, f.split, VI) unblocked, and the best rule in 8 blocks per block and across
    (the runs of :func:`bench_across.score`)."""
    rows = score("synthetic", out, segmentor, [([32, 64, 64], 8)])
    best = [("unblocked", *rows[0][3:6])]
    for mode in ("per block", "across blocks"):
        row = min((r for r in rows[1:] if r[1] == mode and r[2] != "none"), key=lambda r: float(r[5]))
        best.append((f"8 blocks, {mode} ({row[2]})", *row[3:6]))
    return best


def flipped(segmentor: dict) -> dict:
    """The same segmentor with the agglomeration's context-aware switch flipped."""
    other = json.loads(json.dumps(segmentor))
    params = other["agglomerate-supervoxels"]["parameters"]
    if "mitochondria_channel" in params:
        del params["mitochondria_channel"]
    else:
        params["mitochondria_channel"] = 1
    return other


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="mito-output")
    parser.add_argument("--trees", type=int, default=50)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gray, truth, mito = em_volume(SHAPE, n_neurites=NEURITES, mitochondria=MITOCHONDRIA, return_mitochondria=True, seed=11)
    test_gray, test_truth = em_volume(SHAPE, n_neurites=NEURITES, mitochondria=MITOCHONDRIA, seed=12)
    np.save(out / "raw.npy", test_gray)
    np.save(out / "gt.npy", test_truth)
    print(f"training volume {SHAPE}: {mito.mean():.1%} mitochondria\n")
    table = []
    for name, mask in (("ground truth only", None), ("with --mitochondria", mito)):
        start = time.perf_counter()
        trained = train_segmentor(gray, truth, out / f"model-{'mito' if mask is not None else 'plain'}", trees=args.trees,
                                  mitochondria=mask)
        seconds = time.perf_counter() - start
        agg = trained.segmentor["agglomerate-supervoxels"]
        sv = trained.segmentor["create-supervoxels"]
        agg_params = {k: v for k, v in agg["parameters"].items() if k != "classifier_path"}
        label = f"{name}: {sv['function']} {json.dumps(sv['parameters'])} + {agg['function']} {json.dumps(agg_params)}"
        print(f"{label} ({seconds:.0f} s to train)")
        variants = [(label, trained.segmentor)]
        pixel_path = trained.segmentor["predict-voxels"]["parameters"]["classifier_path"]
        if mask is not None and load_classifier(pixel_path).channels == 2:
            variants.append((f"{name}: the same, context-aware switch flipped", flipped(trained.segmentor)))
        if mask is not None:
            # the voxel classifier with the mitochondria channel, and supervoxels grown from
            # thresholded seeds, where a mitochondrion gets a seed of its own
            path = out / "mitochondria-classifier.pkl"
            train_pixel_classifier(gray, membrane_annotations(truth, mask), n_estimators=args.trees).save(path)
            seeded = {"predict-voxels": {"function": "pixel_classifier", "parameters": {"classifier_path": str(path)}},
                      "create-supervoxels": {"function": "seeded_watershed",
                                             "parameters": {"seed_threshold": 0.2, "min_segment_size": 20}},
                      "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.4}}}
            variants.append(("the mitochondria channel: seeded_watershed 0.2 + rag_agglomeration 0.4", seeded))
            variants.append(("the mitochondria channel: the same, context-aware", flipped(seeded)))
        for text, segmentor in variants:
            table += [(text, *row) for row in scores(out, segmentor)]
    print_table(["segmentor (trained on seed 11)", "scored on seed 12", "f.merge VI", "f.split VI", "VI"], table, text=2)


if __name__ == "__main__":
    main()
