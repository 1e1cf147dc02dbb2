"""The learned agglomeration with and without the forest's affinities as contact features, on gala.

    .venv/bin/python benchmarks/contact_features_gala.py --cache gala-predictions.npz   # about 20 minutes the first time
    .venv/bin/python benchmarks/contact_features_gala.py --cache gala-predictions.npz --parts 4   # 10 more

Predictions as ``labelstitch train --affinities`` makes them (boundary and the affinity
forest's three nearest-neighbour affinities): for each of train's two validation parts of
gala_train, the held-out part by a classifier trained on the rest, and the rest out of fold;
for gala_test, a classifier trained on all of gala_train, and gala_train out of fold for the
agglomeration classifier. They are cached (``--cache``), so that the agglomerations can be
compared again in seconds. Then, on distance-transform supervoxels, every agglomeration at
every threshold: scored on the two held-out parts of gala_train (their mean: what ``train``
sees) and on gala_test (what it never sees; read as a diagnosis, not a choice).

``--parts 4`` adds two more held-out parts, the slices between train's two cut in half
(each predicted by a classifier trained on the longer run of slices beside it), to see
whether more held-out parts would let ``train`` tell the agglomerations apart.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from labelstitch.metrics import vi
from labelstitch.multicut import multicut, multicut_weights
from labelstitch.rag import numbered_roots, renumber
from labelstitch.plugins.affinities import affinity_agglomeration
from labelstitch.plugins.agglomeration import learned_graph, train_agglomeration
from labelstitch.plugins.builtin import (_cut_probability, _multicut_contacts, distance_transform_watershed,
                                         learned_agglomeration, multicut_agglomeration)
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.plugins.training import FOREST_AFFINITIES, out_of_fold, split_validation, validation_parts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def held_out_parts(depth: int, parts: int) -> list[tuple[slice, slice]]:
    """train's two (training, held-out) parts, then the slices between them cut in ``parts - 2``."""
    found = validation_parts(depth, None)
    inner = np.linspace(found[1][1].stop, found[0][1].start, parts - 1).round().astype(int)
    return found + [split_validation(depth, (int(a), int(b))) for a, b in zip(inner[:-1], inner[1:])]


def predictions(cache: Path, parts: int) -> dict[str, np.ndarray]:
    train, test = np.load(DATA / "gala_train.npz"), np.load(DATA / "gala_test.npz")
    raw, gt = train["raw"], train["gt"]
    out = dict(np.load(cache)) if cache.exists() else {}
    for i, (t, h) in enumerate(held_out_parts(raw.shape[0], parts)):
        if f"held{i}" in out:
            continue
        start = time.perf_counter()
        notes = membrane_annotations(gt[t])
        pixel = train_pixel_classifier(raw[t], notes, n_estimators=50, affinities=gt[t])
        out[f"held{i}"] = pixel.predict_affinities(raw[h])
        out[f"rest{i}"] = out_of_fold(raw[t], notes, n_estimators=50, affinities=gt[t])
        print(f"validation part {i}: {time.perf_counter() - start:.0f} s", flush=True)
        np.savez(cache, **out)
    if "test" not in out:
        pixel = train_pixel_classifier(raw, membrane_annotations(gt), n_estimators=50, affinities=gt)
        out["test"] = pixel.predict_affinities(test["raw"])
        out["train"] = out_of_fold(raw, membrane_annotations(gt), n_estimators=50, affinities=gt)
        np.savez(cache, **out)
    return out


def blended_multicut(predictions: np.ndarray, supervoxels: np.ndarray, classifier: str, beta: float) -> np.ndarray:
    """A multicut whose cut probabilities average, in log-odds, the mean boundary and the
    learned classifier's (a two-model ensemble, for when neither wins on held-out data): the
    mean of the two multicuts' edge weights, which are those log-odds plus the same prior."""
    labels, _ = renumber(supervoxels)
    stats, _ = learned_graph(labels, predictions, **FOREST_AFFINITIES)
    contacts = _multicut_contacts(int(stats.inside.shape[1]), classifier, **FOREST_AFFINITIES)
    weights = [multicut_weights(p, stats.count, beta=beta)
               for p in (_cut_probability(stats, ""), _cut_probability(stats, classifier, contacts))]
    roots = multicut(stats.u, stats.v, (weights[0] + weights[1]) / 2, stats.size.size - 1)
    return numbered_roots(roots, np.uint32)[labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="the predictions' .npz (made when missing)")
    parser.add_argument("--parts", type=int, default=2, help="held-out parts of gala_train (2: train's own)")
    args = parser.parse_args()
    pred = predictions(args.cache, args.parts)
    train, test = np.load(DATA / "gala_train.npz"), np.load(DATA / "gala_test.npz")
    parts = held_out_parts(train["gt"].shape[0], args.parts)
    cases = [(pred[f"rest{i}"], train["gt"][t], pred[f"held{i}"], train["gt"][h]) for i, (t, h) in enumerate(parts)]
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
                "multicut, blended costs with affinity features": lambda: blended_multicut(p_score, sv, str(with_aff), t),
                "greedy learned": lambda: learned_agglomeration(boundary, sv, str(plain), threshold=t),
                "greedy learned with affinity features": lambda: learned_agglomeration(
                    p_score, sv, str(with_aff), threshold=t, **FOREST_AFFINITIES),
                "affinity_agglomeration": lambda: affinity_agglomeration(p_score, sv, threshold=t, **FOREST_AFFINITIES),
            }
            for name, segment in runs.items():
                scores.setdefault((name, t), []).append(vi(segment(), gt_score).total)
    n = len(parts)
    print("| agglomeration | threshold or beta | held-out parts (mean) | "
          + " | ".join(f"z {h.start}:{h.stop}" for _, h in parts) + " | gala_test |")
    print("|---|---:|---:|" + "---:|" * (n + 1))
    for (name, t), v in scores.items():
        print(f"| {name} | {t} | {np.mean(v[:n]):.3f} | " + " | ".join(f"{x:.3f}" for x in v) + " |")


if __name__ == "__main__":
    main()
