r"""The stitching rules of Plaza & Berg (Eq. 1-3) as plain functions, and what a rule is.

A rule is a function ``rule(candidates: Candidates, **params) -> reasons`` returning one
:class:`Reason` code per candidate pair (``Reason.ACCEPTED`` to accept); its keyword-only
parameters, with their defaults, are the rule's parameters. :class:`StitchRule` is a rule
with its name, as the plugin registry (:mod:`labelstitch.plugins.rules`) hands it out and
as workers receive it: the core never looks a rule up by name. The four built-ins are
:data:`BUILTIN_RULES` (defined in words in :mod:`labelstitch.matching`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .parameters import check_parameters

__all__ = ["BUILTIN_RULES", "Candidates", "Reason", "Rule", "StitchRule", "check_rule_params",
           "rule_aggressive", "rule_conservative", "rule_medium", "rule_none"]


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


@dataclass(frozen=True)
class StitchRule:
    """A stitching rule and its name: what matching is given (picklable when the function
    is importable, so workers receive the rule itself and never look it up)."""

    name: str
    function: Rule

    @property
    def parameters(self) -> dict[str, Any]:
        """The keyword parameters of the rule with their defaults."""
        sig = inspect.signature(self.function)
        return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def __call__(self, candidates: Candidates, **params: Any) -> NDArray[np.integer]:
        return self.function(candidates, **params)


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


#: the rules of the seed paper, by name, in the order of docs/stitching.md
BUILTIN_RULES: Mapping[str, Rule] = MappingProxyType({
    "none": rule_none, "conservative": rule_conservative, "medium": rule_medium, "aggressive": rule_aggressive,
})


def check_rule_params(rule: StitchRule, params: dict[str, Any]) -> None:
    """Raise ValueError naming any parameter the rule does not take, or a value that does
    not fit (:func:`labelstitch.parameters.check_parameters`; numbers not below 0)."""
    check_parameters(rule.function, params, rule.parameters, named=f"stitching rule {rule.name!r}",
                     subject=f"stitching rule {rule.name!r}", non_negative=True)
