"""Multiscale pyramids: each level half the size of the one before, for viewers that show a
whole volume at any zoom (OME-Zarr outputs, DVID's scales).

Labels are downsampled by DVID's rule (the most frequent non-zero label of each 2x2x2 cell,
ties to the smaller id), so a level never invents a label and thin neurites are not lost
to background; grayscale by the mean of each cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.downsample import downsample_mode
from ._validation import as_labels

__all__ = ["downsample_image", "downsample_labels", "level_shapes"]


def _half(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-n // 2) for n in shape)


def downsample_labels(labels: ArrayLike) -> NDArray[np.uint64]:
    """A label volume at half the size on every axis (odd sizes round up).

    >>> labels = np.array([[[1, 1], [2, 0]], [[2, 3], [0, 0]]], np.uint64)
    >>> downsample_labels(labels)       # 1 and 2 both appear twice: the smaller id wins
    array([[[1]]], dtype=uint64)
    >>> downsample_labels(np.zeros((3, 1, 1), np.uint64)).shape
    (2, 1, 1)
    """
    arr = np.ascontiguousarray(as_labels(labels, "labels")).astype(np.uint64, copy=False)
    if arr.ndim != 3:
        raise ValueError(f"`labels` must be 3-D (Z, Y, X), got shape {arr.shape}")
    out = np.zeros(_half(arr.shape), np.uint64)
    if arr.size:
        downsample_mode(arr, out)
    return out


def downsample_image(image: ArrayLike) -> NDArray[Any]:
    """A grayscale volume at half the size on every axis: the mean of each 2x2x2 cell (of
    the voxels it has at odd far edges), rounded to the input's integer dtype.

    >>> downsample_image(np.array([[[0, 10], [20, 31]]], np.uint8))
    array([[[15]]], dtype=uint8)
    """
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"`image` must be 3-D (Z, Y, X), got shape {arr.shape}")
    padded = np.pad(arr.astype(np.float64), [(0, n % 2) for n in arr.shape], constant_values=np.nan)
    cells = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    mean = np.nanmean(cells, axis=(1, 3, 5))
    if np.issubdtype(arr.dtype, np.integer):
        return np.floor(mean + 0.5).astype(arr.dtype)
    return mean.astype(arr.dtype)


def level_shapes(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape of every level, from ``shape`` down to the first that fits in one chunk.

    >>> level_shapes((100, 300, 300), (64, 64, 64))
    [(100, 300, 300), (50, 150, 150), (25, 75, 75), (13, 38, 38)]
    """
    levels = [tuple(shape)]
    while any(n > c for n, c in zip(levels[-1], chunks)) and max(levels[-1]) > 1:
        levels.append(_half(levels[-1]))
    return levels
