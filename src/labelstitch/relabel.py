"""Relabeling: map every label of an array through a lookup table, in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._kernels.hashing import apply_lut, build_lut, first_missing, number_pairs
from ._validation import _UNSIGNED, as_labels, flat

__all__ = ["remap", "refine_supervoxels", "MappingLike"]

MappingLike = Union[Mapping[int, int], tuple[ArrayLike, ArrayLike]]


def _mapping_arrays(mapping: MappingLike) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """``mapping`` as two uint64 arrays ``(keys, values)`` with distinct keys."""
    if isinstance(mapping, Mapping):
        keys = np.fromiter((int(k) for k in mapping.keys()), dtype=np.uint64, count=len(mapping))
        vals = np.fromiter((int(v) for v in mapping.values()), dtype=np.uint64, count=len(mapping))
        return keys, vals
    if not (isinstance(mapping, tuple) and len(mapping) == 2):
        raise ValueError(
            f"`mapping` must be a dict {{old: new}} or a pair of arrays (old, new), got {type(mapping).__name__}"
        )
    keys_ = as_labels(mapping[0], "mapping[0] (old labels)").ravel()
    vals_ = as_labels(mapping[1], "mapping[1] (new labels)").ravel()
    if keys_.shape != vals_.shape:
        raise ValueError(
            f"`mapping` arrays must have the same length, got {keys_.size} old and {vals_.size} new labels"
        )
    keys = keys_.astype(np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)
    if uniq.size != keys.size:
        raise ValueError(f"`mapping` lists old label {int(uniq[np.argmax(counts > 1)])} more than once")
    return keys, vals_.astype(np.uint64)


def remap(
    labels: ArrayLike,
    mapping: MappingLike,
    *,
    preserve_missing: bool = True,
    in_place: bool = False,
    dtype: DTypeLike | None = None,
) -> NDArray[np.integer]:
    """Replace every label by its entry in ``mapping``.

    Parameters
    ----------
    labels : ndarray of int, any shape
        Any integer dtype; values up to ``2**64 - 1``.
    mapping : dict or (old, new) pair of arrays
        The lookup table. Label 0 is mapped like any other label when it has an entry.
    preserve_missing : bool
        Keep labels that have no entry (default). With False, a label without an entry
        raises ValueError and nothing is modified.
    in_place : bool
        Write into ``labels`` itself. Honoured only when ``labels`` is a C-contiguous,
        writeable ndarray and the result dtype equals its dtype; otherwise a new array is
        returned, as with ``in_place=False``.
    dtype : dtype, optional
        Output dtype. By default the input's dtype when every new label fits in it, else
        uint64.

    Returns
    -------
    ndarray
        The relabeled array (``labels`` itself when written in place).

    Raises
    ------
    ValueError
        On labels that are not non-negative integers, a malformed mapping, new labels that
        do not fit ``dtype``, or (with ``preserve_missing=False``) a label without an entry.

    Examples
    --------
    >>> labels = np.array([[1, 1, 2], [0, 3, 3]], dtype=np.uint32)
    >>> remap(labels, {1: 10, 3: 30})
    array([[10, 10,  2],
           [ 0, 30, 30]], dtype=uint32)
    >>> remap(labels, (np.array([1, 2]), np.array([2**40, 5])))
    array([[1099511627776, 1099511627776,             5],
           [            0,             3,             3]], dtype=uint64)
    """
    arr = np.asarray(labels)
    src = as_labels(arr, "labels")
    keys, vals = _mapping_arrays(mapping)
    in_dtype = arr.dtype if arr.dtype != np.bool_ else np.dtype(np.uint8)
    if dtype is None:
        fits = vals.size == 0 or int(vals.max()) <= np.iinfo(in_dtype).max
        out_dtype = in_dtype if fits else np.dtype(np.uint64)
    else:
        out_dtype = np.dtype(dtype)
        if not np.issubdtype(out_dtype, np.integer):
            raise ValueError(f"`dtype` must be an integer dtype, got {out_dtype}")
        if vals.size and int(vals.max()) > np.iinfo(out_dtype).max:
            raise ValueError(f"new label {int(vals.max())} in `mapping` does not fit `dtype` {out_dtype}")
        if preserve_missing and src.size and int(src.max()) > np.iinfo(out_dtype).max:
            raise ValueError(f"kept label {int(src.max())} of `labels` does not fit `dtype` {out_dtype}")
    writable = isinstance(labels, np.ndarray) and labels.flags.c_contiguous and labels.flags.writeable
    write_in_place = in_place and writable and out_dtype == arr.dtype
    if src.size == 0:
        return arr if write_in_place else np.zeros(arr.shape, out_dtype)

    table = build_lut(keys, vals)
    src_flat = flat(src)
    if not preserve_missing:
        missing = first_missing(src_flat, table[0], table[2], table[3])
        if missing >= 0:
            pos = tuple(int(p) for p in np.unravel_index(missing, arr.shape))
            raise ValueError(
                f"label {int(src_flat[missing])} at index {pos} of `labels` has no entry in `mapping` "
                "(pass preserve_missing=True to keep such labels)"
            )
    out = arr if write_in_place else np.empty(arr.shape, out_dtype)
    out_flat = out.reshape(-1).view(_UNSIGNED[out.dtype.itemsize])
    apply_lut(src_flat, table[0], table[1], table[2], table[3], out_flat, True)
    return out


def refine_supervoxels(supervoxels: ArrayLike, segments: ArrayLike) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Supervoxels cut along the segments' boundaries, so that each lies in one segment, and
    the segment of each: the pieces are the distinct (supervoxel, segment) pairs, numbered
    1, 2, ... in the order their first voxel comes in the array; voxels of segment 0 get 0.

    An agglomeration that merges supervoxels changes nothing here (the numbers are only
    made sequential); one that splits a supervoxel gets each piece as its own supervoxel,
    so an agglomeration can always be written as a supervoxel → body mapping.

    Returns
    -------
    pieces : ndarray of uint64, the shape of the inputs
    segment_of : ndarray of uint64
        ``segment_of[k - 1]`` is the segment of piece ``k``.

    >>> sv = np.array([[1, 1, 2, 2, 0]]); seg = np.array([[7, 7, 7, 8, 0]])
    >>> pieces, segment_of = refine_supervoxels(sv, seg)
    >>> pieces.tolist(), segment_of.tolist()
    ([[1, 1, 2, 3, 0]], [7, 7, 8])
    """
    a = as_labels(supervoxels, "supervoxels")
    b = as_labels(segments, "segments")
    if a.shape != b.shape:
        raise ValueError(f"`supervoxels` {a.shape} and `segments` {b.shape} must have the same shape")
    out = np.empty(a.shape, np.uint64)
    _, b_keys, _, numbers = number_pairs(flat(a), flat(b), out.reshape(-1))
    segment_of = np.empty(numbers.size, np.uint64)
    segment_of[numbers - 1] = b_keys
    return out, segment_of
