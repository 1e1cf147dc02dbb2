"""Multicut (correlation clustering) of a region graph: the partition of the supervoxels that
cuts the least weight, where an edge's weight says how much its two regions would rather be
one neuron (positive) or two (negative).

Greedy merging stops at its first bad decision and never looks back. The multicut weighs
every contact at once: a weak contact between two regions can be outweighed by strong ones
through a third. It is solved approximately, as elf and cluster_tools do, by greedy additive
edge contraction (GAEC: contract the heaviest positive edge, sum the weights of the edges
the two shared) and then refined by greedy node moves (a node goes to the neighbouring
cluster, or a cluster of its own, that cuts less weight; a single-node form of
Kernighan-Lin). The weights come from a cut probability per edge: the mean boundary
probability along the contact, or one minus a learned merge probability.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.multicut import greedy_additive, move_nodes
from ._kernels.unionfind import union_words
from .rag import roots_of

__all__ = ["multicut", "multicut_objective", "multicut_weights"]


def multicut_weights(cut_probability: ArrayLike, sizes: ArrayLike | None = None, *, beta: float = 0.5) -> NDArray[np.float64]:
    """Edge weights from cut probabilities: ``log((1 - p) / p) + log((1 - beta) / beta)``,
    scaled by each contact's size over the mean size when ``sizes`` are given (a long
    contact counts for more than a few voxels). ``beta`` is the prior probability of a cut:
    above 0.5, more cuts.

    >>> multicut_weights([0.1, 0.5, 0.9]).round(3).tolist()
    [2.197, 0.0, -2.197]
    >>> multicut_weights([0.5], beta=0.25).round(3).tolist()
    [1.099]
    """
    if not 0 < beta < 1:
        raise ValueError(f"`beta` must lie strictly between 0 and 1, got {beta}")
    p = np.clip(np.asarray(cut_probability, np.float64), 1e-6, 1 - 1e-6)
    w = np.log((1 - p) / p) + np.log((1 - beta) / beta)
    if sizes is not None:
        s = np.asarray(sizes, np.float64)
        w = w * (s / s.mean() if s.size and s.mean() > 0 else s)
    return w


def multicut(u: ArrayLike, v: ArrayLike, weights: ArrayLike, n: int, *, refine: bool = True, sweeps: int = 50) -> NDArray[np.int64]:
    """The multicut of a graph of nodes 0..``n`` (edges ``u < v`` with ``weights``): the
    root of every node (a node of its cluster), from GAEC and, with ``refine``, greedy node
    moves; clusters are connected (a cluster the moves split becomes two).

    >>> u, v = np.array([1, 2, 1]), np.array([2, 3, 3])
    >>> multicut(u, v, np.array([5.0, 5.0, -1.0]), 3).tolist()   # 1-3 repels, but 1-2-3 attracts more
    [0, 1, 1, 1]
    >>> multicut(u, v, np.array([5.0, -1.0, -9.0]), 3).tolist()
    [0, 1, 1, 3]
    """
    u_ = np.ascontiguousarray(u, np.int64)
    v_ = np.ascontiguousarray(v, np.int64)
    w = np.ascontiguousarray(weights, np.float64)
    roots = roots_of(greedy_additive(u_, v_, w, int(n)))
    if not refine or u_.size == 0:
        return roots
    labels = roots.copy()
    order = np.lexsort((np.concatenate([v_, u_]), np.concatenate([u_, v_])))
    heads = np.concatenate([u_, v_])[order]
    indices = np.concatenate([v_, u_])[order]
    both = np.concatenate([w, w])[order]
    indptr = np.searchsorted(heads, np.arange(n + 2))
    move_nodes(indptr, indices, both, labels, int(sweeps))
    return _components(u_, v_, labels, n)


def _components(u: NDArray[np.int64], v: NDArray[np.int64], labels: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """The root (smallest node) of every node's connected piece of its cluster: the
    union-find that resolves stitching matches, over the edges inside clusters."""
    same = labels[u] == labels[v]
    words = (u[same].astype(np.uint64) << np.uint64(32)) | v[same].astype(np.uint64)
    return np.asarray(union_words(words, n + 1), np.int64)


def multicut_objective(u: ArrayLike, v: ArrayLike, weights: ArrayLike, roots: ArrayLike) -> float:
    """The weight of the edges a partition cuts (what the multicut minimises).

    >>> multicut_objective([1], [2], [3.0], [0, 1, 2])
    3.0
    """
    r = np.asarray(roots)
    return float(np.asarray(weights, np.float64)[r[np.asarray(u)] != r[np.asarray(v)]].sum())
