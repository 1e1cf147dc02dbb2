"""Numba kernels of the multicut (correlation clustering) of a region graph: greedy additive
edge contraction, and greedy node moves that refine its partition."""

from __future__ import annotations

import numpy as np

from . import jit
from .rag import _pop, _push, _root


@jit
def greedy_additive(u, v, w, n):  # type: ignore[no-untyped-def]
    """Greedy additive edge contraction (GAEC, Keuper et al. 2015) of a graph of nodes 0..n
    with edges ``u < v`` weighted ``w`` (positive: the two would rather be one): contract
    the heaviest positive edge, sum the weights of the edges the two ends shared, repeat
    while a positive edge is left. Returns the parent forest (follow it to a root).
    Incidence lists as linked slots and a heap of ``(-weight, a, b)``, as in
    :func:`~labelstitch._kernels.rag.merge_mean_boundary`."""
    m = u.size
    w = w.astype(np.float64)
    parent = np.arange(n + 1)
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
    hm, ha, hb, size = np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), 0
    for e in range(m):
        if w[e] > 0:
            hm, ha, hb, size = _push(hm, ha, hb, size, -w[e], u[e], v[e])
    while size > 0:
        size = _pop(hm, ha, hb, size)
        weight, a, b = -hm[size], ha[size], hb[size]
        if parent[a] != a or parent[b] != b:
            continue  # stale: one side was contracted away
        if a * key + b not in edge_of:
            continue
        e = edge_of[a * key + b]
        if abs(w[e] - weight) > 1e-12:
            continue  # stale: the edge was summed with another since
        if degree[a] < degree[b]:
            a, b = b, a  # fold the smaller neighbourhood into the larger
        parent[b] = a
        alive[e] = False
        del edge_of[min(a, b) * key + max(a, b)]
        degree[a] -= 1
        first, last = -1, -1
        slot = head[b]
        while slot >= 0:
            following = nxt[slot]
            f = slot // 2
            if alive[f]:
                x = _root(parent, v[f]) if slot % 2 == 0 else _root(parent, u[f])
                if x == a or x == b:
                    slot = following
                    continue
                del edge_of[min(b, x) * key + max(b, x)]
                degree[x] -= 1
                pair = min(a, x) * key + max(a, x)
                mine = edge_of[pair] if pair in edge_of else -1
                if mine >= 0:  # a touches x too: the two edges become one, their weights summed
                    w[mine] += w[f]
                    alive[f] = False
                    g = mine
                else:
                    edge_of[pair] = f
                    degree[a] += 1
                    degree[x] += 1
                    nxt[slot] = -1
                    if first < 0:
                        first = slot
                    else:
                        nxt[last] = slot
                    last = slot
                    g = f
                if w[g] > 0:
                    hm, ha, hb, size = _push(hm, ha, hb, size, -w[g], min(a, x), max(a, x))
            slot = following
        degree[b] = 0
        head[b], tail[b] = -1, -1
        if first >= 0:
            if head[a] < 0:
                head[a] = first
            else:
                nxt[tail[a]] = first
            tail[a] = last
    return parent


@jit
def move_nodes(indptr, indices, weights, labels, sweeps):  # type: ignore[no-untyped-def]
    """Greedy node moves on a partition ``labels`` of a graph in CSR form (both directions
    of every edge listed): each node in turn moves to the neighbouring cluster, or to a new
    cluster of its own, that raises the weight inside clusters most, until a sweep moves
    nothing (or ``sweeps`` sweeps). Each move lowers the multicut objective (the weight of
    the cut edges) strictly, so it ends. Returns the number of moves; ``labels`` change in
    place (new clusters take labels above the largest)."""
    n = indptr.size - 1
    fresh = labels.max() + 1
    moves = 0
    for _ in range(sweeps):
        moved = 0
        for i in range(n):
            if indptr[i + 1] == indptr[i]:
                continue
            gain = dict()
            own = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if j == i:
                    continue
                c = labels[j]
                if c == labels[i]:
                    own += weights[k]
                elif c in gain:
                    gain[c] += weights[k]
                else:
                    gain[c] = weights[k]
            best, best_gain = labels[i], 0.0
            for c, g in gain.items():  # in the order of the node's neighbours: deterministic
                if g - own > best_gain + 1e-12:
                    best, best_gain = c, g - own
            if -own > best_gain + 1e-12:  # alone is better than with any cluster
                best = fresh
                fresh += 1
            if best != labels[i]:
                labels[i] = best
                moved += 1
        moves += moved
        if moved == 0:
            break
    return moves
