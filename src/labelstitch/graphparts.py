"""The region graph of a blocked volume, in pieces: each subvolume's interior and each
face's contacts contribute additive statistics (:class:`GraphPart`) in labels of their own;
mapped to global ids and summed (:func:`sum_graph`) they are the region graph of the
stitched volume, which an agglomeration across blocks merges on the driver."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .agglomeration import EdgeStats, group_pairs, grouped_statistics, edge_stats
from .contacts import BINS, Contacts, contact_sums, or_no_columns
from .rag import renumber

__all__ = ["GraphPart", "interior_graph", "pair_statistics", "sum_graph"]


@dataclass
class GraphPart:
    """The additive region-graph statistics one piece of a blocked volume contributes, in
    labels of its own: the regions of one subvolume's interior (``nodes`` with their size
    and per-channel inside sums; edges between two of its labels), or the contacts across
    one face (no nodes; ``u`` a label of the lower subvolume, ``v`` of the upper).

    Every voxel pair of the volume lies in exactly one interior or straddles exactly one
    face, so the parts of a plan, mapped to global ids and summed (:func:`sum_graph`), give
    the region graph of the stitched volume.
    """

    nodes: NDArray[np.uint64]
    size: NDArray[np.float64]
    inside: NDArray[np.float64]  # (nodes, channels)
    u: NDArray[np.uint64]
    v: NDArray[np.uint64]
    count: NDArray[np.float64]
    total: NDArray[np.float64]
    hist: NDArray[np.float64]  # (edges, BINS)
    #: the further contact values' sums and histograms, as :attr:`EdgeStats.extra`
    extra: NDArray[np.float64] | None = None
    #: (nodes, channels x BINS): the nodes' histograms of every channel, as :attr:`EdgeStats.inside_hist`
    inside_hist: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        self.extra, self.inside_hist = or_no_columns(self.extra, self.u.size), or_no_columns(self.inside_hist, self.nodes.size)

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, f).nbytes) for f in ("nodes", "size", "inside", "u", "v", "count", "total", "hist",
                                                          "extra", "inside_hist"))

    def arrays(self) -> dict[str, NDArray[Any]]:
        """The part as named arrays (for ``np.savez``; counts as uint32, they are whole numbers)."""
        out = {"nodes": self.nodes, "size": self.size, "inside": self.inside, "u": self.u, "v": self.v,
               "count": self.count.astype(np.uint32), "total": self.total, "hist": self.hist.astype(np.uint32)}
        if self.extra is not None and self.extra.shape[1]:
            out["extra"] = self.extra
        if self.inside_hist is not None and self.inside_hist.shape[1]:
            out["inside_hist"] = self.inside_hist.astype(np.uint32)
        return out

    @classmethod
    def from_arrays(cls, a: Any) -> GraphPart:
        return cls(*(np.asarray(a[k]) for k in ("nodes", "size", "inside", "u", "v")),
                   np.asarray(a["count"], np.float64), np.asarray(a["total"]), np.asarray(a["hist"], np.float64),
                   np.asarray(a["extra"]) if "extra" in a else None,
                   np.asarray(a["inside_hist"], np.float64) if "inside_hist" in a else None)

    def empty(self) -> GraphPart:
        """This part's nodes without any edge."""
        assert self.extra is not None
        none = np.zeros(0, np.uint64)
        return replace(self, u=none, v=none, count=np.zeros(0), total=np.zeros(0), hist=np.zeros((0, self.hist.shape[1])),
                       extra=np.zeros((0, self.extra.shape[1])))

    def without_histograms(self) -> GraphPart:
        """This part without the histograms and further values (an agglomeration by mean
        boundary needs only counts and sums: 32 bytes per edge instead of 112)."""
        return replace(self, hist=np.zeros((self.u.size, 0)), extra=None, inside_hist=None)

    def without_pairs(self, drop_u: NDArray[np.uint64], drop_v: NDArray[np.uint64]) -> GraphPart:
        """This part without the edges ``(drop_u[i], drop_v[i])``."""
        if drop_u.size == 0 or self.u.size == 0:
            return self
        keys_u, iu = np.unique(np.concatenate([self.u, drop_u]), return_inverse=True)
        keys_v, iv = np.unique(np.concatenate([self.v, drop_v]), return_inverse=True)
        key = iu.astype(np.int64) * keys_v.size + iv
        keep = ~np.isin(key[: self.u.size], key[self.u.size :])
        assert self.extra is not None
        return replace(self, u=self.u[keep], v=self.v[keep], count=self.count[keep], total=self.total[keep],
                       hist=self.hist[keep], extra=self.extra[keep])


