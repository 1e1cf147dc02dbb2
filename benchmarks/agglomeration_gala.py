"""Why does the learned agglomeration lose on gala, and does a multicut help? (docs/quality.md)

    .venv/bin/python benchmarks/agglomeration_gala.py

The voxel classifier is trained on gala_train; its predictions on gala_train are then
either in-sample (what ``labelstitch train`` gave the agglomeration classifier before) or
out-of-fold (each half of gala_train predicted by a classifier trained on the other half,
as the predictions on an unseen volume will be). Each agglomeration is scored unblocked on
gala_test over its whole threshold curve (the best point of a curve is an oracle's choice:
this script diagnoses, ``labelstitch train`` chooses on held-out data). Prints Markdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.plugins.agglomeration import train_agglomeration
from labelstitch.plugins.builtin import distance_transform_watershed, learned_agglomeration, multicut_agglomeration, rag_agglomeration, seeded_watershed
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def out_of_fold(raw: np.ndarray, gt: np.ndarray, folds: int = 2) -> np.ndarray:
    """Each z-slab of ``raw`` predicted by a classifier trained on the other slabs only."""
    notes = membrane_annotations(gt)
    out = np.zeros(raw.shape, np.float32)
    edges = np.linspace(0, raw.shape[0], folds + 1).astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        held = notes.copy()
        held[a:b] = 0
        out[a:b] = train_pixel_classifier(raw, held).predict(raw)[a:b]
    return out


def curve(name, run, values, gt):
    scores = [(ls.vi(run(t), gt), t) for t in values]
    best, at = min(scores, key=lambda s: s[0].total)
    line = " ".join(f"{t}:{s.total:.3f}" for s, t in scores)
    print(f"| {name} | {best.total:.3f} ({best.merge:.3f} / {best.split:.3f}) at {at} | {line} |", flush=True)
    return best.total


def main() -> None:
    train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
    start = time.perf_counter()
    pixel = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]))
    pred_test = pixel.predict(test["raw"])
    inside = pixel.predict(train["raw"])
    oof = out_of_fold(train["raw"], train["gt"])
    print(f"voxel classifiers in {time.perf_counter() - start:.0f} s; mean |in-sample - out-of-fold| on gala_train "
          f"{np.abs(inside - oof).mean():.3f}; boundary error in-sample {np.mean((inside > 0.5) != (membrane_annotations(train['gt']) == 1)):.3f}, "
          f"out-of-fold {np.mean((oof > 0.5) != (membrane_annotations(train['gt']) == 1)):.3f}\n")
    none = np.zeros(test["raw"].shape, bool)
    stages = {"distance_transform_watershed": (distance_transform_watershed, {}),
              "seeded_watershed 0.1": (seeded_watershed, {"seed_threshold": 0.1, "min_segment_size": 20})}
    betas = (0.3, 0.4, 0.5, 0.6, 0.7)
    thresholds = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    print("| gala_test, unblocked | best VI (merge / split) at | the curve |")
    print("|---|---|---|")
    for sv_name, (stage, params) in stages.items():
        sv_test = stage(pred_test, none, **params)
        print(f"| {sv_name}: floor | {ls.agglomeration_floor(sv_test, test['gt']).total:.3f} | |")
        curve(f"{sv_name} + rag_agglomeration", lambda t: rag_agglomeration(pred_test, sv_test, threshold=t),
              (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), test["gt"])
        curve(f"{sv_name} + multicut (mean boundary)", lambda b: multicut_agglomeration(pred_test, sv_test, beta=b),
              betas, test["gt"])
        for kind, pred_train in (("in-sample", inside), ("out-of-fold", oof)):
            sv_train = stage(pred_train, np.zeros(pred_train.shape, bool), **params)
            path = Path(f"/tmp/agglo-{kind}.npz")
            train_agglomeration(sv_train, pred_train, train["gt"], n_estimators=100).save(path)
            curve(f"{sv_name} + learned, trained {kind}", lambda t: learned_agglomeration(pred_test, sv_test, str(path), threshold=t),
                  thresholds, test["gt"])
            curve(f"{sv_name} + multicut (learned, {kind})",
                  lambda b: multicut_agglomeration(pred_test, sv_test, beta=b, classifier_path=str(path)), betas, test["gt"])


if __name__ == "__main__":
    main()
