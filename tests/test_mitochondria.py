"""Mitochondria: synthetic volumes that have them, a voxel classifier that predicts them as
a second channel, and NeuroProof's context-aware agglomeration (mitochondria left out of
the merging, then each merged into the body it touches most)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from labelstitch._cli.main import ExitCode, main
from labelstitch.agglomeration import EdgeStats, attach_to_largest_contact, context_aware, mitochondria_nodes
from labelstitch.pipeline import run
from labelstitch.plugins.builtin import learned_agglomeration, rag_agglomeration
from labelstitch.plugins.classifier import load_classifier, membrane_annotations, train_pixel_classifier
from labelstitch.rag import merge_by_mean_boundary, roots_of
from labelstitch.synthetic import em_volume


def graph(edges, n, inside=None):
    """EdgeStats of nodes 1..n from (u, v, count, mean boundary) rows."""
    u, v, count, mean = (np.array(c, dtype=float) for c in zip(*edges))
    size = np.full(n + 1, 100.0)
    size[0] = 0
    inside = np.zeros((n + 1, 2)) if inside is None else inside
    return EdgeStats(u.astype(np.int64), v.astype(np.int64), count, count * mean, np.zeros((u.size, 0)), size, inside)


def mean_boundary(threshold):
    return lambda g: merge_by_mean_boundary(g.u, g.v, g.count, g.total, g.size.size - 1, threshold)


def test_a_mitochondrion_cannot_bridge_two_neurites_and_joins_the_one_it_lies_in():
    """Neurites 1 and 2 touch along a strong membrane; mitochondrion 3 lies in 1 (its
    envelope touches 1 over 84 voxel pairs) next to 2 (24 pairs). Mean-boundary merging
    joins the mitochondrion to 2 through its weak envelope, and then 1 through the pooled
    contact: a false merge. Context-aware, 1 and 2 stay apart and 3 joins 1."""
    inside = np.zeros((4, 2))
    inside[3, 1] = 90.0  # node 3: mean mitochondria probability 0.9
    stats = graph([(1, 2, 10, 0.9), (1, 3, 84, 0.3), (2, 3, 24, 0.25)], 3, inside)
    plain = roots_of(mean_boundary(0.4)(stats))
    assert plain[1] == plain[2] == plain[3]
    mito = mitochondria_nodes(stats, 1)
    assert mito.tolist() == [False, False, False, True]
    aware = context_aware(stats, mean_boundary(0.4), mito)
    assert aware[1] != aware[2] and aware[3] == aware[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 14), st.floats(0.0, 1.0))
def test_context_aware_merging_is_the_merging_without_mitochondria_then_each_joins_its_largest_contact(seed, n, share):
    rng = np.random.default_rng(seed)
    pairs = {(int(a), int(b)) for a, b in rng.integers(1, n + 1, size=(3 * n, 2)) if a < b}
    if not pairs:
        return
    rows = [(a, b, int(rng.integers(1, 30)), float(rng.random())) for a, b in sorted(pairs)]
    stats = graph(rows, n)
    members = np.r_[False, rng.random(n) < share]
    plain = mean_boundary(0.5)(stats.subset(~(members[stats.u] | members[stats.v])))
    roots = context_aware(stats, mean_boundary(0.5), members)
    assert np.array_equal(roots[~members], plain[~members])  # the others merge as if the mitochondria were not there
    assert np.array_equal(roots, roots[roots])  # every root is its own root
    for x in np.flatnonzero(members):
        contact: dict[int, float] = {}
        for a, b, c, _ in rows:
            if x in (a, b) and not members[b if a == x else a]:
                body = int(plain[b if a == x else a])
                contact[body] = contact.get(body, 0) + c
        neighbours = {b if a == x else a for a, b, _, _ in rows if x in (a, b)}
        if contact:  # the body it touches most (ties: the lower root)
            assert roots[x] == min(contact, key=lambda body: (-contact[body], body))
        else:  # touching only mitochondria it follows one of them, touching nothing it stays alone
            assert roots[x] == x or any(roots[x] == roots[y] for y in neighbours)
    assert np.array_equal(attach_to_largest_contact(stats, plain, np.zeros(n + 1, bool)), plain)


@pytest.fixture(scope="module")
def mito_volume():
    return em_volume((40, 64, 64), n_neurites=24, mitochondria=60, return_mitochondria=True, seed=5)


def test_synthetic_mitochondria_lie_inside_one_neurite_each(mito_volume):
    gray, truth, mito = mito_volume
    assert 0.01 < mito.mean() < 0.1
    assert not (truth[mito] == 0).any()  # never on a cell membrane
    pieces, n = ndimage.label(mito)
    for k in range(1, n + 1):  # a piece may hold several touching capsules, but of one neurite
        assert np.unique(truth[pieces == k]).size == 1
    assert (gray[mito].mean() < gray[(truth > 0) & ~mito].mean() - 20)  # darker than cytoplasm
    again = em_volume((40, 64, 64), n_neurites=24, mitochondria=60, return_mitochondria=True, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(again, mito_volume))
    plain_gray, plain_truth = em_volume((40, 64, 64), n_neurites=24, seed=5)
    assert np.array_equal(plain_truth, truth)  # the same neurites; mitochondria only change the image


def test_a_classifier_trained_with_mitochondria_predicts_them_as_a_second_channel(mito_volume, tmp_path):
    gray, truth, mito = mito_volume
    marks = membrane_annotations(truth, mito)
    assert set(np.unique(marks).tolist()) == {1, 2, 3}
    interior = mito & ndimage.binary_erosion(mito, border_value=1)
    assert (marks[interior] == 3).all() and (marks[mito & ~interior] == 1).all()  # the envelope is a membrane
    for two_stage in (False, True):
        clf = train_pixel_classifier(gray[:, :32], marks[:, :32], n_estimators=8, two_stage=two_stage)
        clf.save(tmp_path / "c.pkl")
        clf = load_classifier(tmp_path / "c.pkl")
        assert clf.channels == 2
        pred = clf.predict(gray[:, 32:])
        assert pred.shape == gray[:, 32:].shape + (2,)
        held = interior[:, 32:]
        assert pred[..., 1][held].mean() > 0.5 > 0.1 > pred[..., 1][~mito[:, 32:]].mean()
    with pytest.raises(ValueError, match="may mark mitochondria"):
        train_pixel_classifier(gray, np.where(marks == 2, 4, marks).astype(np.uint8))


def test_a_mitochondria_channel_the_predictions_lack_is_refused_with_one_line(mito_volume, tmp_path):
    gray, truth, _ = mito_volume
    boundary = np.where(truth == 0, 0.9, 0.1).astype(np.float32)
    with pytest.raises(ValueError, match="`mitochondria_channel` 1 is not a channel of predictions"):
        rag_agglomeration(boundary, truth, mitochondria_channel=1)
    with pytest.raises(ValueError, match="`mitochondria_channel` 0 is not a channel"):
        learned_agglomeration(np.stack([boundary, boundary], -1), truth, "x.npz", mitochondria_channel=0)
    np.save(tmp_path / "gray.npy", gray)
    for across in (False, True):
        cfg = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"out{across}.zarr"),
               "options": {"chunk-size": 32, "overlap": 4, "agglomerate-across-blocks": across, "segmentor": {
                   "configuration": {"agglomerate-supervoxels": {"function": "rag_agglomeration",
                                                                 "parameters": {"mitochondria_channel": 1}}}}}}
        with pytest.raises(Exception, match="mitochondria_channel") as info:
            run(cfg)
        assert "\n" not in str(info.value).strip()
        assert not (tmp_path / f"out{across}.zarr").exists()


def test_train_with_mitochondria_tries_both_classifiers_and_context_aware_agglomeration(mito_volume, tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    gray, truth, mito = mito_volume
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    np.save("mito.npy", mito)
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "8", "--samples", "40000",
                 "--mitochondria", "mito.npy", "--validation", "30:40", "-q"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "\ndistance_transform_watershed + learned_agglomeration threshold 0.5 " in out  # membranes only
    assert "mitochondria channel: distance_transform_watershed + learned_agglomeration threshold 0.5 " in out
    assert "mitochondria channel: seeded_watershed {'seed_threshold': 0.2, 'min_segment_size': 20} + " \
           "learned_agglomeration threshold 0.5, mitochondria last" in out
    assert "rag_agglomeration threshold 0.3, mitochondria last" in out
    segmentor = json.loads((tmp_path / "model" / "segmentor.json").read_text())
    channels = load_classifier(segmentor["predict-voxels"]["parameters"]["classifier_path"]).channels
    assert channels == 2 or "mitochondria_channel" not in segmentor["agglomerate-supervoxels"]["parameters"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        ["pixel-classifier.pkl", "segmentor.json"]
        + (["agglomeration.npz"] if segmentor["agglomerate-supervoxels"]["function"] == "learned_agglomeration" else []))


def test_a_run_merges_mitochondria_last_with_a_classifier_that_predicts_them(mito_volume, tmp_path, capsys, monkeypatch):
    """``train-pixel-classifier --mitochondria`` and a blocked run whose seeded supervoxels
    cut mitochondria out: context-aware, fewer false splits, the same false merges."""
    monkeypatch.chdir(tmp_path)
    gray, truth, mito = mito_volume
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    np.save("mito.npy", mito)
    assert main(["train-pixel-classifier", "gray.npy", "truth.npy", "pixel.pkl", "--trees", "10",
                 "--mitochondria", "mito.npy"]) == ExitCode.OK
    assert load_classifier("pixel.pkl").channels == 2
    other_gray, other_truth = em_volume((32, 64, 64), n_neurites=24, mitochondria=50, seed=6)
    np.save("other.npy", other_gray)
    np.save("other-truth.npy", other_truth)
    scores = {}
    for aware in (-1, 1):
        segmentor = {
            "predict-voxels": {"function": "pixel_classifier", "parameters": {"classifier_path": "pixel.pkl"}},
            "create-supervoxels": {"function": "seeded_watershed",
                                   "parameters": {"seed_threshold": 0.2, "min_segment_size": 20}},
            "agglomerate-supervoxels": {"function": "rag_agglomeration",
                                        "parameters": {"threshold": 0.4, "mitochondria_channel": aware}},
        }
        scores[aware] = run({"input": "other.npy", "output": f"out{aware}.zarr", "ground-truth": "other-truth.npy",
                             "options": {"chunk-size": 32, "overlap": 4, "segmentor": {"configuration": segmentor}}}).vi
    assert scores[1].split < scores[-1].split - 0.02, scores
    assert scores[1].merge < scores[-1].merge + 0.02, scores


def test_mitochondria_twice_over_are_refused_before_any_volume_is_read(tmp_path):
    from labelstitch import api

    with pytest.raises(ValueError, match="class 3 of the annotations, or as a mask beside a label volume, not both"):
        api.train_pixel_classifier(str(tmp_path / "missing.npy"), str(tmp_path / "marks.npy"), str(tmp_path / "c.pkl"),
                                   annotations=True, mitochondria=str(tmp_path / "mito.npy"))
    assert not (tmp_path / "c.pkl").exists()
