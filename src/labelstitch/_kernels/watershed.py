"""Seeded watershed by flooding with a bucket queue (priorities quantised into levels).

Each voxel enters the queue once, when a labelled neighbour reaches it, and takes that
neighbour's label (as in scikit-image's watershed). Each level is a FIFO queue kept in
fixed-size chunks of voxel indices (chunks are linked, and recycled once read), so pushes
and pops are sequential writes and reads instead of a linked list's scattered ones; the
volume carries a one-voxel border that is never allowed, so neighbours need no bounds
checks. Flooding is O(voxels + levels).
"""

from __future__ import annotations

import numpy as np

from . import jit

#: indices per queue chunk (at most)
CHUNK = 4096


@jit
def _new_chunk(q, head_c, head_p, tail_c, tail_p, link, free, counts):  # type: ignore[no-untyped-def]
    """Give level ``q`` a fresh chunk to write to (a recycled one if any)."""
    if counts[1] > 0:
        counts[1] -= 1
        c = free[counts[1]]
    else:
        c = counts[0]
        counts[0] += 1
    link[c] = -1
    if tail_c[q] < 0:
        head_c[q] = c
        head_p[q] = 0
    else:
        link[tail_c[q]] = c
    tail_c[q] = c
    tail_p[q] = 0


@jit
def flood_padded(levels, labels, allowed, n_levels, sx, sy, store):  # type: ignore[no-untyped-def]
    """Flood the flat ``labels`` (markers > 0) of a padded volume over ``allowed`` voxels,
    in place. ``sx``, ``sy``: strides of y and z; the border voxels must not be allowed.
    ``store``: (chunks, width) scratch for the queues, at least
    ``voxels // width + n_levels + 1`` rows."""
    n = labels.size
    cap = store.shape[0]
    width = store.shape[1]
    link = np.full(cap, -1, np.int64)
    free = np.empty(cap, np.int64)
    counts = np.zeros(2, np.int64)  # chunks handed out, chunks in ``free``
    head_c = np.full(n_levels, -1, np.int64)
    head_p = np.zeros(n_levels, np.int64)
    tail_c = np.full(n_levels, -1, np.int64)
    tail_p = np.zeros(n_levels, np.int64)
    for i in range(n):  # markers enter first, in raster order
        if labels[i] != 0:
            q = np.int64(levels[i])
            if tail_c[q] < 0 or tail_p[q] == width:
                _new_chunk(q, head_c, head_p, tail_c, tail_p, link, free, counts)
            store[tail_c[q], tail_p[q]] = i
            tail_p[q] += 1
    offsets = np.array([-1, 1, -sx, sx, -sy, sy], np.int64)
    current = 0
    while current < n_levels:
        c = head_c[current]
        if c < 0 or (c == tail_c[current] and head_p[current] == tail_p[current]):
            current += 1
            continue
        if head_p[current] == width:  # this chunk is read: recycle it, go on to the next
            free[counts[1]] = c
            counts[1] += 1
            head_c[current] = link[c]
            head_p[current] = 0
            continue
        i = np.int64(store[c, head_p[current]])
        head_p[current] += 1
        label = labels[i]
        for k in range(6):
            j = i + offsets[k]
            if labels[j] != 0 or not allowed[j]:
                continue
            labels[j] = label
            q = np.int64(levels[j])
            if q < current:
                q = current  # below the flood level: handled at the current level
            if tail_c[q] < 0 or tail_p[q] == width:
                _new_chunk(q, head_c, head_p, tail_c, tail_p, link, free, counts)
            store[tail_c[q], tail_p[q]] = j
            tail_p[q] += 1


@jit
def pad_inputs(boundary, seeds, allowed, lo, scale, levels, labels, ok):  # type: ignore[no-untyped-def]
    """Fill the padded ``levels`` (``int((boundary - lo) * scale)``, in float64), ``labels``
    (the seeds where allowed) and ``ok`` from 3-D inputs, in one pass; borders stay 0."""
    nz, ny, nx = boundary.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a = allowed[z, y, x]
                levels[z + 1, y + 1, x + 1] = int((np.float64(boundary[z, y, x]) - lo) * scale)
                ok[z + 1, y + 1, x + 1] = a
                if a:
                    labels[z + 1, y + 1, x + 1] = seeds[z, y, x]
