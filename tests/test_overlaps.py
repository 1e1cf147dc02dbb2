from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labelstitch import label_counts, overlaps

INT_DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]


def reference(a, b):
    """Slow, obvious numpy version: np.unique on the stacked pairs."""
    a = a.ravel().astype(np.uint64)
    b = b.ravel().astype(np.uint64)
    keep = (a != 0) & (b != 0)
    pairs, counts = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0, return_counts=True)
    la, ta = np.unique(a[a != 0], return_counts=True)
    lb, tb = np.unique(b[b != 0], return_counts=True)
    return pairs.reshape(-1, 2), counts, (la, ta), (lb, tb)


def check(a, b):
    ov = overlaps(a, b)
    pairs, counts, (la, ta), (lb, tb) = reference(a, b)
    np.testing.assert_array_equal(np.stack([ov.a, ov.b], axis=1).reshape(-1, 2), pairs)
    np.testing.assert_array_equal(ov.count, counts)
    np.testing.assert_array_equal(ov.a_labels, la)
    np.testing.assert_array_equal(ov.a_totals, ta)
    np.testing.assert_array_equal(ov.b_labels, lb)
    np.testing.assert_array_equal(ov.b_totals, tb)
    flat_a, flat_b = np.ravel(a).astype(np.uint64), np.ravel(b).astype(np.uint64)
    for x, y, first in zip(ov.a, ov.b, ov.first):
        assert np.flatnonzero((flat_a == x) & (flat_b == y))[0] == first


label_arrays = st.integers(0, 6).flatmap(
    lambda k: hnp.arrays(
        np.uint64,
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
        elements=st.sampled_from([0, 1, 2, 3, 2**63, 2**64 - 1, 12345][: k + 1]),
    )
)


@given(label_arrays, st.data())
def test_overlaps_equal_numpy_reference(a, data):
    b = data.draw(hnp.arrays(np.uint64, a.shape, elements=st.sampled_from([0, 7, 8, 2**64 - 1])))
    check(a, b)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_every_integer_dtype(dtype):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, (7, 9, 11)).astype(dtype)
    b = rng.integers(0, 5, (7, 9, 11)).astype(dtype)
    check(a, b)


def test_mixed_dtypes_bool_and_non_contiguous():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 300, (10, 20, 30)).astype(np.uint16)[:, ::2, 1::3]
    b = (rng.random((10, 20, 30)) > 0.5)[:, ::2, 1::3]
    check(a, b)
    check(np.asfortranarray(a), b.astype(np.int64))


def test_long_runs_are_counted_once_per_voxel():
    a = np.ones((64, 64, 64), np.uint32)
    b = np.zeros_like(a)
    b[:, :, 32:] = 2
    ov = overlaps(a, b)
    assert ov.count.tolist() == [64 * 64 * 32]
    assert ov.a_totals.tolist() == [64**3]


def test_empty_inputs():
    ov = overlaps(np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.uint8))
    assert len(ov) == 0 and ov.a_labels.size == 0
    assert len(overlaps(np.zeros(5, int), np.ones(5, int))) == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"`a` \(shape \(2,\)\) must have the same shape as `b` \(shape \(3,\)\)"):
        overlaps(np.ones(2, int), np.ones(3, int))
    with pytest.raises(ValueError, match="`a` has dtype float64"):
        overlaps(np.ones(2), np.ones(2, int))
    with pytest.raises(ValueError, match=r"negative label -4 at index \(1,\)"):
        overlaps(np.ones(2, int), np.array([1, -4]))


def test_label_counts_matches_numpy():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 1000, 5000).astype(np.uint64) * np.uint64(2**50)
    labels, counts = label_counts(a)
    ref = np.unique(a, return_counts=True)
    np.testing.assert_array_equal(labels, ref[0])
    np.testing.assert_array_equal(counts, ref[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_chunks_and_sorted_fallback_agree_with_reference(monkeypatch, threads):
    from labelstitch import _threads
    from labelstitch import contingency as overlaps_module

    monkeypatch.setattr(_threads, "MIN_CHUNK", 500)
    monkeypatch.setenv("LABELSTITCH_THREADS", str(threads))
    rng = np.random.default_rng(threads)
    runs = np.repeat(rng.integers(0, 30, 800), rng.integers(1, 9, 800))[:3000].reshape(3, 10, 100)
    check(runs, np.roll(runs, 7) % 11)  # label-like data: hash tables on chunks
    monkeypatch.setattr(overlaps_module, "_SAMPLE", 256)
    noise = rng.integers(0, 2**63, (3, 10, 100), dtype=np.uint64)
    check(noise, rng.integers(0, 5, (3, 10, 100)))  # every voxel a new pair: sorting
    check(rng.integers(0, 2000, 3000), rng.integers(0, 2000, 3000))


def test_thread_setting_is_validated(monkeypatch):
    from labelstitch._threads import get_threads, set_threads

    monkeypatch.setenv("LABELSTITCH_THREADS", "zero")
    with pytest.raises(ValueError, match="LABELSTITCH_THREADS must be a positive integer, got 'zero'"):
        get_threads()
    set_threads(2)
    try:
        assert get_threads() == 2
    finally:
        set_threads(None)
    with pytest.raises(ValueError, match="positive int or None"):
        set_threads(0)
