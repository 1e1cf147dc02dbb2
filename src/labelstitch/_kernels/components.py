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


@jit
def mask_components(mask):  # type: ignore[no-untyped-def]
    """Number the 6-connected components of a C-contiguous 3-D boolean array 1..k in raster
    order of their first voxel (scikit-image's ``label(mask, connectivity=1)``).

    Returns ``(components, k)``, uint32 labels (0 outside the mask). Two passes over
    provisional labels (a new one where no earlier neighbour is in the mask, unions where
    two meet), so the union-find holds one entry per provisional label, at most half the
    voxels plus one, not one per voxel: 4 bytes a voxel for the answer and at most 2 for
    the union-find. Each component's smallest provisional label is its first voxel's, and
    unions keep the smaller root, so numbering the roots in order numbers the components in
    raster order."""
    nz, ny, nx = mask.shape
    flat = mask.ravel()
    n = flat.size
    out = np.zeros(n, np.uint32)
    parent = np.empty((n + 1) // 2 + 2, np.uint32)
    k = 0
    sz = ny * nx
    for i in range(n):
        if not flat[i]:
            continue
        x = i % nx
        y = (i // nx) % ny
        best = np.uint32(0)
        for j in (i - 1 if x > 0 else -1, i - nx if y > 0 else -1, i - sz if i >= sz else -1):
            if j < 0 or not flat[j]:
                continue
            r = _find(parent, out[j])
            if best == 0:
                best = r
            elif r != best:
                if r < best:
                    parent[best] = r
                    best = r
                else:
                    parent[r] = best
        if best == 0:
            k += 1
            parent[k] = k
            best = np.uint32(k)
        out[i] = best
    final = np.zeros(k + 1, np.uint32)
    count = 0
    for label in range(1, k + 1):
        r = _find(parent, label)
        if r == label:
            count += 1
            final[label] = count
        else:
            final[label] = final[r]
    for i in range(n):
        out[i] = final[out[i]]
    return out.reshape(mask.shape), count
