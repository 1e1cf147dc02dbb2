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
def label_components(labels):  # type: ignore[no-untyped-def]
    """Number the 6-connected pieces of each non-zero label 1..k in raster order of their
    first voxel; for a boolean array, scikit-image's ``label(mask, connectivity=1)``.

    ``labels`` is a C-contiguous 3-D array. Returns ``(components, k)``, uint32 (0 where
    ``labels`` is 0). Two passes over provisional labels (a new one where no earlier
    neighbour carries the voxel's label, unions where two meet), so the union-find holds one
    entry per provisional label, not per voxel: 8 bytes a voxel with the answer. Each
    piece's smallest provisional label is its first voxel's, and unions keep the smaller
    root, so numbering the roots in order numbers the pieces in raster order.
    """
    nz, ny, nx = labels.shape
    flat = labels.ravel()
    n = flat.size
    out = np.zeros(n, np.uint32)
    parent = np.empty(n + 1, np.uint32)
    k = 0
    sz = ny * nx
    for i in range(n):
        v = flat[i]
        if v == 0:
            continue
        x = i % nx
        y = (i // nx) % ny
        best = np.uint32(0)
        for j in (i - 1 if x > 0 else -1, i - nx if y > 0 else -1, i - sz if i >= sz else -1):
            if j < 0 or flat[j] != v:
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
    return out.reshape(labels.shape), count
