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

__all__ = ["affinities_from_boundary", "affinity_offsets", "mutex_watershed"]


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
