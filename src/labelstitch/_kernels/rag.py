"""Region adjacency: the boundary voxel pairs between different labels."""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def _scan(labels, boundary, keys, values, fill):  # type: ignore[no-untyped-def]
    """Visit every 6-neighbour pair with two different non-zero labels; with ``fill``, write
    its key and mean boundary value. Returns the number of such pairs."""
    nz, ny, nx = labels.shape
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v == 0:
                    continue
                for dz, dy, dx in ((0, 0, 1), (0, 1, 0), (1, 0, 0)):
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if zz >= nz or yy >= ny or xx >= nx:
                        continue
                    w = labels[zz, yy, xx]
                    if w == 0 or w == v:
                        continue
                    if fill:
                        lo, hi = (v, w) if v < w else (w, v)
                        keys[k] = (np.uint64(lo) << np.uint64(32)) | np.uint64(hi)
                        values[k] = 0.5 * (boundary[z, y, x] + boundary[zz, yy, xx])
                    k += 1
    return k


@jit
def boundary_pairs(labels, boundary):  # type: ignore[no-untyped-def]
    """Every 6-neighbour voxel pair with two different non-zero labels.

    ``labels`` holds values below 2**32. Returns ``(keys, values)``: ``keys`` is
    ``low << 32 | high`` for the two labels and ``values`` the mean of the two voxels'
    boundary probabilities. Two passes: count, then fill arrays of exactly that size.
    """
    count = _scan(labels, boundary, np.empty(0, np.uint64), np.empty(0, np.float32), False)
    keys = np.empty(count, np.uint64)
    values = np.empty(count, np.float32)
    _scan(labels, boundary, keys, values, True)
    return keys, values