def pair_statistics(u: NDArray[Any], v: NDArray[Any], values: NDArray[np.float32],
                    further: NDArray[np.float32] | None = None) -> GraphPart:
    """The contacts (no nodes) of voxel pairs ``(u[i], v[i])`` valued ``values[i]``, with
    the further values ``further[i]``."""
    order, index, new = group_pairs(u, v)
    count, total, hist = grouped_statistics(index, int(new.sum()), values[order])
    extra = None if further is None else contact_sums(index, int(new.sum()), further[order])
    return GraphPart(np.zeros(0, np.uint64), np.zeros(0), np.zeros((0, 1)), u[order][new].astype(np.uint64),
                     v[order][new].astype(np.uint64), count, total, hist, extra)


def interior_graph(labels: NDArray[np.integer], predictions: NDArray[np.floating],
                   contacts: Contacts | None = None) -> GraphPart:
    """The :class:`GraphPart` of one subvolume's interior: its labels' sizes and inside sums,
    and the contacts between two of its labels (the voxel pairs inside it), keyed by the
    labels' own values. ``predictions`` and ``contacts`` as for :func:`edge_stats` (boundary first)."""
    dense, old = renumber(np.asarray(labels))
    stats = edge_stats(dense, predictions, contacts=contacts)
    present = stats.size[1:] > 0
    assert stats.inside_hist is not None
    return GraphPart(old[present], stats.size[1:][present], stats.inside[1:][present], old[stats.u - 1], old[stats.v - 1],
                     stats.count, stats.total, stats.hist, stats.extra, stats.inside_hist[1:][present])


def sum_graph(parts: list[GraphPart], n: int, channels: int = 1) -> EdgeStats:
    """The region graph of nodes 1..``n`` summed from parts whose labels are already global
    ids: sizes and inside sums add up per node, contacts per unordered pair (a part's
    edges between two labels that became one node are dropped). Parts without histograms
    (:meth:`GraphPart.without_histograms`) give a graph without them."""
    size = np.zeros(n + 1)
    inside = np.zeros((n + 1, channels))
    nodes = [p for p in parts if p.nodes.size]
    inside_hist = np.zeros((n + 1, min((p.inside_hist.shape[1] for p in nodes), default=0)))  # type: ignore[union-attr]
    for p in nodes:
        np.add.at(size, p.nodes.astype(np.int64), p.size)
        np.add.at(inside, p.nodes.astype(np.int64), p.inside)
        np.add.at(inside_hist, p.nodes.astype(np.int64), p.inside_hist[:, :inside_hist.shape[1]])  # type: ignore[index]
    edges = [p for p in parts if p.u.size]
    width = min((p.extra.shape[1] for p in parts if p.extra is not None), default=0)
    if not edges:
        none = np.zeros(0, np.int64)
        return EdgeStats(none, none, np.zeros(0), np.zeros(0), np.zeros((0, BINS)), size, inside, np.zeros((0, width)),
                         inside_hist)
    u = np.concatenate([p.u for p in edges]).astype(np.int64)
    v = np.concatenate([p.v for p in edges]).astype(np.int64)
    count = np.concatenate([p.count for p in edges])
    total = np.concatenate([p.total for p in edges])
    bins = min(p.hist.shape[1] for p in edges)  # 0 when the parts came without histograms
    # the histograms and the further values' sums and histograms add up alike: one matrix
    hist = np.concatenate([np.hstack([p.hist[:, :bins], p.extra[:, :width]]) for p in edges])  # type: ignore[index]
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    lo, hi, count, total, hist = lo[keep], hi[keep], count[keep], total[keep], hist[keep]
    order, index, new = group_pairs(lo, hi)
    lo, hi = lo[order], hi[order]
    m = int(new.sum())
    out_count = np.bincount(index, weights=count[order], minlength=m)
    out_total = np.bincount(index, weights=total[order], minlength=m)
    out_hist = np.zeros((m, hist.shape[1]))
    for b in range(hist.shape[1]):
        out_hist[:, b] = np.bincount(index, weights=hist[order, b], minlength=m)
    return EdgeStats(lo[new], hi[new], out_count, out_total, out_hist[:, :bins], size, inside, out_hist[:, bins:],
                     inside_hist)
