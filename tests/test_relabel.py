from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labelstitch import remap

INT_DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]


def reference(labels, keys, vals):
    out = labels.astype(object).copy()
    table = dict(zip(keys.tolist(), vals.tolist()))
    flat = out.reshape(-1)
    for i, x in enumerate(flat):
        flat[i] = table.get(int(x), int(x))
    return out


@given(
    hnp.arrays(np.uint64, hnp.array_shapes(max_dims=3, max_side=8), elements=st.integers(0, 20)),
    st.lists(st.tuples(st.integers(0, 25), st.integers(0, 2**64 - 1)), unique_by=lambda kv: kv[0], max_size=15),
)
def test_remap_equals_reference(labels, items):
    keys = np.array([k for k, _ in items], np.uint64)
    vals = np.array([v for _, v in items], np.uint64)
    out = remap(labels, (keys, vals))
    np.testing.assert_array_equal(out.astype(object), reference(labels, keys, vals))
    assert out.dtype == np.uint64
    assert remap(labels, dict(items)).tolist() == out.tolist()


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("in_place", [False, True])
def test_every_dtype_in_and_out_of_place(dtype, in_place):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, (6, 7, 8)).astype(dtype)
    original = labels.copy()
    mapping = {int(k): int(49 - k) for k in range(0, 50, 3)}
    out = remap(labels, mapping, in_place=in_place)
    expected = np.vectorize(lambda x: mapping.get(int(x), int(x)))(original).astype(dtype)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.dtype(dtype)
    assert (out is labels) == in_place
    if not in_place:
        np.testing.assert_array_equal(labels, original)


def test_in_place_is_only_a_request():
    base = np.arange(24, dtype=np.uint32).reshape(4, 6)
    view = base[:, ::2]  # not contiguous: copied
    out = remap(view, {0: 100}, in_place=True)
    assert out is not view and base[0, 0] == 0 and out[0, 0] == 100
    frozen = np.arange(5, dtype=np.uint8)
    frozen.flags.writeable = False
    assert remap(frozen, {1: 9}, in_place=True).tolist() == [0, 9, 2, 3, 4]
    small = np.arange(5, dtype=np.uint8)
    wide = remap(small, {1: 1000}, in_place=True)  # does not fit uint8: widened copy
    assert wide.dtype == np.uint64 and small[1] == 1 and wide[1] == 1000


def test_missing_labels_raise_and_leave_input_untouched():
    labels = np.array([[1, 2], [3, 4]], np.int32)
    with pytest.raises(ValueError, match=r"label 3 at index \(1, 0\) of `labels` has no entry"):
        remap(labels, {1: 5, 2: 6, 4: 7}, preserve_missing=False, in_place=True)
    assert labels.tolist() == [[1, 2], [3, 4]]
    assert remap(labels, {1: 5, 2: 6, 3: 0, 4: 7}, preserve_missing=False).tolist() == [[5, 6], [0, 7]]


def test_bad_mappings():
    labels = np.arange(4)
    with pytest.raises(ValueError, match="lists old label 2 more than once"):
        remap(labels, (np.array([2, 2]), np.array([1, 3])))
    with pytest.raises(ValueError, match="same length"):
        remap(labels, (np.array([1, 2]), np.array([1])))
    with pytest.raises(ValueError, match="must be a dict"):
        remap(labels, [1, 2])
    with pytest.raises(ValueError, match="does not fit `dtype` uint8"):
        remap(labels, {1: 300}, dtype=np.uint8)
    with pytest.raises(ValueError, match="has dtype float32"):
        remap(labels.astype(np.float32), {1: 2})


def test_empty_and_huge_labels():
    assert remap(np.zeros((0, 4), np.uint16), {1: 2}).shape == (0, 4)
    top = np.array([2**64 - 1, 0, 2**64 - 1], np.uint64)
    assert remap(top, {2**64 - 1: 1}).tolist() == [1, 0, 1]
