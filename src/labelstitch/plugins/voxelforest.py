"""The voxel classifier, lean: the same probabilities as scikit-image's features and
scikit-learn's ``predict_proba``, without the full feature stack of the box.

The Gaussian smoothings of the whole box are kept (one float32 volume per scale); the
features that need only a voxel's neighbours (Sobel edges, Hessian eigenvalues) are made
slab by slab along Z, with the two slices of margin they reach, and each slab goes straight
into a forest compiled with numba over flat tree arrays. Every feature is what
:func:`~labelstitch.plugins.classifier.reference_probabilities` computes with scikit-image
and SciPy, on the same values, to the bit: the Gaussians and gradients are the same calls;
the Sobel edges are a kernel of ours that adds ndimage's taps in ndimage's order (tested
bit for bit against ``skimage.filters.sobel``); the Hessian eigenvalues come from a closed
form instead of LAPACK, and where a float32 rounding boundary lies within the error bound
of the two, LAPACK gives them (about one voxel in a thousand).
Training reads its features through the same code (:func:`features_at`).

A classifier may also hold a forest of *affinities* (:func:`predict_with_affinities`): for
two neighbouring voxels, the mean and the absolute difference of their features (the same
whichever comes first) and the axis as three indicator columns; one forest for the three
axes. It answers the probability that the two voxels lie in one body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._kernels.voxelforest import FEATURE_BITS, NODE, forest_probabilities, hessian_eigenvalues, sobel_magnitude

__all__ = ["AFFINITY_OFFSETS", "ContextFeatures", "FilterFeatures", "FlatForest", "class_columns", "features_at", "pair_rows",
           "predict_slabs", "predict_with_affinities"]

#: voxels per slab of features (with four scales, about 85 MB of working arrays, measured)
SLAB_VOXELS = 1 << 19
#: slices a slab's features reach beyond it: Sobel one, the Hessian's two gradients two
_MARGIN = 2
#: Gaussian smoothings of the first stage's answer that the second stage sees
CONTEXT_SIGMAS = (1.0, 2.0, 4.0)
_PAIRS = list(combinations_with_replacement(range(3), 2))  # the Hessian's upper triangle, as scikit-image orders it
#: the affinity channels' offsets: channel ``a`` at a voxel joins it with its neighbour
#: before it along axis ``a`` (0 where that neighbour lies outside the box)
AFFINITY_OFFSETS = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))


def scales(sigmas: Sequence[float]) -> NDArray[np.float64]:
    """The scales scikit-image's ``multiscale_basic_features`` uses for ``sigmas``: only the
    first, the last and their number count (log-spaced between)."""
    return np.logspace(np.log2(sigmas[0]), np.log2(sigmas[-1]), num=len(sigmas), base=2, endpoint=True)


def as_image(grayscale: NDArray[Any]) -> NDArray[np.float32]:
    """Grayscale as float32, integers scaled to 0..1."""
    image = grayscale.astype(np.float32)
    if np.issubdtype(grayscale.dtype, np.integer):
        image /= float(np.iinfo(grayscale.dtype).max)
    return np.ascontiguousarray(image)


def _slabs(z_range: tuple[int, int], plane: int) -> Iterator[tuple[int, int]]:
    thick = max(8, SLAB_VOXELS // max(plane, 1))
    for z0 in range(z_range[0], z_range[1], thick):
        yield z0, min(z0 + thick, z_range[1])


def _lapack_eigenvalues(entries: list[NDArray[np.float32]], rows: NDArray[np.intp]) -> NDArray[np.float32]:
    """Eigenvalues at ``rows``, largest first, the way scikit-image computes them (numpy's
    ``eigvalsh`` of the float32 matrices)."""
    matrices = np.zeros((rows.size, 3, 3), np.float32)
    for (r, c), entry in zip(_PAIRS, entries):
        matrices[:, r, c] = matrices[:, c, r] = entry[rows]
    return np.linalg.eigvalsh(matrices)[:, ::-1]


class FilterFeatures:
    """Intensity, Sobel edge and Hessian eigenvalues at each scale, as scikit-image's
    ``multiscale_basic_features`` orders them, slab by slab (:meth:`slab`)."""

    def __init__(self, grayscale: NDArray[Any], sigmas: Sequence[float]) -> None:
        from skimage import filters

        image = as_image(grayscale)
        self.shape = image.shape
        self.smoothed = [filters.gaussian(image, sigma=s, preserve_range=False) for s in scales(sigmas)]

    @property
    def columns(self) -> int:
        return 5 * len(self.smoothed)

    def slab(self, z0: int, z1: int, width: int | None = None, exact: NDArray[np.intp] | None = None) -> NDArray[np.float32]:
        """The features of slices ``z0:z1``, a row per voxel, in the first columns of
        ``width`` (default: just these). Eigenvalues come from the closed form, and from
        LAPACK where the closed form may round otherwise and at the rows ``exact``."""
        depth = self.shape[0]
        lo, hi = max(z0 - _MARGIN, 0), min(z1 + _MARGIN, depth)
        crop = slice(z0 - lo, z0 - lo + (z1 - z0))
        n = (z1 - z0) * self.shape[1] * self.shape[2]
        x = np.empty((n, width or self.columns), np.float32)
        edges = np.empty((z1 - z0, *self.shape[1:]), np.float32)
        for k, smooth in enumerate(self.smoothed):
            part = smooth[lo:hi]
            x[:, 5 * k] = smooth[z0:z1].ravel()
            # one voxel of margin, the edge voxel repeated where the volume ends (ndimage's "reflect")
            around = smooth[max(z0 - 1, 0):min(z1 + 1, depth)]
            sobel_magnitude(np.pad(around, ((int(z0 == 0), int(z1 == depth)), (1, 1), (1, 1)), mode="symmetric"), edges)
            x[:, 5 * k + 1] = edges.ravel()
            gradient = np.gradient(part)
            entries = [np.ascontiguousarray(np.gradient(gradient[a], axis=b)[crop]).ravel() for a, b in _PAIRS]
            del gradient
            uncertain = np.zeros(n, bool)
            hessian_eigenvalues(*entries, x, 5 * k + 2, uncertain)
            if exact is not None:
                uncertain[exact] = True
            rows = np.flatnonzero(uncertain)
            if rows.size:
                x[rows, 5 * k + 2:5 * k + 5] = _lapack_eigenvalues(entries, rows)
        return x


class ContextFeatures:
    """The second stage's view of the first stage's answer: each channel's probability,
    its Gaussian smoothings and their gradient magnitudes, over the whole box."""

    def __init__(self, probability: NDArray[np.float32]) -> None:
        from scipy import ndimage

        self.volumes: list[NDArray[np.float32]] = []
        for channel in (probability[..., None] if probability.ndim == 3 else probability).transpose(3, 0, 1, 2):
            self.volumes.append(channel)
            for sigma in CONTEXT_SIGMAS:
                self.volumes.append(ndimage.gaussian_filter(channel, sigma))
                self.volumes.append(ndimage.gaussian_gradient_magnitude(channel, sigma))

    @property
    def columns(self) -> int:
        return len(self.volumes)

    def fill(self, x: NDArray[np.float32], first: int, z0: int, z1: int) -> None:
        """Slices ``z0:z1`` into ``x[:, first:]``."""
        for j, volume in enumerate(self.volumes):
            x[:, first + j] = volume[z0:z1].ravel()

    def at(self, rows: NDArray[np.intp]) -> NDArray[np.float32]:
        return np.stack([v.ravel()[rows] for v in self.volumes], axis=-1).astype(np.float32, copy=False)


def class_columns(forest: Any, classes: Sequence[int]) -> list[int]:
    """Where each of ``classes`` stands among a scikit-learn forest's ``classes_``."""
    return [int(np.flatnonzero(forest.classes_ == c)[0]) for c in classes]


