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

from collections.abc import Callable
from typing import Annotated

import numpy as np
from numpy.typing import NDArray

from ..contacts import Contacts
from ..hookspecs import Channel, Range, stage_function
from .channels import boundary_of

__all__ = ["contact_affinities", "given_affinities", "learned_contacts", "parse_affinities", "affinities_from_boundary",
           "affinity_agglomeration", "mutex_watershed", "neighbourhood", "with_affinities"]


def neighbourhood(long_range: int = 9, long_range_z: int = 3) -> list[list[int]]:
    """The nearest-neighbour offsets (z, y, x) and, with ``long_range`` > 0, long-range ones
    (``long_range_z`` along Z, ``long_range`` along Y and X).

    >>> neighbourhood(4, 2)
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0], [0, 4, 0], [0, 0, 4]]
    >>> neighbourhood(0)
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


def parse_affinities(channels: str, offsets: str) -> list[tuple[int, list[int]]]:
    """``affinity_channels`` ("3,4,5") and ``affinity_offsets`` ("-1,0,0;0,-1,0;0,0,-1") as
    ``(channel, offset)`` pairs; one line for what is wrong.

    >>> parse_affinities("1,2", "1,0,0; 0,0,-3")
    [(1, [1, 0, 0]), (2, [0, 0, -3])]
    """
    try:
        indices = [int(c) for c in channels.split(",") if c.strip()]
        steps = [[int(v) for v in o.split(",")] for o in offsets.split(";") if o.strip()]
    except ValueError:
        raise ValueError(f"`affinity_channels` {channels!r} and `affinity_offsets` {offsets!r}: write channels as "
                         "\"1,2,3\" and offsets as \"-1,0,0;0,-1,0;0,0,-1\"") from None
    if len(indices) != len(steps) or any(len(o) != 3 or sum(v != 0 for v in o) != 1 for o in steps) or min(indices) < 0:
        raise ValueError(f"`affinity_offsets` {offsets!r} must give one offset along one axis (z,y,x) for each of the "
                         f"`affinity_channels` {channels!r}")
    return list(zip(indices, steps))


def _declared_affinities(**parameters: object) -> dict[str, object]:
    """What the stage reads: the boundary channel, or the affinity channels it is given."""
    channels = str(parameters.get("affinity_channels") or "")
    if not channels:
        return {}
    pairs = parse_affinities(channels, str(parameters.get("affinity_offsets") or ""))
    return {"reads": tuple(Channel("affinity", i, tuple(o)) for i, o in pairs)}


def with_affinities(reads: tuple[Channel, ...]) -> Callable[..., dict[str, object]]:
    """A stage's ``declare``: it reads ``reads`` and also any affinity channels it is given."""

    def declare(**parameters: object) -> dict[str, object]:
        given = _declared_affinities(**parameters).get("reads", ())
        return {"reads": reads + given} if given else {}  # type: ignore[operator]

    return declare


def contact_affinities(channels: str, offsets: str) -> tuple[int, int, int] | None:
    """The channels of the nearest-neighbour affinities with offsets -1 along Z, Y and X
    among ``affinity_channels`` / ``affinity_offsets`` (None when none are given): the
    pairs' own affinities a learned agglomeration's contacts carry.

    >>> contact_affinities("3,1,2", "0,0,-1;-1,0,0;0,-1,0")
    (1, 2, 3)
    """
    if not channels:
        return None
    found = {tuple(o): c for c, o in parse_affinities(channels, offsets)}
    axes = [found.get(tuple(-1 if a == axis else 0 for a in range(3))) for axis in range(3)]
    if any(c is None for c in axes):
        raise ValueError(f"`affinity_offsets` {offsets!r}: the learned agglomeration's features need the nearest-"
                         "neighbour affinities with offsets -1,0,0;0,-1,0;0,0,-1 (each voxel with the one before it)")
    return tuple(axes)  # type: ignore[return-value]


def learned_contacts(channels: int, affinity_channels: str = "", affinity_offsets: str = "", **_: object) -> Contacts:
    """What a learned agglomeration's contacts carry beside the boundary: every further
    prediction channel, and the pairs' own affinities where the predictions hold them."""
    return Contacts.of(channels, contact_affinities(affinity_channels, affinity_offsets))


