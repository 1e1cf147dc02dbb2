"""Learned agglomeration of supervoxels (NeuroProof's and gala's role): edge features of a
region adjacency graph, and priority merging driven by a merge-probability function whose
features are recomputed exactly whenever two regions merge.

Every feature comes from quantities that add up when regions merge: per contact, the
voxel-pair count, the sum and a histogram of the boundary probability along it; per
region, its size and the sum of the boundary probability inside it (per channel, with
several prediction channels). Merging two regions pools those sums, so the features of
every edge of the merged region are those a fresh graph of the merged labels would give.
A region's surface (its contacts with all its neighbours) is the sum of its edges' counts,
so it too is known from the graph alone and pooled on merges. Contacts may carry further
values beside the boundary (:mod:`labelstitch.contacts`: the other prediction channels,
the predicted affinities), summed and histogrammed the same way.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._kernels.rag import boundary_pairs, region_histograms
from .contacts import BINS, Contacts, contact_sums, or_no_columns
from .rag import roots_of

__all__ = [
    "BINS", "FEATURES", "EdgeStats", "agglomerate", "agglomerate_graph", "attach_to_largest_contact",
    "context_aware", "edge_features", "edge_stats", "feature_names", "group_pairs", "grouped_statistics", "mitochondria_nodes",
    "stats_of_pairs",
]

_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _contact_names(prefix: str = "") -> list[str]:
    return [f"{prefix}mean", *(f"{prefix}q{int(q * 100)}" for q in _QUANTILES), *(f"{prefix}hist{b}" for b in range(BINS))]


def feature_names(channels: int = 1, contacts: Contacts | None = None) -> tuple[str, ...]:
    """The names of the columns :func:`edge_features` returns, in order (a trained
    classifier records them and is refused by a run whose features differ), for
    predictions of ``channels`` channels whose contacts carry ``contacts`` beside the boundary."""
    names = [*_contact_names(), "log_contact", "log_small", "log_large", "contact_ratio", "share_min", "share_max"]
    for c in range(channels):
        names += [f"inside{c}_min", f"inside{c}_max", f"inside{c}_diff"]
    for name in contacts.names() if contacts is not None else ():
        names += _contact_names(f"{name}_")
    return tuple(names) + (tuple(f"inside{c}_hist_distance" for c in range(channels)) if contacts is not None else ())


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
    #: (edges, values x (1 + BINS)): each further contact value's sum and histogram
    #: (:mod:`labelstitch.contacts`); no columns when the contacts carry only the boundary
    extra: NDArray[np.float64] | None = None
    #: (K + 1, channels x BINS): each region's histogram of every channel inside it (a
    #: learned agglomeration's graph; no columns otherwise)
    inside_hist: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        self.extra, self.inside_hist = or_no_columns(self.extra, self.u.size), or_no_columns(self.inside_hist, self.size.size)

    def surface(self) -> NDArray[np.float64]:
        """Each region's contact with all its neighbours (voxel pairs; index = label)."""
        n = self.size.size
        return (np.bincount(self.u, weights=self.count, minlength=n)
                + np.bincount(self.v, weights=self.count, minlength=n))[:n]

    def features(self) -> NDArray[np.float64]:
        """:func:`edge_features` of every edge."""
        u, v, surface = self.u, self.v, self.surface()
        assert self.inside_hist is not None
        return edge_features(self.count, self.total, self.hist, self.size[u], self.size[v], self.inside[u],
                             self.inside[v], surface[u], surface[v], self.extra, self.inside_hist[u], self.inside_hist[v])

    def subset(self, keep: NDArray[np.bool_]) -> EdgeStats:
        """The same regions with only the edges where ``keep`` is True."""
        assert self.extra is not None
        return EdgeStats(self.u[keep], self.v[keep], self.count[keep], self.total[keep], self.hist[keep], self.size,
                         self.inside, self.extra[keep], self.inside_hist)


