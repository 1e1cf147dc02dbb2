"""Affinities made from a boundary map, and the mutex_watershed supervoxel stage."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import labelstitch as ls
from labelstitch.plugins.affinities import affinities_from_boundary, mutex_watershed, neighbourhood
from labelstitch.plugins.builtin import naive_membrane_predictions, seeded_watershed
from labelstitch.synthetic import em_volume
from labelstitch.testing import executor_params, is_refinement

pytest.importorskip("mwatershed", reason="mutex_watershed needs the mwatershed package (labelstitch[affinities])")


@settings(max_examples=60, deadline=None)
@given(b=arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
                elements=st.floats(0, 1, width=32)),
       axis=st.integers(0, 2), distance=st.integers(1, 4))
def test_an_affinity_is_one_minus_the_largest_boundary_on_the_path(b, axis, distance):
    offset = [0, 0, 0]
    offset[axis] = distance
    aff = affinities_from_boundary(b, [offset])[0]
    for index in np.ndindex(*b.shape):
        end = list(index)
        end[axis] += distance
        if end[axis] >= b.shape[axis]:
            assert aff[index] == 0
            continue
        path = [tuple(index[:axis]) + (index[axis] + k,) + tuple(index[axis + 1:]) for k in range(distance + 1)]
        assert aff[index] == np.float32(1) - max(b[p] for p in path)


def test_bad_offsets_are_refused():
    with pytest.raises(ValueError, match="offsets must be positive and along one axis"):
        affinities_from_boundary(np.zeros((2, 2, 2), np.float32), [[1, 1, 0]])


@pytest.fixture(scope="module")
def synthetic():
    gray, truth = em_volume((32, 96, 96), n_neurites=25, seed=2)
    mask = np.zeros(gray.shape, bool)
    return gray, truth, naive_membrane_predictions(gray, mask, sigma=1.0)


def test_mutex_watershed_labels_every_unmasked_voxel_and_splits_less_than_seeds(synthetic):
    gray, truth, pred = synthetic
    mask = np.zeros(gray.shape, bool)
    mask[:, :, :8] = True  # padding, say
    sv = mutex_watershed(pred, mask, bias=0.6)
    assert (sv[mask] == 0).all() and (sv[~mask] > 0).all()
    mws = mutex_watershed(pred, np.zeros(gray.shape, bool), bias=0.6)
    seeds = seeded_watershed(pred, np.zeros(gray.shape, bool), seed_threshold=0.3, min_segment_size=50)
    # on this volume, fewer false merges to undo and a better segmentation before agglomeration
    assert ls.agglomeration_floor(mws, truth).total < ls.agglomeration_floor(seeds, truth).total
    assert ls.vi(mws, truth).total < ls.vi(seeds, truth).total
    # a higher bias cuts more: more supervoxels
    assert np.unique(mutex_watershed(pred, np.zeros(gray.shape, bool), bias=0.7)).size > np.unique(mws).size


def test_without_mwatershed_the_stage_says_how_to_install_it(synthetic, monkeypatch):
    gray, _, pred = synthetic
    monkeypatch.setitem(sys.modules, "mwatershed", None)
    with pytest.raises(ImportError, match=r"pip install 'labelstitch\[affinities\]'"):
        mutex_watershed(pred, np.zeros(gray.shape, bool))


@pytest.mark.parametrize("executor", executor_params("processes"))
def test_the_affinity_stages_in_a_run_are_the_same_on_every_executor(tmp_path, synthetic, executor):
    gray, truth, _ = synthetic
    np.save(tmp_path / "gray.npy", gray)
    stages = {"predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
              "create-supervoxels": {"function": "mutex_watershed", "parameters": {"bias": 0.6}},
              "agglomerate-supervoxels": {"function": "affinity_agglomeration", "parameters": {"threshold": 0.4}}}
    outputs = []
    for name, how in (("serial", "serial"), ("other", executor)):
        result = ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{name}.zarr"),
                         "options": {"chunk-size": [32, 96, 96], "overlap": 0, "resolution": [8, 8, 8], "background-value": None,
                                     "segmentor": {"configuration": stages}}}, executor=how, workers=2)
        from labelstitch.stores import open_volume

        with open_volume(result.output) as store:
            outputs.append(store.read())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert ls.vi(outputs[0], truth).total < 1.0
    assert neighbourhood(0) == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 6))
def test_affinity_edge_stats_count_every_contact_with_one_minus_its_affinity(seed, k):
    from labelstitch.agglomeration import edge_stats

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k + 1, (3, 4, 5))
    b = rng.random((3, 4, 5)).astype(np.float32)
    stats = edge_stats(labels, b, largest=True)
    expected: dict[tuple[int, int], list[float]] = {}
    for index in np.ndindex(*labels.shape):
        for axis in range(3):
            other = list(index)
            other[axis] += 1
            if other[axis] >= labels.shape[axis]:
                continue
            a, c = labels[index], labels[tuple(other)]
            if a and c and a != c:
                expected.setdefault((min(a, c), max(a, c)), []).append(max(b[index], b[tuple(other)]))
    found = {(int(u), int(v)): (n, t) for u, v, n, t in zip(stats.u, stats.v, stats.count, stats.total)}
    assert set(found) == set(expected)
    for key, values in expected.items():
        assert found[key][0] == len(values) and found[key][1] == pytest.approx(sum(values), rel=1e-5)


def test_affinity_agglomeration_merges_below_its_threshold_only(synthetic):
    from labelstitch.plugins.affinities import affinity_agglomeration

    gray, truth, pred = synthetic
    sv = seeded_watershed(pred, np.zeros(gray.shape, bool), seed_threshold=0.3, min_segment_size=50)
    n = np.unique(sv).size
    assert np.unique(affinity_agglomeration(pred, sv, threshold=0.0)).size == n  # no score is below 0
    for quantile in (0, 50):
        merged = affinity_agglomeration(pred, sv, threshold=0.4, quantile=quantile)
        assert 1 < np.unique(merged).size < n
        assert ls.vi(merged, truth).split < ls.vi(sv, truth).split  # it joins pieces of neurons
        assert is_refinement(sv, merged)
    with pytest.raises(ValueError, match="`quantile` must be 0 \\(the mean\\) or one of"):
        affinity_agglomeration(pred, sv, quantile=60)


def _network_affinities(pred, negative):
    """A network's nearest-neighbour affinities as channels (Z, Y, X, 3), in the positive
    (x joins x + 1) or the gunpowder convention (x joins x - 1), made from a boundary map."""
    from labelstitch.plugins.affinities import neighbourhood

    aff = affinities_from_boundary(pred, neighbourhood(0))
    if negative:
        shifted = np.zeros_like(aff)
        for d in range(3):
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[d], tail[d] = slice(1, None), slice(0, -1)
            shifted[d][tuple(head)] = aff[d][tuple(tail)]
        aff = shifted
    return np.moveaxis(aff, 0, -1)


@pytest.mark.parametrize("negative", [False, True])
def test_a_networks_affinity_channels_give_what_the_boundary_gives(synthetic, negative):
    """Affinities read from channels (either offset convention) agglomerate as those made
    from the same boundary map."""
    from labelstitch.plugins.affinities import affinity_agglomeration

    gray, truth, pred = synthetic
    sv = seeded_watershed(pred, np.zeros(gray.shape, bool), seed_threshold=0.3, min_segment_size=50)
    channels = np.concatenate([pred[..., None], _network_affinities(pred, negative)], axis=-1)
    offsets = "-1,0,0;0,-1,0;0,0,-1" if negative else "1,0,0;0,1,0;0,0,1"
    from labelstitch.testing import assert_same_partition

    for quantile in (0, 50):
        made = affinity_agglomeration(pred, sv, threshold=0.4, quantile=quantile)
        read = affinity_agglomeration(channels, sv, threshold=0.4, quantile=quantile, affinity_channels="1,2,3",
                                      affinity_offsets=offsets)
        assert_same_partition(read, made)
    fragments = mutex_watershed(channels, np.zeros(gray.shape, bool), bias=0.6, affinity_channels="1,2,3",
                                affinity_offsets=offsets)
    assert (fragments > 0).all() and 1 < np.unique(fragments).size
    with pytest.raises(ValueError, match="must give one offset along one axis"):
        affinity_agglomeration(channels, sv, affinity_channels="1,2", affinity_offsets="1,1,0;0,0,1")


def test_affinity_channels_from_a_predictions_volume_are_checked_before_any_work(tmp_path, synthetic):
    gray, truth, pred = synthetic
    np.save(tmp_path / "gray.npy", gray)
    aff = _network_affinities(pred, True)
    for d, name in enumerate("zyx"):
        np.save(tmp_path / f"aff-{name}.npy", aff[..., d])
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "predictions": [str(tmp_path / f"aff-{n}.npy") for n in "zyx"],
              "options": {"chunk-size": [32, 96, 96], "overlap": 0, "resolution": [8, 8, 8], "background-value": None,
                          "prediction-channels": [{"meaning": "affinity", "offset": o}
                                                  for o in ([-1, 0, 0], [0, -1, 0], [0, 0, -1])],
                          "segmentor": {"configuration": {
                              "create-supervoxels": {"function": "mutex_watershed", "parameters": {
                                  "bias": 0.6, "affinity_channels": "0,1,2", "affinity_offsets": "-1,0,0;0,-1,0;0,0,-1"}},
                              "agglomerate-supervoxels": {"function": "affinity_agglomeration", "parameters": {
                                  "threshold": 0.4, "affinity_channels": "0,1,2", "affinity_offsets": "-1,0,0;0,-1,0;0,0,-1"}}}}}}
    result = ls.run(config)
    # one subvolume: the run's labels are the stages' own answer on the channels it read
    from labelstitch.plugins.affinities import affinity_agglomeration
    from labelstitch.stores import open_volume
    from labelstitch.testing import assert_same_partition

    offsets = "-1,0,0;0,-1,0;0,0,-1"
    fragments = mutex_watershed(aff, np.zeros(gray.shape, bool), bias=0.6, affinity_channels="0,1,2", affinity_offsets=offsets)
    expected = affinity_agglomeration(aff, fragments, threshold=0.4, affinity_channels="0,1,2", affinity_offsets=offsets)
    with open_volume(result.output) as store:
        assert_same_partition(store.read(), expected)
    config["options"]["segmentor"]["configuration"]["agglomerate-supervoxels"]["parameters"]["affinity_offsets"] = \
        "1,0,0;0,1,0;0,0,1"
    config["output"] = str(tmp_path / "refused.zarr")
    with pytest.raises(ls.api.PluginError, match="reads channel 0 as the affinity at offset \\[1, 0, 0\\], but predict-voxels "
                                                 "'predictions volumes' writes it for offset \\[-1, 0, 0\\]"):
        ls.run(config)
    assert not (tmp_path / "refused.zarr").exists()
