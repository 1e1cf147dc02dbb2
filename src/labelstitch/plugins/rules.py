"""The stitching-rule registry: every rule ``rule=`` (``options.stitch-algorithm``) can name.

The registry is the plugin manager's: the built-in rules are the built-in plugin's
``labelstitch_stitch_rules`` hook, a pip-installed plugin adds its own through the same
hook, and :func:`register_rule` registers a small plugin of one rule. Nothing fills a
table as a side effect. A rule is looked up once, on the driver, into a
:class:`~labelstitch.rules.StitchRule` that workers receive as it is, so a worker never
looks a rule up.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from ..hookspecs import hookimpl
from ..matching import FaceMatches, FaceReport, match_face
from ..rules import Rule, StitchRule, check_rule_params
from . import PluginError, get_plugin_manager

__all__ = ["available_rules", "get_rule", "match_slabs", "register_rule", "rule_parameters", "unregister_rule"]

_PREFIX = "labelstitch.rule."


class _OneRule:
    """A plugin that provides one rule (what :func:`register_rule` registers)."""

    def __init__(self, name: str, rule: Rule) -> None:
        self._rules = {name: rule}

    @hookimpl
    def labelstitch_stitch_rules(self) -> dict[str, Rule]:
        return dict(self._rules)


def _rules() -> dict[str, tuple[Rule, str]]:
    """``{name: (rule, plugin name)}``: the built-ins first, then the others in registration order."""
    impls = get_plugin_manager().hook.labelstitch_stitch_rules.get_hookimpls()
    impls = sorted(impls, key=lambda impl: impl.plugin_name != "labelstitch.builtin")
    found: dict[str, tuple[Rule, str]] = {}
    for impl in impls:
        for name, rule in impl.function().items():
            if name in found and found[name][0] is not rule:
                raise PluginError(f"plugin {impl.plugin_name!r} provides stitching rule {name!r}, which exists already")
            found[name] = (rule, impl.plugin_name)
    return found


def register_rule(name: str, rule: Rule, *, replace: bool = False) -> None:
    """Make ``rule`` available as ``rule=name`` (:func:`match_slabs`, :func:`~labelstitch.stitch`,
    ``options.stitch-algorithm``) in this process.

    ``rule(candidates, **params)`` returns one :class:`~labelstitch.Reason` code per
    candidate pair. Its keyword parameters, with their defaults, become the rule's
    parameters. Exact pairs are accepted and pairs off the middle plane refused by the
    caller, whatever the rule says (except for ``none``). A rule that workers in other
    processes run must be importable (a module's function, not a lambda); a plugin's
    rules (the ``labelstitch_stitch_rules`` hook) are found in every process.
    """
    if not callable(rule):
        raise ValueError(f"`rule` must be callable, got {rule!r}")
    pm = get_plugin_manager()
    if name in _rules():
        if not replace:
            raise ValueError(f"a stitching rule named {name!r} exists already; pass replace=True to replace it")
        if pm.get_plugin(_PREFIX + name) is None:
            raise ValueError(f"the stitching rule {name!r} comes from plugin {_rules()[name][1]!r} and cannot be replaced")
        pm.unregister(name=_PREFIX + name)
    pm.register(_OneRule(name, rule), name=_PREFIX + name)


def unregister_rule(name: str) -> None:
    """Forget a rule added with :func:`register_rule` (no error if there is none)."""
    pm = get_plugin_manager()
    if pm.get_plugin(_PREFIX + name) is not None:
        pm.unregister(name=_PREFIX + name)


def available_rules() -> tuple[str, ...]:
    """Names of the registered rules, built-ins first."""
    return tuple(_rules())


def get_rule(name: str) -> StitchRule:
    """The rule registered as ``name``.

    Raises
    ------
    ValueError
        No rule has that name (the message lists the known ones).
    """
    found = _rules()
    if name not in found:
        raise ValueError(f"unknown stitching rule {name!r}; known rules: {', '.join(found)}")
    return StitchRule(name, found[name][0])


def rule_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of a rule with their defaults.

    >>> rule_parameters("medium")
    {'min_overlap': 50}
    """
    return get_rule(name).parameters


def match_slabs(
    slab_a: NDArray[Any],
    slab_b: NDArray[Any],
    *,
    axis: int,
    plane: int,
    rule: str | StitchRule = "medium",
    connected_components: bool = False,
    **params: Any,
) -> tuple[FaceMatches, FaceReport]:
    """Match the segments of two sides of one face with a registered rule (by name) and its
    parameters; see :func:`labelstitch.matching.match_face`.

    >>> a = np.array([[[1, 1, 2, 2]], [[1, 1, 2, 2]]])
    >>> b = np.array([[[7, 7, 8, 8]], [[7, 7, 8, 8]]])
    >>> matches, report = match_slabs(a, b, axis=0, plane=1, rule="medium", min_overlap=0)
    >>> matches.a.tolist(), matches.b.tolist(), report.matched
    ([1, 2], [7, 8], 2)
    """
    resolved = rule if isinstance(rule, StitchRule) else get_rule(rule)
    check_rule_params(resolved, params)
    return match_face(slab_a, slab_b, axis=axis, plane=plane, rule=resolved, connected_components=connected_components,
                      **params)
