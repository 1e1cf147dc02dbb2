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

Rules live in a registry (:func:`register_rule`); a rule is a function
``rule(candidates: Candidates, **params) -> reasons`` returning one :class:`Reason` code per
pair (``Reason.ACCEPTED`` to accept).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._kernels.components import label_components
from .contingency import label_counts, overlaps

__all__ = [
    "Candidates",
    "FaceMatches",
    "FaceReport",
    "Reason",
    "Rule",
    "available_rules",
    "get_rule",
    "match_slabs",
    "protective_refusals",
    "refused_pairs",
    "touching_pairs",
    "register_rule",
    "rule_parameters",
]


class Reason(IntEnum):
    """Why a candidate pair was accepted or refused."""

    #: the pair matches
    ACCEPTED = 0
    #: one side has a different best partner
    NOT_MUTUAL = 1
    #: the overlap is too small a share of one side's voxels in the slab
    BELOW_FRACTION = 2
    #: the overlap has too few voxels
    BELOW_SIZE = 3
    #: one of the two segments does not reach the face's middle plane
    NOT_ON_PLANE = 4
    #: the rule matches nothing (``none``)
    RULE_NONE = 5
    #: neither side's best partner: not a candidate, never reported
    NOT_CANDIDATE = 6

    @property
    def slug(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Candidates:
    """Every overlapping pair on one face, with what the rules look at.

    All attributes are arrays of the same length, one entry per pair.
    """

    a: NDArray[np.uint64]
    b: NDArray[np.uint64]
    count: NDArray[np.int64]
    size_a: NDArray[np.int64]
    size_b: NDArray[np.int64]
    a_best: NDArray[np.bool_]
    b_best: NDArray[np.bool_]
    on_plane: NDArray[np.bool_]

    @property
    def mutual(self) -> NDArray[np.bool_]:
        return self.a_best & self.b_best

    @property
    def exact(self) -> NDArray[np.bool_]:
        return (self.count == self.size_a) & (self.count == self.size_b)

    @property
    def fraction_a(self) -> NDArray[np.float64]:
        return self.count / self.size_a

    @property
    def fraction_b(self) -> NDArray[np.float64]:
        return self.count / self.size_b

    def __len__(self) -> int:
        return int(self.a.size)


Rule = Callable[..., NDArray[np.integer]]


# --------------------------------------------------------------------------- the rules


def _first_failure(*conditions: tuple[NDArray[np.bool_], Reason], n: int) -> NDArray[np.int8]:
    """Reason code per pair: the first condition that fails, or ACCEPTED."""
    reason = np.full(n, Reason.ACCEPTED, np.int8)
    for ok, why in reversed(conditions):
        reason[~ok] = why
    return reason


def rule_none(c: Candidates) -> NDArray[np.int8]:
    """Match nothing: every subvolume keeps its own ids."""
    return np.full(len(c), Reason.RULE_NONE, np.int8)


def rule_medium(c: Candidates, *, min_overlap: int = 50) -> NDArray[np.int8]:
    """Mutual best partners sharing more than ``min_overlap`` voxels (Eq. 1 with ∧, Eq. 3)."""
    return _first_failure((c.mutual, Reason.NOT_MUTUAL), (c.count > min_overlap, Reason.BELOW_SIZE), n=len(c))


def rule_conservative(c: Candidates, *, min_overlap: int = 50, min_fraction: float = 0.9) -> NDArray[np.int8]:
    """``medium``, and the overlap holds at least ``min_fraction`` of both segments (Eq. 2 with ∧)."""
    return _first_failure(
        (c.mutual, Reason.NOT_MUTUAL),
        ((c.fraction_a >= min_fraction) & (c.fraction_b >= min_fraction), Reason.BELOW_FRACTION),
        (c.count > min_overlap, Reason.BELOW_SIZE),
        n=len(c),
    )


def rule_aggressive(
    c: Candidates, *, min_overlap: int = 50, min_fraction: float = 0.9, min_one_sided: int = 1000
) -> NDArray[np.int8]:
    """``medium``, plus one-sided best partners whose overlap holds more than ``min_fraction``
    of either segment and more than ``min_one_sided`` voxels (Eq. 1 and Eq. 2 with ∨)."""
    medium = rule_medium(c, min_overlap=min_overlap)
    one_sided = _first_failure(
        ((c.fraction_a > min_fraction) | (c.fraction_b > min_fraction), Reason.BELOW_FRACTION),
        (c.count > min_one_sided, Reason.BELOW_SIZE),
        n=len(c),
    )
    return np.where(c.mutual, medium, one_sided).astype(np.int8)


_RULES: dict[str, Rule] = {}


def register_rule(name: str, rule: Rule, *, replace: bool = False) -> None:
    """Make ``rule`` available as ``rule=name`` in :func:`match_slabs` and :func:`~labelstitch.stitch`.

    ``rule(candidates, **params)`` returns one :class:`Reason` code per candidate pair.
    Its keyword parameters, with their defaults, become the rule's parameters. Exact
    pairs are accepted and pairs off the middle plane refused by the caller, whatever
    the rule says (except for ``none``).
    """
    if not callable(rule):
        raise ValueError(f"`rule` must be callable, got {rule!r}")
    if name in _RULES and not replace:
        raise ValueError(f"a stitching rule named {name!r} exists already; pass replace=True to replace it")
    _RULES[name] = rule


def available_rules() -> tuple[str, ...]:
    """Names of the registered rules, built-ins first."""
    return tuple(_RULES)


def get_rule(name: str) -> Rule:
    """The rule registered as ``name``."""
    try:
        return _RULES[name]
    except KeyError:
        raise ValueError(f"unknown stitching rule {name!r}; known rules: {', '.join(_RULES)}") from None


def rule_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of a rule with their defaults."""
    sig = inspect.signature(get_rule(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_rule_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming any parameter the rule does not take, or a value whose type
    does not fit the parameter's default (a number where the default is a number)."""
    known = rule_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"stitching rule {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}"
        )
    for key, value in params.items():
        default = known[key]
        if isinstance(default, bool) or default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, int) and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"stitching rule {name!r}: parameter {key!r} must be a whole number like its default {default!r}, got {value!r}")
        if isinstance(default, float) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"stitching rule {name!r}: parameter {key!r} must be a number like its default {default!r}, got {value!r}")
        if isinstance(default, (int, float)) and value < 0:
            raise ValueError(f"stitching rule {name!r}: parameter {key!r} must not be negative, got {value!r}")


