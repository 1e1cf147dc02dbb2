"""The agglomeration classifier behind ``learned_agglomeration``: a random forest that
predicts whether two touching regions belong to one neuron, from the features of
:mod:`labelstitch.agglomeration`.

Training follows gala's "flat then learned" scheme: each supervoxel is given the
ground-truth body it overlaps most; an agglomeration ordered by mean boundary probability
merges only what that oracle allows and records every edge it takes from its queue (the
states a real agglomeration meets, not only the first edges); a forest is fitted; a second
round ordered by that forest adds the states it would meet, and the forest is fitted on all.
A classifier for a context-aware agglomeration (``mitochondria_channel``) is trained on the
graph without the mitochondria's edges, the graph it will see.

The forest learns from balanced classes, so its raw output is not a probability of the
edges it will meet. Its answers are calibrated (Platt: a logistic curve over the raw
output's log-odds) on held-out predictions, each example scored by a forest fitted without
it (three folds), so that a threshold means the same on another volume: 0.5 is "as likely
one neuron as two" among the edges an agglomeration meets. (scikit-learn's out-of-bag
answers would be cheaper, but with balanced class weights they are wrong: 0 for every
positive example in scikit-learn 1.9.)

The trees are stored as flat arrays (``.npz``, no pickle) and evaluated in numba, so an
agglomeration can score a handful of edges after every merge at no per-call cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._kernels.forest import forest_predict
from .._threads import get_threads
from ..agglomeration import EdgeStats, agglomerate_graph, edge_stats, feature_names, mitochondria_nodes
from ..contacts import Contacts
from ..rag import renumber
from .affinities import learned_contacts

__all__ = ["AgglomerationClassifier", "calibrated", "fit_calibration", "learned_graph", "load_agglomeration_classifier",
           "train_agglomeration"]

_FORMAT = "labelstitch-agglomeration-classifier/1"


@dataclass
class AgglomerationClassifier:
    """A forest as flat node arrays, and the features it was trained on."""

    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    value: NDArray[np.float64]  # probability of "same neuron" at each leaf
    roots: NDArray[np.int64]
    features: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    #: Platt calibration ``(slope, offset)`` of the forest's log-odds; None: raw forest output
    calibration: tuple[float, float] | None = None

    @classmethod
    def from_forest(cls, forest: Any, features: tuple[str, ...], info: dict[str, Any]) -> AgglomerationClassifier:
        parts: dict[str, list[NDArray[Any]]] = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
        roots, offset = [], 0
        positive = int(np.flatnonzero(forest.classes_ == 1)[0]) if 1 in forest.classes_ else -1
        for estimator in forest.estimators_:
            tree = estimator.tree_
            n = tree.node_count
            roots.append(offset)
            leaf = tree.children_left < 0
            parts["feature"].append(tree.feature.astype(np.int64))
            parts["threshold"].append(tree.threshold.astype(np.float64))
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset).astype(np.int64))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset).astype(np.int64))
            value = tree.value[:, 0, :]
            share = value / np.maximum(value.sum(axis=1, keepdims=True), 1e-12)
            parts["value"].append(share[:, positive] if positive >= 0 else np.zeros(n))
            offset += n
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(**arrays, roots=np.array(roots, np.int64), features=tuple(features), info=info)

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """The probability that each row's two regions are one neuron."""
        rows = np.ascontiguousarray(x, np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValueError(f"expected {len(self.features)} features per edge, got shape {rows.shape}")
        out = np.empty(rows.shape[0])
        if rows.shape[0]:
            forest_predict(rows, self.feature, self.threshold, self.left, self.right, self.value, self.roots, out)
        return out if self.calibration is None else calibrated(out, self.calibration, self.roots.size)

    def save(self, path: str | Path) -> None:
        """Write the classifier to ``path`` (``.npz``: arrays and a JSON header, no pickle)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".partial.npz")
        header = json.dumps({"format": _FORMAT, "features": list(self.features), "info": self.info,
                             "calibration": None if self.calibration is None else list(self.calibration)})
        with open(tmp, "wb") as f:
            np.savez_compressed(f, header=np.array(header), feature=self.feature, threshold=self.threshold,
                                left=self.left, right=self.right, value=self.value, roots=self.roots)
        tmp.replace(target)


def load_agglomeration_classifier(path: str | Path, channels: int | None = None,
                                  contacts: Contacts | None = None) -> AgglomerationClassifier:
    """Read a classifier written by :meth:`AgglomerationClassifier.save`; with ``channels``,
    refuse one trained on other features than a run with that many prediction channels
    (whose contacts carry ``contacts``) has."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"no agglomeration classifier at {path}; make one with `labelstitch train`") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a labelstitch agglomeration classifier: {exc}") from None
    try:
        header = json.loads(str(data["header"]))
        arrays = {k: data[k] for k in ("feature", "threshold", "left", "right", "value", "roots")}
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path} is not a labelstitch agglomeration classifier ({exc})") from None
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path} is a {header.get('format')!r} file, not a {_FORMAT} (train it again with this version)")
    features = tuple(header["features"])
    expected = feature_names(channels, contacts or Contacts.of(channels)) if channels is not None else features
    if features != expected:
        at = next((i for i, (a, b) in enumerate(zip(features, expected)) if a != b), min(len(features), len(expected)))
        mine = features[at] if at < len(features) else "nothing"
        theirs = expected[at] if at < len(expected) else "nothing"
        raise ValueError(
            f"{path} was trained on {len(features)} edge features but this run's predictions give {len(expected)} "
            f"({channels} channel(s){', with affinities' if contacts and contacts.affinities else ''}; feature {at + 1} is "
            f"{mine!r} there, {theirs!r} here); train it on predictions like this run's, with the same affinity channels"
        )
    calibration = header.get("calibration")  # absent from classifiers trained before calibration
    return AgglomerationClassifier(**arrays, features=features, info=header.get("info", {}),
                                   calibration=None if calibration is None else (float(calibration[0]), float(calibration[1])))


