"""The learned agglomeration with and without the forest's affinities as contact features, on gala.

    .venv/bin/python benchmarks/contact_features_gala.py --cache gala-predictions.npz   # about 20 minutes the first time

Predictions as ``labelstitch train --affinities`` makes them (boundary and the affinity
forest's three nearest-neighbour affinities): for each of train's two validation parts of
gala_train, the held-out part by a classifier trained on the rest, and the rest out of fold;
for gala_test, a classifier trained on all of gala_train, and gala_train out of fold for the
agglomeration classifier. They are cached (``--cache``), so that the agglomerations can be
compared again in seconds. Then, on distance-transform supervoxels, every agglomeration at
every threshold: scored on the two held-out parts of gala_train (their mean: what ``train``
sees) and on gala_test (what it never sees; read as a diagnosis, not a choice).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from labelstitch.metrics import vi
from labelstitch.plugins.affinities import affinity_agglomeration
from labelstitch.plugins.agglomeration import train_agglomeration
from labelstitch.plugins.builtin import distance_transform_watershed, learned_agglomeration, multicut_agglomeration
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.plugins.training import FOREST_AFFINITIES, out_of_fold, validation_parts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def predictions(cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        return dict(np.load(cache))
    train, test = np.load(DATA / "gala_train.npz"), np.load(DATA / "gala_test.npz")
    raw, gt = train["raw"], train["gt"]
    out = {}
    for i, (t, h) in enumerate(validation_parts(raw.shape[0], None)):
        start = time.perf_counter()
        notes = membrane_annotations(gt[t])
        pixel = train_pixel_classifier(raw[t], notes, n_estimators=50, affinities=gt[t])
        out[f"held{i}"] = pixel.predict_affinities(raw[h])
        out[f"rest{i}"] = out_of_fold(raw[t], notes, n_estimators=50, affinities=gt[t])
        print(f"validation part {i}: {time.perf_counter() - start:.0f} s", flush=True)
    pixel = train_pixel_classifier(raw, membrane_annotations(gt), n_estimators=50, affinities=gt)
    out["test"] = pixel.predict_affinities(test["raw"])
    out["train"] = out_of_fold(raw, membrane_annotations(gt), n_estimators=50, affinities=gt)
    np.savez(cache, **out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="the predictions' .npz (made when missing)")
    args = parser.parse_args()
    pred = predictions(args.cache)
    train, test = np.load(DATA / "gala_train.npz"), np.load(DATA / "gala_test.npz")
    cases = [(pred[f"rest{i}"], train["gt"][t], pred[f"held{i}"], train["gt"][h])
             for i, (t, h) in enumerate(validation_parts(train["gt"].shape[0], None))]
    cases.append((pred["train"], train["gt"], pred["test"], test["gt"]))
    scores: dict[tuple[str, float], list[float]] = {}
    folder = args.cache.parent
    for k, (p_fit, gt_fit, p_score, gt_score) in enumerate(cases):
        none = np.zeros(p_fit.shape[:3], bool)
        fit_sv = distance_transform_watershed(p_fit[..., 0], none)
        sv = distance_transform_watershed(p_score[..., 0], np.zeros(p_score.shape[:3], bool))
        plain, with_aff = folder / f"agglomeration-{k}.npz", folder / f"agglomeration-{k}-affinities.npz"
        train_agglomeration(fit_sv, p_fit[..., 0], gt_fit, n_estimators=100).save(plain)
        train_agglomeration(fit_sv, p_fit, gt_fit, n_estimators=100, **FOREST_AFFINITIES).save(with_aff)
        boundary = p_score[..., 0]
        for t in GRID:
            runs = {
                "multicut, mean-boundary costs": lambda: multicut_agglomeration(boundary, sv, beta=t),
                "multicut, learned costs": lambda: multicut_agglomeration(boundary, sv, beta=t, classifier_path=str(plain)),
                "multicut, learned costs with affinity features": lambda: multicut_agglomeration(
                    p_score, sv, beta=t, classifier_path=str(with_aff), **FOREST_AFFINITIES),
                "greedy learned": lambda: learned_agglomeration(boundary, sv, str(plain), threshold=t),
                "greedy learned with affinity features": lambda: learned_agglomeration(
                    p_score, sv, str(with_aff), threshold=t, **FOREST_AFFINITIES),
                "affinity_agglomeration": lambda: affinity_agglomeration(p_score, sv, threshold=t, **FOREST_AFFINITIES),
            }
            for name, segment in runs.items():
                scores.setdefault((name, t), []).append(vi(segment(), gt_score).total)
    print("| agglomeration | threshold or beta | held-out parts (mean) | z 38:50 | z 0:12 | gala_test |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, t), v in scores.items():
        print(f"| {name} | {t} | {np.mean(v[:2]):.3f} | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.3f} |")


if __name__ == "__main__":
    main()
