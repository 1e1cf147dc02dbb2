"""Numba kernels of the multicut (correlation clustering) of a region graph: greedy additive
edge contraction, and greedy node moves that refine its partition."""

from __future__ import annotations

import numpy as np

from . import jit
from .rag import contract


def greedy_additive(u, v, w, n):  # type: ignore[no-untyped-def]
    """Greedy additive edge contraction (GAEC, Keuper et al. 2015) of a graph of nodes 0..n
    with edges ``u < v`` weighted ``w`` (positive: the two would rather be one): contract
    the heaviest positive edge, sum the weights of the edges the two ends shared, repeat
    while a positive edge is left (:func:`~labelstitch._kernels.rag.contract`, by weight).
    Returns the parent forest (follow it to a root)."""
    return contract(u, v, np.asarray(w, np.float64).reshape(-1, 1), n, 0.0, False)


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