def learned_graph(labels: NDArray[np.integer], predictions: NDArray[np.floating], affinity_channels: str = "",
                  affinity_offsets: str = "") -> tuple[EdgeStats, Contacts]:
    """The region graph a learned agglomeration classifier scores (every channel, the boundary
    first) and what its contacts carry beside the boundary (``affinity_channels`` /
    ``affinity_offsets`` as for ``learned_agglomeration``)."""
    channels = 1 if np.ndim(predictions) == 3 else int(np.shape(predictions)[3])
    contacts = learned_contacts(channels, affinity_channels, affinity_offsets)
    return edge_stats(labels, predictions, contacts=contacts), contacts


def _log_odds(p: NDArray[np.float64], trees: int) -> NDArray[np.float64]:
    """The log-odds of forest votes, clipped half a vote from 0 and 1 (a unanimous forest
    is not certain)."""
    eps = 0.5 / max(trees, 1)
    q = np.clip(p, eps, 1 - eps)
    return np.log(q / (1 - q))


def calibrated(p: NDArray[np.float64], calibration: tuple[float, float], trees: int) -> NDArray[np.float64]:
    """Forest output ``p`` through the Platt curve ``1 / (1 + exp(-(slope * logit(p) + offset)))``."""
    slope, offset = calibration
    return 1.0 / (1.0 + np.exp(-(slope * _log_odds(p, trees) + offset)))


def fit_calibration(p: NDArray[np.float64], y: NDArray[np.integer], trees: int) -> tuple[float, float]:
    """Platt's ``(slope, offset)`` for held-out forest outputs ``p`` of examples ``y`` (0/1):
    the logistic regression of ``y`` on ``logit(p)``, by Newton's method, with Platt's
    smoothed targets (a class of n examples aims at (n + 1) / (n + 2), not 1, so that a
    separable sample does not drive the slope to infinity). Examples without a held-out
    output (NaN) are left out.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=4000)
    >>> y = (rng.random(4000) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(int)
    >>> slope, offset = fit_calibration(1 / (1 + np.exp(-z)), y, trees=10**6)
    >>> round(slope, 1), round(offset, 1)
    (2.0, -1.0)
    """
    keep = np.isfinite(p)
    z, y = _log_odds(p[keep], trees), np.asarray(y)[keep].astype(np.float64)
    positives, negatives = y.sum(), y.size - y.sum()
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    a, b = 1.0, 0.0
    for _ in range(50):
        q = 1.0 / (1.0 + np.exp(-(a * z + b)))
        w = np.maximum(q * (1 - q), 1e-12)
        g = np.array([np.sum((q - target) * z), np.sum(q - target)])
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def _held_out(x: NDArray[np.float64], y: NDArray[np.int8], fit: Any, names: tuple[str, ...], seed: int,
              folds: int = 3) -> NDArray[np.float64]:
    """Each example's merge probability from a forest fitted on the other folds (NaN where a
    fold's training part holds one class only). Identical rows (one edge state met in two
    rounds) share a fold, so that no example is scored by a forest that saw its twin."""
    _, row = np.unique(np.column_stack([x, y]), axis=0, return_inverse=True)
    fold = np.random.default_rng(seed).permutation(int(row.max()) + 1)[row.reshape(-1)] % folds
    out = np.full(y.size, np.nan)
    for f in range(folds):
        held = fold == f
        if held.any() and np.unique(y[~held]).size == 2:
            out[held] = AgglomerationClassifier.from_forest(fit(x[~held], y[~held]), names, {}).predict(x[held])
    return out


