"""Affinities from a random forest, no network: a forest of voxel pairs trained on a
synthetic volume's neurons beats affinities made from the boundary on an unseen volume,
the lean evaluation gives scikit-learn's answers to the bit, and the ``affinity_classifier``
stage feeds the affinity stages in a blocked run, the same on every executor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelstitch import api
from labelstitch._cli.main import ExitCode, main
from labelstitch.plugins.affinities import affinities_from_boundary
from labelstitch.plugins.builtin import affinity_classifier, pixel_classifier
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.plugins.voxelforest import FilterFeatures, pair_rows
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume
from labelstitch.testing import executor_params, roc_auc


def same_body(truth, axis):
    """Whether each voxel and its neighbour before it along ``axis`` are one body (the first plane dropped)."""
    moved = np.moveaxis(truth, axis, 0)
    return (moved[1:] == moved[:-1]) & (moved[1:] != 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=11)
    classifier = train_pixel_classifier(gray, membrane_annotations(truth), n_estimators=20, max_samples=60_000,
                                        affinities=truth)
    path = tmp_path_factory.mktemp("affinities") / "pixel.clf"
    classifier.save(path)
    return classifier, path


def test_the_forests_affinities_beat_affinities_made_from_the_boundary_on_an_unseen_volume(trained):
    _, path = trained
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=12)
    out = affinity_classifier(gray, np.zeros(gray.shape, bool), classifier_path=str(path))
    assert out.shape == gray.shape + (4,) and out.dtype == np.float32
    derived = affinities_from_boundary(out[..., 0], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    for axis in range(3):
        learned = np.moveaxis(out[..., 1 + axis], axis, 0)[1:]  # joins x and x - 1 along the axis
        made = np.moveaxis(derived[axis], axis, 0)[:-1]  # joins x and x + 1: the same pairs
        same = same_body(truth, axis)
        assert roc_auc(learned, same) > roc_auc(made, same) + 0.01, axis
        assert np.mean((learned > 0.5) != same) < np.mean((made > 0.5) != same), axis
    # and the agglomeration with them, each at its best threshold on this volume
    from labelstitch.metrics import vi
    from labelstitch.plugins.affinities import affinity_agglomeration
    from labelstitch.plugins.builtin import seeded_watershed

    supervoxels = seeded_watershed(out, np.zeros(gray.shape, bool), seed_threshold=0.3)
    thresholds = (0.3, 0.5, 0.7, 0.9)
    forest = min(vi(affinity_agglomeration(out, supervoxels, threshold=t, affinity_channels="1,2,3",
                                           affinity_offsets="-1,0,0;0,-1,0;0,0,-1"), truth).total for t in thresholds)
    made = min(vi(affinity_agglomeration(out, supervoxels, threshold=t), truth).total for t in thresholds)
    assert forest < made - 0.05, (forest, made)


def test_the_lean_affinities_are_scikit_learns_to_the_bit(trained):
    """Slab by slab, the pairs across a slab's first plane included (a box of 80 slices takes
    several slabs), against scikit-learn's ``predict_proba`` on the pair rows of the whole
    box, through the forest's Platt calibration (fitted on its out-of-bag answers: it
    sharpens them here, slope above 1); channel 0 is the voxel classifier's own answer; the
    first plane of each affinity, without a neighbour before it, is 0."""
    from labelstitch.plugins import voxelforest
    from labelstitch.plugins.agglomeration import calibrated

    classifier, path = trained
    calibration = tuple(classifier.info["affinity_calibration"])
    assert calibration[0] > 0  # a higher forest answer stays a higher affinity
    gray, _ = em_volume((80, 48, 48), n_neurites=12, seed=13)
    slab = voxelforest.SLAB_VOXELS
    voxelforest.SLAB_VOXELS = 48 * 48 * 9  # slabs of 9 slices: many slab edges
    try:
        out = classifier.predict_affinities(gray)
    finally:
        voxelforest.SLAB_VOXELS = slab
    np.testing.assert_array_equal(out[..., 0], pixel_classifier(gray, np.zeros(gray.shape, bool), classifier_path=str(path)))
    features = FilterFeatures(gray, classifier.sigmas).slab(0, gray.shape[0])
    features = features.reshape(*gray.shape, -1)
    for axis in range(3):
        moved = np.moveaxis(features, axis, 0)
        low, high = moved[:-1].reshape(-1, features.shape[-1]), moved[1:].reshape(-1, features.shape[-1])
        forest = classifier.affinities.predict_proba(pair_rows(low, high, axis))[:, 1].astype(np.float32)
        expected = calibrated(forest.astype(np.float64), calibration, classifier.affinities.n_estimators).astype(np.float32)
        channel = np.moveaxis(out[..., 1 + axis], axis, 0)
        np.testing.assert_array_equal(channel[1:].reshape(-1), expected)
        assert not channel[0].any()


@pytest.mark.parametrize("executor", executor_params("processes"))
def test_trained_from_the_command_line_and_run_blocked_with_the_affinity_stages(tmp_path, executor, monkeypatch):
    """``train-pixel-classifier --affinities``, then a blocked run whose supervoxels come from
    the boundary channel and whose agglomeration reads the three affinity channels (checked
    against what the stage declares it writes); the processes executor writes the serial
    bytes, and the agglomeration by the affinities improves on the supervoxels."""
    from labelstitch.metrics import vi

    monkeypatch.chdir(tmp_path)
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=14)
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    assert main(["train-pixel-classifier", "gray.npy", "truth.npy", "pixel.clf", "--trees", "10", "--samples", "40000",
                 "--affinities"]) == ExitCode.OK
    test_gray, test_truth = em_volume((32, 64, 64), n_neurites=20, seed=15)
    np.save("test.npy", test_gray)

    def run(name, how, agglomerate=True):
        read = {"function": "affinity_agglomeration", "parameters": {
            "threshold": 0.6, "affinity_channels": "1,2,3", "affinity_offsets": "-1,0,0;0,-1,0;0,0,-1"}}
        segmentor = {"predict-voxels": {"function": "affinity_classifier", "parameters": {"classifier_path": "pixel.clf"}},
                     "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}},
                     "agglomerate-supervoxels": read if agglomerate else {"function": "no_agglomeration"}}
        config = {"input": "test.npy", "output": f"{name}.zarr",
                  "options": {"chunk-size": 24, "overlap": 4, "segmentor": {"configuration": segmentor}}}
        api.run(config, executor=how, workers=2 if how != "serial" else None, progress=False)
        with open_volume(f"{name}.zarr") as out:
            return out.read()

    serial = run("serial", "serial")
    np.testing.assert_array_equal(run(executor, executor), serial)
    supervoxels = run("supervoxels", "serial", agglomerate=False)
    assert np.unique(serial).size < np.unique(supervoxels).size  # the affinities merged supervoxels
    assert vi(serial, test_truth).total < vi(supervoxels, test_truth).total  # and merged them well


def test_refusals_in_one_line(trained, tmp_path):
    gray, truth = em_volume((16, 32, 32), n_neurites=8, seed=16)
    plain = train_pixel_classifier(gray, membrane_annotations(truth), n_estimators=5, max_samples=5000)
    plain.save(tmp_path / "plain.clf")
    with pytest.raises(ValueError, match="has no affinity forest .* --affinities"):
        affinity_classifier(gray, np.zeros(gray.shape, bool), classifier_path=str(tmp_path / "plain.clf"))
    with pytest.raises(ValueError, match="affinity_classifier needs `classifier_path`"):
        affinity_classifier(gray, np.zeros(gray.shape, bool))
    with pytest.raises(ValueError, match="an affinity forest goes with a one-stage classifier of membranes only"):
        train_pixel_classifier(gray, membrane_annotations(truth), n_estimators=5, max_samples=5000, two_stage=True,
                               affinities=truth)
    np.save(tmp_path / "g.npy", gray)
    np.save(tmp_path / "t.npy", membrane_annotations(truth))
    with pytest.raises(ValueError, match="--affinities needs a label volume of neurons, not annotations"):
        api.train_pixel_classifier(str(tmp_path / "g.npy"), str(tmp_path / "t.npy"), str(tmp_path / "x.clf"),
                                   annotations=True, affinities=True)
    assert not (tmp_path / "x.clf").exists()
    assert json.dumps(sorted(plain.info))  # a plain classifier's info says nothing of affinities
    assert "affinities" not in plain.info and trained[0].info["affinities"] is True


def test_train_with_affinities_weighs_the_forests_affinities_and_writes_a_segmentor_that_runs(tmp_path, capsys,
                                                                                            monkeypatch):
    """``labelstitch train --affinities``: ``affinity_agglomeration`` with the voxel
    classifier's own affinities, and the learned agglomeration with their features, are
    among the held-out choices. Which choice wins on a small volume is the data's call; here
    it is steered to the best row of the learned agglomeration with affinity features (the
    win that writes the most), so that what a win writes is checked: ``affinity_classifier``
    with a classifier refitted with its affinity forest and an agglomeration classifier
    with affinity features, which a blocked run on another volume, across blocks, uses to
    merge supervoxels well. (What a win of ``affinity_agglomeration`` writes differs only in
    the agglomeration's name and the classifier it does not need; blocked runs of it are
    checked above.)"""
    steer = "learned_agglomeration"
    from labelstitch.pipeline import run
    from labelstitch.plugins import training
    from labelstitch.plugins.agglomeration import load_agglomeration_classifier
    from labelstitch.plugins.classifier import load_classifier

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "_pick", lambda rows, margin, log: min(
        (row for row in rows if row[4] == steer and "affinity_channels" in row[5]), key=training.rank))
    gray, truth = em_volume((48, 64, 64), n_neurites=20, seed=17)
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "10", "--samples", "40000",
                 "--validation", "36:48", "--affinities", "-q"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "+ affinity_agglomeration (forest affinities) threshold" in out
    assert "+ learned_agglomeration (affinity features) threshold" in out
    assert "+ multicut_agglomeration (learned costs, affinity features) beta" in out
    segmentor = json.loads((tmp_path / "model" / "segmentor.json").read_text())
    assert segmentor["predict-voxels"]["function"] == "affinity_classifier"
    agglomeration = segmentor["agglomerate-supervoxels"]
    assert agglomeration["function"] == steer
    assert agglomeration["parameters"]["affinity_offsets"] == "-1,0,0;0,-1,0;0,0,-1"
    features = load_agglomeration_classifier(agglomeration["parameters"]["classifier_path"]).features
    assert "affinity_mean" in features and "channel1_mean" not in features
    assert load_classifier(segmentor["predict-voxels"]["parameters"]["classifier_path"]).affinities is not None
    other, other_truth = em_volume((32, 64, 64), n_neurites=20, seed=18)
    np.save("other.npy", other)
    np.save("other-truth.npy", other_truth)
    options = {"chunk-size": 32, "overlap": 8, "agglomerate-across-blocks": True}
    trained = run({"input": "other.npy", "output": "trained.zarr", "ground-truth": "other-truth.npy",
                   "options": {**options, "segmentor": {"configuration": segmentor}}})
    apart = {**segmentor, "agglomerate-supervoxels": {"function": "no_agglomeration"}}
    supervoxels = run({"input": "other.npy", "output": "sv.zarr", "ground-truth": "other-truth.npy",
                       "options": {**options, "segmentor": {"configuration": apart}}})
    assert trained.vi.bodies < supervoxels.vi.bodies and trained.vi.total < supervoxels.vi.total, (trained.vi, supervoxels.vi)
