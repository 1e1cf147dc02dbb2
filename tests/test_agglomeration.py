"""Learned agglomeration: edge statistics that add up when regions merge, the numba forest
against scikit-learn's, the classifier file, and a trained model beating mean-boundary
agglomeration on a synthetic volume it was not trained on; the region graphs of blocked
volumes, and the numba mean-boundary merging against its plain-Python reference."""

from __future__ import annotations

import heapq

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


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 0.65))
def test_the_features_scored_after_merges_are_those_of_the_merged_labels(seed, threshold):
    """Every edge left when the agglomeration stops was last scored with the features a
    fresh graph of the merged labels gives: sizes, contacts, histograms and each region's
    surface (its contacts with all neighbours, pooled minus the contact merged away)."""
    rng = np.random.default_rng(seed)
    cells = np.zeros((6, 8, 8), np.uint32)  # four cells, each cut into random fragments
    cells[:, :4, 4:], cells[:, 4:, :4], cells[:, 4:, 4:] = 1, 2, 3
    labels = (cells * 8 + rng.integers(1, 8, cells.shape)).astype(np.uint32)
    walls = np.zeros(cells.shape, bool)
    walls[:, 3:5, :] = walls[:, :, 3:5] = True
    boundary = (0.5 * rng.random(cells.shape) + 0.5 * walls).astype(np.float32)
    scored = set()

    def probability(features):
        scored.update(tuple(np.round(row, 9)) for row in features)
        return 1.0 - features[:, 0]

    merged = agglomerate(labels, boundary, probability, threshold)[labels]
    fresh = edge_stats(merged, boundary).features()
    assert fresh.shape[0] > 0 and fresh.shape[1] == len(feature_names())
    assert np.unique(merged).size < np.unique(labels).size  # something merged
    assert all(tuple(np.round(row, 9)) in scored for row in fresh)


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
    with pytest.raises(ValueError, match=r"trained on 26 edge features .* give 46 \(2 channel"):
        load_agglomeration_classifier(path, channels=2)
    (tmp_path / "bad.npz").write_bytes(b"not a classifier")
    with pytest.raises(ValueError, match="is not a labelstitch agglomeration classifier"):
        load_agglomeration_classifier(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="needs `classifier_path`"):
        learned_agglomeration(np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), np.uint32))
    assert "learned_agglomeration" in stage_functions()["agglomerate-supervoxels"]


def test_a_classifier_file_written_again_is_read_again(trained, tmp_path):
    """A worker keeps a loaded classifier, but not past a rewrite of its file (``train``
    rewrites its files; a stale model would score with the old forest)."""
    from dataclasses import replace

    model, _ = trained
    predictions, supervoxels, _ = volume(2)
    path = tmp_path / "model.npz"
    model.save(path)
    merged = learned_agglomeration(predictions, supervoxels, str(path), threshold=0.5)
    assert np.unique(merged).size < np.unique(supervoxels).size
    replace(model, value=np.zeros_like(model.value)).save(path)  # a forest that never merges
    assert np.unique(learned_agglomeration(predictions, supervoxels, str(path), threshold=0.5)).size == \
        np.unique(supervoxels[supervoxels > 0]).size


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 5), st.sampled_from([1, 2, 5]))
def test_the_parts_of_a_blocked_volume_sum_to_its_region_graph(seed, n_labels, block, channels):
    """Agglomeration across blocks relies on it: every voxel pair lies in one interior or
    straddles one face, so interior graphs plus face contacts, each in local ids mapped to
    global ones, sum to exactly the region graph of the whole volume; so do the contacts'
    further values (a further channel, and with five channels affinities in 1-3)."""
    from labelstitch.across import face_contacts
    from labelstitch.graphparts import interior_graph, sum_graph
    from labelstitch.contacts import Contacts
    from labelstitch.geometry import Plan

    rng = np.random.default_rng(seed)
    shape = (7, 6, 9)
    labels = rng.integers(0, n_labels + 1, shape).astype(np.uint64)
    pred = rng.random(shape + (channels,)).astype(np.float32)
    plan = Plan.grid(shape, block=block + 1, halo=1)
    offset = {sv.id: 1000 * (sv.id + 1) for sv in plan}  # each subvolume's labels in ids of its own
    local = lambda sv, x: np.where(x != 0, x + np.uint64(offset[sv.id]), 0)  # noqa: E731
    to_global = lambda sv, x: (x - np.uint64(offset[sv.id])).astype(np.uint64)  # noqa: E731
    contacts = Contacts.of(channels, (1, 2, 3) if channels == 5 else None)
    parts = []
    for sv in plan:
        part = interior_graph(local(sv, labels[sv.interior.slices()]), pred[sv.interior.slices()], contacts)
        part.nodes, part.u, part.v = (to_global(sv, x) for x in (part.nodes, part.u, part.v))
        parts.append(part)
    for face in plan.faces():
        a, b = plan[face.a], plan[face.b]
        lo, hi = list(a.interior.slices()), list(b.interior.slices())
        lo[face.axis] = slice(face.plane - 1, face.plane)
        hi[face.axis] = slice(face.plane, face.plane + 1)
        part = face_contacts(local(a, labels[tuple(lo)]), pred[tuple(lo)][..., 0],
                             local(b, labels[tuple(hi)]), pred[tuple(hi)][..., 0],
                             contacts.planes(pred[a.interior.slices()], face.axis)[1],
                             contacts.planes(pred[b.interior.slices()], face.axis)[0], contacts.kinds)
        part.u, part.v = to_global(a, part.u), to_global(b, part.v)
        parts.append(part)
    summed = sum_graph(parts, n_labels, channels)
    whole = edge_stats(labels.astype(np.uint32), pred, contacts=contacts)
    assert summed.u.tolist() == whole.u.tolist() and summed.v.tolist() == whole.v.tolist()
    assert np.array_equal(summed.count, whole.count) and np.array_equal(summed.hist, whole.hist)
    assert summed.extra.shape == whole.extra.shape == (whole.u.size, 11 * len(contacts.kinds))
    np.testing.assert_allclose(summed.extra, whole.extra, rtol=1e-9)
    assert whole.inside_hist.shape == (whole.size.size, BINS * channels)  # each region's histogram of every channel
    np.testing.assert_array_equal(summed.inside_hist[1:], whole.inside_hist[1 : n_labels + 1])
    np.testing.assert_allclose(summed.total, whole.total, rtol=1e-9)
    np.testing.assert_allclose(summed.size[1:], whole.size[1 : n_labels + 1])
    np.testing.assert_allclose(summed.inside[1:], whole.inside[1 : n_labels + 1], rtol=1e-6)
    lean = sum_graph([part.without_histograms() for part in parts], n_labels, channels)  # what mean boundary needs
    assert lean.u.tolist() == whole.u.tolist() and np.array_equal(lean.count, whole.count)
    assert lean.hist.shape == (whole.u.size, 0)


