"""Region adjacency: the boundary voxel pairs between different labels."""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def _scan(labels, boundary, keys, values, where, fill, largest):  # type: ignore[no-untyped-def]
    """Visit every 6-neighbour pair with two different non-zero labels; with ``fill``, write
    its key and the mean (with ``largest``, the larger) of its two boundary values, and
    where ``where`` has room, its place: the first voxel's flat index times 3 plus the axis
    (0: Z, 1: Y, 2: X) of the second. Returns the number of such pairs."""
    nz, ny, nx = labels.shape
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v == 0:
                    continue
                for axis, dz, dy, dx in ((2, 0, 0, 1), (1, 0, 1, 0), (0, 1, 0, 0)):
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if zz >= nz or yy >= ny or xx >= nx:
                        continue
                    w = labels[zz, yy, xx]
                    if w == 0 or w == v:
                        continue
                    if fill:
                        lo, hi = (v, w) if v < w else (w, v)
                        keys[k] = (np.uint64(lo) << np.uint64(32)) | np.uint64(hi)
                        if largest:
                            values[k] = max(boundary[z, y, x], boundary[zz, yy, xx])
                        else:
                            values[k] = 0.5 * (boundary[z, y, x] + boundary[zz, yy, xx])
                        if where.size:
                            where[k] = ((z * ny + y) * nx + x) * 3 + axis
                    k += 1
    return k


@jit
def boundary_pairs(labels, boundary, largest=False, locate=False):  # type: ignore[no-untyped-def]
    """Every 6-neighbour voxel pair with two different non-zero labels.

    ``labels`` holds values below 2**32. Returns ``(keys, values)``: ``keys`` is
    ``low << 32 | high`` for the two labels and ``values`` the mean of the two voxels'
    boundary probabilities (with ``largest``, the larger: one minus their affinity); with
    ``locate`` also ``where``, each pair's place (see ``_scan``), for the other channels'
    values of the same pairs. Two passes: count, then fill arrays of exactly that size.
    """
    count = _scan(labels, boundary, np.empty(0, np.uint64), np.empty(0, np.float32), np.empty(0, np.int64), False,
                  largest)
    keys = np.empty(count, np.uint64)
    values = np.empty(count, np.float32)
    where = np.empty(count if locate else 0, np.int64)
    _scan(labels, boundary, keys, values, where, True, largest)
    return keys, values, where


@jit
def _less(hm, ha, hb, i, j):  # type: ignore[no-untyped-def]
    if hm[i] != hm[j]:
        return hm[i] < hm[j]
    if ha[i] != ha[j]:
        return ha[i] < ha[j]
    return hb[i] < hb[j]


@jit
def _swap(hm, ha, hb, i, j):  # type: ignore[no-untyped-def]
    hm[i], hm[j] = hm[j], hm[i]
    ha[i], ha[j] = ha[j], ha[i]
    hb[i], hb[j] = hb[j], hb[i]


@jit
def _push(hm, ha, hb, size, mean, a, b):  # type: ignore[no-untyped-def]
    """Push ``(mean, a, b)`` on the heap of ``size`` entries (arrays grown when full);
    returns the arrays and the new size."""
    if size == hm.size:
        grown = max(16, 2 * hm.size)
        hm2, ha2, hb2 = np.empty(grown), np.empty(grown, np.int64), np.empty(grown, np.int64)
        hm2[:size] = hm[:size]
        ha2[:size] = ha[:size]
        hb2[:size] = hb[:size]
        hm, ha, hb = hm2, ha2, hb2
    hm[size], ha[size], hb[size] = mean, a, b
    i = size
    while i > 0:
        up = (i - 1) // 2
        if not _less(hm, ha, hb, i, up):
            break
        _swap(hm, ha, hb, i, up)
        i = up
    return hm, ha, hb, size + 1


@jit
def _pop(hm, ha, hb, size):  # type: ignore[no-untyped-def]
    """Remove the smallest entry (moved to index ``size - 1``); returns the new size."""
    size -= 1
    _swap(hm, ha, hb, 0, size)
    i = 0
    while True:
        left, right, best = 2 * i + 1, 2 * i + 2, i
        if left < size and _less(hm, ha, hb, left, best):
            best = left
        if right < size and _less(hm, ha, hb, right, best):
            best = right
        if best == i:
            return size
        _swap(hm, ha, hb, i, best)
        i = best


@jit
def _root(parent, x):  # type: ignore[no-untyped-def]
    r = x
    while parent[r] != r:
        r = parent[r]
    while parent[x] != r:  # path compression
        parent[x], x = r, parent[x]
    return r


@jit
def incidence(u, v, n):  # type: ignore[no-untyped-def]
    """Incidence lists of a graph of nodes 0..n with edges ``u < v``, as linked slots: slot
    ``2e`` is edge ``e`` seen from ``u[e]``, ``2e + 1`` from ``v[e]``; ``head``/``tail`` are
    each node's first and last slot, ``nxt`` the next one. Also each node's degree, which
    edges are alive, and a hash map from a pair ``a * (n + 1) + b`` to its edge."""
    m = u.size
    degree = np.zeros(n + 1, np.int64)
    head = np.full(n + 1, -1, np.int64)
    tail = np.full(n + 1, -1, np.int64)
    nxt = np.full(2 * m, -1, np.int64)
    alive = np.ones(m, np.bool_)
    key = n + 1
    edge_of = dict()
    for e in range(m):
        edge_of[u[e] * key + v[e]] = e
        for side, node in ((2 * e, u[e]), (2 * e + 1, v[e])):
            degree[node] += 1
            if head[node] < 0:
                head[node] = side
            else:
                nxt[tail[node]] = side
            tail[node] = side
    return degree, head, tail, nxt, alive, edge_of