for _name, _rule in (
    ("none", rule_none),
    ("conservative", rule_conservative),
    ("medium", rule_medium),
    ("aggressive", rule_aggressive),
):
    register_rule(_name, _rule)


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


def _components(slab: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
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
    """The candidate pairs of one face (None: an empty face); see :func:`match_slabs`."""
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


def _reasons(found: FaceCandidates, rule: str, params: dict[str, Any]) -> NDArray[np.int8]:
    """One :class:`Reason` per pair of ``found``: the rule's verdict, with exact pairs
    accepted, segments off the middle plane refused and non-candidates marked."""
    cand = found.cand
    reason = np.asarray(get_rule(rule)(cand, **params), dtype=np.int8)
    if reason.shape != (len(cand),):
        raise ValueError(f"stitching rule {rule!r} returned {reason.shape} reasons for {len(cand)} pairs")
    if rule != "none":
        reason = np.where(cand.exact, Reason.ACCEPTED, reason).astype(np.int8)
        reason[~cand.on_plane & (reason != Reason.RULE_NONE)] = Reason.NOT_ON_PLANE
    reason[~(cand.a_best | cand.b_best)] = Reason.NOT_CANDIDATE
    return reason


def refused_pairs(found: FaceCandidates | None, rule: str = "medium", **params: Any) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """The segment pairs ``(a, b)`` of a face that were candidates and that the rule refused
    (a pair of which some connected piece matched is not refused). Agglomeration across
    blocks keeps these pairs from merging through the face, as stitching does."""
    none = np.zeros(0, np.uint64)
    if found is None:
        return none, none
    check_rule_params(rule, params)
    reason = _reasons(found, rule, params)
    cand = found.cand
    refused = (reason != Reason.ACCEPTED) & (reason != Reason.NOT_CANDIDATE)
    a, b, ma, mb = cand.a[refused], cand.b[refused], cand.a[reason == Reason.ACCEPTED], cand.b[reason == Reason.ACCEPTED]
    if found.pieces is not None:
        label_of_a, label_of_b = found.pieces[:2]
        a, b, ma, mb = label_of_a[a], label_of_b[b], label_of_a[ma], label_of_b[mb]
    if a.size == 0:
        return none, none
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    if ma.size:  # a pair of which some piece matched is joined, not refused
        matched = {(int(x), int(y)) for x, y in zip(ma, mb)}
        pairs = pairs[[(int(x), int(y)) not in matched for x, y in pairs]]
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


def apply_rule(found: FaceCandidates | None, rule: str = "medium", **params: Any) -> tuple[FaceMatches, FaceReport]:
    """The matches and report of one rule on a face's candidates; see :func:`match_slabs`."""
    check_rule_params(rule, params)
    if found is None:
        none_u, none_i = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return FaceMatches(none_u, none_u, none_i, none_i, none_i), FaceReport(0, 0, 0, 0, 0, 0)
    cand = found.cand
    is_candidate = cand.a_best | cand.b_best
    reason = _reasons(found, rule, params)
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


def match_slabs(
    slab_a: NDArray[Any],
    slab_b: NDArray[Any],
    *,
    axis: int,
    plane: int,
    rule: str = "medium",
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
    rule : str
        A registered rule name (see the module docstring).
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


def touching_pairs(labels: NDArray[Any]) -> set[tuple[int, int]]:
    """The pairs ``(low, high)`` of different non-zero labels that touch (6-neighbours) in
    ``labels``: the edges of its region graph (the numba kernel of :mod:`labelstitch.rag`).

    >>> sorted(touching_pairs(np.array([[[1, 1, 2, 0, 3]]])))
    [(1, 2)]
    """
    from .rag import region_graph, renumber

    dense, old = renumber(labels)
    graph = region_graph(dense, np.zeros(dense.shape, np.float32))
    return set(zip(old[graph.u.astype(np.int64) - 1].tolist(), old[graph.v.astype(np.int64) - 1].tolist()))


def protective_refusals(
    found: FaceCandidates | None, refused: tuple[NDArray[np.uint64], NDArray[np.uint64]],
    touch_a: set[tuple[int, int]], touch_b: set[tuple[int, int]],
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Of a face's refused pairs ``(a, b)``, those a refusal should keep apart when
    agglomerating across blocks: where one side separates, inside its own interior, what
    the other side joins (``b`` touches another segment of B's interior that ``a`` also
    overlaps, or the other way round). There the agglomeration can weigh the two pieces on
    that side's own contact, and dropping ``a``-``b`` keeps a bad block's merge from
    spreading. A refused piece that touches none of its partner's other partners (a branch
    whose link lies beyond the face) keeps its contact: without it, it would lose its only
    way to its neurite. ``touch_a`` / ``touch_b`` are the :func:`touching_pairs` of each
    side's labels in the slab's part inside its own interior."""
    a, b = refused
    if found is None or a.size == 0:
        return a, b
    cand = found.cand
    ca, cb = cand.a, cand.b
    if found.pieces is not None:
        ca, cb = found.pieces[0][ca], found.pieces[1][cb]
    partners_a: dict[int, set[int]] = {}
    partners_b: dict[int, set[int]] = {}
    for x, y in zip(ca.tolist(), cb.tolist()):
        partners_a.setdefault(x, set()).add(y)
        partners_b.setdefault(y, set()).add(x)
    keep = []
    for x, y in zip(a.tolist(), b.tolist()):
        others_b = partners_a.get(x, set()) - {y}
        others_a = partners_b.get(y, set()) - {x}
        split_in_b = any((min(y, o), max(y, o)) in touch_b for o in others_b)
        split_in_a = any((min(x, o), max(x, o)) in touch_a for o in others_a)
        keep.append(split_in_a or split_in_b)
    mask = np.array(keep, bool)
    return a[mask], b[mask]
