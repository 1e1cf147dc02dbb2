from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra.numpy import arrays
from skimage.metrics import variation_of_information

from labelstitch import vi, vi_by_region


@given(
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=10), elements=st.integers(0, 6)),
    st.data(),
    st.booleans(),
)
def test_vi_equals_scikit_image(seg, data, ignore_zero):
    gt = data.draw(hnp.arrays(np.int64, seg.shape, elements=st.integers(0, 4)))
    ours = vi(seg, gt, ignore_gt_zero=ignore_zero)
    if ignore_zero and not gt.any():
        assert ours.total == 0.0
        return
    split, merge = variation_of_information(gt, seg, ignore_labels=[0] if ignore_zero else [])
    assert ours.merge == pytest.approx(merge, abs=1e-9)
    assert ours.split == pytest.approx(split, abs=1e-9)
    assert ours.total == pytest.approx(merge + split, abs=1e-9)


def test_vi_does_not_depend_on_label_magnitude():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 30, (20, 20, 20))
    gt = rng.integers(0, 10, (20, 20, 20))
    base = vi(seg, gt)
    huge = vi(seg.astype(np.uint64) * np.uint64(2**58) + np.uint64(7), gt.astype(np.uint64) * np.uint64(2**60))
    assert huge.merge == pytest.approx(base.merge, abs=1e-12)
    assert huge.split == pytest.approx(base.split, abs=1e-12)


def test_vi_parts_have_the_right_meaning():
    gt = np.repeat([1, 2, 3, 4], 24)
    merged = np.repeat([1, 1, 3, 4], 24)
    split = np.repeat([1, 2, 3, 4], 24) * 10 + (np.arange(96) % 2)
    assert vi(merged, gt).merge == pytest.approx(0.5) and vi(merged, gt).split == 0
    assert vi(split, gt).split == pytest.approx(1.0) and vi(split, gt).merge == 0
    assert vi(gt, gt).total == 0


def test_vi_by_region_scores_each_region_alone():
    rng = np.random.default_rng(3)
    seg = rng.integers(0, 5, (10, 12, 14))
    gt = rng.integers(0, 5, (10, 12, 14))
    r = vi_by_region(seg, gt, (4, 5, 6))
    assert r.merge.shape == (3, 3, 3) and len(r.boxes) == 27
    for index, box in zip(np.ndindex(r.merge.shape), r.boxes):
        expected = vi(seg[box.slices()], gt[box.slices()])
        assert r.merge[index] == pytest.approx(expected.merge)
        assert r.split[index] == pytest.approx(expected.split)
    np.testing.assert_allclose(r.total, r.merge + r.split)


def test_metric_errors():
    with pytest.raises(ValueError, match="must have the same shape"):
        vi(np.ones(3, int), np.ones(4, int))
    with pytest.raises(ValueError, match="`gt` has dtype float64"):
        vi(np.ones(3, int), np.ones(3))
    with pytest.raises(ValueError, match="must be 3-D"):
        vi_by_region(np.ones((3, 3), int), np.ones((3, 3), int), 2)


@settings(max_examples=80, deadline=None)
@given(
    sv=arrays(np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 8)), elements=st.integers(0, 9)),
    data=st.data(),
    ignore_zero=st.booleans(),
)
def test_agglomeration_floor_equals_scoring_the_oracle_agglomeration_volume(sv, data, ignore_zero):
    """The floor, computed from the contingency table box by box, equals building the oracle's
    volume voxel by voxel (each supervoxel replaced by the ground-truth id it overlaps most,
    ties to the smaller id, unlabelled voxels not voting) and scoring it with ``vi``."""
    from labelstitch.metrics import floor_blockwise, vi

    gt = data.draw(arrays(np.uint16, sv.shape, elements=st.integers(0, 4)))
    oracle = np.zeros(sv.shape, np.int64)
    for label in np.unique(sv):
        inside = gt[sv == label]
        if ignore_zero:
            inside = inside[inside != 0]
        ids, counts = np.unique(inside, return_counts=True)
        oracle[sv == label] = ids[np.argmax(counts)] if ids.size else -1  # -1: no vote, scored nowhere
    got = floor_blockwise(sv.shape, lambda box: (sv[box.slices()], gt[box.slices()]), region=3, ignore_gt_zero=ignore_zero)
    expected = vi(np.where(oracle < 0, 0, oracle), gt, ignore_gt_zero=ignore_zero)
    assert got.merge == pytest.approx(expected.merge, abs=1e-9)
    assert got.split == pytest.approx(expected.split, abs=1e-9)
    if sv.size and np.all([np.unique(gt[sv == s]).size == 1 for s in np.unique(sv)]):
        assert got.total == pytest.approx(0.0, abs=1e-12)  # supervoxels that refine the truth: a perfect floor
