"""Learned agglomeration: edge statistics that add up when regions merge, the numba forest
against scikit-learn's, the classifier file, and a trained model beating mean-boundary
agglomeration on a synthetic volume it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from labelstitch.agglomeration import BINS, agglomerate, edge_stats, feature_names
from labelstitch.metrics import vi
from labelstitch.plugins import stage_functions
from labelstitch.plugins.agglomeration import (
    AgglomerationClassifier, load_agglomeration_classifier, train_agglomeration,
)
from labelstitch.plugins.builtin import (
    distance_transform_watershed, learned_agglomeration, naive_membrane_predictions, rag_agglomeration,
)
from labelstitch.synthetic import em_volume


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(1, 6))
def test_edge_statistics_of_merged_regions_are_the_sums_of_their_parts(seed, n_labels, n_groups):
    """What the agglomeration relies on: pooling the statistics of merged regions gives
    exactly the statistics of the merged labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels + 1, (6, 7, 8)).astype(np.uint32)
    boundary = rng.random((6, 7, 8)).astype(np.float32)
    group = np.concatenate([[0], rng.integers(1, n_groups + 1, n_labels)]).astype(np.uint32)
    fine, coarse = edge_stats(labels, boundary), edge_stats(group[labels], boundary)
    pooled: dict[tuple[int, int], list] = {}
    for u, v, c, t, h in zip(fine.u, fine.v, fine.count, fine.total, fine.hist):
        a, b = sorted((int(group[u]), int(group[v])))
        if a == b:
            continue  # a contact inside a merged region
        entry = pooled.setdefault((a, b), [0.0, 0.0, np.zeros(BINS)])
        entry[0] += c
        entry[1] += t
        entry[2] = entry[2] + h
    assert set(pooled) == set(zip(coarse.u.tolist(), coarse.v.tolist()))
    for u, v, c, t, h in zip(coarse.u, coarse.v, coarse.count, coarse.total, coarse.hist):
        count, total, hist = pooled[(int(u), int(v))]
        assert count == c and np.isclose(total, t) and np.array_equal(hist, h)
    sizes = np.bincount(group[: fine.size.size], weights=fine.size, minlength=coarse.size.size)
    np.testing.assert_array_equal(sizes[1 : coarse.size.size], coarse.size[1:])  # region sizes add up too
    inside = np.bincount(group[: fine.size.size], weights=fine.inside[:, 0], minlength=coarse.size.size)
    np.testing.assert_allclose(inside[1 : coarse.size.size], coarse.inside[1:, 0], rtol=1e-9)


def test_the_numba_forest_gives_scikit_learns_probabilities():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.random((500, len(feature_names())))
    y = (x[:, 0] + 0.3 * x[:, 3] > 0.7).astype(int)
    forest = RandomForestClassifier(n_estimators=20, min_samples_leaf=2, random_state=0).fit(x, y)
    flat = AgglomerationClassifier.from_forest(forest, feature_names(), {})
    test = rng.random((300, x.shape[1]))
    np.testing.assert_allclose(flat.predict(test), forest.predict_proba(test)[:, 1], atol=1e-12)


def volume(seed):
    gray, truth = em_volume((64, 128, 128), n_neurites=40, seed=seed)
    mask = np.zeros(gray.shape, bool)
    predictions = naive_membrane_predictions(gray, mask, sigma=1.0)
    return predictions, distance_transform_watershed(predictions, mask), truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    predictions, supervoxels, truth = volume(1)
    model = train_agglomeration(supervoxels, predictions, truth, n_estimators=40)
    path = tmp_path_factory.mktemp("agglo") / "agglomeration.npz"
    model.save(path)
    return model, path


def test_a_trained_model_beats_mean_boundary_agglomeration_on_another_volume(trained):
    model, path = trained
    assert model.info["merges"] > 0 and model.info["edges"] > model.info["merges"]
    predictions, supervoxels, truth = volume(2)  # not seen in training
    learned = vi(learned_agglomeration(predictions, supervoxels, str(path), threshold=0.5), truth)
    # mean-boundary at its best threshold on this very volume (a setting fitted to the test)
    mean = min(vi(rag_agglomeration(predictions, supervoxels, threshold=t), truth).total for t in np.arange(0.1, 0.8, 0.05))
    assert learned.total < 0.8 * mean, (learned, mean)
    assert learned.total < vi(supervoxels, truth).total  # it does merge, and merges well


def test_merging_recomputes_features_and_never_merges_below_the_threshold():
    """Scored by 1 - mean boundary, the learned engine is mean-boundary agglomeration: the
    same partition as rag_agglomeration, whose contacts it pools the same way."""
    from labelstitch.testing import assert_same_partition

    predictions, supervoxels, truth = volume(3)
    calls = []

    def probability(features):
        calls.append(len(features))
        return 1.0 - features[:, 0]

    roots = agglomerate(supervoxels, predictions, probability, 0.65)
    merged = roots[supervoxels]
    stats = edge_stats(merged, predictions)  # between final regions, no contact is below 0.35
    assert np.all(stats.total / stats.count > 0.35 - 1e-6)
    assert len(calls) > 10 and np.unique(merged).size < np.unique(supervoxels).size
    assert_same_partition(merged, rag_agglomeration(predictions, supervoxels, threshold=0.35))


def test_the_classifier_file_is_versioned_and_checked(trained, tmp_path):
    model, path = trained
    again = load_agglomeration_classifier(path, channels=1)
    x = np.random.default_rng(1).random((50, len(model.features)))
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    with pytest.raises(ValueError, match=r"trained on 23 edge features .* give 26 \(2 channel"):
        load_agglomeration_classifier(path, channels=2)
    (tmp_path / "bad.npz").write_bytes(b"not a classifier")
    with pytest.raises(ValueError, match="is not a labelstitch agglomeration classifier"):
        load_agglomeration_classifier(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="needs `classifier_path`"):
        learned_agglomeration(np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), np.uint32))
    assert "learned_agglomeration" in stage_functions()["agglomerate-supervoxels"]