def _breadth_first(tree: Any) -> NDArray[np.int64]:
    """scikit-learn's node numbers in breadth-first order (each node's children adjacent,
    left first)."""
    order, level = [], np.array([0])
    while level.size:
        order.append(level)
        inner = level[tree.children_left[level] >= 0]
        level = np.stack([tree.children_left[inner], tree.children_right[inner]], axis=1).ravel()
    return np.concatenate(order)


@dataclass
class FlatForest:
    """A scikit-learn random forest as breadth-first 8-byte node records (see
    :mod:`labelstitch._kernels.voxelforest`), with the leaf values of the classes a
    prediction returns."""

    nodes: NDArray[np.void]
    value: NDArray[np.float64]  # (nodes, returned classes)
    roots: NDArray[np.int64]

    @classmethod
    def from_forest(cls, forest: Any, classes: Sequence[int]) -> FlatForest:
        columns = class_columns(forest, classes)
        total = sum(e.tree_.node_count for e in forest.estimators_)
        wide = forest.n_features_in_ > 1 << FEATURE_BITS
        if wide or total >= 1 << (32 - FEATURE_BITS):
            raise ValueError(f"a forest of {total} nodes on {forest.n_features_in_} features does not fit the compiled "
                             f"forest's node records (at most {1 << FEATURE_BITS} features and {1 << (32 - FEATURE_BITS)} "
                             f"nodes): train it with {'fewer scales' if wide else 'fewer trees or samples'}")
        nodes, values, roots, offset = [], [], [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            order = _breadth_first(tree)
            place = np.empty(order.size, np.int64)
            place[order] = np.arange(order.size)
            inner = tree.children_left[order] >= 0
            records = np.zeros(order.size, NODE)
            child = offset + np.where(inner, place[np.maximum(tree.children_left[order], 0)], np.arange(order.size))
            records["meta"] = (child << FEATURE_BITS) | np.where(inner, tree.feature[order], 0)
            high = tree.threshold[order].astype(np.float32)  # the largest float32 not above the threshold:
            high = np.where(high.astype(np.float64) > tree.threshold[order], np.nextafter(high, np.float32(-np.inf)), high)
            records["threshold"] = np.where(inner, high, np.float32(np.inf))
            nodes.append(records)
            values.append(tree.value[order, 0][:, columns])
            roots.append(offset)
            offset += order.size
        return cls(np.concatenate(nodes), np.ascontiguousarray(np.concatenate(values), np.float64), np.array(roots, np.int64))

    def probabilities(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(rows, classes)."""
        out = np.empty((x.shape[0], self.value.shape[1]), np.float32)
        forest_probabilities(np.ascontiguousarray(x), self.nodes, self.value, self.roots, out)
        return out


def predict_slabs(forest: FlatForest, features: FilterFeatures, context: ContextFeatures | None = None,
                  z_range: tuple[int, int] | None = None) -> NDArray[np.float32]:
    """The forest's probabilities, (Z, Y, X, classes), for the slices ``z_range`` (default
    all) of the box, from the filter features (and the context features) slab by slab."""
    depth, height, width = features.shape
    z_range = z_range or (0, depth)
    columns = features.columns + (context.columns if context is not None else 0)
    out = np.empty((z_range[1] - z_range[0], height, width, forest.value.shape[1]), np.float32)
    for z0, z1 in _slabs(z_range, height * width):
        x = features.slab(z0, z1, columns)
        if context is not None:
            context.fill(x, features.columns, z0, z1)
        probability = forest.probabilities(x)
        out[z0 - z_range[0]:z1 - z_range[0]] = probability.reshape(z1 - z0, height, width, -1)
        del x
    return out


def features_at(features: FilterFeatures, rows: NDArray[np.intp]) -> NDArray[np.float32]:
    """The exact features (the eigenvalues from LAPACK) of the voxels at flat indices
    ``rows``, for training."""
    depth, height, width = features.shape
    plane = height * width
    out = np.empty((rows.size, features.columns), np.float32)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    for z0, z1 in _slabs((0, depth), plane):
        lo, hi = np.searchsorted(ordered, [z0 * plane, z1 * plane])
        if lo == hi:
            continue
        inside = (ordered[lo:hi] - z0 * plane).astype(np.intp)
        out[order[lo:hi]] = features.slab(z0, z1, exact=inside)[inside]
    return out


def pair_rows(low: NDArray[np.float32], high: NDArray[np.float32], axis: int) -> NDArray[np.float32]:
    """The affinity forest's rows for voxel pairs: ``low`` and ``high`` are the two voxels'
    feature rows (pairs along ``axis``); their mean, their absolute difference, the axis."""
    n, f = low.shape
    out = np.zeros((n, 2 * f + 3), np.float32)
    np.add(low, high, out=out[:, :f])
    out[:, :f] *= np.float32(0.5)
    np.subtract(low, high, out=out[:, f:2 * f])
    np.abs(out[:, f:2 * f], out=out[:, f:2 * f])
    out[:, 2 * f + axis] = 1.0
    return out


def predict_with_affinities(forest: FlatForest, pairs: FlatForest, features: FilterFeatures,
                            calibrate: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
                            z_range: tuple[int, int] | None = None) -> NDArray[np.float32]:
    """(Z, Y, X, 1 + 3) for the slices ``z_range`` (default all): the voxel forest's boundary
    probability, then the pair forest's affinities at :data:`AFFINITY_OFFSETS` (through
    ``calibrate``, where given), slab by slab; a slab's features are made with the slice
    before it, for the pairs across the slab's first plane."""
    depth, height, width = features.shape
    start, stop = z_range or (0, depth)
    out = np.zeros((stop - start, height, width, 4), np.float32)
    f = features.columns
    for z0, z1 in _slabs((start, stop), height * width):
        first = max(z0 - 1, 0)
        x = features.slab(first, z1, f).reshape(z1 - first, height, width, f)
        own = x[z0 - first:]
        out[z0 - start:z1 - start, ..., 0] = forest.probabilities(own.reshape(-1, f))[:, 0].reshape(own.shape[:3])
        # pairs (x - 1, x) along each axis, written at x; along Z they reach into the slice before the slab
        for axis, planes in ((0, x), (1, own), (2, own)):
            if planes.shape[axis] < 2:
                continue
            low, high = _along(planes, axis, slice(None, -1)), _along(planes, axis, slice(1, None))
            answer = pairs.probabilities(pair_rows(low.reshape(-1, f), high.reshape(-1, f), axis))[:, 0]
            answer = answer if calibrate is None else calibrate(answer)
            rows = out[(first + 1 if axis == 0 else z0) - start:z1 - start, ..., 1 + axis]
            (rows if axis == 0 else _along(rows, axis, slice(1, None)))[...] = answer.reshape(low.shape[:3])
        del x, own
    return out


def _along(array: NDArray[Any], axis: int, part: slice) -> NDArray[Any]:
    """``array`` cut to ``part`` along ``axis`` (a view)."""
    return array[(slice(None),) * axis + (part,)]
