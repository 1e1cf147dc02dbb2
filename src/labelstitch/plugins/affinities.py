"""Affinities: the ``mutex_watershed`` supervoxel stage, and affinities made from a boundary
map so that the affinity path runs without a network.

An affinity says how likely a voxel and its neighbour at an offset belong to one neuron.
Made from a boundary probability ``b``, the affinity of ``x`` and ``x + offset`` is one
minus the largest ``b`` on the straight path between them (both ends included): a membrane
anywhere between two voxels keeps them apart, however far the offset reaches. The mutex
watershed (Wolf et al. 2018, the ``mwatershed`` package) then partitions the voxels by
attractive nearest-neighbour edges and repulsive long-range ones, without seeds.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from numpy.typing import NDArray

from ..hookspecs import Channel, Range, stage_function

__all__ = ["affinities_from_boundary", "affinity_agglomeration", "affinity_edge_stats", "affinity_offsets", "mutex_watershed"]


def affinity_offsets(long_range: int = 9, long_range_z: int = 3) -> list[list[int]]:
    """The nearest-neighbour offsets (z, y, x) and, with ``long_range`` > 0, long-range ones
    (``long_range_z`` along Z, ``long_range`` along Y and X).

    >>> affinity_offsets(4, 2)
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0], [0, 4, 0], [0, 0, 4]]
    >>> affinity_offsets(0)
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    near = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    if long_range <= 0:
        return near
    return near + [[max(1, long_range_z), 0, 0], [0, long_range, 0], [0, 0, long_range]]


def affinities_from_boundary(boundary: NDArray[np.floating], offsets: list[list[int]]) -> NDArray[np.float32]:
    """(C, Z, Y, X) affinities of every voxel with its neighbour at each axis-aligned offset:
    one minus the largest boundary probability on the path between them; 0 where the
    neighbour lies outside the box.

    >>> b = np.array([[[0.1, 0.9, 0.1, 0.2]]], np.float32)
    >>> affinities_from_boundary(b, [[0, 0, 1], [0, 0, 2]]).astype(float).round(2).tolist()
    [[[[0.1, 0.1, 0.8, 0.0]]], [[[0.1, 0.1, 0.0, 0.0]]]]
    """
    b = np.asarray(boundary, np.float32)
    out = np.zeros((len(offsets),) + b.shape, np.float32)
    for k, offset in enumerate(offsets):
        axes = [i for i, o in enumerate(offset) if o]
        if len(axes) != 1 or offset[axes[0]] < 0:
            raise ValueError(f"offsets must be positive and along one axis, got {offset}")
        axis, distance = axes[0], offset[axes[0]]
        if distance >= b.shape[axis]:
            continue
        path = b.copy()  # the largest b over x .. x + distance, for x whose neighbour is inside
        for step in range(1, distance + 1):
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis] = slice(0, b.shape[axis] - step)
            tail[axis] = slice(step, None)
            np.maximum(path[tuple(head)], b[tuple(tail)], out=path[tuple(head)])
        inside = [slice(None)] * 3
        inside[axis] = slice(0, b.shape[axis] - distance)
        out[k][tuple(inside)] = 1.0 - path[tuple(inside)]
    return out


@stage_function(reads=(Channel("boundary", "boundary_channel"),), bytes_per_voxel=80)
def mutex_watershed(
    predictions: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bias: Annotated[float, Range(0, 1)] = 0.5,
    long_range: Annotated[int, Range(0, None)] = 9,
    long_range_z: Annotated[int, Range(1, None)] = 3,
    stride: Annotated[int, Range(1, None)] = 3,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
) -> NDArray[np.uint64]:
    """Supervoxels by the mutex watershed (``mwatershed``; ``pip install labelstitch[affinities]``)
    over affinities made from the boundary channel: nearest-neighbour and long-range
    (``long_range`` in Y and X, ``long_range_z`` in Z; every ``stride``-th long-range edge in
    Y and X). An edge attracts when its affinity is above ``bias`` and repels below it.
    Voxels the mutex watershed leaves alone (on membranes it labels nothing) are then
    flooded from its segments over the boundary, so no unmasked voxel stays unlabelled."""
    try:
        import mwatershed
    except ImportError:
        raise ImportError("mutex_watershed needs the mwatershed package: pip install 'labelstitch[affinities]'") from None
    from ..watershed import watershed

    if predictions.ndim == 4:
        if not 0 <= boundary_channel < predictions.shape[-1]:
            raise ValueError(f"`boundary_channel` {boundary_channel} is not a channel of predictions with shape {predictions.shape}")
        boundary = np.ascontiguousarray(predictions[..., boundary_channel], np.float32)
    else:
        boundary = np.ascontiguousarray(predictions, np.float32)
    offsets = affinity_offsets(long_range, long_range_z)
    affinities = affinities_from_boundary(boundary, offsets).astype(np.float64) - bias
    affinities[:, mask] = -1.0  # masked voxels join nothing
    strides = [[1, 1, 1]] * 3 + [[1, stride, stride]] * (len(offsets) - 3)
    fragments = np.asarray(mwatershed.agglom(affinities, offsets, strides=strides)).astype(np.uint64)
    fragments[mask] = 0
    return watershed(boundary, fragments, mask=~mask).astype(np.uint64)