def _best_bodies(supervoxels: NDArray[np.uint32], truth: NDArray[np.integer], k: int) -> NDArray[np.int64]:
    """Per supervoxel 1..k, the ground-truth body it overlaps most (-1: only unlabelled voxels)."""
    from ..contingency import count_pairs

    sv = supervoxels.reshape(-1).astype(np.uint64)
    gt = np.asarray(truth).reshape(-1).astype(np.uint64)
    keep = (sv != 0) & (gt != 0)
    a, b, n, _ = count_pairs(np.ascontiguousarray(sv[keep]), np.ascontiguousarray(gt[keep]))
    order = np.lexsort((b, -n.astype(np.int64), a))
    first = np.r_[True, a[order][1:] != a[order][:-1]] if order.size else np.zeros(0, bool)
    best = np.full(k + 1, -1, np.int64)
    best[a[order][first].astype(np.int64)] = b[order][first].astype(np.int64)
    return best


def train_agglomeration(
    supervoxels: NDArray[np.integer],
    predictions: NDArray[np.floating],
    truth: NDArray[np.integer],
    *,
    n_estimators: int = 100,
    rounds: int = 2,
    seed: int = 0,
    mitochondria_channel: int = -1,
    mitochondria_threshold: float = 0.5,
    calibrate: bool = True,
    affinity_channels: str = "",
    affinity_offsets: str = "",
) -> AgglomerationClassifier:
    """Fit the merge classifier on one volume with ground truth (see the module docstring;
    ``calibrate=False`` keeps the forest's raw output; ``affinity_channels`` /
    ``affinity_offsets`` as for ``learned_agglomeration``, whose features they add).

    ``predictions`` is (Z, Y, X) boundary probability or (Z, Y, X, C) with the boundary first;
    ``supervoxels`` the over-segmentation to agglomerate; ``truth`` the neurons. With a
    ``mitochondria_channel``, for ``learned_agglomeration`` with the same setting."""
    from sklearn.ensemble import RandomForestClassifier

    if np.shape(supervoxels) != np.shape(truth) or np.shape(predictions)[:3] != np.shape(truth):
        raise ValueError(f"supervoxels {np.shape(supervoxels)}, predictions {np.shape(predictions)} and truth "
                         f"{np.shape(truth)} must cover the same voxels")
    lab, _ = renumber(np.asarray(supervoxels))
    k = int(lab.max()) if lab.size else 0
    body = _best_bodies(lab, truth, k)

    def oracle(a: int, b: int) -> bool | None:
        if body[a] < 0 or body[b] < 0:
            return None  # an unlabelled region: neither merged nor learned from
        return bool(body[a] == body[b])

    stats, contacts = learned_graph(lab, predictions, affinity_channels, affinity_offsets)
    names = feature_names(stats.inside.shape[1], contacts)
    examples: list[tuple[NDArray[np.float64], NDArray[np.int8]]] = []
    if mitochondria_channel >= 0:  # the graph a context-aware agglomeration merges
        mito = mitochondria_nodes(stats, mitochondria_channel, mitochondria_threshold)
        stats = stats.subset(~(mito[stats.u] | mito[stats.v]))
    score = lambda f: 1.0 - f[:, 0]  # noqa: E731 - round 1: the mean-boundary order ("flat")
    model = None
    for _ in range(max(1, rounds)):
        agglomerate_graph(stats, score, 0.0, oracle=oracle, examples=examples)
        x = np.concatenate([e[0] for e in examples])
        y = np.concatenate([e[1] for e in examples])
        if np.unique(y).size < 2:
            raise ValueError("the training volume gives only one kind of edge (all merges or all splits); "
                             "use a volume with several neurons and supervoxels that split them")
        fit = lambda x, y: RandomForestClassifier(  # noqa: E731 - the same trees on any number of cores
            n_estimators=n_estimators, min_samples_leaf=3, class_weight="balanced", n_jobs=get_threads(),
            random_state=seed).fit(x, y)
        model = AgglomerationClassifier.from_forest(
            fit(x, y), names, {"edges": int(y.size), "merges": int(y.sum()), "rounds": rounds,
                               "n_estimators": n_estimators, "mitochondria_channel": mitochondria_channel})
        score = model.predict  # the next round meets the states the learned order leads to
    assert model is not None
    if calibrate:  # a monotone curve: it would not change the order of the rounds before
        model.calibration = fit_calibration(_held_out(x, y, fit, names, seed), y, n_estimators)
    return model