def edge_stats(labels: NDArray[np.integer], predictions: NDArray[np.floating], *, largest: bool = False,
               contacts: Contacts | None = None) -> EdgeStats:
    """The statistics of the region graph of ``labels`` (1..K, 0 = background, below 2**32)
    over ``predictions`` (Z, Y, X) boundary probability, or (Z, Y, X, C) with the boundary
    first; the contacts are the 6-neighbour voxel pairs (numba), each valued by the mean of
    its two voxels' boundary probability (with ``largest``, the larger: one minus the pair's
    affinity, as waterz scores contacts), and carrying the further values of ``contacts``."""
    pred = np.asarray(predictions, np.float32)
    channels = pred[..., None] if pred.ndim == 3 else pred
    lab = np.ascontiguousarray(labels).astype(np.uint32, copy=False)
    further = contacts is not None and bool(contacts.kinds)
    keys, values, where = boundary_pairs(lab, np.ascontiguousarray(channels[..., 0]), largest, further)
    return stats_of_pairs(lab, channels, keys, values, contacts.values(channels, where) if further else None,
                          regions=contacts is not None)


def stats_of_pairs(labels: NDArray[np.uint32], channels: NDArray[np.floating], keys: NDArray[np.uint64],
                   values: NDArray[np.float32], further: NDArray[np.float32] | None = None, *,
                   regions: bool = False) -> EdgeStats:
    """The :class:`EdgeStats` of voxel pairs between regions of ``labels``: ``keys`` are
    ``low << 32 | high`` label pairs, ``values`` each pair's value (and ``further`` its
    further values, a row each); ``channels`` (Z, Y, X, C) give the regions' inside sums
    (and with ``regions`` their histograms)."""
    k = int(labels.max()) if labels.size else 0
    flat = labels.reshape(-1)
    size = np.bincount(flat, minlength=k + 1).astype(np.float64)
    inside = np.stack([np.bincount(flat, weights=channels[..., c].reshape(-1), minlength=k + 1)
                       for c in range(channels.shape[-1])], axis=1)
    inside_hist = region_histograms(flat, channels.reshape(-1, channels.shape[-1]), k + 1, BINS) if regions else None
    columns = 0 if further is None else further.shape[1] * (1 + BINS)
    if keys.size == 0:
        none = np.zeros(0, np.int64)
        return EdgeStats(none, none, np.zeros(0), np.zeros(0), np.zeros((0, BINS)), size, inside, np.zeros((0, columns)),
                         inside_hist)
    edges, index = np.unique(keys, return_inverse=True)
    count, total, hist = grouped_statistics(index.reshape(-1), edges.size, values)
    extra = None if further is None else contact_sums(index.reshape(-1), edges.size, further)
    u = (edges >> np.uint64(32)).astype(np.int64)
    v = (edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return EdgeStats(u, v, count, total, hist, size, inside, extra, inside_hist)


def edge_features(
    count: NDArray[np.float64], total: NDArray[np.float64], hist: NDArray[np.float64],
    size_u: NDArray[np.float64], size_v: NDArray[np.float64], inside_u: NDArray[np.float64], inside_v: NDArray[np.float64],
    surface_u: NDArray[np.float64], surface_v: NDArray[np.float64], extra: NDArray[np.float64] | None = None,
    hist_u: NDArray[np.float64] | None = None, hist_v: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Feature rows (columns :func:`feature_names`) of edges given their statistics and their
    two regions' (sizes, per-channel inside sums as rows of ``inside``, and surfaces: their
    contacts with all neighbours; ``extra`` the further contact values' sums and histograms;
    ``hist_u`` / ``hist_v`` the regions' histograms of every channel, whose distance, half
    the summed difference of their shares, tells two regions of unlike content apart).
    The contact's share of each region's surface tells a region wrapped by its neighbour (a
    fragment cut off a neurite by a false membrane) from two neurites that touch along a strip."""
    n = count.size
    small, large = np.minimum(size_u, size_v), np.maximum(size_u, size_v)
    mean_u = inside_u / np.maximum(size_u, 1)[:, None]
    mean_v = inside_v / np.maximum(size_v, 1)[:, None]
    inside = []
    for c in range(mean_u.shape[1]):
        inside += [np.minimum(mean_u[:, c], mean_v[:, c]), np.maximum(mean_u[:, c], mean_v[:, c]),
                   np.abs(mean_u[:, c] - mean_v[:, c])]
    share_u, share_v = count / np.maximum(surface_u, 1), count / np.maximum(surface_v, 1)
    columns = [*_along_contact(count, total, hist), np.log1p(count), np.log1p(small), np.log1p(large),
               count / np.maximum(small, 1) ** (2 / 3), np.minimum(share_u, share_v), np.maximum(share_u, share_v), *inside]
    width = 1 + BINS
    for k in range(0 if extra is None else extra.shape[1] // width):
        columns += _along_contact(count, extra[:, k * width], extra[:, k * width + 1:(k + 1) * width])
    for c in range(0 if hist_u is None or hist_v is None else hist_u.shape[1] // BINS):
        part = slice(c * BINS, (c + 1) * BINS)
        columns.append(0.5 * np.abs(hist_u[:, part] / np.maximum(size_u, 1)[:, None]  # type: ignore[index]
                                    - hist_v[:, part] / np.maximum(size_v, 1)[:, None]).sum(axis=1))  # type: ignore[index]
    return np.stack(columns, axis=1) if n else np.zeros((0, len(columns)))


def _along_contact(count: NDArray[np.float64], total: NDArray[np.float64], hist: NDArray[np.float64]) -> list[NDArray[np.float64]]:
    """A value's mean, quantiles and histogram (shares) along each contact, from its sum and histogram."""
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
    return [total / np.maximum(count, 1), *quantiles, *frac.T]


def agglomerate(
    labels: NDArray[np.integer],
    predictions: NDArray[np.floating],
    merge_probability: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    threshold: float,
    *,
    oracle: Callable[[int, int], bool | None] | None = None,
    examples: list[tuple[NDArray[np.float64], NDArray[np.int8]]] | None = None,
) -> NDArray[np.int64]:
    """:func:`agglomerate_graph` of the region graph of ``labels`` (1..K) over
    ``predictions``: the root (a label of ``labels``) of every label 0..K."""
    return agglomerate_graph(edge_stats(np.asarray(labels), predictions), merge_probability, threshold,
                             oracle=oracle, examples=examples)


def agglomerate_graph(
    stats: EdgeStats,
    merge_probability: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    threshold: float,
    *,
    oracle: Callable[[int, int], bool | None] | None = None,
    examples: list[tuple[NDArray[np.float64], NDArray[np.int8]]] | None = None,
) -> NDArray[np.int64]:
    """Merge touching regions of a region graph, most probable first, while
    ``merge_probability(features)`` of the best remaining edge is at least ``threshold``;
    after each merge the merged region's edges get their pooled statistics and are scored
    again. Returns the root (a node of ``stats``) of every node 0..K.

    The graph may come from one label volume (:func:`edge_stats`) or be summed from the
    pieces of a blocked run (:func:`sum_graph`): the agglomeration only sees the statistics.

    For training, ``oracle(a, b)`` decides instead (True: the two regions are one neuron;
    None: unknown, left alone) and every edge it decides is appended to ``examples`` as
    (features, label): the agglomeration states a learned agglomeration will meet.
    """
    k = stats.size.size - 1
    size = stats.size.copy()
    inside = stats.inside.copy()
    assert stats.inside_hist is not None
    inside_hist = stats.inside_hist.copy()
    surface = stats.surface()
    adjacency: list[dict[int, int]] = [dict() for _ in range(k + 1)]  # neighbour -> edge slot
    count, total, hist = list(stats.count), list(stats.total), [row for row in stats.hist]
    assert stats.extra is not None
    extra, further = [row for row in stats.extra], stats.extra.shape[1] > 0
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
                              np.array([hist[s] for s in slots]), size[ua], size[vb], inside[ua], inside[vb],
                              surface[ua], surface[vb], np.array([extra[s] for s in slots]) if further else None,
                              inside_hist[ua], inside_hist[vb])
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
        inside_hist[a] += inside_hist[b]
        surface[a] += surface[b] - 2 * count[adjacency[a][b]]  # their contact is inside the merged region
        del adjacency[a][b]
        del adjacency[b][a]
        for w, slot in adjacency[b].items():
            del adjacency[w][b]
            if w in adjacency[a]:
                mine = adjacency[a][w]
                count[mine] += count[slot]
                total[mine] += total[slot]
                hist[mine] = hist[mine] + hist[slot]
                if further:
                    extra[mine] = extra[mine] + extra[slot]
            else:
                adjacency[a][w] = slot
                adjacency[w][a] = slot
        adjacency[b] = {}
        version[a] += 1
        version[b] += 1
        score([(min(a, w), max(a, w)) for w in adjacency[a]])
    if examples is not None and rows:
        examples.append((np.array(rows), np.array(labels_seen, np.int8)))
    return roots_of(parent)


