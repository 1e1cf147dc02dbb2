"""One checker for the parameters of stage functions and stitching rules alike.

A parameter's accepted values come from its annotation where it has one (``int``,
``float``, ``bool``, ``str``, optionally ``Annotated[..., Range(low, high)]``), else from
its default (a number where the default is a number; with ``non_negative``, as for the
stitching rules' thresholds, not below 0). Every refusal names the parameter, its owner,
what was expected and what was given, before any work.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Range", "check_parameters"]


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter accepts, for ``Annotated[float, Range(0, 1)]`` in a
    stage function's or rule's signature: the config is refused before any work when a
    value lies outside (``None``: no bound on that side)."""

    low: float | None = None
    high: float | None = None

    def __contains__(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in [{self.low:g}, {self.high:g}]"


_KINDS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _fits(kind: type, value: Any) -> bool:
    accepted = _KINDS[kind][0]
    return isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))


def check_parameters(
    fn: Callable[..., Any],
    given: dict[str, Any],
    known: dict[str, Any],
    *,
    named: str,
    subject: str,
    owner: str = "",
    takes_any: bool = False,
    non_negative: bool = False,
) -> None:
    """Refuse ``given`` parameters of ``fn`` that it does not take (unless ``takes_any``), that
    it needs but lacks, or whose values do not fit (see the module docstring). ``known``
    maps its parameters to their defaults (``inspect.Parameter.empty``: required).
    ``named`` is how messages about the function start (``"stitching rule 'medium'"``),
    ``subject`` and ``owner`` how messages about one value do
    (``"{subject}: parameter 'x' of {owner!r} must be ..."``).

    Raises
    ------
    ValueError
        The first problem found, in one line.
    """
    unknown = sorted(set(given) - set(known))
    if unknown and not takes_any:
        listing = ", ".join(f"{k}={v!r}" if v is not inspect.Parameter.empty else k for k, v in known.items())
        raise ValueError(f"{named} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {listing or 'none'}")
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in given]
    if missing:
        raise ValueError(f"{named} needs parameter {', '.join(map(repr, missing))}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable annotations: only the defaults say what fits
        hints = {}
    of = f" of {owner!r}" if owner else ""
    for key, value in given.items():
        hint = hints.get(key)
        bounds = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
        kind = typing.get_args(hint)[0] if bounds else hint
        if kind in _KINDS:
            if not _fits(kind, value):
                raise ValueError(f"{subject}: parameter {key!r}{of} must be {_KINDS[kind][1]}, got {value!r}")
            for bound in bounds:
                if value not in bound:
                    raise ValueError(f"{subject}: parameter {key!r}{of} must be {bound}, got {value!r}")
            continue
        default = known.get(key, inspect.Parameter.empty)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        kind = int if isinstance(default, int) else float
        if not _fits(kind, value):
            raise ValueError(f"{subject}: parameter {key!r}{of} must be {_KINDS[kind][1]} like its default {default!r}, "
                             f"got {value!r}")
        if non_negative and value < 0:
            raise ValueError(f"{subject}: parameter {key!r}{of} must not be negative, got {value!r}")