#: the quantiles of a contact's affinities ``affinity_agglomeration`` can score by
QUANTILES = (10, 25, 50, 75, 90)


def affinity_edge_stats(labels: NDArray[np.integer], boundary: NDArray[np.floating]) -> object:
    """The region graph of ``labels`` (1..K, below 2**32) valued by nearest-neighbour
    affinities: each 6-neighbour voxel pair of two different regions contributes
    ``1 - affinity``, the larger of its two voxels' boundary probabilities (waterz's scores
    are of ``1 - affinity`` too), to its contact's count, sum and 10-bin histogram."""
    from .._kernels.rag import boundary_pairs
    from ..agglomeration import EdgeStats, _pair_statistics

    lab = np.ascontiguousarray(labels).astype(np.uint32, copy=False)
    b = np.ascontiguousarray(boundary, np.float32)
    k = int(lab.max()) if lab.size else 0
    size = np.bincount(lab.reshape(-1), minlength=k + 1).astype(np.float64)
    inside = np.bincount(lab.reshape(-1), weights=b.reshape(-1), minlength=k + 1)[:, None]
    keys, values = boundary_pairs(lab, b, True)
    edges, index = np.unique(keys, return_inverse=True)
    count, total, hist = _pair_statistics(index.reshape(-1), edges.size, values)
    u = (edges >> np.uint64(32)).astype(np.int64)
    v = (edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return EdgeStats(u, v, count, total, hist, size, inside)


@stage_function(reads=(Channel("boundary", "boundary_channel"),))
def affinity_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    threshold: Annotated[float, Range(0, 1)] = 0.5,
    quantile: Annotated[int, Range(0, 90)] = 0,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
) -> NDArray[np.uint32]:
    """Agglomerate supervoxels by the affinities along their contacts, as waterz does: the
    contact with the lowest score merges first while its score is below ``threshold``,
    where the score is one minus the mean affinity along it (``quantile`` 0, waterz's
    ``OneMinus<MeanAffinity>``) or one minus that quantile of them (10, 25, 50, 75 or 90:
    ``OneMinus<QuantileAffinity>``, from a 10-bin histogram); merged contacts pool. The
    affinities are the nearest-neighbour ones made from the boundary channel."""
    from ..agglomeration import agglomerate_graph, feature_names
    from ..rag import merge_by_mean_boundary, numbered_roots, region_graph, renumber

    if quantile and quantile not in QUANTILES:
        raise ValueError(f"`quantile` must be 0 (the mean) or one of {QUANTILES}, got {quantile}")
    if predictions.ndim == 4:
        if not 0 <= boundary_channel < predictions.shape[-1]:
            raise ValueError(f"`boundary_channel` {boundary_channel} is not a channel of predictions with shape {predictions.shape}")
        boundary = predictions[..., boundary_channel]
    else:
        boundary = predictions
    labels, _ = renumber(supervoxels)
    if not quantile:  # sums are enough: the numba merging of rag_agglomeration, on larger pair values
        graph = region_graph(labels, boundary, largest=True)
        n = int(labels.max()) if labels.size else 0
        roots = merge_by_mean_boundary(graph.u, graph.v, graph.count, graph.boundary_sum, n, threshold)
    else:  # the q-th percent quantile of the affinities is the (100 - q)-th of 1 - affinity
        stats = affinity_edge_stats(labels, boundary)
        column = feature_names(1).index(f"q{100 - quantile}")
        roots = agglomerate_graph(stats, lambda f: 1.0 - f[:, column], 1.0 - threshold)  # type: ignore[arg-type]
    return numbered_roots(roots, np.uint32)[labels]