# ----------------------------------------------------------------------------- mitochondria (context-aware)


def mitochondria_nodes(stats: EdgeStats, channel: int, threshold: float = 0.5) -> NDArray[np.bool_]:
    """Which regions are mitochondria: those whose share of mitochondrion (prediction
    channel ``channel``, a column of ``stats.inside``) among their non-membrane content
    (size minus the boundary channel's sum, column 0) is at least ``threshold``.

    A mitochondrion's envelope is a membrane to the voxel classifier, and the supervoxel
    cut around it holds some of that envelope: measured against the whole supervoxel, a
    mitochondrion's mean would fall with its envelope's share (below 0.5 in trials)."""
    if not 0 < channel < stats.inside.shape[1]:
        raise ValueError(f"channel {channel} is not one of the graph's {stats.inside.shape[1]} prediction channel(s) "
                         f"after the boundary (channel 0)")
    content = np.maximum(stats.size - stats.inside[:, 0], 1e-6)
    share = stats.inside[:, channel] / content
    found = (share >= threshold) & (stats.size > 0)
    found[0] = False
    return found


def context_aware(
    stats: EdgeStats, merge: Callable[[EdgeStats], NDArray[np.int64]], mitochondria: NDArray[np.bool_],
) -> NDArray[np.int64]:
    """NeuroProof's context-aware agglomeration: ``merge`` (a graph to the root of every
    node) agglomerates the graph without the edges of ``mitochondria`` regions, so a
    mitochondrion's dark envelope, which looks like a cell membrane, can neither split its
    neurite nor bridge it to a neighbour; then every mitochondrion joins the body it shares
    the largest contact with (:func:`attach_to_largest_contact`)."""
    keep = ~(mitochondria[stats.u] | mitochondria[stats.v])
    return attach_to_largest_contact(stats, merge(stats.subset(keep)), mitochondria)