def given_affinities(predictions: NDArray[np.floating], pairs: list[tuple[int, list[int]]]) -> tuple[NDArray[np.float32], list[list[int]]]:
    """The (C, Z, Y, X) affinity channels of ``predictions`` as :func:`affinities_from_boundary`
    makes them (channel ``k`` joins ``x`` and ``x + offset``, offsets positive): a channel
    given for a negative offset is moved by that offset (0 where it has no neighbour)."""
    if predictions.ndim != 4 or max(i for i, _ in pairs) >= predictions.shape[-1]:
        raise ValueError(f"affinity channels {[i for i, _ in pairs]} are not all channels of predictions with shape "
                         f"{predictions.shape}")
    out = np.zeros((len(pairs),) + predictions.shape[:3], np.float32)
    offsets = []
    for k, (index, offset) in enumerate(pairs):
        values = predictions[..., index]
        axis = next(a for a, v in enumerate(offset) if v)
        step = offset[axis]
        if step > 0:
            out[k] = values
        else:  # the affinity of x and x - d is the one of (x - d) and (x - d) + d
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis], tail[axis] = slice(0, values.shape[axis] + step), slice(-step, None)
            out[k][tuple(head)] = values[tuple(tail)]
        positive = [0, 0, 0]
        positive[axis] = abs(step)
        offsets.append(positive)
    return out, offsets


@stage_function(reads=(Channel("boundary", "boundary_channel"),), bytes_per_voxel=80, declare=_declared_affinities)
def mutex_watershed(
    predictions: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bias: Annotated[float, Range(0, 1)] = 0.5,
    long_range: Annotated[int, Range(0, None)] = 9,
    long_range_z: Annotated[int, Range(1, None)] = 3,
    stride: Annotated[int, Range(1, None)] = 3,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    affinity_channels: str = "",
    affinity_offsets: str = "",
) -> NDArray[np.uint64]:
    """Supervoxels by the mutex watershed (``mwatershed``; ``pip install labelstitch[affinities]``)
    over affinities made from the boundary channel: nearest-neighbour and long-range
    (``long_range`` in Y and X, ``long_range_z`` in Z; every ``stride``-th long-range edge in
    Y and X). An edge attracts when its affinity is above ``bias`` and repels below it.
    Voxels the mutex watershed leaves alone (on membranes it labels nothing) are then
    flooded from its segments over the boundary, so no unmasked voxel stays unlabelled.
    With ``affinity_channels`` ("3,4,5") and their ``affinity_offsets``
    ("-1,0,0;0,-1,0;0,0,-1"; a channel joins each voxel and the one at its offset), it reads
    a network's affinities instead (flooding over one minus the mean of the nearest ones)."""
    try:
        import mwatershed
    except ImportError:
        raise ImportError("mutex_watershed needs the mwatershed package: pip install 'labelstitch[affinities]'") from None
    from ..watershed import watershed

    if affinity_channels:
        given, offsets = given_affinities(predictions, parse_affinities(affinity_channels, affinity_offsets))
        near = [k for k, o in enumerate(offsets) if sum(o) == 1]
        boundary = 1.0 - (given[near].mean(axis=0) if near else given.mean(axis=0))
        affinities = given.astype(np.float64) - bias
    else:
        boundary = boundary_of(predictions, boundary_channel)
        offsets = neighbourhood(long_range, long_range_z)
        affinities = affinities_from_boundary(boundary, offsets).astype(np.float64) - bias
    affinities[:, mask] = -1.0  # masked voxels join nothing
    strides = [[1, 1, 1] if sum(o) == 1 else [1, stride, stride] for o in offsets]
    fragments = np.asarray(mwatershed.agglom(affinities, offsets, strides=strides)).astype(np.uint64)
    fragments[mask] = 0
    return watershed(np.ascontiguousarray(boundary, np.float32), fragments, mask=~mask).astype(np.uint64)


#: the quantiles of a contact's affinities ``affinity_agglomeration`` can score by
QUANTILES = (10, 25, 50, 75, 90)