@jit
def splice(degree, head, tail, nxt, a, b, first, last):  # type: ignore[no-untyped-def]
    """After node ``b`` was folded into ``a``: empty ``b``'s list and append to ``a``'s the
    slots ``first`` .. ``last`` (already linked) that moved to it."""
    degree[b] = 0
    head[b], tail[b] = -1, -1
    if first >= 0:
        if head[a] < 0:
            head[a] = first
        else:
            nxt[tail[a]] = first
        tail[a] = last


@jit
def _priority(values, e, mean):  # type: ignore[no-untyped-def]
    """An edge's place in the queue: its mean (``values`` = count, sum), or minus its weight."""
    return values[e, 1] / values[e, 0] if mean else -values[e, 0]


@jit
def contract(u, v, values, n, threshold, mean):  # type: ignore[no-untyped-def]
    """Greedy contraction of a graph (nodes 0..n, edges ``u < v`` with additive ``values``
    per edge): the edge of lowest priority first, while it is below ``threshold``; the two
    ends become one node and the edges they shared are summed. The priority is the mean
    ``values[:, 1] / values[:, 0]`` with ``mean``, else ``-values[:, 0]`` (the heaviest
    weight first). Returns the parent forest (follow it to a root). Arrays only: incidence
    lists as linked slots, a hash map from a pair of roots to its edge, a binary heap of
    ``(priority, a, b)``; ties are taken in the order of ``(priority, a, b)``."""
    m = u.size
    values = values.astype(np.float64)
    parent = np.arange(n + 1)
    degree, head, tail, nxt, alive, edge_of = incidence(u, v, n)
    key = n + 1
    hm, ha, hb, size = np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), 0
    for e in range(m):
        p = _priority(values, e, mean)
        if p < threshold:
            hm, ha, hb, size = _push(hm, ha, hb, size, p, u[e], v[e])
    while size > 0:
        size = _pop(hm, ha, hb, size)
        p, a, b = hm[size], ha[size], hb[size]
        if parent[a] != a or parent[b] != b:
            continue  # stale: one side was merged away
        if a * key + b not in edge_of:
            continue
        e = edge_of[a * key + b]
        if abs(_priority(values, e, mean) - p) > 1e-12:
            continue  # stale: the edge was summed with another since this entry was pushed
        if degree[a] < degree[b]:
            a, b = b, a  # fold the smaller neighbourhood into the larger
        parent[b] = a
        alive[e] = False
        del edge_of[min(a, b) * key + max(a, b)]
        degree[a] -= 1
        first, last = -1, -1  # b's slots that stay alive, moved to a
        slot = head[b]
        while slot >= 0:
            following = nxt[slot]
            f = slot // 2
            if alive[f]:
                w = _root(parent, v[f]) if slot % 2 == 0 else _root(parent, u[f])
                if w == a or w == b:
                    slot = following
                    continue
                del edge_of[min(b, w) * key + max(b, w)]
                degree[w] -= 1
                pair = min(a, w) * key + max(a, w)
                mine = edge_of[pair] if pair in edge_of else -1
                if mine >= 0:  # a touches w too: the two edges become one
                    values[mine] += values[f]
                    alive[f] = False
                    g = mine
                else:  # the edge moves to a
                    edge_of[pair] = f
                    degree[a] += 1
                    degree[w] += 1
                    nxt[slot] = -1
                    if first < 0:
                        first = slot
                    else:
                        nxt[last] = slot
                    last = slot
                    g = f
                pooled = _priority(values, g, mean)
                if pooled < threshold:
                    hm, ha, hb, size = _push(hm, ha, hb, size, pooled, min(a, w), max(a, w))
            slot = following
        splice(degree, head, tail, nxt, a, b, first, last)
    return parent


def merge_mean_boundary(u, v, count, total, n, threshold):  # type: ignore[no-untyped-def]
    """Greedy merging of a region graph (nodes 0..n, edges ``u < v`` with contact counts
    and boundary sums): the lowest mean-boundary edge first, while its mean is below
    ``threshold``; a merged region's contacts are pooled (:func:`contract`). The order of
    merges, ties included, is that of the plain-Python version it replaces (tested)."""
    values = np.stack((np.asarray(count, np.float64), np.asarray(total, np.float64)), axis=1)
    return contract(u, v, values, n, float(threshold), True)


@jit
def region_histograms(labels, values, n, bins):  # type: ignore[no-untyped-def]
    """(n, channels x bins): per label 0..n-1 of the flat ``labels``, the histogram over
    [0, 1] of each channel of ``values`` (voxels, channels) inside it, with no temporaries."""
    channels = values.shape[1]
    out = np.zeros((n, channels * bins))
    for i in range(labels.size):
        row = labels[i]
        for c in range(channels):
            b = int(values[i, c] * bins)
            out[row, c * bins + min(max(b, 0), bins - 1)] += 1.0
    return out
