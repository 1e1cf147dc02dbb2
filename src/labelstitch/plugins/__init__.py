"""The plugin registry: every stage function, stitching rule and executor is found here.

:func:`get_plugin_manager` registers the hook specifications (:mod:`labelstitch.hookspecs`),
the built-ins (:mod:`labelstitch.plugins.builtin`) and every package installed with an
entry point in the group ``labelstitch.plugins``. Then:

* :func:`resolve_stage` turns a config entry (``{"function": ..., "parameters": ...}``)
  into a callable :class:`Stage` with its parameters checked;
* :func:`get_executor` builds the executor named by ``--executor`` with its options;
* :mod:`labelstitch.plugins.rules` finds stitching rules by name, among the built-in
  plugin's, the installed plugins' and those added with :func:`labelstitch.register_rule`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from .. import hookspecs
from ..executors import Executor, track
from ..hookspecs import STAGES, Channel, Range, StageInfo, describe_stage, stage_function
from ..parameters import check_parameters

__all__ = [
    "Channel",
    "PluginError",
    "REQUIRED_ARGS",
    "Range",
    "Stage",
    "StageInfo",
    "stage_function",
    "available_executors",
    "get_executor",
    "get_plugin_manager",
    "plugin_of_executor",
    "parameters_of",
    "resolve_stage",
    "stage_functions",
]

#: the positional arguments each stage function receives
REQUIRED_ARGS = {
    "predict-voxels": ("grayscale", "mask"),
    "create-supervoxels": ("predictions", "mask"),
    "agglomerate-supervoxels": ("predictions", "supervoxels"),
}


class PluginError(ValueError):
    """A plugin, stage function or executor cannot be found or does not fit its role."""


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager: built-ins plus entry-point plugins (cached; every
    process builds its own the same way)."""
    from . import builtin

    pm = pluggy.PluginManager("labelstitch")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="labelstitch.builtin")
    pm.load_setuptools_entrypoints("labelstitch.plugins")
    pm.check_pending()
    return pm


