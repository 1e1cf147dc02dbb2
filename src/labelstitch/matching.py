r"""Matching segments across one face: the stitching rules of Plaza & Berg, Eq. 1-3.

For a face between subvolumes A and B, both sides' labels are cut to the face's overlap
box (the *slab*). For every pair of labels ``(a, b)`` that share voxels in the slab, let

* :math:`n = |a \cap b|`, the voxels they share in the slab,
* :math:`s_a = |a|` and :math:`s_b = |b|`, each label's voxels in the slab (including
  voxels where the other side is background),
* ``a_best``: ``b`` is a's best partner (largest :math:`n`; ties go to the pair that occurs
  first in the slab in C order, which depends on geometry only, never on label values),
* ``b_best``: ``a`` is b's best partner.

A pair is a *candidate* when ``a_best or b_best``. Only segments present on the face's
middle plane (in their own side's labels) may match; any other candidate is refused as
``not-on-plane``. Each rule then accepts or refuses candidates:

``none``
    Nothing matches.
``conservative`` (``min_overlap=50, min_fraction=0.9``)
    Eq. 1 with :math:`\wedge` (mutual best) and Eq. 2 with :math:`\wedge`:
    ``a_best and b_best and n > min_overlap and n/s_a >= min_fraction and n/s_b >= min_fraction``.
``medium`` (``min_overlap=50``), the default
    Eq. 1 with :math:`\wedge`, which satisfies Eq. 3 (one match per segment per face):
    ``a_best and b_best and n > min_overlap``.
``aggressive`` (``min_overlap=50, min_fraction=0.9, min_one_sided=1000``)
    ``medium``, plus Eq. 1 with :math:`\vee` restricted by Eq. 2 with :math:`\vee`:
    ``(a_best or b_best) and (n/s_a > min_fraction or n/s_b > min_fraction) and n > min_one_sided``.

Every rule but ``none`` also accepts an *exact* pair, ``n == s_a == s_b``: when both sides
agree completely on a segment it is always matched, however small. With the default
parameters the accepted sets are nested: none ⊆ conservative ⊆ medium ⊆ aggressive.

A rule is a function ``rule(candidates: Candidates, **params) -> reasons`` returning one
:class:`Reason` code per pair (``Reason.ACCEPTED`` to accept), given to this module as a
:class:`~labelstitch.rules.StitchRule` (see :mod:`labelstitch.rules`); rules are found by
name in the plugin registry (:func:`labelstitch.plugins.rules.get_rule`,
:func:`labelstitch.register_rule`), never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._kernels.components import label_components
from .contingency import label_counts, overlaps
from .rules import Candidates, Reason, StitchRule, check_rule_params

__all__ = ["FaceCandidates", "FaceMatches", "FaceReport", "apply_rule", "face_candidates", "match_face", "reasons"]


# --------------------------------------------------------------------------- one face


@dataclass(frozen=True)
class FaceMatches:
    """The accepted matches of one face, one entry per label pair."""

    a: NDArray[np.uint64]
    b: NDArray[np.uint64]
    count: NDArray[np.int64]
    size_a: NDArray[np.int64]
    size_b: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.a.size)


@dataclass(frozen=True)
class FaceReport:
    """What happened on one face.

    ``segments_a``/``segments_b`` count the labels of each side in the slab,
    ``considered_a``/``considered_b`` those on the middle plane, ``candidates`` the pairs
    where one side is the other's best partner, ``matched`` the accepted pairs and
    ``refused`` the refused candidates by reason.
    """

    segments_a: int
    segments_b: int
    considered_a: int
    considered_b: int
    candidates: int
    matched: int
    refused: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments_a": self.segments_a,
            "segments_b": self.segments_b,
            "considered_a": self.considered_a,
            "considered_b": self.considered_b,
            "candidates": self.candidates,
            "matched": self.matched,
            "refused": dict(self.refused),
        }


def _best_flags(keys: NDArray[np.uint64], count: NDArray[np.int64], first: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True where a pair is its key's best: largest count, ties to the earliest ``first``."""
    order = np.lexsort((first, -count, keys))
    sorted_keys = keys[order]
    head = np.ones(keys.size, bool)
    head[1:] = sorted_keys[1:] != sorted_keys[:-1]
    best = np.zeros(keys.size, bool)
    best[order[head]] = True
    return best


