"""Would a random forest trained on affinity targets beat affinities made from the boundary
map? A diagnosis on gala (docs/quality.md, "Affinities from a random forest"), not a stage yet.

    .venv/bin/python benchmarks/affinities_rf_gala.py      # about 3 minutes on 2 cores

On gala_train: the voxel classifier (as ``labelstitch train`` makes it), and a forest on
*pair* features: for two neighbouring voxels along one axis, the mean and the absolute
difference of their filter features (the voxel classifier's, so the pair's features do not
depend on which voxel comes first), and the axis as three indicator columns; one forest for
the three axes (the voxels are about isotropic), 70 000 sampled pairs per axis; the target
is "both voxels in one ground-truth body". On gala_test: supervoxels from the voxel
classifier's boundary (``seeded_watershed`` 0.1, as in benchmarks/bench_volara.py), then
``affinity_agglomeration`` with the boundary-derived affinities and with the forest's, over
a range of thresholds (the best point of each curve is an oracle's choice on the test
volume). Prints Markdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.plugins.affinities import affinities_from_boundary, affinity_agglomeration
from labelstitch.plugins.builtin import seeded_watershed
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.plugins.voxelforest import FilterFeatures

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIGMAS = (0.5, 1.0, 2.0, 4.0)


def filter_features(raw: np.ndarray) -> np.ndarray:
    return FilterFeatures(raw, SIGMAS).slab(0, raw.shape[0]).reshape(*raw.shape, -1)


def pair_features(features: np.ndarray, axis: int) -> np.ndarray:
    """(..., 2F + 3) rows for the pairs (x, x + 1 along ``axis``), stored at x."""
    moved = np.moveaxis(features, axis, 0)
    low, high = moved[:-1], moved[1:]
    onehot = np.zeros(low.shape[:-1] + (3,), np.float32)
    onehot[..., axis] = 1
    return np.moveaxis(np.concatenate([(low + high) / 2, np.abs(low - high), onehot], axis=-1), 0, axis)


def same_body(truth: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(truth, axis, 0)
    return np.moveaxis((moved[:-1] == moved[1:]) & (moved[:-1] != 0), 0, axis)


def main() -> None:
    from sklearn.ensemble import RandomForestClassifier

    train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
    start = time.perf_counter()
    boundary = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]), n_estimators=50).predict(test["raw"])
    features, rng = filter_features(train["raw"]), np.random.default_rng(0)
    rows, targets = [], []
    for axis in range(3):
        x = pair_features(features, axis)
        x, y = x.reshape(-1, x.shape[-1]), same_body(train["gt"], axis).reshape(-1)
        pick = rng.choice(y.size, 70_000, replace=False)
        rows.append(x[pick])
        targets.append(y[pick])
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=5, n_jobs=2, random_state=0)
    forest.fit(np.concatenate(rows), np.concatenate(targets))
    learned = np.zeros((3,) + test["raw"].shape, np.float32)
    test_features = filter_features(test["raw"])
    for axis in range(3):
        x = pair_features(test_features, axis)
        inside = [slice(None)] * 3
        inside[axis] = slice(0, -1)
        learned[axis][tuple(inside)] = forest.predict_proba(x.reshape(-1, x.shape[-1]))[:, 1].reshape(x.shape[:-1])
    print(f"voxel classifier and affinity forest trained, gala_test predicted in {time.perf_counter() - start:.0f} s\n")
    derived = affinities_from_boundary(boundary, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    print("| affinities | pairs misclassified at 0.5 |")
    print("|---|---:|")
    for name, a in (("from the boundary map", derived), ("random forest on affinity targets", learned)):
        wrong = []
        for axis in range(3):
            inside = [slice(None)] * 3
            inside[axis] = slice(0, -1)
            wrong.append(np.mean((a[axis][tuple(inside)] > 0.5) != same_body(test["gt"], axis)))
        print(f"| {name} | {np.mean(wrong):.3f} |")
    predictions = np.concatenate([boundary[..., None], np.moveaxis(learned, 0, -1)], axis=-1)
    supervoxels = seeded_watershed(boundary, np.zeros(boundary.shape, bool), seed_threshold=0.1, min_segment_size=20)
    print("\n| threshold | from the boundary map: VI | random forest: VI |")
    print("|---:|---:|---:|")
    for threshold in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7):
        derived_vi = ls.vi(affinity_agglomeration(boundary, supervoxels, threshold=threshold), test["gt"]).total
        learned_vi = ls.vi(affinity_agglomeration(predictions, supervoxels, threshold=threshold, affinity_channels="1,2,3",
                                                  affinity_offsets="1,0,0;0,1,0;0,0,1"), test["gt"]).total
        print(f"| {threshold} | {derived_vi:.3f} | {learned_vi:.3f} |", flush=True)


if __name__ == "__main__":
    main()