def _provided(hook: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(plugin name, what its implementation of ``hook`` returned)]``."""
    impls = getattr(get_plugin_manager().hook, hook).get_hookimpls()
    return [(impl.plugin_name, impl.function()) for impl in impls]


# ----------------------------------------------------------------------------- stages


def stage_functions() -> dict[str, dict[str, tuple[Callable[..., Any], str]]]:
    """``{stage: {name: (function, plugin name)}}`` over every registered plugin."""
    found: dict[str, dict[str, tuple[Callable[..., Any], str]]] = {stage: {} for stage in STAGES}
    for plugin, provided in _provided("labelstitch_stage_functions"):
        for stage, functions in provided.items():
            if stage not in found:
                raise PluginError(
                    f"plugin {plugin!r} provides functions for unknown stage {stage!r}; stages are {', '.join(STAGES)}"
                )
            for name, fn in functions.items():
                if name in found[stage]:
                    raise PluginError(
                        f"stage function {stage}/{name} is provided by both {found[stage][name][1]!r} and {plugin!r}"
                    )
                found[stage][name] = (fn, plugin)
    return found


def parameters_of(fn: Callable[..., Any], stage: str) -> dict[str, Any]:
    """The parameters of a stage function after its two data arguments, with their defaults
    (``inspect.Parameter.empty`` when required). The data arguments are recognised by
    position, whatever their names (the paper's example calls them ``grayscale_vol, mask_vol``)."""
    params = list(inspect.signature(fn).parameters.values())
    rest = params[len(REQUIRED_ARGS[stage]) :]
    return {
        p.name: p.default
        for p in rest
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


@dataclass(frozen=True)
class Stage:
    """A resolved stage: the function, where it came from, and its checked parameters; what
    the function declared (its :class:`~labelstitch.hookspecs.StageInfo`) is :attr:`info`."""

    stage: str
    name: str
    function: Callable[..., Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    def __call__(self, first: Any, second: Any) -> Any:
        return self.function(first, second, **self.parameters)

    @property
    def info(self) -> StageInfo:
        """The declared descriptor, with what ``declare`` says for these parameters."""
        info = describe_stage(self.function)
        if info.declare is None:
            return info
        return replace(info, **info.declare(**self._values()))

    def _values(self) -> dict[str, Any]:
        """The configured parameters over the function's defaults."""
        defaults = {k: v for k, v in parameters_of(self.function, self.stage).items() if v is not inspect.Parameter.empty}
        return {**defaults, **self.parameters}

    def channels(self, direction: str = "reads") -> list[tuple[Channel, int]]:
        """The channels the stage reads (or ``writes``) with their positions, from its
        configured parameters and their defaults; a negative position (``-1``: none) is left out."""
        values = self._values()
        found = []
        for channel in getattr(self.info, direction):
            index = values.get(channel.index, -1) if isinstance(channel.index, str) else channel.index
            if isinstance(index, int) and index >= 0:
                found.append((channel, index))
        return found

    def channel(self, meaning: str) -> int | None:
        """The position of the channel the stage reads as ``meaning`` (None: it reads none)."""
        return next((index for channel, index in self.channels() if channel.meaning == meaning), None)

    def graph_contacts(self, channels: int) -> Any:
        """What this agglomeration's region graph must carry beside the boundary, for
        predictions of ``channels`` channels (its declared ``graph_contacts``; None: nothing)."""
        declared = self.info.graph_contacts
        return None if declared is None else declared(channels, **self.parameters)


def _import_dotted(path: str, stage: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{stage}: cannot import module {module_name!r} for function {path!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise PluginError(f"{stage}: module {module_name!r} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def resolve_stage(stage: str, function: str | Callable[..., Any], parameters: dict[str, Any] | None = None) -> Stage:
    """Find a stage function by registered name, dotted path or callable, and check its parameters.

    Raises
    ------
    PluginError
        For an unknown name, an unimportable path, a function that does not take the
        stage's arguments, or parameters it does not accept (or required ones missing).
    """
    if stage not in STAGES:
        raise PluginError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    parameters = dict(parameters or {})
    registered = stage_functions()[stage]
    if callable(function):
        fn, name = function, getattr(function, "__name__", repr(function))
    elif function in registered:
        fn, name = registered[function][0], function
    elif "." in function:
        fn, name = _import_dotted(function, stage), function
    else:
        raise PluginError(
            f"{stage}: unknown function {function!r}; registered: {', '.join(sorted(registered))} "
            "(or give a dotted path such as 'mymodule.my_function')"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return Stage(stage, name, fn, parameters)
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()):
        raise PluginError(
            f"{stage}: function {name!r} must accept ({', '.join(REQUIRED_ARGS[stage])}, **parameters), got {name}{sig}"
        )
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    try:
        check_parameters(fn, parameters, parameters_of(fn, stage), named=f"{stage}: function {name!r}", subject=stage,
                         owner=name, takes_any=takes_kwargs)
    except ValueError as exc:
        raise PluginError(str(exc)) from None
    return Stage(stage, name, fn, parameters)


# ----------------------------------------------------------------------------- executors


def _executor_factories() -> dict[str, tuple[Callable[..., Executor], str]]:
    found: dict[str, tuple[Callable[..., Executor], str]] = {}
    for plugin, provided in _provided("labelstitch_executors"):
        for name, factory in provided.items():
            if name in found:
                raise PluginError(f"executor {name!r} is provided by both {found[name][1]!r} and {plugin!r}")
            found[name] = (factory, plugin)
    return found


def available_executors() -> tuple[str, ...]:
    """Names accepted by :func:`get_executor`: the built-ins first, then plugins' in name order."""
    names = list(_executor_factories())
    builtin = [n for n in ("serial", "processes", "spark") if n in names]
    return tuple(builtin + sorted(set(names) - set(builtin)))


def plugin_of_executor(name: str) -> str:
    """The plugin that provides executor ``name`` (its entry point's name for an installed one)."""
    factories = _executor_factories()
    if name not in factories:
        raise PluginError(f"unknown executor {name!r}; available: {', '.join(available_executors())}")
    return factories[name][1]


def get_executor(name: str = "serial", **options: Any) -> Executor:
    """The executor called ``name``, made with ``options`` (those that are not None).

    >>> with get_executor("processes", workers=2) as pool:
    ...     list(pool.map(abs, [-3, 2, -1]))
    [3, 2, 1]

    Raises
    ------
    PluginError
        An unknown name, a factory that does not take one of the options, or one that
        returns something other than an :class:`~labelstitch.executors.Executor`.
    """
    factories = _executor_factories()
    if name not in factories:
        raise PluginError(f"unknown executor {name!r}; available: {', '.join(available_executors())}")
    factory, plugin = factories[name]
    given = {k: v for k, v in options.items() if v is not None}
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = sorted(set(given) - set(sig.parameters))
        if unknown:
            raise PluginError(
                f"executor {name!r} (from {plugin!r}) takes no option {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sig.parameters) or 'none'}"
            )
    executor = factory(**given)
    if not isinstance(executor, Executor):
        raise PluginError(f"executor plugin {name!r} returned {type(executor).__name__}, not an Executor")
    return track(executor)
