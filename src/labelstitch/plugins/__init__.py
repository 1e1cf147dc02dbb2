"""Plugins: the built-in stage functions and the machinery that finds every plugin's.

:func:`get_plugin_manager` registers the hook specifications, the built-ins, and every
package installed with an entry point in the group ``labelstitch.plugins``.
:func:`resolve_stage` turns a config entry (``{"function": ..., "parameters": ...}``) into a
callable with its parameters checked.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .. import hookspecs
from ..hookspecs import STAGES

__all__ = ["PluginError", "Stage", "get_plugin_manager", "stage_functions", "resolve_stage", "REQUIRED_ARGS"]

#: the positional arguments each stage function receives
REQUIRED_ARGS = {
    "predict-voxels": ("grayscale", "mask"),
    "create-supervoxels": ("predictions", "mask"),
    "agglomerate-supervoxels": ("predictions", "supervoxels"),
}


class PluginError(ValueError):
    """A stage function cannot be found or does not fit its stage."""


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager: built-ins plus entry-point plugins."""
    from . import builtin

    pm = pluggy.PluginManager("labelstitch")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="labelstitch.builtin")
    pm.load_setuptools_entrypoints("labelstitch.plugins")
    pm.check_pending()
    return pm


def stage_functions() -> dict[str, dict[str, tuple[Callable[..., Any], str]]]:
    """``{stage: {name: (function, plugin name)}}`` over every registered plugin."""
    pm = get_plugin_manager()
    found: dict[str, dict[str, tuple[Callable[..., Any], str]]] = {stage: {} for stage in STAGES}
    for impl in pm.hook.labelstitch_stage_functions.get_hookimpls():
        provided = impl.function()
        for stage, functions in provided.items():
            if stage not in found:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} provides functions for unknown stage {stage!r}; stages are {', '.join(STAGES)}"
                )
            for name, fn in functions.items():
                if name in found[stage]:
                    raise PluginError(
                        f"stage function {stage}/{name} is provided by both {found[stage][name][1]!r} and {impl.plugin_name!r}"
                    )
                found[stage][name] = (fn, impl.plugin_name)
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
    """A resolved stage: the function, where it came from, and its checked parameters."""

    stage: str
    name: str
    function: Callable[..., Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    def __call__(self, first: Any, second: Any) -> Any:
        return self.function(first, second, **self.parameters)


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
    known = parameters_of(fn, stage)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = sorted(set(parameters) - set(known))
    if unknown and not takes_kwargs:
        listing = ", ".join(f"{k}={v!r}" if v is not inspect.Parameter.empty else k for k, v in known.items())
        raise PluginError(
            f"{stage}: function {name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {listing or 'none'}"
        )
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in parameters]
    if missing:
        raise PluginError(f"{stage}: function {name!r} needs parameter {', '.join(map(repr, missing))}")
    return Stage(stage, name, fn, parameters)
