"""Region adjacency: the boundary voxel pairs between different labels."""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def boundary_pairs(labels, boundary):  # type: ignore[no-untyped-def]
    """Every 6-neighbour voxel pair with two different non-zero labels.

    ``labels`` holds values below 2**32. Returns ``(keys, values)``: ``keys`` is
    ``low << 32 | high`` for the two labels and ``values`` the mean of the two voxels'
    boundary probabilities.
    """
    nz, ny, nx = labels.shape
    count = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v == 0:
                    continue
                if x + 1 < nx and labels[z, y, x + 1] != v and labels[z, y, x + 1] != 0:
                    count += 1
                if y + 1 < ny and labels[z, y + 1, x] != v and labels[z, y + 1, x] != 0:
                    count += 1
                if z + 1 < nz and labels[z + 1, y, x] != v and labels[z + 1, y, x] != 0:
                    count += 1
    keys = np.empty(count, np.uint64)
    values = np.empty(count, np.float32)
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v == 0:
                    continue
                b = boundary[z, y, x]
                for dz, dy, dx in ((0, 0, 1), (0, 1, 0), (1, 0, 0)):
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if zz >= nz or yy >= ny or xx >= nx:
                        continue
                    w = labels[zz, yy, xx]
                    if w == 0 or w == v:
                        continue
                    lo, hi = (v, w) if v < w else (w, v)
                    keys[k] = (np.uint64(lo) << np.uint64(32)) | np.uint64(hi)
                    values[k] = 0.5 * (b + boundary[zz, yy, xx])
                    k += 1
    return keys, values
