"""Connected components of equal, non-zero labels in a 3-D array (6-connectivity)."""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def _find(parent, i):  # type: ignore[no-untyped-def]
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@jit
def _union(parent, i, j):  # type: ignore[no-untyped-def]
    ri = _find(parent, i)
    rj = _find(parent, j)
    if ri < rj:
        parent[rj] = ri
    elif rj < ri:
        parent[ri] = rj


@jit
def label_components(labels):  # type: ignore[no-untyped-def]
    """Number the 6-connected pieces of each non-zero label 1..k in raster order.

    ``labels`` is a C-contiguous 3-D array. Returns ``(components, k)`` with
    ``components`` an int64 array of the same shape, 0 where ``labels`` is 0.
    """
    nz, ny, nx = labels.shape
    flat = labels.ravel()
    n = flat.size
    parent = np.arange(n)
    sz = ny * nx
    for i in range(n):
        v = flat[i]
        if v == 0:
            continue
        x = i % nx
        y = (i // nx) % ny
        z = i // sz
        if x > 0 and flat[i - 1] == v:
            _union(parent, i, i - 1)
        if y > 0 and flat[i - nx] == v:
            _union(parent, i, i - nx)
        if z > 0 and flat[i - sz] == v:
            _union(parent, i, i - sz)
    out = np.zeros(n, np.int64)
    k = 0
    for i in range(n):
        if flat[i] == 0:
            continue
        r = _find(parent, i)
        if r == i:
            k += 1
            out[i] = k
        else:
            out[i] = out[r]
    return out.reshape(labels.shape), k
