"""What contacts carry beside the boundary (labelstitch.contacts): every further prediction
channel's mean of the two voxels and the pairs' own affinities, summed and histogrammed
per contact exactly (against a plain numpy count), pooled exactly on merges, the same in a
blocked run as unblocked, and refused in one line where the affinities are not the
nearest-neighbour ones or the classifier learned other features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from labelstitch.agglomeration import BINS, agglomerate_graph, edge_stats, feature_names
from labelstitch.contacts import Contacts
from labelstitch.metrics import vi
from labelstitch.plugins.affinities import contact_affinities
from labelstitch.plugins.agglomeration import train_agglomeration
from labelstitch.plugins.builtin import distance_transform_watershed, learned_agglomeration
from labelstitch.synthetic import em_volume

CHANNELS, OFFSETS = "1,2,3", "-1,0,0;0,-1,0;0,0,-1"


def plain_contacts(labels, pred):
    """{(low, high): (count, sums, histograms)} of channel 4's pair means and one minus the
    pairs' affinities in channels 1-3 (the second voxel's, along the pair's axis)."""
    out: dict[tuple[int, int], list] = {}
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        a, b = labels[tuple(first)], labels[tuple(second)]
        cross = (a != b) & (a > 0) & (b > 0)
        mean = (pred[tuple(first)][..., 4][cross] + pred[tuple(second)][..., 4][cross]) * np.float32(0.5)
        affinity = np.float32(1) - pred[tuple(second)][..., 1 + axis][cross]
        for lo, hi, m, f in zip(np.minimum(a, b)[cross], np.maximum(a, b)[cross], mean, affinity):
            entry = out.setdefault((int(lo), int(hi)), [0, np.zeros(2), np.zeros((2, BINS))])
            entry[0] += 1
            entry[1] += [m, f]
            for k, value in enumerate((m, f)):
                entry[2][k, min(int(value * BINS), BINS - 1)] += 1
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_contacts_carry_each_channels_pair_mean_and_the_pairs_own_affinity(seed, n_labels):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels + 1, (5, 6, 7)).astype(np.uint32)
    pred = rng.random((5, 6, 7, 5)).astype(np.float32)
    contacts = Contacts.of(5, contact_affinities(CHANNELS, OFFSETS))
    assert contacts.names() == ("channel4", "affinity")
    stats = edge_stats(labels, pred, contacts=contacts)
    expected = plain_contacts(labels, pred)
    assert set(zip(stats.u.tolist(), stats.v.tolist())) == set(expected)
    for u, v, count, extra in zip(stats.u, stats.v, stats.count, stats.extra):
        n, sums, hists = expected[(int(u), int(v))]
        assert count == n
        np.testing.assert_allclose(extra[[0, 1 + BINS]], sums, rtol=1e-5)
        np.testing.assert_array_equal(extra[1:1 + BINS], hists[0])
        np.testing.assert_array_equal(extra[2 + BINS:], hists[1])
    features = stats.features()
    names = feature_names(5, contacts)
    assert features.shape == (stats.u.size, len(names)) and names[-21] == "affinity_mean"
    if stats.u.size:
        np.testing.assert_allclose(features[:, names.index("affinity_mean")], stats.extra[:, 1 + BINS] / stats.count)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 0.65))
def test_after_merges_the_further_features_are_those_of_the_merged_labels(seed, threshold):
    """The pooling of the further values and the regions' histograms: every edge left when
    the agglomeration stops was last scored with the features a fresh graph of the merged
    labels gives."""
    rng = np.random.default_rng(seed)
    cells = np.zeros((6, 8, 8), np.uint32)
    cells[:, :4, 4:], cells[:, 4:, :4], cells[:, 4:, 4:] = 1, 2, 3
    labels = (cells * 8 + rng.integers(1, 8, cells.shape)).astype(np.uint32)
    pred = rng.random(cells.shape + (5,)).astype(np.float32)
    contacts = Contacts.of(5, (1, 2, 3))
    scored = set()

    def probability(features):
        scored.update(tuple(np.round(row, 9)) for row in features)
        return 1.0 - features[:, feature_names(5, contacts).index("affinity_mean")]

    roots = agglomerate_graph(edge_stats(labels, pred, contacts=contacts), probability, threshold)
    merged = roots[labels]
    fresh = edge_stats(merged, pred, contacts=contacts).features()
    assert fresh.shape[1] == len(feature_names(5, contacts)) and feature_names(5, contacts)[-1] == "inside4_hist_distance"
    assert np.unique(merged).size < np.unique(labels).size
    assert all(tuple(np.round(row, 9)) in scored for row in fresh)


def test_only_nearest_neighbour_affinities_looking_back_make_contact_features():
    assert contact_affinities("", "") is None
    assert contact_affinities("3,1,2", "0,0,-1;-1,0,0;0,-1,0") == (1, 2, 3)
    for offsets in ("1,0,0;0,1,0;0,0,1", "-1,0,0;0,-1,0;0,0,-3"):
        with pytest.raises(ValueError, match="need the nearest-neighbour affinities with offsets -1"):
            contact_affinities(CHANNELS, offsets)
    with pytest.raises(ValueError, match="channel 4 is not one of the predictions' 4"):
        Contacts.of(4, (1, 2, 4))


