"""Seeded watershed on 3-D boundary maps, by bucket-queue flooding (numba)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.watershed import flood3d
from ._validation import as_labels

__all__ = ["watershed"]


def watershed(
    boundary: ArrayLike, markers: ArrayLike, *, mask: ArrayLike | None = None, levels: int = 256
) -> NDArray[np.int64]:
    """Flood ``boundary`` from ``markers``; the labels grow through 6-connected voxels.

    Like ``skimage.segmentation.watershed(boundary, markers, mask=mask, connectivity=1)``,
    except that priorities are quantised into ``levels`` equal steps between the boundary's
    minimum and maximum, which makes flooding linear in the number of voxels (a bucket queue
    instead of a heap). Within a level voxels are flooded first-come first-served.

    Parameters
    ----------
    boundary : (Z, Y, X) array of float
        Where to flood last (membrane probability).
    markers : (Z, Y, X) array of int
        Seeds: > 0 labelled, 0 to be flooded.
    mask : (Z, Y, X) bool array, optional
        True where voxels may be labelled (as in scikit-image); voxels outside stay 0.
    levels : int
        Number of priority levels (default 256; 65536 for finer priorities).

    Examples
    --------
    >>> b = np.array([[[0.0, 0.1, 0.9, 0.2, 0.0]]])
    >>> watershed(b, np.array([[[1, 0, 0, 0, 2]]]))
    array([[[1, 1, 1, 2, 2]]])
    """
    bnd = np.asarray(boundary, dtype=np.float64)
    if bnd.ndim != 3:
        raise ValueError(f"`boundary` must be 3-D (Z, Y, X), got shape {bnd.shape}")
    seeds = as_labels(markers, "markers")
    if seeds.shape != bnd.shape:
        raise ValueError(f"`markers` (shape {seeds.shape}) must have the shape of `boundary` ({bnd.shape})")
    allowed = np.ones(bnd.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if allowed.shape != bnd.shape:
        raise ValueError(f"`mask` (shape {allowed.shape}) must have the shape of `boundary` ({bnd.shape})")
    if not 2 <= levels <= 1 << 20:
        raise ValueError(f"`levels` must be between 2 and 2**20, got {levels}")
    labels = np.ascontiguousarray(seeds, dtype=np.int64) * allowed
    lo, hi = float(bnd.min()) if bnd.size else 0.0, float(bnd.max()) if bnd.size else 1.0
    scale = (levels - 1) / (hi - lo) if hi > lo else 0.0
    quantised = np.ascontiguousarray(((bnd - lo) * scale).astype(np.int64))
    flood3d(quantised, labels, np.ascontiguousarray(allowed), levels)
    return labels
