"""What a region graph's contacts carry beyond the boundary, for the learned agglomeration:
the mean of the two voxels of every further prediction channel (mitochondria, a network's
other outputs) and, where the predictions hold nearest-neighbour affinities, one minus the
affinity of the pair itself (the affinity a voxel pair was predicted to have, not one
derived from a boundary map).

Each such value is summed and histogrammed per contact exactly like the boundary, so it
pools when regions merge and adds up over the interiors and faces of a blocked run; the
features are its mean, quantiles and histogram along the contact. A graph made with a
:class:`Contacts` (even one carrying nothing further) also keeps each region's histogram of
every channel, for the learned agglomeration's region features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["BINS", "Contacts", "across", "contact_sums", "or_no_columns", "pair_mean"]

#: histogram bins of a value along a contact, over [0, 1]
BINS = 10

#: how a further value of a voxel pair is made: the mean of its two voxels, or the second
#: voxel's own value (an affinity with the neighbour before it, one minus it)
MEAN, SECOND = 0, 1


@dataclass(frozen=True)
class Contacts:
    """Which further values the contacts carry, in this order: the mean of the pair's two
    voxels for each of ``channels``, then, with ``affinities`` (the channels holding each
    voxel's affinity with its neighbour before it along Z, Y and X), one minus the pair's
    own affinity. Channel numbers are those of the predictions the graph is made from.

    >>> Contacts.of(5, affinities=(1, 2, 3)).names()
    ('channel4', 'affinity')
    """

    channels: tuple[int, ...] = ()
    affinities: tuple[int, int, int] | None = None

    @classmethod
    def of(cls, channels: int, affinities: Sequence[int] | None = None, boundary: int = 0) -> Contacts:
        """Every channel of ``channels`` but the boundary and the affinities, and the affinities."""
        taken = set(affinities or ()) | {boundary}
        for c in taken:
            if not 0 <= c < channels:
                raise ValueError(f"channel {c} is not one of the predictions' {channels} channel(s)")
        if affinities is not None and (len(affinities) != 3 or boundary in affinities):
            raise ValueError(f"the affinity channels {tuple(affinities)} must be three (along Z, Y and X), "
                             f"none of them the boundary channel {boundary}")
        rest = tuple(c for c in range(channels) if c not in taken)
        return cls(rest, None if affinities is None else tuple(int(a) for a in affinities))  # type: ignore[arg-type]

    @property
    def kinds(self) -> tuple[int, ...]:
        return (MEAN,) * len(self.channels) + ((SECOND,) if self.affinities is not None else ())

    def names(self) -> tuple[str, ...]:
        """A name per further value (the prefix of its features' names)."""
        return tuple(f"channel{c}" for c in self.channels) + (("affinity",) if self.affinities is not None else ())

    def values(self, predictions: NDArray[np.floating], where: NDArray[np.int64]) -> NDArray[np.float32]:
        """(pairs, values) for the voxel pairs at ``where`` (a pair's first voxel's flat index
        times 3 plus the axis of the second, as the region-graph kernel locates them) of
        (Z, Y, X, C) ``predictions``."""
        shape = predictions.shape[:3]
        step = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
        first, axis = where // 3, where % 3
        second = first + step[axis]
        flat = predictions.reshape(-1, predictions.shape[-1])
        out = np.empty((where.size, len(self.kinds)), np.float32)
        for k, c in enumerate(self.channels):
            out[:, k] = pair_mean(flat[first, c], flat[second, c])
        if self.affinities is not None:
            out[:, -1] = np.float32(1) - flat[second, np.asarray(self.affinities)[axis]]
        return out

    def planes(self, inside: NDArray[np.floating], axis: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The further values' planes of a box's first and last slice along ``axis``, (..., values)
        each, for the contacts across its faces (:meth:`across`): a channel's own values, and in
        the first slice one minus the affinity with the voxel before it (the neighbour's, across
        the face; the last slice's affinities look back inside the box, so they are NaN there)."""
        first = np.take(inside, 0, axis=axis)
        last = np.take(inside, -1, axis=axis)
        lo = np.empty(first.shape[:2] + (len(self.kinds),), np.float32)
        hi = np.empty_like(lo)
        for k, c in enumerate(self.channels):
            lo[..., k], hi[..., k] = first[..., c], last[..., c]
        if self.affinities is not None:
            lo[..., -1] = np.float32(1) - first[..., self.affinities[axis]]
            hi[..., -1] = np.nan
        return lo, hi


def across(kinds: Sequence[int], lower: NDArray[np.float32], upper: NDArray[np.float32]) -> NDArray[np.float32]:
    """The further values of voxel pairs across a face: ``lower`` rows from the lower box's
    last plane and ``upper`` from the upper box's first (:meth:`Contacts.planes`), as inside
    a volume."""
    out = np.empty(lower.shape, np.float32)
    for k, kind in enumerate(kinds):
        out[:, k] = pair_mean(lower[:, k], upper[:, k]) if kind == MEAN else upper[:, k]
    return out


def pair_mean(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float32]:
    """The mean of two voxels' values, rounded as the region-graph kernel rounds the boundary's."""
    return (np.asarray(a, np.float32) + np.asarray(b, np.float32)) * np.float32(0.5)


def contact_sums(index: NDArray[np.int64], n: int, values: NDArray[np.float32]) -> NDArray[np.float64]:
    """(n, values x (1 + BINS)): per contact and value, its sum and histogram over the voxel
    pairs, pair ``i`` belonging to contact ``index[i]``."""
    out = np.zeros((n, values.shape[1] * (1 + BINS)))
    for k in range(values.shape[1]):
        column = values[:, k]
        out[:, k * (1 + BINS)] = np.bincount(index, weights=column, minlength=n)
        bins = np.clip((column * BINS).astype(np.int64), 0, BINS - 1)
        out[:, k * (1 + BINS) + 1:(k + 1) * (1 + BINS)] = np.bincount(
            index * BINS + bins, minlength=n * BINS).reshape(n, BINS)
    return out


def or_no_columns(array: NDArray[np.float64] | None, rows: int) -> NDArray[np.float64]:
    """``array``, or where there is none, ``rows`` rows of no columns (a graph without
    further values or histograms)."""
    return np.zeros((rows, 0)) if array is None else array
