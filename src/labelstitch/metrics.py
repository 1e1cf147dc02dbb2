"""Segmentation quality: variation of information split into false merges and false splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .contingency import count_pairs
from ._validation import as_labels, check_same_shape, flat
from .geometry import Box, Plan, _triple

__all__ = ["VI", "RegionalVI", "regional_vi", "vi", "vi_by_region"]


@dataclass(frozen=True)
class VI:
    """Variation of information in bits.

    Attributes
    ----------
    merge : float
        H(gt | seg): false merges (one segment covering several true bodies).
    split : float
        H(seg | gt): false splits (one true body cut into several segments).
    """

    merge: float
    split: float

    @property
    def total(self) -> float:
        return self.merge + self.split

    def to_dict(self) -> dict[str, float]:
        return {"merge": self.merge, "split": self.split, "total": self.total}


def _conditional_entropies(seg: NDArray, gt: NDArray, ignore_gt_zero: bool) -> VI:
    ks, kg, cnt, _ = count_pairs(flat(seg), flat(gt))
    return _entropies_from_pairs(ks, kg, cnt, ignore_gt_zero)


def _entropies_from_pairs(ks: NDArray, kg: NDArray, cnt: NDArray, ignore_gt_zero: bool) -> VI:
    """VI from a contingency table given as (seg label, gt label, count) triples."""
    if ignore_gt_zero:
        keep = kg != 0
        ks, kg, cnt = ks[keep], kg[keep], cnt[keep]
    total = cnt.sum()
    if total == 0:
        return VI(0.0, 0.0)
    p = cnt / total
    _, inv_s = np.unique(ks, return_inverse=True)
    _, inv_g = np.unique(kg, return_inverse=True)
    ps = np.bincount(inv_s, weights=p)[inv_s]
    pg = np.bincount(inv_g, weights=p)[inv_g]
    merge = float(-np.sum(p * np.log2(p / ps)))
    split = float(-np.sum(p * np.log2(p / pg)))
    return VI(max(0.0, merge), max(0.0, split))


def vi(seg: ArrayLike, gt: ArrayLike, *, ignore_gt_zero: bool = True) -> VI:
    """Variation of information between a segmentation and ground truth, in bits.

    One pass over the voxels builds the contingency table in a hash table, so time is
    linear in the volume and independent of how large the label ids are.

    Parameters
    ----------
    seg, gt : ndarray of int
        Same shape, any integer dtypes. Label 0 of ``seg`` is a segment like any other.
    ignore_gt_zero : bool
        Skip voxels where ``gt`` is 0 (unlabelled), as is usual (default).

    Returns
    -------
    VI
        ``merge`` = H(gt|seg), ``split`` = H(seg|gt), ``total``.

    Examples
    --------
    >>> gt = np.array([1, 1, 2, 2])
    >>> vi(np.array([5, 5, 5, 5]), gt)   # one false merge of two equal bodies
    VI(merge=1.0, split=0.0)
    >>> vi(np.array([1, 2, 3, 3]), gt).split
    0.5
    """
    s = as_labels(seg, "seg")
    g = as_labels(gt, "gt")
    check_same_shape(s, g, "seg", "gt")
    return _conditional_entropies(s, g, ignore_gt_zero)


@dataclass(frozen=True)
class RegionalVI:
    """VI per region of a regular grid (the paper's Figure 9 heatmap).

    Attributes
    ----------
    merge, split : (GZ, GY, GX) ndarray of float64
        VI parts per region, in bits.
    block : tuple of int
        Region size.
    boxes : list of Box
        The regions in raster order.
    """

    merge: NDArray[np.float64]
    split: NDArray[np.float64]
    block: tuple[int, int, int]
    boxes: tuple[Box, ...]

    @property
    def total(self) -> NDArray[np.float64]:
        return self.merge + self.split


def vi_by_region(
    seg: ArrayLike, gt: ArrayLike, block: int | tuple[int, int, int], *, ignore_gt_zero: bool = True
) -> RegionalVI:
    """VI of every ``block``-sized region of a 3-D volume (edge regions are clipped).

    Each region is scored on its own, so a false merge that joins two bodies elsewhere in
    the volume does not count inside a region where only one of them is present.

    Examples
    --------
    >>> gt = np.zeros((2, 2, 4), int); gt[..., 2:] = 1; gt += 1
    >>> seg = gt.copy(); seg[:, :, 2:] = 1     # the right half merged into the left body
    >>> r = vi_by_region(seg, gt, (2, 2, 2))
    >>> r.merge.shape, r.merge.ravel().tolist()
    ((1, 1, 2), [0.0, 0.0])
    >>> vi(seg, gt).merge
    1.0
    """
    s = as_labels(seg, "seg")
    g = as_labels(gt, "gt")
    check_same_shape(s, g, "seg", "gt")
    if s.ndim != 3:
        raise ValueError(f"`seg` must be 3-D (Z, Y, X), got {s.ndim}-D")
    return regional_vi(s.shape, block, lambda box: (s[box.slices()], g[box.slices()]), ignore_gt_zero=ignore_gt_zero)


def regional_vi(
    shape: tuple[int, ...],
    block: int | tuple[int, int, int],
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    ignore_gt_zero: bool = True,
) -> RegionalVI:
    """VI of every ``block``-sized region of a volume of ``shape``, where ``read(box)`` returns
    the segmentation and ground truth of one region (from arrays, or from stored volumes so
    that nothing larger than a region is ever loaded)."""
    block_ = _triple(block, "block")
    if any(b <= 0 for b in block_):
        raise ValueError(f"`block` must be positive on every axis, got {block_}")
    plan = Plan.grid(shape, block_, 0)
    merge = np.zeros(plan.grid_shape)
    split = np.zeros(plan.grid_shape)
    for sv in plan:
        seg, gt = read(sv.interior)
        r = _conditional_entropies(as_labels(seg, "seg"), as_labels(gt, "gt"), ignore_gt_zero)
        merge[sv.index], split[sv.index] = r.merge, r.split
    return RegionalVI(merge, split, block_, tuple(sv.interior for sv in plan))