def attach_to_largest_contact(stats: EdgeStats, roots: NDArray[np.int64], members: NDArray[np.bool_]) -> NDArray[np.int64]:
    """``roots`` with every ``members`` node (unmerged so far) joined to the body, among
    its neighbours' bodies that are not members, with which its contacts add up to the
    largest count (ties: the lower root). A member touching only members waits for one of
    them to be joined, and follows it; one touching none keeps its own body."""
    out = np.asarray(roots, np.int64).copy()
    waiting = np.asarray(members, bool).copy()
    ends = np.concatenate([stats.u, stats.v]).astype(np.int64)
    others = np.concatenate([stats.v, stats.u]).astype(np.int64)
    count = np.concatenate([stats.count, stats.count])
    mine = waiting[ends]
    ends, others, count = ends[mine], others[mine], count[mine]
    while ends.size:
        ready = ~waiting[others]
        if not ready.any():
            break
        x, body, c = ends[ready], out[others[ready]], count[ready]
        order, index, new = group_pairs(x, body)
        contact = np.bincount(index, weights=c[order])
        gx, gb = x[order][new], body[order][new]
        best = np.lexsort((gb, -contact, gx))
        first = np.r_[True, gx[best][1:] != gx[best][:-1]]
        out[gx[best][first]] = gb[best][first]
        waiting[gx[best][first]] = False
        still = waiting[ends]
        ends, others, count = ends[still], others[still], count[still]
    return out


# ----------------------------------------------------------------------------- pairs grouped into contacts


def grouped_statistics(index: NDArray[np.int64], n: int, values: NDArray[np.float32]) -> tuple[NDArray[np.float64], ...]:
    """(count, total, hist) of ``n`` contacts from voxel pairs: pair ``i`` belongs to contact
    ``index[i]`` and is valued ``values[i]``."""
    sums = contact_sums(index, n, values[:, None])
    return np.bincount(index, minlength=n).astype(np.float64), sums[:, 0], sums[:, 1:]


def group_pairs(u: NDArray[Any], v: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Rows ``(u[i], v[i])`` grouped: the order that sorts them, the group of each sorted
    row (0, 1, ...) and which sorted rows start a group."""
    order = np.lexsort((v, u))
    su, sv = u[order], v[order]
    new = np.r_[True, (su[1:] != su[:-1]) | (sv[1:] != sv[:-1])] if su.size else np.zeros(0, bool)
    return order, np.cumsum(new) - 1, new