def _lookup(values: NDArray[np.uint64], table_keys: NDArray[np.uint64], table_vals: NDArray[Any]) -> NDArray[Any]:
    """``table_vals[i]`` where ``table_keys[i] == values`` (``table_keys`` sorted, all present)."""
    return table_vals[np.searchsorted(table_keys, values)]


def _plane(slab: NDArray[Any], axis: int, offset: int) -> NDArray[Any]:
    return np.take(slab, offset, axis=axis)


def _components(slab: NDArray[Any]) -> tuple[NDArray[np.uint32], NDArray[np.uint64]]:
    """Connected pieces of each label in the slab, and the label of each piece (index 0: 0)."""
    comp, k = label_components(np.ascontiguousarray(slab))
    label_of = np.zeros(k + 1, np.uint64)
    label_of[comp.reshape(-1)] = slab.reshape(-1)
    return comp, label_of


@dataclass(frozen=True)
class FaceCandidates:
    """What every rule sees of one face: the candidate pairs of its two slabs (segments, or
    their connected pieces) and what is needed to turn accepted pairs back into matches.
    Made once by :func:`face_candidates`; any number of rules are then applied to it with
    :func:`apply_rule` (rule comparison and tuning match each face once per rule this way)."""

    cand: Candidates
    report_sizes: tuple[int, int, int, int]  # segments_a, segments_b, considered_a, considered_b
    pieces: tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[Any], NDArray[Any]] | None  # label_of_a/b, raw slabs


def face_candidates(
    slab_a: NDArray[Any], slab_b: NDArray[Any], *, axis: int, plane: int, connected_components: bool = False
) -> FaceCandidates | None:
    """The candidate pairs of one face (None: an empty face); see :func:`match_face`."""
    if slab_a.shape != slab_b.shape:
        raise ValueError(f"`slab_a` (shape {slab_a.shape}) must have the same shape as `slab_b` (shape {slab_b.shape})")
    raw_a, raw_b = slab_a, slab_b
    pieces = None
    if connected_components and slab_a.ndim == 3 and slab_a.size:
        slab_a, label_of_a = _components(raw_a)
        slab_b, label_of_b = _components(raw_b)
        pieces = (label_of_a, label_of_b, raw_a, raw_b)
    if slab_a.size == 0:
        return None
    ov = overlaps(slab_a, slab_b)
    plane_a = label_counts(_plane(slab_a, axis, plane))[0]
    plane_b = label_counts(_plane(slab_b, axis, plane))[0]
    on_a = np.isin(ov.a, plane_a)
    on_b = np.isin(ov.b, plane_b)
    cand = Candidates(
        a=ov.a,
        b=ov.b,
        count=ov.count,
        size_a=_lookup(ov.a, ov.a_labels, ov.a_totals),
        size_b=_lookup(ov.b, ov.b_labels, ov.b_totals),
        a_best=_best_flags(ov.a, ov.count, ov.first),
        b_best=_best_flags(ov.b, ov.count, ov.first),
        on_plane=on_a & on_b,
    )
    sizes = (int(ov.a_labels.size), int(ov.b_labels.size), int(np.count_nonzero(plane_a)), int(np.count_nonzero(plane_b)))
    return FaceCandidates(cand, sizes, pieces)


