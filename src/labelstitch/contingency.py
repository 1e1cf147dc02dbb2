"""Label overlap counting: the contingency table of two label arrays, without a dense table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.hashing import pair_counts, pair_sum, value_counts
from ._threads import chunks, map_chunks
from ._validation import as_labels, check_same_shape, flat

__all__ = ["Overlaps", "overlaps", "label_counts"]


@dataclass(frozen=True)
class Overlaps:
    """Overlap counts of two label arrays, background excluded.

    Attributes
    ----------
    a, b : (M,) ndarray of uint64
        Each distinct pair of non-zero labels that share at least one voxel, sorted by
        ``(a, b)``.
    count : (M,) ndarray of int64
        Voxels shared by ``a[i]`` and ``b[i]``.
    first : (M,) ndarray of int64
        Flat C-order index of the first voxel where the pair occurs. It does not depend on
        label values, which makes it a fair tie-breaker.
    a_labels, a_totals : ndarray of uint64, ndarray of int64
        Every non-zero label of the first array with its voxel count (including voxels
        where the second array is 0), sorted by label.
    b_labels, b_totals : ndarray of uint64, ndarray of int64
        The same for the second array.
    """

    a: NDArray[np.uint64]
    b: NDArray[np.uint64]
    count: NDArray[np.int64]
    first: NDArray[np.int64]
    a_labels: NDArray[np.uint64]
    a_totals: NDArray[np.int64]
    b_labels: NDArray[np.uint64]
    b_totals: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.a.size)


def _sum_by(keys: NDArray[np.uint64], weights: NDArray[np.int64]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    labels, inverse = np.unique(keys, return_inverse=True)
    return labels, np.bincount(inverse, weights=weights, minlength=labels.size).astype(np.int64)


_SAMPLE = 1 << 18


def _count_pairs_sorted(
    a: NDArray[np.unsignedinteger], b: NDArray[np.unsignedinteger]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]]:
    """:func:`count_pairs` by sorting, for inputs with very many distinct pairs."""
    a64 = a.astype(np.uint64, copy=False)
    b64 = b.astype(np.uint64, copy=False)
    if int(a64.max()) < 2**32 and int(b64.max()) < 2**32:
        order = np.argsort((a64 << np.uint64(32)) | b64, kind="stable")
    else:
        order = np.lexsort((b64, a64))
    sa, sb = a64[order], b64[order]
    head = np.ones(a.size, bool)
    head[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    starts = np.flatnonzero(head)
    counts = np.diff(np.append(starts, a.size)).astype(np.int64)
    return sa[starts], sb[starts], counts, order[starts].astype(np.int64)


def count_pairs(
    a: NDArray[np.unsignedinteger], b: NDArray[np.unsignedinteger]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]]:
    """Distinct pairs of two flat arrays with counts and first positions, background included.

    Label data (few distinct pairs, long runs) is counted in hash tables, split into chunks
    counted on several threads (the kernel releases the GIL) and merged. Data where most
    voxels form a new pair (noise, random ids) would make the table miss the cache on every
    voxel; a sample of the first voxels detects that, and such input is counted by sorting.
    """
    sample = min(a.size, _SAMPLE)
    if sample == _SAMPLE and len(pair_counts(a[:sample], b[:sample])[0]) > sample // 4:
        return _count_pairs_sorted(a, b)
    parts = chunks(a.size)
    if len(parts) == 1:
        return pair_counts(a, b)  # type: ignore[no-any-return]

    def count(start: int, stop: int) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        ka, kb, cnt, first = pair_counts(a[start:stop], b[start:stop])
        return ka, kb, cnt, first + start

    results = map_chunks(count, parts)
    return pair_sum(*(np.concatenate(cols) for cols in zip(*results)))  # type: ignore[no-any-return]


def overlaps(a: ArrayLike, b: ArrayLike) -> Overlaps:
    """Count the voxels shared by every pair of labels of two equally shaped arrays.

    One linear pass over the voxels with a hash table; no dense ``n_a x n_b`` table is
    ever built, so label values may be anything up to ``2**64 - 1``.

    Parameters
    ----------
    a, b : ndarray of int, any shape
        Label arrays of the same shape; any integer (or bool) dtypes, not necessarily the
        same. Label 0 is background.

    Returns
    -------
    Overlaps
        Pairs of non-zero labels with counts, plus per-label totals on each side.

    Raises
    ------
    ValueError
        If the shapes differ, a dtype is not integer, or a label is negative.

    Examples
    --------
    >>> a = np.array([[1, 1, 2, 0]])
    >>> b = np.array([[7, 7, 7, 7]])
    >>> ov = overlaps(a, b)
    >>> ov.a, ov.b, ov.count
    (array([1, 2], dtype=uint64), array([7, 7], dtype=uint64), array([2, 1]))
    >>> ov.b_labels, ov.b_totals
    (array([7], dtype=uint64), array([4]))
    """
    a_ = as_labels(a, "a")
    b_ = as_labels(b, "b")
    check_same_shape(a_, b_, "a", "b")
    if a_.size == 0:
        none_u = np.zeros(0, np.uint64)
        none_i = np.zeros(0, np.int64)
        return Overlaps(none_u, none_u, none_i, none_i, none_u, none_i, none_u, none_i)
    ka, kb, cnt, first = count_pairs(flat(a_), flat(b_))
    a_labels, a_totals = _sum_by(ka, cnt)
    b_labels, b_totals = _sum_by(kb, cnt)
    keep_a = a_labels != 0
    keep_b = b_labels != 0
    both = (ka != 0) & (kb != 0)
    ka, kb, cnt, first = ka[both], kb[both], cnt[both], first[both]
    order = np.lexsort((kb, ka))
    return Overlaps(
        ka[order],
        kb[order],
        cnt[order],
        first[order],
        a_labels[keep_a],
        a_totals[keep_a],
        b_labels[keep_b],
        b_totals[keep_b],
    )


def label_counts(labels: ArrayLike) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Distinct labels of an array (0 included if present) with their voxel counts.

    A hash-table pass, linear in the number of voxels; the result is sorted by label.

    Examples
    --------
    >>> label_counts(np.array([[5, 5, 0], [9, 5, 5]]))
    (array([0, 5, 9], dtype=uint64), array([1, 4, 1]))
    """
    arr = as_labels(labels, "labels")
    if arr.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    keys, counts = value_counts(flat(arr))
    order = np.argsort(keys)
    return keys[order], counts[order]
