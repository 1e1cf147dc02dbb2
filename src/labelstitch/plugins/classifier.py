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

__all__ = ["PixelClassifier", "train_pixel_classifier", "load_classifier", "membrane_annotations"]

_FORMAT = "labelstitch-pixel-classifier/1"


def _features(grayscale: NDArray[Any], sigmas: tuple[float, ...]) -> NDArray[np.float32]:
    from skimage.feature import multiscale_basic_features

    image = grayscale.astype(np.float32)
    if np.issubdtype(grayscale.dtype, np.integer):
        image /= float(np.iinfo(grayscale.dtype).max)
    feats = multiscale_basic_features(
        image,
        intensity=True,
        edges=True,
        texture=True,
        sigma_min=sigmas[0],
        sigma_max=sigmas[-1],
        num_sigma=len(sigmas),
        channel_axis=None,
    )
    return feats.astype(np.float32, copy=False)


_CONTEXT_SIGMAS = (1.0, 2.0, 4.0)


def _context_features(probability: NDArray[np.float32]) -> NDArray[np.float32]:
    """The second stage's view of the first stage's answer: each channel's probability, its
    Gaussian smoothings and their gradient magnitudes."""
    from scipy import ndimage

    out = []
    for channel in (probability[..., None] if probability.ndim == 3 else probability).transpose(3, 0, 1, 2):
        out.append(channel)
        for sigma in _CONTEXT_SIGMAS:
            out.append(ndimage.gaussian_filter(channel, sigma))
            out.append(ndimage.gaussian_gradient_magnitude(channel, sigma))
    return np.stack(out, axis=-1).astype(np.float32)


def _probabilities(model: Any, feats: NDArray[np.float32], shape: tuple[int, ...]) -> NDArray[np.float32]:
    """The membrane probability (Z, Y, X), or with a mitochondrion class (3) the membrane
    and mitochondrion probabilities (Z, Y, X, 2)."""
    proba = model.predict_proba(feats.reshape(-1, feats.shape[-1]))
    membrane = int(np.flatnonzero(model.classes_ == 1)[0])
    if 3 not in model.classes_:
        return proba[:, membrane].reshape(shape).astype(np.float32)
    mito = int(np.flatnonzero(model.classes_ == 3)[0])
    return np.stack([proba[:, membrane], proba[:, mito]], axis=-1).reshape(*shape, 2).astype(np.float32)


@dataclass
class PixelClassifier:
    """A trained random forest (and, for two stages, the second one) and the feature
    settings it was trained with."""

    model: Any
    sigmas: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    second: Any = None

    @property
    def two_stage(self) -> bool:
        return self.second is not None

    @property
    def channels(self) -> int:
        """1 (membrane), or 2 (membrane, mitochondrion) when trained with mitochondria."""
        return 2 if 3 in self.model.classes_ else 1

    def predict(self, grayscale: NDArray[Any]) -> NDArray[np.float32]:
        """Membrane probability, float32, same shape as ``grayscale``; with mitochondria,
        (Z, Y, X, 2): membrane, then mitochondrion."""
        feats = _features(grayscale, self.sigmas)
        first = _probabilities(self.model, feats, grayscale.shape)
        if self.second is None:
            return first
        both = np.concatenate([feats, _context_features(first)], axis=-1)
        return _probabilities(self.second, both, grayscale.shape)

    def save(self, path: str | Path) -> None:
        """Write the classifier to ``path`` (a pickle; load only files you trust)."""
        tmp = Path(str(path) + ".partial")
        with open(tmp, "wb") as f:
            pickle.dump({"format": _FORMAT, "model": self.model, "sigmas": self.sigmas, "info": self.info,
                         "second": self.second}, f)
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
    return PixelClassifier(data["model"], tuple(data["sigmas"]), data.get("info", {}), data.get("second"))


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
    log: Callable[[str], None] = lambda line: None,
) -> PixelClassifier:
    """Fit a random forest on the annotated voxels (1 membrane, 2 inside, 3 mitochondrion
    if any, 0 unknown), and with ``two_stage`` a second one on top (see the module docstring).

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
    feats = _features(grayscale, sigmas)
    log(f"features: {feats.shape[-1]} per voxel for {grayscale.size:,} voxels in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    model, samples = _fit(feats, annotations, n_estimators, max_samples, seed)
    log(f"forest: {n_estimators} trees on {samples:,} voxels in {time.perf_counter() - start:.1f} s")
    info = {"samples": samples, "n_estimators": n_estimators}
    if not two_stage:
        return PixelClassifier(model, tuple(sigmas), info)
    depth = grayscale.shape[0]
    if depth < 4:
        raise ValueError(f"two-stage training splits the volume in two along Z; {depth} slices are too few")
    halves = (slice(0, depth // 2), slice(depth // 2, depth))
    first = np.empty(grayscale.shape + ((2,) if 3 in classes else ()), np.float32)
    for fit_on, predict_on in ((halves[0], halves[1]), (halves[1], halves[0])):  # out-of-fold answers
        if set(np.unique(annotations[fit_on]).tolist()) - {0} != classes:
            raise ValueError(f"two-stage training needs every class ({sorted(classes)}) marked in both halves of the volume along Z")
        start = time.perf_counter()
        half_model, _ = _fit(feats[fit_on], annotations[fit_on], n_estimators, max_samples // 2, seed)
        first[predict_on] = _probabilities(half_model, feats[predict_on], grayscale[predict_on].shape)
        log(f"second stage: a first-stage forest on half the volume, predicting the other, in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    both = np.concatenate([feats, _context_features(first)], axis=-1)
    second, _ = _fit(both, annotations, n_estimators, max_samples, seed + 1)
    log(f"second stage: {n_estimators} trees on {both.shape[-1]} features in {time.perf_counter() - start:.1f} s")
    return PixelClassifier(model, tuple(sigmas), {**info, "two_stage": True}, second)


def _fit(feats: NDArray[np.float32], annotations: NDArray[np.integer], n_estimators: int, max_samples: int,
         seed: int) -> tuple[Any, int]:
    """A forest on at most ``max_samples`` annotated voxels, drawn evenly from the classes."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    picks = []
    classes = [c for c in (1, 2, 3) if np.any(annotations == c)]
    for cls in classes:
        where = np.flatnonzero(annotations.ravel() == cls)
        picks.append(rng.choice(where, size=min(where.size, max_samples // len(classes)), replace=False))
    idx = np.concatenate(picks)
    x = feats.reshape(-1, feats.shape[-1])[idx]
    y = annotations.ravel()[idx]
    model = RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=5, n_jobs=1, random_state=seed)
    model.fit(x, y)
    return model, int(idx.size)