def _given_pairs(labels: NDArray[np.uint32], given: NDArray[np.float32], offsets: list[list[int]]) -> tuple[NDArray[np.uint64], NDArray[np.float32]]:
    """Voxel pairs of two different regions across each nearest-neighbour affinity channel,
    as the keys of :func:`~labelstitch.agglomeration.stats_of_pairs`, valued ``1 - affinity``."""
    lab = np.asarray(labels).astype(np.uint64, copy=False)
    us, vs, values = [], [], []
    for k, offset in enumerate(offsets):
        if sum(offset) != 1:
            continue  # long-range channels do not describe contacts
        axis = offset.index(1)
        head = [slice(None)] * 3
        tail = [slice(None)] * 3
        head[axis], tail[axis] = slice(0, -1), slice(1, None)
        a, b = lab[tuple(head)], lab[tuple(tail)]
        cross = (a != b) & (a > 0) & (b > 0)
        us.append(np.minimum(a[cross], b[cross]))
        vs.append(np.maximum(a[cross], b[cross]))
        values.append(1.0 - given[k][tuple(head)][cross])
    if not us:
        raise ValueError("affinity_agglomeration needs nearest-neighbour affinity channels (offsets of length 1)")
    return (np.concatenate(us) << np.uint64(32)) | np.concatenate(vs), np.concatenate(values).astype(np.float32)


@stage_function(reads=(Channel("boundary", "boundary_channel"),), declare=_declared_affinities)
def affinity_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    threshold: Annotated[float, Range(0, 1)] = 0.5,
    quantile: Annotated[int, Range(0, 90)] = 0,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    affinity_channels: str = "",
    affinity_offsets: str = "",
) -> NDArray[np.uint32]:
    """Agglomerate supervoxels by the affinities along their contacts, as waterz does: the
    contact with the lowest score merges first while its score is below ``threshold``,
    where the score is one minus the mean affinity along it (``quantile`` 0, waterz's
    ``OneMinus<MeanAffinity>``) or one minus that quantile of them (10, 25, 50, 75 or 90:
    ``OneMinus<QuantileAffinity>``, from a 10-bin histogram); merged contacts pool. The
    affinities are the nearest-neighbour ones made from the boundary channel, or a
    network's, read from ``affinity_channels`` with their ``affinity_offsets`` (as in
    :func:`mutex_watershed`)."""
    from ..agglomeration import agglomerate_graph, edge_stats, feature_names, stats_of_pairs
    from ..rag import merge_by_mean_boundary, numbered_roots, region_graph, renumber

    if quantile and quantile not in QUANTILES:
        raise ValueError(f"`quantile` must be 0 (the mean) or one of {QUANTILES}, got {quantile}")
    labels, _ = renumber(supervoxels)
    n = int(labels.max()) if labels.size else 0
    if affinity_channels:
        given, offsets = given_affinities(predictions, parse_affinities(affinity_channels, affinity_offsets))
        keys, values = _given_pairs(labels, given, offsets)
        stats = stats_of_pairs(labels, (1.0 - given.mean(axis=0))[..., None], keys, values)
    else:
        boundary = boundary_of(predictions, boundary_channel)
        stats = None
    if not quantile:  # sums are enough: the numba merging of rag_agglomeration
        if stats is None:
            graph = region_graph(labels, boundary, largest=True)
            roots = merge_by_mean_boundary(graph.u, graph.v, graph.count, graph.boundary_sum, n, threshold)
        else:
            roots = merge_by_mean_boundary(stats.u, stats.v, stats.count, stats.total, n, threshold)  # type: ignore[attr-defined]
    else:  # the q-th percent quantile of the affinities is the (100 - q)-th of 1 - affinity
        if stats is None:
            stats = edge_stats(labels, boundary, largest=True)
        column = feature_names(1).index(f"q{100 - quantile}")
        roots = agglomerate_graph(stats, lambda f: 1.0 - f[:, column], 1.0 - threshold)  # type: ignore[arg-type]
    return numbered_roots(roots, np.uint32)[labels]
