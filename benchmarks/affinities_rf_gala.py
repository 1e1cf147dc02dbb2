"""Does a random forest trained on affinity targets beat affinities made from the boundary
map? (docs/quality.md, "Affinities from a random forest")

    .venv/bin/python benchmarks/affinities_rf_gala.py      # about 3 minutes on 2 cores

On gala_train: ``train_pixel_classifier(..., affinities=ground truth)``, the voxel
classifier as ``labelstitch train`` makes it plus the ``affinity_classifier`` stage's forest
on voxel pairs. On gala_test: the stage's four channels; supervoxels from its boundary
channel (``seeded_watershed`` 0.1, as in benchmarks/bench_volara.py), then
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def same_body(truth: np.ndarray, axis: int) -> np.ndarray:
    """Whether each voxel and its neighbour before it along ``axis`` are one body (first plane dropped)."""
    moved = np.moveaxis(truth, axis, 0)
    return (moved[1:] == moved[:-1]) & (moved[1:] != 0)


def main() -> None:
    train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
    start = time.perf_counter()
    classifier = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]), n_estimators=50,
                                         affinities=train["gt"])
    trained = time.perf_counter() - start
    start = time.perf_counter()
    predictions = classifier.predict_affinities(test["raw"])
    print(f"voxel and affinity forests trained in {trained:.0f} s; gala_test's four channels predicted in "
          f"{time.perf_counter() - start:.1f} s\n")
    boundary = predictions[..., 0]
    derived = affinities_from_boundary(boundary, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    print("| affinities | pairs misclassified at 0.5 |")
    print("|---|---:|")
    for name, joins_next in (("from the boundary map", True), ("random forest on affinity targets", False)):
        wrong = []
        for axis in range(3):
            if joins_next:  # x and x + 1, stored at x
                values = np.moveaxis(derived[axis], axis, 0)[:-1]
            else:  # x and x - 1, stored at x
                values = np.moveaxis(predictions[..., 1 + axis], axis, 0)[1:]
            wrong.append(np.mean((values > 0.5) != same_body(test["gt"], axis)))
        print(f"| {name} | {np.mean(wrong):.3f} |")
    supervoxels = seeded_watershed(boundary, np.zeros(boundary.shape, bool), seed_threshold=0.1, min_segment_size=20)
    print("\n| threshold | from the boundary map: VI | random forest: VI |")
    print("|---:|---:|---:|")
    for threshold in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7):
        derived_vi = ls.vi(affinity_agglomeration(boundary, supervoxels, threshold=threshold), test["gt"]).total
        learned_vi = ls.vi(affinity_agglomeration(predictions, supervoxels, threshold=threshold, affinity_channels="1,2,3",
                                                  affinity_offsets="-1,0,0;0,-1,0;0,0,-1"), test["gt"]).total
        print(f"| {threshold} | {derived_vi:.3f} | {learned_vi:.3f} |", flush=True)


if __name__ == "__main__":
    main()
