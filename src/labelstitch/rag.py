"""Region adjacency graphs of label volumes and mean-boundary agglomeration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._kernels.rag import boundary_pairs, merge_mean_boundary
from ._validation import as_labels
from .relabel import remap
from .resolve import resolve

__all__ = ["RegionGraph", "region_graph", "merge_small_segments", "agglomerate_mean_boundary", "merge_by_mean_boundary", "numbered_roots", "renumber",
           "roots_of"]


def renumber(labels: NDArray[np.integer]) -> tuple[NDArray[np.uint32], NDArray[np.uint64]]:
    """Labels renumbered 1..K in sorted order of the old ids (0 stays 0), and the old ids.

    ``old_ids[k - 1]`` is the old id of new label k. Labels that are small non-negative
    integers (at most twice the voxel count, as a stage's supervoxels are) are renumbered
    through a table in linear time; others by sorting.

    >>> new, old = renumber(np.array([[[7, 0, 3, 7]]]))
    >>> new.tolist(), old.tolist()
    ([[[2, 0, 1, 2]]], [3, 7])
    """
    arr = np.asarray(labels)
    if arr.size and np.issubdtype(arr.dtype, np.integer):
        low, high = int(arr.min()), int(arr.max())
        if low >= 0 and high <= 2 * arr.size + 16:
            present = np.bincount(arr.reshape(-1), minlength=high + 1) > 0
            present[0] = False
            table = np.cumsum(present).astype(np.uint32)
            table[0] = 0
            return table[arr], np.flatnonzero(present).astype(np.uint64)
    old = np.unique(labels)
    old = old[old != 0].astype(np.uint64)
    new = np.arange(1, old.size + 1, dtype=np.uint64)
    return remap(labels, (old, new), dtype=np.uint32), old


@dataclass(frozen=True)
class RegionGraph:
    """Edges between touching regions: ``u < v``, contact voxel pairs and boundary sums."""

    u: NDArray[np.uint64]
    v: NDArray[np.uint64]
    count: NDArray[np.int64]
    boundary_sum: NDArray[np.float64]

    @property
    def mean_boundary(self) -> NDArray[np.float64]:
        return self.boundary_sum / self.count


def region_graph(labels: NDArray[np.integer], boundary: NDArray[np.floating], *, largest: bool = False) -> RegionGraph:
    """The region adjacency graph of a 3-D label volume (labels below 2**32).

    Each edge counts the 6-neighbour voxel pairs across the two regions' contact and sums
    the mean boundary probability of each pair (with ``largest``, the larger of the two:
    one minus the pair's affinity).
    """
    lab = np.ascontiguousarray(as_labels(labels, "labels"))
    if lab.size and int(lab.max()) >= 2**32:
        raise ValueError("`labels` must be below 2**32 for region_graph; renumber them first")
    keys, values, _ = boundary_pairs(lab, np.ascontiguousarray(boundary, dtype=np.float32), largest)
    if keys.size == 0:
        empty = np.zeros(0, np.uint64)
        return RegionGraph(empty, empty, np.zeros(0, np.int64), np.zeros(0))
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    head = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    count = np.diff(np.append(head, keys.size)).astype(np.int64)
    sums = np.add.reduceat(values[order].astype(np.float64), head)
    edge_keys = keys[head]
    return RegionGraph(edge_keys >> np.uint64(32), edge_keys & np.uint64(0xFFFFFFFF), count, sums)


def merge_small_segments(labels: NDArray[np.integer], min_size: int, boundary: NDArray[np.floating]) -> NDArray[np.integer]:
    """Merge every segment smaller than ``min_size`` voxels into the neighbour it shares the
    longest contact with (segments with no neighbour are kept)."""
    if min_size <= 1:
        return labels
    lab, old = renumber(labels)
    sizes = np.bincount(lab.ravel(), minlength=old.size + 1)
    graph = region_graph(lab, boundary)
    if graph.u.size == 0:
        return labels
    ends = np.concatenate([graph.u, graph.v]).astype(np.int64)
    others = np.concatenate([graph.v, graph.u]).astype(np.int64)
    contact = np.concatenate([graph.count, graph.count])
    small = sizes[ends] < min_size
    ends, others, contact = ends[small], others[small], contact[small]
    if ends.size == 0:
        return labels
    order = np.lexsort((-contact, ends))
    first = np.concatenate([[True], ends[order][1:] != ends[order][:-1]])
    src, dst = ends[order][first], others[order][first]
    zeros = np.zeros(src.size, np.uint64)
    everyone = np.arange(1, old.size + 1, dtype=np.uint64)
    mapping = resolve(zeros, src, zeros, dst, nodes=(np.zeros(old.size, np.uint64), everyone))
    return remap(lab, (mapping.label, mapping.body), dtype=np.uint32)


def agglomerate_mean_boundary(
    labels: NDArray[np.integer], boundary: NDArray[np.floating], threshold: float
) -> NDArray[np.uint32]:
    """Greedy hierarchical merging of touching regions by mean boundary probability.

    Repeatedly merges the pair of touching regions whose contact has the lowest mean
    boundary probability, as long as that mean is below ``threshold``; merged regions'
    contacts are pooled (sum and count), as in NeuroProof's mean agglomeration without a
    classifier. Returns labels 1..K (0 stays 0).
    """
    lab, _ = renumber(labels)
    graph = region_graph(lab, boundary)
    n = int(lab.max()) if lab.size else 0
    roots = merge_by_mean_boundary(graph.u, graph.v, graph.count, graph.boundary_sum, n, threshold)
    return numbered_roots(roots, np.uint32)[lab]


def roots_of(parent: NDArray[np.integer]) -> NDArray[np.int64]:
    """The root of every node of a forest given by ``parent`` (roots are their own parent).

    >>> roots_of(np.array([0, 0, 1, 3, 3, 2])).tolist()
    [0, 0, 0, 3, 3, 0]
    """
    roots = np.asarray(parent, np.int64)
    while True:  # pointer jumping: each pass halves every remaining path
        up = roots[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def numbered_roots(roots: NDArray[np.integer], dtype: Any = np.uint64) -> NDArray[Any]:
    """A table from node (0..K) to its body: 0 stays 0, and the distinct roots of nodes 1..K
    are numbered 1, 2, ... in their order (``table[labels]`` relabels a volume).

    >>> numbered_roots(np.array([0, 5, 5, 2, 5, 2])).tolist()
    [0, 2, 2, 1, 2, 1]
    """
    _, dense = np.unique(np.asarray(roots)[1:], return_inverse=True)
    return np.concatenate([[0], dense.reshape(-1) + 1]).astype(dtype)


def merge_by_mean_boundary(
    u: NDArray[np.integer], v: NDArray[np.integer], count: NDArray[np.number], boundary_sum: NDArray[np.floating],
    n: int, threshold: float,
) -> NDArray[np.int64]:
    """The merging of :func:`agglomerate_mean_boundary` on a region graph of nodes 1..``n``
    (edges ``u < v`` with their contact count and boundary sum): the root of every node
    0..n. A numba kernel on flat arrays, so a whole volume's graph (agglomeration across
    blocks) costs about 100 bytes per edge and merges millions of nodes a minute."""
    parent = merge_mean_boundary(
        np.ascontiguousarray(u, np.int64), np.ascontiguousarray(v, np.int64), np.ascontiguousarray(count, np.float64),
        np.ascontiguousarray(boundary_sum, np.float64), int(n), float(threshold),
    )
    return roots_of(parent)
