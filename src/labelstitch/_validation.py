"""Input checks shared by the public wrappers. Messages name the argument, what was
expected and what was received."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def as_labels(labels: ArrayLike, name: str, where: str = "") -> NDArray[np.unsignedinteger]:
    """Return ``labels`` as an unsigned-integer array (a view where possible).

    Booleans become uint8; signed arrays are checked for negative values and then viewed
    as the unsigned type of the same width, which keeps every value.

    Raises
    ------
    ValueError
        If the dtype is not integer or boolean, or a signed array holds a negative value.
    """
    arr = np.asarray(labels)
    ctx = f" {where}" if where else ""
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"`{name}`{ctx} has dtype {arr.dtype}; labels must be non-negative integers "
            "(convert with .astype(np.uint64) if the values are whole numbers)"
        )
    if np.issubdtype(arr.dtype, np.signedinteger):
        if arr.size and arr.min() < 0:
            pos = np.unravel_index(int(np.argmin(arr)), arr.shape)
            raise ValueError(
                f"`{name}`{ctx} holds the negative label {int(arr[pos])} at index {tuple(int(p) for p in pos)}; "
                "labels must be non-negative"
            )
        return arr.view(_UNSIGNED[arr.dtype.itemsize])
    return arr


def check_same_shape(a: NDArray, b: NDArray, name_a: str, name_b: str) -> None:
    """Raise ValueError naming both shapes when they differ."""
    if a.shape != b.shape:
        raise ValueError(f"`{name_a}` (shape {a.shape}) must have the same shape as `{name_b}` (shape {b.shape})")


def flat(arr: NDArray) -> NDArray:
    """A C-ordered 1-D view (a copy only when the array is not C-contiguous)."""
    return np.ascontiguousarray(arr).reshape(-1)


def as_uint64_1d(values: ArrayLike, name: str) -> NDArray[np.uint64]:
    """A flat uint64 array of non-negative integer ids (lists may hold values up to 2**64-1)."""
    if not isinstance(values, np.ndarray):
        try:
            return np.asarray(values, dtype=np.uint64).reshape(-1)
        except (OverflowError, TypeError, ValueError):
            values = np.asarray(values)
    return as_labels(values, name).astype(np.uint64, copy=False).reshape(-1)