def _python_merge(u, v, count, boundary_sum, n, threshold):
    """The plain-Python merging the numba kernel replaced: the reference it must equal."""
    adjacency = [dict() for _ in range(n + 1)]
    heap = []
    for a, b, c, s in zip(np.asarray(u).tolist(), np.asarray(v).tolist(), np.asarray(count).tolist(), np.asarray(boundary_sum).tolist()):
        shared = [c, s]
        adjacency[a][b] = shared
        adjacency[b][a] = shared
        if s / c < threshold:
            heap.append((s / c, a, b))
    heapq.heapify(heap)
    parent = list(range(n + 1))
    while heap:
        mean, a, b = heapq.heappop(heap)
        if parent[a] != a or parent[b] != b or b not in adjacency[a]:
            continue
        c, s = adjacency[a][b]
        if abs(s / c - mean) > 1e-12:
            continue
        if len(adjacency[a]) < len(adjacency[b]):
            a, b = b, a
        parent[b] = a
        del adjacency[a][b]
        for w, (cw, sw) in adjacency[b].items():
            if w == a:
                continue
            del adjacency[w][b]
            if w in adjacency[a]:
                entry = adjacency[a][w]
                entry[0] += cw
                entry[1] += sw
            else:
                entry = [cw, sw]
                adjacency[a][w] = entry
            adjacency[w][a] = entry
            if entry[1] / entry[0] < threshold:
                x, y = (a, w) if a < w else (w, a)
                heapq.heappush(heap, (entry[1] / entry[0], x, y))
        adjacency[b] = {}
    roots = np.array(parent, dtype=np.int64)
    for i in range(roots.size):
        r = i
        while roots[r] != r:
            r = roots[r]
        roots[i] = r
    return roots



@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 60), st.integers(1, 200), st.booleans(), st.floats(0.0, 1.0))
def test_the_numba_mean_boundary_merging_equals_the_plain_python_one(seed, n, m, ties, threshold):
    """The same merges in the same order, ties included (sums on a quarter grid make many)."""
    from labelstitch.rag import merge_by_mean_boundary

    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, n + 1, m), rng.integers(1, n + 1, m)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1)[a != b], axis=0)
    if pairs.size == 0:
        return
    count = rng.integers(1, 5, len(pairs)).astype(float)
    total = np.round(rng.random(len(pairs)) * count * 4) / 4 if ties else rng.random(len(pairs)) * count
    expected = _python_merge(pairs[:, 0], pairs[:, 1], count, total, n, threshold)
    np.testing.assert_array_equal(merge_by_mean_boundary(pairs[:, 0], pairs[:, 1], count, total, n, threshold), expected)


def test_learned_agglomeration_across_blocks_with_a_whole_context_is_the_unblocked_one(trained, tmp_path):
    """The learned agglomeration's graph form on the driver: with a context covering the
    volume every block makes the unblocked supervoxels, so the summed graph and its
    agglomeration (features, classifier, merge order) are exactly the unblocked ones."""
    from labelstitch.pipeline import run
    from labelstitch.stores import open_volume
    from labelstitch.testing import assert_same_partition

    _, path = trained
    gray, truth = em_volume((32, 64, 64), n_neurites=15, seed=5)
    np.save(tmp_path / "g.npy", gray)
    seg = {"predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
           "create-supervoxels": {"function": "distance_transform_watershed", "parameters": {}},
           "agglomerate-supervoxels": {"function": "learned_agglomeration",
                                       "parameters": {"classifier_path": str(path), "threshold": 0.5}}}

    def segment(name, **options):
        result = run({"input": str(tmp_path / "g.npy"), "output": str(tmp_path / f"{name}.zarr"),
                      "options": {"segmentor": {"configuration": seg}, "background-value": None, **options}})
        with open_volume(result.output) as store:
            return store.read(), result

    whole, single = segment("whole", **{"chunk-size": [32, 64, 64], "overlap": 0})
    across, result = segment("across", **{"chunk-size": 32, "overlap": 4, "context": 64, "agglomerate-across-blocks": True})
    assert result.stitch["agglomeration"]["bodies"] < result.stitch["agglomeration"]["supervoxels"]
    assert_same_partition(across, whole)
    assert vi(across, truth).total == pytest.approx(vi(whole, truth).total)
