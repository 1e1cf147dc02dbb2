"""Seeded watershed on 3-D boundary maps, by bucket-queue flooding (numba)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.watershed import CHUNK, flood_padded, pad_inputs
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
    bnd = np.asarray(boundary)
    if not np.issubdtype(bnd.dtype, np.floating):
        bnd = bnd.astype(np.float64)
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
    lo, hi = float(bnd.min()) if bnd.size else 0.0, float(bnd.max()) if bnd.size else 1.0
    scale = (levels - 1) / (hi - lo) if hi > lo else 0.0
    level_dtype = np.uint8 if levels <= 1 << 8 else np.uint16 if levels <= 1 << 16 else np.int32
    padded = tuple(n + 2 for n in bnd.shape)  # a border that is never allowed: no bounds checks
    inner = (slice(1, -1),) * 3
    quantised = np.zeros(padded, level_dtype)
    top = int(seeds.max()) if seeds.size else 0
    labels = np.zeros(padded, np.uint32 if top < 2**32 else np.uint64)
    ok = np.zeros(padded, bool)
    pad_inputs(bnd, seeds, allowed, lo, scale, quantised, labels, ok)
    # queue chunks: each level holds at most one part-filled chunk, so the scratch is about
    # voxels + levels x width indices; narrower chunks when levels are many
    width = int(min(CHUNK, max(16, labels.size // (levels + 1))))
    store = np.empty((labels.size // width + levels + 1, width), np.int32 if labels.size < 2**31 else np.int64)
    flood_padded(quantised.ravel(), labels.ravel(), ok.ravel(), levels, padded[2], padded[1] * padded[2], store)
    return labels[inner].astype(np.int64)
