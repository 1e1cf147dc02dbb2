"""Learned agglomeration of supervoxels (NeuroProof's and gala's role): edge features of a
region adjacency graph, and priority merging driven by a merge-probability function whose
features are recomputed exactly whenever two regions merge.

Every feature comes from quantities that add up when regions merge: per contact, the
voxel-pair count, the sum and a histogram of the boundary probability along it; per
region, its size and the sum of the boundary probability inside it (per channel, with
several prediction channels). Merging two regions pools those sums, so the features of
every edge of the merged region are those a fresh graph of the merged labels would give.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._kernels.rag import boundary_pairs

__all__ = ["BINS", "FEATURES", "EdgeStats", "agglomerate", "edge_features", "edge_stats", "feature_names"]

#: histogram bins of the boundary probability along a contact, over [0, 1]
BINS = 10
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def feature_names(channels: int = 1) -> tuple[str, ...]:
    """The names of the columns :func:`edge_features` returns, in order (a trained
    classifier records them and is refused by a run whose features differ)."""
    names = ["mean", *(f"q{int(q * 100)}" for q in _QUANTILES), *(f"hist{b}" for b in range(BINS)),
             "log_contact", "log_small", "log_large", "contact_ratio"]
    for c in range(channels):
        names += [f"inside{c}_min", f"inside{c}_max", f"inside{c}_diff"]
    return tuple(names)


#: the features of single-channel predictions
FEATURES = feature_names(1)


@dataclass
class EdgeStats:
    """The additive statistics of a region graph: edges ``u < v`` (labels 1..K) with their
    contact count, boundary sum and histogram; regions with their size and the sum of each
    prediction channel inside them (index = label, 0 unused)."""

    u: NDArray[np.int64]
    v: NDArray[np.int64]
    count: NDArray[np.float64]
    total: NDArray[np.float64]
    hist: NDArray[np.float64]  # (edges, BINS)
    size: NDArray[np.float64]  # (K + 1,)
    inside: NDArray[np.float64]  # (K + 1, channels)


def edge_stats(labels: NDArray[np.integer], predictions: NDArray[np.floating]) -> EdgeStats:
    """The statistics of the region graph of ``labels`` (1..K, 0 = background, below 2**32)
    over ``predictions`` (Z, Y, X) boundary probability, or (Z, Y, X, C) with the boundary
    first; the contacts are the 6-neighbour voxel pairs (numba), each valued by the mean of
    its two voxels' boundary probability."""
    pred = np.asarray(predictions, np.float32)
    channels = pred[..., None] if pred.ndim == 3 else pred
    boundary = np.ascontiguousarray(channels[..., 0])
    lab = np.ascontiguousarray(labels).astype(np.uint32, copy=False)
    k = int(lab.max()) if lab.size else 0
    flat = lab.reshape(-1)
    size = np.bincount(flat, minlength=k + 1).astype(np.float64)
    inside = np.stack([np.bincount(flat, weights=channels[..., c].reshape(-1), minlength=k + 1)
                       for c in range(channels.shape[-1])], axis=1)
    keys, values = boundary_pairs(lab, boundary)
    if keys.size == 0:
        none = np.zeros(0, np.int64)
        return EdgeStats(none, none, np.zeros(0), np.zeros(0), np.zeros((0, BINS)), size, inside)
    edges, index = np.unique(keys, return_inverse=True)
    count = np.bincount(index, minlength=edges.size).astype(np.float64)
    total = np.bincount(index, weights=values, minlength=edges.size)
    bins = np.minimum((values * BINS).astype(np.int64), BINS - 1)
    hist = np.bincount(index * BINS + bins, minlength=edges.size * BINS).reshape(edges.size, BINS).astype(np.float64)
    u = (edges >> np.uint64(32)).astype(np.int64)
    v = (edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return EdgeStats(u, v, count, total, hist, size, inside)


def edge_features(
    count: NDArray[np.float64], total: NDArray[np.float64], hist: NDArray[np.float64],
    size_u: NDArray[np.float64], size_v: NDArray[np.float64], inside_u: NDArray[np.float64], inside_v: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Feature rows (columns :func:`feature_names`) of edges given their statistics and their
    two regions' (sizes and per-channel inside sums, rows of ``inside``)."""
    n = count.size
    frac = hist / np.maximum(count, 1)[:, None]
    cum = np.cumsum(frac, axis=1)
    quantiles = []
    for q in _QUANTILES:  # the bin where the cumulative share passes q, interpolated inside it
        b = np.minimum((cum < q).sum(axis=1), BINS - 1)
        before = np.where(b > 0, cum[np.arange(n), np.maximum(b - 1, 0)], 0.0)
        share = frac[np.arange(n), b]
        within = np.where(share > 0, (q - before) / np.where(share > 0, share, 1), 0.5)
        quantiles.append((b + np.clip(within, 0, 1)) / BINS)
    small, large = np.minimum(size_u, size_v), np.maximum(size_u, size_v)
    mean_u = inside_u / np.maximum(size_u, 1)[:, None]
    mean_v = inside_v / np.maximum(size_v, 1)[:, None]
    inside = []
    for c in range(mean_u.shape[1]):
        inside += [np.minimum(mean_u[:, c], mean_v[:, c]), np.maximum(mean_u[:, c], mean_v[:, c]),
                   np.abs(mean_u[:, c] - mean_v[:, c])]
    columns = [total / np.maximum(count, 1), *quantiles, *frac.T, np.log1p(count), np.log1p(small), np.log1p(large),
               count / np.maximum(small, 1) ** (2 / 3), *inside]
    return np.stack(columns, axis=1) if n else np.zeros((0, len(columns)))


def agglomerate(
    labels: NDArray[np.integer],
    predictions: NDArray[np.floating],
    merge_probability: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    threshold: float,
    *,
    oracle: Callable[[int, int], bool | None] | None = None,
    examples: list[tuple[NDArray[np.float64], NDArray[np.int8]]] | None = None,
) -> NDArray[np.int64]:
    """Merge touching regions, most probable first, while ``merge_probability(features)``
    of the best remaining edge is at least ``threshold``; after each merge the merged
    region's edges get their pooled statistics and are scored again. Returns the root
    (a label of ``labels``) of every label 0..K.

    For training, ``oracle(a, b)`` decides instead (True: the two regions are one neuron;
    None: unknown, left alone) and every edge it decides is appended to ``examples`` as
    (features, label): the agglomeration states a learned agglomeration will meet.
    """
    lab = np.asarray(labels)
    stats = edge_stats(lab, predictions)
    k = stats.size.size - 1
    size = stats.size.copy()
    inside = stats.inside.copy()
    adjacency: list[dict[int, int]] = [dict() for _ in range(k + 1)]  # neighbour -> edge slot
    count, total, hist = list(stats.count), list(stats.total), [row for row in stats.hist]
    for e, (a, b) in enumerate(zip(stats.u.tolist(), stats.v.tolist())):
        adjacency[a][b] = e
        adjacency[b][a] = e
    version = [0] * (k + 1)
    parent = np.arange(k + 1)
    heap: list[tuple[float, int, int, int, int, int]] = []

    def score(pairs: list[tuple[int, int]]) -> None:
        if not pairs:
            return
        slots = [adjacency[a][b] for a, b in pairs]
        ua = np.array([a for a, _ in pairs])
        vb = np.array([b for _, b in pairs])
        feats = edge_features(np.array([count[s] for s in slots]), np.array([total[s] for s in slots]),
                              np.array([hist[s] for s in slots]), size[ua], size[vb], inside[ua], inside[vb])
        prob = np.asarray(merge_probability(feats), np.float64)
        for (a, b), p, f in zip(pairs, prob.tolist(), feats):
            if oracle is not None:  # training: every edge is taken from the queue, with its features
                heapq.heappush(heap, (-p, a, b, version[a], version[b], len(heap_features)))
                heap_features.append(f)
            elif p >= threshold:
                heapq.heappush(heap, (-p, a, b, version[a], version[b], -1))

    heap_features: list[NDArray[np.float64]] = []
    score([(a, b) for a, b in zip(stats.u.tolist(), stats.v.tolist())])
    rows, labels_seen = [], []
    while heap:
        _, a, b, va, vb, fi = heapq.heappop(heap)
        if version[a] != va or version[b] != vb or parent[a] != a or parent[b] != b or b not in adjacency[a]:
            continue  # stale: a side merged or changed since this entry was scored
        if oracle is not None:
            same = oracle(a, b)
            if same is None:
                continue  # unknown (unlabelled in the ground truth): neither merged nor recorded
            rows.append(heap_features[fi])
            labels_seen.append(1 if same else 0)
            if not same:
                continue
        if len(adjacency[a]) < len(adjacency[b]):
            a, b = b, a  # fold the smaller neighbourhood into the larger
        parent[b] = a
        size[a] += size[b]
        inside[a] += inside[b]
        del adjacency[a][b]
        del adjacency[b][a]
        for w, slot in adjacency[b].items():
            del adjacency[w][b]
            if w in adjacency[a]:
                mine = adjacency[a][w]
                count[mine] += count[slot]
                total[mine] += total[slot]
                hist[mine] = hist[mine] + hist[slot]
            else:
                adjacency[a][w] = slot
                adjacency[w][a] = slot
        adjacency[b] = {}
        version[a] += 1
        version[b] += 1
        score([(min(a, w), max(a, w)) for w in adjacency[a]])
    if examples is not None and rows:
        examples.append((np.array(rows), np.array(labels_seen, np.int8)))
    roots = parent.copy()
    for i in range(roots.size):  # parents may chain: follow to the final root
        r = i
        while roots[r] != r:
            r = roots[r]
        roots[i] = r
    return roots