def reasons(found: FaceCandidates, rule: StitchRule, params: dict[str, Any]) -> NDArray[np.int8]:
    """One :class:`Reason` per pair of ``found``: the rule's verdict, with exact pairs
    accepted, segments off the middle plane refused and non-candidates marked."""
    cand = found.cand
    reason = np.asarray(rule(cand, **params), dtype=np.int8)
    if reason.shape != (len(cand),):
        raise ValueError(f"stitching rule {rule.name!r} returned {reason.shape} reasons for {len(cand)} pairs")
    if rule.name != "none":
        reason = np.where(cand.exact, Reason.ACCEPTED, reason).astype(np.int8)
        reason[~cand.on_plane & (reason != Reason.RULE_NONE)] = Reason.NOT_ON_PLANE
    reason[~(cand.a_best | cand.b_best)] = Reason.NOT_CANDIDATE
    return reason


def apply_rule(found: FaceCandidates | None, rule: StitchRule, **params: Any) -> tuple[FaceMatches, FaceReport]:
    """The matches and report of one rule on a face's candidates; see :func:`match_face`."""
    check_rule_params(rule, params)
    if found is None:
        none_u, none_i = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return FaceMatches(none_u, none_u, none_i, none_i, none_i), FaceReport(0, 0, 0, 0, 0, 0)
    cand = found.cand
    is_candidate = cand.a_best | cand.b_best
    reason = reasons(found, rule, params)
    accepted = reason == Reason.ACCEPTED

    codes, counts = np.unique(reason[is_candidate & ~accepted], return_counts=True)
    segments_a, segments_b, considered_a, considered_b = found.report_sizes
    report = FaceReport(
        segments_a=segments_a,
        segments_b=segments_b,
        considered_a=considered_a,
        considered_b=considered_b,
        candidates=int(np.count_nonzero(is_candidate)),
        matched=int(np.count_nonzero(accepted)),
        refused={Reason(int(c)).slug: int(n) for c, n in zip(codes, counts)},
    )

    ma, mb, mc = cand.a[accepted], cand.b[accepted], cand.count[accepted]
    if found.pieces is not None:
        # Pieces back to their segments; several piece pairs may join the same two segments.
        label_of_a, label_of_b, raw_a, raw_b = found.pieces
        ma, mb = label_of_a[ma], label_of_b[mb]
        pairs = np.stack([ma, mb], axis=1)
        pairs, inverse = np.unique(pairs, axis=0, return_inverse=True)
        mc = np.bincount(inverse.reshape(-1), weights=mc, minlength=len(pairs)).astype(np.int64)
        ma, mb = pairs[:, 0].copy(), pairs[:, 1].copy()
        la, ta = label_counts(raw_a)
        lb, tb = label_counts(raw_b)
        sa, sb = _lookup(ma, la, ta), _lookup(mb, lb, tb)
    else:
        sa, sb = cand.size_a[accepted], cand.size_b[accepted]
    return FaceMatches(ma, mb, mc, sa, sb), report


def match_face(
    slab_a: NDArray[Any],
    slab_b: NDArray[Any],
    *,
    axis: int,
    plane: int,
    rule: StitchRule,
    connected_components: bool = False,
    **params: Any,
) -> tuple[FaceMatches, FaceReport]:
    """Match the segments of two sides of one face.

    Parameters
    ----------
    slab_a, slab_b : (Z, Y, X) ndarray of int
        Each side's labels cut to the face's overlap box (same shape).
    axis : int
        The axis across the face.
    plane : int
        Index of the middle plane inside the slab along ``axis``.
    rule : StitchRule
        The rule (``labelstitch.match_slabs`` takes a registered name).
    connected_components : bool
        Split every segment into its 6-connected pieces inside the slab first, so that each
        piece seeks its own partner (the paper's remedy for segments that branch outside the
        overlap). Accepted piece pairs become matches of their segments.
    **params
        The rule's parameters.

    Returns
    -------
    FaceMatches, FaceReport
    """
    check_rule_params(rule, params)
    found = face_candidates(slab_a, slab_b, axis=axis, plane=plane, connected_components=connected_components)
    return apply_rule(found, rule, **params)