@pytest.fixture(scope="module")
def affinity_model(tmp_path_factory):
    """A learned agglomeration trained with affinity features on a synthetic volume's
    boundary and true nearest-neighbour affinities, blurred by noise."""
    gray, truth = em_volume((32, 64, 64), n_neurites=15, seed=21)
    pred = noisy_predictions(truth, seed=21)
    supervoxels = distance_transform_watershed(pred, np.zeros(truth.shape, bool))
    model = train_agglomeration(supervoxels, pred, truth, n_estimators=30, affinity_channels=CHANNELS,
                                affinity_offsets=OFFSETS)
    path = tmp_path_factory.mktemp("contacts") / "agglomeration.npz"
    model.save(path)
    return path


def noisy_predictions(truth, seed):
    """A boundary (label changes) and affinities (same body as the voxel before), both noisy."""
    rng = np.random.default_rng(seed)
    out = np.zeros(truth.shape + (4,), np.float32)
    for axis in range(3):
        moved = np.moveaxis(truth, axis, 0)
        same = np.zeros(moved.shape, np.float32)
        same[1:] = (moved[1:] == moved[:-1]) & (moved[1:] != 0)
        np.moveaxis(out[..., 1 + axis], axis, 0)[...] = same
        np.moveaxis(out[..., 0], axis, 0)[1:] = np.maximum(np.moveaxis(out[..., 0], axis, 0)[1:], 1 - same[1:])
    return np.clip(out + rng.normal(0, 0.25, out.shape), 0, 1).astype(np.float32)


def test_a_classifier_with_affinity_features_runs_only_with_them(affinity_model):
    gray, truth = em_volume((32, 64, 64), n_neurites=15, seed=22)
    pred = noisy_predictions(truth, seed=22)
    supervoxels = distance_transform_watershed(pred, np.zeros(truth.shape, bool))
    merged = learned_agglomeration(pred, supervoxels, str(affinity_model), affinity_channels=CHANNELS,
                                   affinity_offsets=OFFSETS)
    assert vi(merged, truth).total < 0.5 * vi(supervoxels, truth).total
    with pytest.raises(ValueError, match=r"trained on 54 edge features .* give 86 .*feature 35 is 'affinity_mean' there, 'channel1_mean' here"):
        learned_agglomeration(pred, supervoxels, str(affinity_model))


@pytest.fixture()
def blocked(affinity_model, tmp_path):
    """``segment(name, agglomeration, **options)``: a run of ``affinity_classifier``,
    distance-transform supervoxels and ``agglomeration`` (stage entry) on a synthetic volume."""
    from labelstitch.pipeline import run
    from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
    from labelstitch.stores import open_volume

    gray, truth = em_volume((32, 64, 64), n_neurites=15, seed=5)
    train_pixel_classifier(gray, membrane_annotations(truth), n_estimators=8, max_samples=20_000,
                           affinities=truth).save(tmp_path / "pixel.clf")
    np.save(tmp_path / "g.npy", gray)

    def segment(name, agglomeration, **options):
        seg = {"predict-voxels": {"function": "affinity_classifier", "parameters": {"classifier_path": str(tmp_path / "pixel.clf")}},
               "create-supervoxels": {"function": "distance_transform_watershed", "parameters": {}},
               "agglomerate-supervoxels": agglomeration}
        result = run({"input": str(tmp_path / "g.npy"), "output": str(tmp_path / f"{name}.zarr"),
                      "options": {"segmentor": {"configuration": seg}, "background-value": None, **options}},
                     resume=bool(options.get("checkpoint-dir")))
        with open_volume(result.output) as store:
            return store.read(), result

    learned = {"function": "learned_agglomeration", "parameters": {
        "classifier_path": str(affinity_model), "threshold": 0.5, "affinity_channels": CHANNELS, "affinity_offsets": OFFSETS}}
    return segment, learned


def test_across_blocks_the_contacts_carry_what_they_carry_unblocked(blocked):
    """With a context covering the volume every block makes the unblocked predictions and
    supervoxels, so the summed graph, its affinity features (interiors and faces' planes)
    and the agglomeration are exactly the unblocked ones."""
    from labelstitch.testing import assert_same_partition

    segment, learned = blocked
    whole, _ = segment("whole", learned, **{"chunk-size": [32, 64, 64], "overlap": 0})
    across, result = segment("across", learned, **{"chunk-size": 32, "overlap": 4, "context": 64,
                                                   "agglomerate-across-blocks": True})
    assert result.stitch["agglomeration"]["bodies"] < result.stitch["agglomeration"]["supervoxels"]
    assert_same_partition(across, whole)


def test_checkpoints_without_the_contacts_a_learned_agglomeration_reads_are_refused(blocked, tmp_path):
    """Across blocks the agglomeration may change on checkpoints, but one that reads further
    contact values cannot run on a graph kept without them: one line says to segment again."""
    from labelstitch.stores import StoreError

    segment, learned = blocked
    options = {"chunk-size": 32, "overlap": 4, "agglomerate-across-blocks": True, "checkpoint-dir": str(tmp_path / "ckpt")}
    segment("mean", {"function": "rag_agglomeration", "parameters": {"threshold": 0.3}}, **options)
    with pytest.raises(StoreError, match="learned_agglomeration reads the contacts' affinity and the regions' histograms, "
                                         "but the region graph kept with the checkpoints has 0 further contact value.*segment again"):
        segment("learned", learned, **options)
