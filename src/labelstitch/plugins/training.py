"""``labelstitch train``: every model of a segmentor from one volume with ground truth.

The volume is cut along Z into a training part and a held-out validation part (the last
quarter unless told otherwise). On the training part: the voxel classifier, then, for each
candidate supervoxel stage, its supervoxels and an agglomeration classifier trained on
them (from out-of-fold voxel predictions, like an unseen volume's). On the validation part
every combination of supervoxel stage, agglomeration (learned, mean-boundary, multicut
with either's costs) and threshold is scored by VI, and the best is kept; the supervoxels'
perfect-agglomeration floor is reported beside them (what no agglomeration can undo).
An agglomeration that needs the learned classifier must beat the best one without it by a
margin to be chosen. The chosen models are then fitted again on the whole volume. Nothing is ever tuned on the
data a user will score. The result is ``DIR/segmentor.json``, the value of
``options.segmentor.configuration`` that uses the models.

With a mitochondria mask a second voxel classifier also predicts a mitochondria channel,
and with it every agglomeration is tried both plainly and context-aware (mitochondria
merged last, into the body they touch most, as NeuroProof does). The held-out part
decides among all of it, the classifier without mitochondria included: the mitochondria
channel is chosen only when its best segmentor beats the best one without it by the same
margin the learned agglomeration must beat mean-boundary agglomeration by.

With ``affinities`` the voxel classifier also gets its forest of nearest-neighbour
affinities, and three more learned choices use them: ``affinity_agglomeration`` over them,
and the learned agglomeration (greedy and multicut) with their features along each contact.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics import Score, floor_blockwise, vi
from ..stores import publish_folder, remove_stale_staging, staging_path
from .agglomeration import train_agglomeration
from .affinities import affinity_agglomeration
from .builtin import (distance_transform_watershed, learned_agglomeration, multicut_agglomeration, rag_agglomeration,
                      seeded_watershed)
from .classifier import membrane_annotations, train_pixel_classifier
from .voxelforest import AFFINITY_OFFSETS

__all__ = ["TrainResult", "out_of_fold", "rank", "split_validation", "train_segmentor"]


@dataclass
class TrainResult:
    """What ``train`` wrote and the validation scores of every choice it considered."""

    segmentor: dict[str, Any]
    path: str
    #: the Z ranges held out, one per validation part
    validation: list[tuple[int, int]]
    choices: list[tuple[str, Score]] = field(default_factory=list)

    def table(self) -> str:
        """The validation VI of every choice (the mean over the parts), one line each."""
        head = f"validation (z {' and '.join(f'{a}:{b}' for a, b in self.validation)})"
        width = max([len(head)] + [len(name) for name, _ in self.choices]) + 2
        lines = [f"{head:<{width}}{'f.merge':>9}{'f.split':>9}{'VI':>8}"]
        for name, score in self.choices:
            lines.append(f"{name:<{width}}{score.merge:>9.3f}{score.split:>9.3f}{score.total:>8.3f}")
        return "\n".join(lines)


def split_validation(depth: int, validation: tuple[int, int] | None) -> tuple[slice, slice]:
    """The Z slices of the training and validation parts: ``validation`` (default: the last
    quarter), and the longer run of slices on either side of it for training.

    >>> split_validation(100, None)
    (slice(0, 75, None), slice(75, 100, None))
    >>> split_validation(100, (10, 30))
    (slice(30, 100, None), slice(10, 30, None))
    """
    z0, z1 = validation if validation is not None else (depth - max(1, depth // 4), depth)
    if not 0 <= z0 < z1 <= depth:
        raise ValueError(f"validation Z range {z0}:{z1} is not inside the volume's depth {depth}")
    before, after = z0, depth - z1
    train = slice(0, z0) if before >= after else slice(z1, depth)
    if max(before, after) < 8:
        raise ValueError(f"validation Z range {z0}:{z1} leaves fewer than 8 slices to train on (depth {depth})")
    return train, slice(z0, z1)


def validation_parts(depth: int, validation: tuple[int, int] | None) -> list[tuple[slice, slice]]:
    """The (training, validation) Z slices ``train`` scores every setting on: the given
    validation range, or by default two parts, the last quarter and the first quarter
    (each setting's held-out VI is the mean of the two).

    >>> validation_parts(100, None)
    [(slice(0, 75, None), slice(75, 100, None)), (slice(25, 100, None), slice(0, 25, None))]
    """
    if validation is not None:
        return [split_validation(depth, validation)]
    return [split_validation(depth, None), split_validation(depth, (0, max(1, depth // 4)))]


def _steady(totals: dict[tuple[Any, ...], float], key: tuple[Any, ...]) -> float:
    """A setting's held-out VI averaged with its neighbours' on its curve (the thresholds
    next to it that were tried): a threshold's best value moves a little from one volume to
    the next, so a setting on a plateau is worth more than one at the bottom of a narrow dip
    (on gala, the narrow dip's threshold scored 0.05 bits worse on gala_test).

    >>> totals = {("a", 0.1): 0.9, ("a", 0.2): 0.3, ("a", 0.3): 0.9, ("b", 0.1): 0.4, ("b", 0.2): 0.35, ("b", 0.3): 0.4}
    >>> round(_steady(totals, ("a", 0.2)), 3), round(_steady(totals, ("b", 0.2)), 3)
    (0.7, 0.383)
    """
    curve = sorted(k[-1] for k in totals if k[:-1] == key[:-1])
    i = curve.index(key[-1])
    near = [totals[(*key[:-1], t)] for t in curve[max(0, i - 1):i + 2]]
    return sum(near) / len(near)


def _mean(scores: list[Score]) -> Score:
    return Score(sum(s.merge for s in scores) / len(scores), sum(s.split for s in scores) / len(scores))


def _floor(supervoxels: NDArray[np.integer], truth: NDArray[np.integer]) -> Score:
    return floor_blockwise(supervoxels.shape, lambda box: (supervoxels[box.slices()], truth[box.slices()]))


#: the agglomerations that need a trained classifier (the agglomeration's, or the voxel
#: classifier's affinity forest), and those that do not
LEARNED = ("learned_agglomeration", "multicut_agglomeration+classifier", "affinity_agglomeration")
#: what ``affinity_agglomeration`` is told of ``affinity_classifier``'s channels
FOREST_AFFINITIES = {"affinity_channels": "1,2,3",
                     "affinity_offsets": ";".join(",".join(map(str, o)) for o in AFFINITY_OFFSETS)}
PLAIN = ("rag_agglomeration", "multicut_agglomeration")


def _family(row: tuple[Any, ...]) -> str:
    return row[4] + ("+classifier" if "classifier_path" in row[5] else "")


def rank(row: tuple[Any, ...]) -> tuple[float, float]:
    """A setting's rank: its held-out score (with its neighbours'), and among equal scores
    (a small held-out part often scores a whole stretch of a curve alike) the threshold or
    ``beta`` nearest 0.5, the middle of the probability scale, where a calibrated merge
    probability means "as likely one neuron as two", rather than whichever end was tried first.

    >>> rows = [(0.30, 0, "sv", {}, "learned_agglomeration", {"threshold": t}) for t in (0.2, 0.5, 0.7)]
    >>> min(rows, key=rank)[5], min(rows[:1] + [(0.31, *rows[1][1:])], key=rank)[5]
    ({'threshold': 0.5}, {'threshold': 0.2})
    """
    knob = row[5].get("threshold", row[5].get("beta", 0.5))
    return round(float(row[0]), 9), abs(float(knob) - 0.5)


def _pick(rows: list[tuple[Any, ...]], margin: float, log: Callable[[str], None]) -> tuple[Any, ...]:
    """The best agglomeration with a learned classifier if it beats the best one without by
    ``margin``, else that one (each the first by :func:`rank`)."""
    best_learned = min((row for row in rows if _family(row) in LEARNED), key=rank)
    best_plain = min((row for row in rows if _family(row) in PLAIN), key=rank)
    log(f"best with a learned classifier {best_learned[0]:.3f} ({_family(best_learned)}), best without "
        f"{best_plain[0]:.3f} ({_family(best_plain)})")
    return best_learned if best_learned[0] < best_plain[0] - margin else best_plain


def out_of_fold(grayscale: NDArray[Any], annotations: NDArray[np.integer], *, folds: int = 2,
                affinities: NDArray[np.integer] | None = None, **fit: Any) -> NDArray[np.float32]:
    """Voxel predictions of ``grayscale`` as an unseen volume would get them: each of
    ``folds`` Z slabs predicted by a classifier trained on the annotations of the others.
    The agglomeration classifier learns from these, not from the voxel classifier's
    in-sample predictions, which are sharper than any it will meet (on gala that was the
    difference between losing to mean-boundary agglomeration and beating it). With
    ``affinities`` (the neurons) each classifier has its affinity forest too, fitted on the
    other slabs' voxel pairs, and the answer is its four channels (``predict_affinities``)."""
    edges = np.linspace(0, grayscale.shape[0], folds + 1).astype(int)
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        held = annotations.copy()
        held[a:b] = 0
        pixel = train_pixel_classifier(grayscale, held, affinities=affinities, **fit)
        zr = (int(a), int(b))
        parts.append(pixel.predict(grayscale, z_range=zr) if affinities is None else pixel.predict_affinities(grayscale, zr))
    return np.concatenate(parts)


def search_threshold(score: Callable[[float], float], start: tuple[float, ...], *, low: float = 0.0,
                     high: float = 1.0, finest: float = 0.01) -> dict[float, float]:
    """Score thresholds (lower is better) from the grid ``start`` until the curve turns: while
    the best is the grid's first or last value and better than the value next to it, step on
    (by the grid's spacing there, halving towards ``low`` and ``high``, which are never
    tried); a curve that is flat at its end is not followed (a flat stretch is no reason to
    go to an extreme). Then once more halfway between the best and each neighbour. Returns
    every threshold tried with its score.

    >>> tried = search_threshold(lambda t: (t - 0.83) ** 2, (0.2, 0.4, 0.6))
    >>> min(tried, key=tried.get), max(tried)
    (0.85, 0.9)
    """
    tried = {t: score(t) for t in start}

    def best() -> tuple[list[float], int]:
        ts = sorted(tried)
        return ts, ts.index(min(ts, key=lambda t: (tried[t], t)))

    while True:
        ts, i = best()
        if len(ts) < 2:
            break
        if i == len(ts) - 1 and tried[ts[-1]] < tried[ts[-2]]:
            step, bound = ts[-1] - ts[-2], high
        elif i == 0 and tried[ts[0]] < tried[ts[1]]:
            step, bound = ts[0] - ts[1], low
        else:
            break  # the best lies inside the grid, or the curve is flat at its end: nothing to follow
        nxt = round(ts[i] + step, 4)
        if not low < nxt < high:  # the bound itself is never tried: halve the way to it
            nxt = round((ts[i] + bound) / 2, 4)
        if abs(nxt - ts[i]) < finest or nxt in tried:
            break
        tried[nxt] = score(nxt)
    ts, i = best()
    for j in (i - 1, i + 1):
        if 0 <= j < len(ts):
            mid = round((ts[i] + ts[j]) / 2, 4)
            if abs(mid - ts[i]) >= finest and mid not in tried:
                tried[mid] = score(mid)
    return tried


def train_segmentor(
    grayscale: NDArray[Any],
    truth: NDArray[np.integer],
    out: str | Path,
    *,
    validation: tuple[int, int] | None = None,
    trees: int = 50,
    samples: int = 200_000,
    margin: float = 0.05,
    two_stage: bool = False,
    mitochondria: NDArray[Any] | None = None,
    affinities: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> TrainResult:
    """Train and tune a segmentor (see the module docstring); write its models and
    ``segmentor.json`` to the folder ``out``. The learned agglomeration is chosen over
    mean-boundary agglomeration only when it scores at least ``margin`` bits better on the
    held-out part: with far more parameters, a tie is more likely its luck on that part
    than a better model (on gala a tie on the held-out part was 0.1 bit worse on gala_test).
    ``mitochondria`` (non-zero = mitochondrion, the shape of ``truth``) adds a voxel
    classifier with a mitochondria channel and the context-aware agglomerations to the
    choices (see the module docstring); they too are chosen only when they beat the best
    segmentor without them by ``margin``. ``affinities`` also trains the voxel classifier's
    affinity forest and tries ``affinity_agglomeration`` with its affinities
    (``affinity_classifier``), as a learned agglomeration (the same margin).

    An existing folder ``out`` (configs may point to its models) is replaced only with
    ``overwrite``, and only when training succeeded: the models are written to a hidden
    sibling that is renamed over ``out`` at the end, so ``out`` is always a whole model."""
    if grayscale.shape != truth.shape or grayscale.ndim != 3:
        raise ValueError(f"grayscale {grayscale.shape} and ground truth {truth.shape} must be 3-D volumes of one shape")
    if mitochondria is not None and np.shape(mitochondria) != truth.shape:
        raise ValueError(f"the mitochondria mask {np.shape(mitochondria)} must have the ground truth's shape {truth.shape}")
    if trees < 1 or samples < 100:
        raise ValueError(f"--trees {trees} / --samples {samples}: a forest needs at least 1 tree and 100 samples "
                         "(the defaults are 50 and 200000)")
    final = Path(out).resolve()
    if final.exists() and not overwrite:
        raise ValueError(f"{final} exists already, and configs may point to its models; pass --overwrite "
                         "(overwrite=True) to replace it once training has succeeded, or train into another folder")
    if final.exists() and not final.is_dir():
        raise ValueError(f"{final} is a file, not a model folder; train into a folder")
    remove_stale_staging(final)
    folder = staging_path(final)  # the models are written here and published at the end
    folder.mkdir(parents=True)
    try:
        result = _train_into(grayscale, truth, folder, final, validation=validation, trees=trees, samples=samples,
                             margin=margin, two_stage=two_stage, mitochondria=mitochondria, affinities=affinities, log=log)
        publish_folder(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return result


def _train_into(
    grayscale: NDArray[Any], truth: NDArray[np.integer], folder: Path, final: Path, *, validation: tuple[int, int] | None,
    trees: int, samples: int, margin: float, two_stage: bool, mitochondria: NDArray[Any] | None, affinities: bool,
    log: Callable[[str], None],
) -> TrainResult:
    """:func:`train_segmentor`'s work, written to ``folder``; the segmentor names its models
    where they will be once ``folder`` is published as ``final``."""
    parts = validation_parts(grayscale.shape[0], validation)
    # voxel classifiers: membranes only and, given a mask, one that also predicts mitochondria;
    # the agglomeration's settings for each: plain and, with a mitochondria channel, context-aware
    kinds: list[tuple[str, NDArray[Any] | None, list[dict[str, Any]]]] = [("", None, [{}])]
    if mitochondria is not None:
        kinds.append(("mitochondria channel: ", np.asarray(mitochondria), [{}, {"mitochondria_channel": 1}]))
    pixel_path = folder / "pixel-classifier.pkl"
    candidates: list[tuple[str, dict[str, Any]]] = [("distance_transform_watershed", {})]
    candidates += [("seeded_watershed", {"seed_threshold": t, "min_segment_size": 20}) for t in (0.1, 0.2, 0.3)]
    stages = {"distance_transform_watershed": distance_transform_watershed, "seeded_watershed": seeded_watershed}
    # every setting's held-out score on each validation part, in the order first tried
    found: dict[tuple[Any, ...], list[Score]] = {}
    names: dict[tuple[Any, ...], str] = {}
    rows: dict[tuple[Any, ...], tuple[int, str, dict[str, Any], str, dict[str, Any]]] = {}
    for fold, (train, held) in enumerate(parts):
        if len(parts) > 1:
            log(f"validation part {fold + 1} of {len(parts)}: z {held.start}:{held.stop}")
        gray_t, truth_t, gray_v, truth_v = grayscale[train], truth[train], grayscale[held], truth[held]
        none_t, none_v = np.zeros(gray_t.shape, bool), np.zeros(gray_v.shape, bool)
        for kind, (prefix, mito, contexts) in enumerate(kinds):
            log(f"training the voxel classifier{' (membranes and mitochondria)' if mito is not None else ''}")
            notes = membrane_annotations(truth_t, None if mito is None else mito[train])
            forest_affinities = affinities and mito is None and not two_stage
            pixel = train_pixel_classifier(gray_t, notes, n_estimators=trees, max_samples=samples,
                                           two_stage=two_stage, affinities=truth_t if forest_affinities else None,
                                           log=lambda line: log(f"  {line}"))
            aff_v = pixel.predict_affinities(gray_v) if forest_affinities else None
            pred_v = pixel.predict(gray_v) if aff_v is None else aff_v[..., 0]
            log("predicting the training part out of fold (the agglomeration learns from predictions like a new volume's)")
            fit = {"n_estimators": trees, "max_samples": samples}
            aff_t = out_of_fold(gray_t, notes, affinities=truth_t, **fit) if forest_affinities else None
            pred_t = out_of_fold(gray_t, notes, two_stage=two_stage, **fit) if aff_t is None else aff_t[..., 0]
            log(f"trying every supervoxel stage ({len(candidates)}) with every agglomeration on the validation part")
            for k, (sv_name, sv_params) in enumerate(candidates):
                start = time.perf_counter()
                label = f"{prefix}{sv_name}{' ' + str(sv_params) if sv_params else ''}"
                sv_t, sv_v = stages[sv_name](pred_t, none_t, **sv_params), stages[sv_name](pred_v, none_v, **sv_params)
                floor_key = (kind, k, "floor")
                names[floor_key] = f"{label}: perfect-agglomeration floor"
                found.setdefault(floor_key, []).append(_floor(sv_v, truth_v))
                for context in contexts:
                    aware = ", mitochondria last" if context else ""
                    log(f"training the agglomeration classifier on {label}{aware}")
                    agglo_path = folder / f"agglomeration-{kind}-{k}-{len(context)}.npz"
                    train_agglomeration(sv_t, pred_t, truth_t, n_estimators=2 * trees, **context).save(agglo_path)
                    with_path = folder / f"agglomeration-{kind}-{k}-{len(context)}-affinities.npz"
                    if aff_t is not None and not context:  # and one that also learns from the forest's affinities
                        train_agglomeration(sv_t, aff_t, truth_t, n_estimators=2 * trees, **FOREST_AFFINITIES).save(with_path)
                    # each agglomeration's thresholds are searched until the first part's held-out
                    # curve turns; the other parts score the same thresholds
                    families: list[tuple[str, str, dict[str, Any], Callable[[float], Any], tuple[float, ...]]] = [
                        ("learned_agglomeration", "threshold", {},
                         lambda t: learned_agglomeration(pred_v, sv_v, str(agglo_path), threshold=t, **context),
                         (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),  # calibrated: 0.5 is "as likely one as two"
                        ("rag_agglomeration", "threshold", {},
                         lambda t: rag_agglomeration(pred_v, sv_v, threshold=t, **context), (0.2, 0.3, 0.4, 0.5, 0.6)),
                    ]
                    if not context:  # the multicut has no context-aware form
                        families += [
                            ("multicut_agglomeration", "beta", {}, lambda b: multicut_agglomeration(pred_v, sv_v, beta=b),
                             (0.1, 0.2, 0.3, 0.4, 0.5)),
                            ("multicut_agglomeration", "beta", {"classifier_path": "learned"},
                             lambda b: multicut_agglomeration(pred_v, sv_v, beta=b, classifier_path=str(agglo_path)),
                             (0.3, 0.4, 0.5, 0.6, 0.7)),
                        ]
                    if not context and aff_v is not None:  # the voxel classifier's own affinities
                        families += [
                            ("affinity_agglomeration", "threshold", dict(FOREST_AFFINITIES),
                             lambda t: affinity_agglomeration(aff_v, sv_v, threshold=t, **FOREST_AFFINITIES),
                             (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
                            ("learned_agglomeration", "threshold", dict(FOREST_AFFINITIES),
                             lambda t: learned_agglomeration(aff_v, sv_v, str(with_path), threshold=t, **FOREST_AFFINITIES),
                             (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
                            ("multicut_agglomeration", "beta", {"classifier_path": "learned", **FOREST_AFFINITIES},
                             lambda b: multicut_agglomeration(aff_v, sv_v, beta=b, classifier_path=str(with_path),
                                                              **FOREST_AFFINITIES), (0.3, 0.4, 0.5, 0.6, 0.7)),
                        ]
                    for agg_name, knob, extra, agglomerate, grid in families:
                        family = (kind, k, len(context), agg_name, tuple(sorted(extra)))
                        scores: dict[float, Score] = {}

                        def total(t: float) -> float:
                            scores[t] = vi(agglomerate(t), truth_v)
                            return scores[t].total

                        if fold == 0:
                            search_threshold(total, grid)
                        else:
                            for t in [key[-1] for key in found if key[:-1] == family]:
                                total(t)
                        tags = (["forest affinities"] if agg_name == "affinity_agglomeration" else
                                ["learned costs"] * ("classifier_path" in extra) + ["affinity features"] * ("affinity_channels" in extra))
                        learned = f" ({', '.join(tags)})" if tags else ""
                        for t in sorted(scores):
                            key = (*family, t)
                            names[key] = f"{label} + {agg_name}{learned} {knob} {t}{aware}"
                            rows[key] = (kind, sv_name, sv_params, agg_name, {knob: t, **extra, **context})
                            found.setdefault(key, []).append(scores[t])
                    agglo_path.unlink()  # only the chosen one is kept, fitted again on the whole volume
                    with_path.unlink(missing_ok=True)
                best = min((sum(s.total for s in v) / len(v) for key, v in found.items() if key in rows), default=float("nan"))
                log(f"  [{k + 1}/{len(candidates)}] {label}: best held-out VI so far {best:.3f} "
                    f"({time.perf_counter() - start:.1f} s)")
    # a setting's score is its mean over the validation parts (on small volumes one part's
    # VI is noisy: a setting must do well on both), averaged with its curve's neighbours
    choices: list[tuple[str, Score]] = [(names[key] + (f" (mean of {len(parts)} parts)" if len(parts) > 1 else ""),
                                         _mean(scores)) for key, scores in found.items() if len(scores) == len(parts)]
    complete = {key: _mean(found[key]).total for key in rows if len(found[key]) == len(parts)}
    scored = [(_steady(complete, key), *rows[key]) for key in complete]
    # the learned agglomeration has far more parameters, and the mitochondria channel adds a
    # model and a setting: each must win clearly on the held-out part to be chosen
    picks = [_pick([row for row in scored if row[1] == kind], margin, log) for kind in range(len(kinds))]
    chosen = picks[0]
    if len(picks) > 1 and picks[1][0] < picks[0][0] - margin:
        chosen = picks[1]
    _, kind, sv_name, sv_params, agg_name, agg_params = chosen
    mito = kinds[kind][1]
    log(f"chose {kinds[kind][0]}{sv_name} {sv_params} + {agg_name} {agg_params} (held-out VI with its neighbours {chosen[0]:.3f}"
        + (f"; membranes only {picks[0][0]:.3f}, with the mitochondria channel {picks[1][0]:.3f}" if len(picks) > 1 else "")
        + f"; margin {margin})")
    # the settings are chosen; the models are fitted again on the whole volume (more data,
    # the same choices): the held-out part only ever chose among settings
    log("fitting the chosen models again on the whole volume")
    by_affinities = "affinity_channels" in agg_params  # the forest's affinities: affinity_classifier's channels
    pixel = train_pixel_classifier(grayscale, membrane_annotations(truth, mito), n_estimators=trees, max_samples=samples,
                                   two_stage=two_stage, affinities=truth if by_affinities else None,
                                   log=lambda line: log(f"  {line}"))
    pixel.save(pixel_path)
    agglo_path = folder / "agglomeration.npz"
    pixel_path, published_agglo = final / pixel_path.name, final / agglo_path.name  # where the config finds them
    if agg_name == "learned_agglomeration" or "classifier_path" in agg_params:
        log("fitting the agglomeration classifier again on out-of-fold predictions of the whole volume")
        predictions = out_of_fold(grayscale, membrane_annotations(truth, mito), n_estimators=trees, max_samples=samples,
                                  two_stage=two_stage, affinities=truth if by_affinities else None)
        supervoxels = stages[sv_name](predictions, np.zeros(grayscale.shape, bool), **sv_params)
        context = {key: v for key, v in agg_params.items() if key.startswith(("mitochondria", "affinity"))}
        train_agglomeration(supervoxels, predictions, truth, n_estimators=2 * trees, **context).save(agglo_path)
        agg_params = {**agg_params, "classifier_path": str(published_agglo)}
    segmentor = {
        "predict-voxels": {"function": "affinity_classifier" if by_affinities else
                           "two_stage_predictions" if two_stage else "pixel_classifier",
                           "parameters": {"classifier_path": str(pixel_path)}},
        "create-supervoxels": {"function": sv_name, "parameters": sv_params},
        "agglomerate-supervoxels": {"function": agg_name, "parameters": agg_params},
    }
    (folder / "segmentor.json").write_text(json.dumps(segmentor, indent=2) + "\n")
    return TrainResult(segmentor, str(final / "segmentor.json"), [(h.start, h.stop) for _, h in parts], choices)
