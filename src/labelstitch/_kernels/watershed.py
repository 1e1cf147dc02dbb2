"""Seeded watershed by flooding with a bucket queue (priorities quantised into levels).

Each voxel enters the queue once, when a labelled neighbour reaches it, and takes that
neighbour's label (as in scikit-image's watershed). Voxels wait in FIFO queues, one per
level, linked through one ``next`` array, so flooding is O(voxels + levels) instead of a
heap's O(voxels log voxels).
"""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def flood3d(levels, labels, allowed, n_levels):  # type: ignore[no-untyped-def]
    """Flood the 3-D ``labels`` (markers > 0) over voxels where ``allowed`` is True, in place."""
    nz, ny, nx = labels.shape
    lab = labels.ravel()
    lev = levels.ravel()
    ok = allowed.ravel()
    n = lab.size
    head = np.full(n_levels, -1, np.int64)
    tail = np.full(n_levels, -1, np.int64)
    nxt = np.full(n, -1, np.int64)
    sxy = ny * nx
    for i in range(n):  # markers enter first, in raster order
        if lab[i] != 0:
            q = lev[i]
            if tail[q] < 0:
                head[q] = i
            else:
                nxt[tail[q]] = i
            tail[q] = i
    current = 0
    while current < n_levels:
        i = head[current]
        if i < 0:
            current += 1
            continue
        head[current] = nxt[i]
        if head[current] < 0:
            tail[current] = -1
        x = i % nx
        y = (i // nx) % ny
        z = i // sxy
        for k in range(6):
            if k == 0:
                if x == 0:
                    continue
                j = i - 1
            elif k == 1:
                if x == nx - 1:
                    continue
                j = i + 1
            elif k == 2:
                if y == 0:
                    continue
                j = i - nx
            elif k == 3:
                if y == ny - 1:
                    continue
                j = i + nx
            elif k == 4:
                if z == 0:
                    continue
                j = i - sxy
            else:
                if z == nz - 1:
                    continue
                j = i + sxy
            if lab[j] != 0 or not ok[j]:
                continue
            lab[j] = lab[i]
            q = lev[j]
            if q < current:
                q = current  # below the flood level: handled at the current level
            if tail[q] < 0:
                head[q] = j
            else:
                nxt[tail[q]] = j
            tail[q] = j
