"""Affinities made from a boundary map, and the mutex_watershed supervoxel stage."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import labelstitch as ls
from labelstitch.plugins.affinities import affinities_from_boundary, affinity_offsets, mutex_watershed
from labelstitch.plugins.builtin import naive_membrane_predictions, seeded_watershed
from labelstitch.synthetic import em_volume
from labelstitch.testing import executor_params

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
def test_mutex_watershed_in_a_run_is_the_same_on_every_executor(tmp_path, synthetic, executor):
    gray, truth, _ = synthetic
    np.save(tmp_path / "gray.npy", gray)
    stages = {"predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
              "create-supervoxels": {"function": "mutex_watershed", "parameters": {"bias": 0.6}},
              "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.4}}}
    outputs = []
    for name, how in (("serial", "serial"), ("other", executor)):
        result = ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{name}.zarr"),
                         "options": {"chunk-size": [32, 48, 48], "overlap": 6, "resolution": [8, 8, 8],
                                     "segmentor": {"configuration": stages}}}, executor=how, workers=2)
        from labelstitch.stores import open_volume

        with open_volume(result.output) as store:
            outputs.append(store.read())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert ls.vi(outputs[0], truth).total < 1.0
    assert affinity_offsets(0) == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
