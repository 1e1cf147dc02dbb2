"""An ilastik-like voxel classifier: multi-scale filter features and a random forest.

Train one from a few annotated voxels (1 = membrane, 2 = inside a cell, 0 = unknown, and
optionally 3 = mitochondrion) or from a labelled segmentation (membranes are where the
label changes or is 0; mitochondria from a mask), save it, and use it as the
``pixel_classifier`` stage. A classifier that knows mitochondria predicts two channels:
the membrane probability, then the mitochondrion probability (NeuroProof's extra channel,
used by a context-aware agglomeration's ``mitochondria_channel``).

With ``two_stage`` a second forest (auto-context, ilastik's and the paper's two-stage voxel
prediction) sees the image features plus the first stage's probability and its smoothed
versions and gradients, so it can use the shape of the first answer (a membrane is a thin
continuous sheet; noise is not). The second forest is trained on *out-of-fold* first-stage
probabilities (each half of the volume along Z predicted by a first stage trained on the
other half), so that it learns how the first stage errs on data it has not seen.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._threads import get_threads
from .agglomeration import calibrated, fit_calibration
from .voxelforest import (ContextFeatures, FilterFeatures, FlatForest, as_image, class_columns, features_at, pair_rows,
                          predict_slabs, predict_with_affinities)

__all__ = ["PixelClassifier", "train_pixel_classifier", "load_classifier", "membrane_annotations",
           "reference_probabilities"]

_FORMAT = "labelstitch-pixel-classifier/1"


def _classes(model: Any) -> list[int]:
    """The classes a prediction returns: membrane, and mitochondrion when trained with it."""
    return [1, 3] if 3 in model.classes_ else [1]


def _shaped(probability: NDArray[np.float32]) -> NDArray[np.float32]:
    """(Z, Y, X, 1) as (Z, Y, X); two channels stay (Z, Y, X, 2)."""
    return probability[..., 0] if probability.shape[-1] == 1 else probability


def reference_probabilities(classifier: PixelClassifier, grayscale: NDArray[Any]) -> NDArray[np.float32]:
    """What :meth:`PixelClassifier.predict` computes, the plain way: scikit-image's full
    feature stack of the box and scikit-learn's ``predict_proba`` (about 700 bytes per
    voxel, several times slower); the second stage's context volumes are
    :class:`~labelstitch.plugins.voxelforest.ContextFeatures`, whole-box in both paths.
    Kept as the definition the lean path is tested and benchmarked against."""
    from skimage.feature import multiscale_basic_features

    sigmas = classifier.sigmas
    feats = multiscale_basic_features(as_image(grayscale), intensity=True, edges=True, texture=True, sigma_min=sigmas[0],
                                      sigma_max=sigmas[-1], num_sigma=len(sigmas), channel_axis=None).astype(np.float32)

    def answer(model: Any, x: NDArray[np.float32]) -> NDArray[np.float32]:
        proba = model.predict_proba(x.reshape(-1, x.shape[-1]))
        columns = class_columns(model, _classes(model))
        return _shaped(proba[:, columns].reshape(*grayscale.shape, len(columns)).astype(np.float32))

    first = answer(classifier.model, feats)
    if classifier.second is None:
        return first
    context = np.stack(ContextFeatures(first).volumes, axis=-1)
    return answer(classifier.second, np.concatenate([feats, context], axis=-1))


@dataclass
class PixelClassifier:
    """A trained random forest (and, for two stages, the second one) and the feature
    settings it was trained with."""

    model: Any
    sigmas: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    second: Any = None
    #: the forest of nearest-neighbour affinities (``affinity_classifier``), if trained
    affinities: Any = None

    @property
    def two_stage(self) -> bool:
        return self.second is not None

    @property
    def channels(self) -> int:
        """1 (membrane), or 2 (membrane, mitochondrion) when trained with mitochondria."""
        return 2 if 3 in self.model.classes_ else 1

    def predict(self, grayscale: NDArray[Any], z_range: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """Membrane probability, float32, same shape as ``grayscale``; with mitochondria,
        (Z, Y, X, 2): membrane, then mitochondrion. Computed slab by slab
        (:mod:`~labelstitch.plugins.voxelforest`); equal to :func:`reference_probabilities`.
        ``z_range`` (z0, z1): only those slices, with the whole box as their context (equal
        to ``predict(grayscale)[z0:z1]``, for half the forest's work on half the box)."""
        features = FilterFeatures(grayscale, self.sigmas)
        if self.second is None:
            return _shaped(predict_slabs(self.forests[0], features, z_range=z_range))
        first = predict_slabs(self.forests[0], features)  # the second stage's context needs all of it
        context = ContextFeatures(first)
        del first
        return _shaped(predict_slabs(self.forests[1], features, context, z_range=z_range))

    def predict_affinities(self, grayscale: NDArray[Any], z_range: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """(Z, Y, X, 4): the membrane probability, then the affinities of every voxel with its
        neighbour before it along Z, Y and X (0 where there is none), from one pass of
        features (:func:`~labelstitch.plugins.voxelforest.predict_with_affinities`); for the
        slices ``z_range`` (default all) of ``grayscale``."""
        if self.affinities is None or self.second is not None or self.channels != 1:
            raise ValueError("this classifier has no affinity forest (train it with affinities: "
                             "`labelstitch train-pixel-classifier --affinities`, one stage, membranes only)")
        if "_pairs" not in self.__dict__:
            self.__dict__["_pairs"] = FlatForest.from_forest(self.affinities, [1])
        curve, trees = self.info.get("affinity_calibration"), self.affinities.n_estimators
        calibrate = None if not curve else (
            lambda p: calibrated(p.astype(np.float64), tuple(curve), trees).astype(np.float32))
        return predict_with_affinities(self.forests[0], self.__dict__["_pairs"], FilterFeatures(grayscale, self.sigmas),
                                       calibrate, z_range)

    @property
    def forests(self) -> list[FlatForest]:
        """The forests as flat arrays for the compiled evaluation (made once, not saved)."""
        if "_flat" not in self.__dict__:
            models = [self.model] + ([self.second] if self.second is not None else [])
            self.__dict__["_flat"] = [FlatForest.from_forest(m, _classes(m)) for m in models]
        return self.__dict__["_flat"]

    def save(self, path: str | Path) -> None:
        """Write the classifier to ``path`` (a pickle; load only files you trust)."""
        tmp = Path(str(path) + ".partial")
        with open(tmp, "wb") as f:
            pickle.dump({"format": _FORMAT, "model": self.model, "sigmas": self.sigmas, "info": self.info,
                         "second": self.second, "affinities": self.affinities}, f)
        tmp.replace(path)


def load_classifier(path: str | Path) -> PixelClassifier:
    """Read a classifier written by :meth:`PixelClassifier.save`."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise ValueError(f"no classifier file at {path}; train one with `labelstitch train-pixel-classifier`") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a labelstitch pixel classifier")
    return PixelClassifier(data["model"], tuple(data["sigmas"]), data.get("info", {}), data.get("second"),
                           data.get("affinities"))


def membrane_annotations(segmentation: NDArray[np.integer], mitochondria: NDArray[Any] | None = None) -> NDArray[np.uint8]:
    """Annotations from a labelled volume: 1 on membranes (0 or a label change), 2 inside;
    with a ``mitochondria`` mask (non-zero = mitochondrion), 3 inside each mitochondrion and
    1 on its envelope (the mask's outermost voxels), so that the membrane channel marks every
    membrane and a mitochondrion becomes a supervoxel the agglomeration can recognise."""
    seg = np.asarray(segmentation)
    if mitochondria is not None and np.shape(mitochondria) != seg.shape:
        raise ValueError(f"the mitochondria mask (shape {np.shape(mitochondria)}) must have the ground truth's shape {seg.shape}")
    membrane = seg == 0
    for axis in range(seg.ndim):
        a = np.moveaxis(seg, axis, 0)
        change = a[1:] != a[:-1]
        m = np.moveaxis(membrane, axis, 0)
        m[1:] |= change
        m[:-1] |= change
    marks = np.where(membrane, 1, 2).astype(np.uint8)
    if mitochondria is not None:
        from scipy import ndimage

        mito = np.asarray(mitochondria) != 0
        inner = ndimage.binary_erosion(mito, border_value=1)
        marks[mito & inner] = 3
        marks[mito & ~inner] = 1  # the envelope looks like a cell membrane and is taught as one
    return marks


def train_pixel_classifier(
    grayscale: NDArray[Any],
    annotations: NDArray[np.integer],
    *,
    sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
    n_estimators: int = 50,
    max_samples: int = 200_000,
    seed: int = 0,
    two_stage: bool = False,
    affinities: NDArray[np.integer] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> PixelClassifier:
    """Fit a random forest on the annotated voxels (1 membrane, 2 inside, 3 mitochondrion
    if any, 0 unknown), and with ``two_stage`` a second one on top (see the module docstring).
    ``affinities``, the neurons as a label volume, adds a forest of nearest-neighbour
    affinities (two neighbours are one body when both carry one non-zero label), fitted on
    ``max_samples`` voxel pairs of annotated voxels drawn evenly from the three axes.

    At most ``max_samples`` annotated voxels are used, drawn evenly from the classes.
    ``log`` receives a line as each long step (features, each forest) ends.
    """
    if grayscale.shape != annotations.shape:
        raise ValueError(f"`annotations` (shape {annotations.shape}) must have the shape of `grayscale` ({grayscale.shape})")
    classes = set(np.unique(annotations).tolist()) - {0}
    if classes not in ({1, 2}, {1, 2, 3}):
        raise ValueError(f"`annotations` must mark membranes (1) and insides (2), and may mark mitochondria (3); "
                         f"found classes {sorted(classes)}")
    start = time.perf_counter()
    features = FilterFeatures(grayscale, sigmas)
    rows = _picks(annotations, max_samples, seed)
    x = features_at(features, rows)
    log(f"features: {x.shape[-1]} per voxel for {rows.size:,} voxels in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    model = _fit(x, annotations.ravel()[rows], n_estimators, seed)
    log(f"forest: {n_estimators} trees on {rows.size:,} voxels in {time.perf_counter() - start:.1f} s")
    info = {"samples": int(rows.size), "n_estimators": n_estimators}
    if affinities is not None:
        if two_stage or 3 in classes:
            raise ValueError("an affinity forest goes with a one-stage classifier of membranes only")
        start = time.perf_counter()
        pairs, calibration = _fit_affinities(features, np.asarray(affinities), max_samples, n_estimators, seed,
                                             annotations.reshape(-1) != 0)
        log(f"affinity forest: {n_estimators} trees on voxel pairs in {time.perf_counter() - start:.1f} s")
        return PixelClassifier(model, tuple(sigmas), {**info, "affinities": True, "affinity_calibration": list(calibration)},
                               affinities=pairs)
    if not two_stage:
        return PixelClassifier(model, tuple(sigmas), info)
    depth = grayscale.shape[0]
    if depth < 4:
        raise ValueError(f"two-stage training splits the volume in two along Z; {depth} slices are too few")
    plane = grayscale[0].size
    halves = ((0, depth // 2), (depth // 2, depth))
    first = np.empty(grayscale.shape + ((2,) if 3 in classes else ()), np.float32)
    for fit_on, predict_on in ((halves[0], halves[1]), (halves[1], halves[0])):  # out-of-fold answers
        part = annotations[fit_on[0]:fit_on[1]]
        if set(np.unique(part).tolist()) - {0} != classes:
            raise ValueError(f"two-stage training needs every class ({sorted(classes)}) marked in both halves of the volume along Z")
        start = time.perf_counter()
        half_rows = _picks(part, max_samples // 2, seed) + fit_on[0] * plane
        half_model = _fit(features_at(features, half_rows), annotations.ravel()[half_rows], n_estimators, seed)
        answer = predict_slabs(FlatForest.from_forest(half_model, _classes(half_model)), features, z_range=predict_on)
        first[predict_on[0]:predict_on[1]] = _shaped(answer)
        log(f"second stage: a first-stage forest on half the volume, predicting the other, in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    context = ContextFeatures(first)
    rows = _picks(annotations, max_samples, seed + 1)
    x = np.concatenate([features_at(features, rows), context.at(rows)], axis=-1)
    second = _fit(x, annotations.ravel()[rows], n_estimators, seed + 1)
    log(f"second stage: {n_estimators} trees on {x.shape[-1]} features in {time.perf_counter() - start:.1f} s")
    return PixelClassifier(model, tuple(sigmas), {**info, "two_stage": True}, second)


def _picks(annotations: NDArray[np.integer], max_samples: int, seed: int) -> NDArray[np.intp]:
    """Flat indices of at most ``max_samples`` annotated voxels, drawn evenly from the classes."""
    rng = np.random.default_rng(seed)
    picks = []
    classes = [c for c in (1, 2, 3) if np.any(annotations == c)]
    for cls in classes:
        where = np.flatnonzero(annotations.ravel() == cls)
        picks.append(rng.choice(where, size=min(where.size, max_samples // len(classes)), replace=False))
    return np.concatenate(picks)


def _fit_affinities(features: FilterFeatures, truth: NDArray[np.integer], max_samples: int, n_estimators: int,
                    seed: int, annotated: NDArray[np.bool_]) -> tuple[Any, tuple[float, float]]:
    """The affinity forest: ``max_samples`` random voxel pairs of two ``annotated`` voxels
    (flat; a slab left out for out-of-fold training is not), a third along each axis (of
    those with two voxels or more), labelled 1 where both voxels carry one non-zero label;
    and its Platt calibration, fitted on out-of-bag answers (each pair scored by the trees
    that did not see it), so that a threshold chosen with one forest means the same with
    another (``train`` chooses with forests of part of the volume, then refits)."""
    if truth.shape != features.shape:
        raise ValueError(f"the affinities' label volume (shape {truth.shape}) must have the grayscale's shape {features.shape}")
    rng = np.random.default_rng(seed + 2)
    axes = [a for a in range(3) if truth.shape[a] > 1]
    strides = (truth.shape[1] * truth.shape[2], truth.shape[2], 1)
    flat = truth.reshape(-1)
    highs, lows, rows_axis = [], [], []
    for axis in axes:
        n = max(1, max_samples // len(axes))
        drawn: list[NDArray[np.intp]] = []
        missing = n
        for _ in range(50):  # drawn again until n pairs of two annotated voxels (at once when all are)
            coords = [rng.integers(1 if a == axis else 0, truth.shape[a], n) for a in range(3)]
            high = np.ravel_multi_index(coords, truth.shape)
            drawn.append(high[annotated[high] & annotated[high - strides[axis]]][:missing])
            missing -= drawn[-1].size
            if missing == 0:
                break
        high = np.concatenate(drawn)
        highs.append(high)
        lows.append(high - strides[axis])
        rows_axis.append(np.full(high.size, axis))
    high, low, axis_of = np.concatenate(highs), np.concatenate(lows), np.concatenate(rows_axis)
    same = (flat[high] == flat[low]) & (flat[high] != 0)
    if np.unique(same).size < 2:
        raise ValueError("the affinities' label volume gives only one kind of voxel pair; use one with several neurons")
    x_high, x_low = features_at(features, high), features_at(features, low)
    x = np.concatenate([pair_rows(x_low[axis_of == a], x_high[axis_of == a], a) for a in axes])
    y = np.concatenate([same[axis_of == a] for a in axes]).astype(np.int8)
    model = _fit(x, y, n_estimators, seed + 2, out_of_bag=True)
    oob = model.oob_decision_function_[:, list(model.classes_).index(1)]
    return model, fit_calibration(oob, y, n_estimators)


def _fit(x: NDArray[np.float32], y: NDArray[np.integer], n_estimators: int, seed: int, *, out_of_bag: bool = False) -> Any:
    """A forest of the voxel classifier's kind; with ``out_of_bag``, its out-of-bag answers too
    (NaN for examples in every tree's bootstrap, which scikit-learn warns of with few trees)."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier

    # the trees on every core the thread cap allows: the same forest whatever their number
    # (each tree's seed is drawn from ``seed`` before any is grown)
    model = RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=5, n_jobs=get_threads(),
                                   random_state=seed, oob_score=out_of_bag)
    with warnings.catch_warnings():
        if out_of_bag:
            warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y)
    model.n_jobs = 1  # scikit-learn's predict_proba sums the trees in one order only on one thread
    return model
