"""Executors map a function over items and gather the results; nothing more.

``serial`` is the reference and the debugging path; ``processes`` uses every core of one
machine; ``spark`` runs on a Spark master (``local[*]`` by default). More executors register through the ``labelstitch.executors`` entry-point group:
an entry point names a class (or factory) called as ``factory(workers=...)`` that returns
an :class:`Executor`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ._base import Executor, ExecutorError
from .processes import ProcessesExecutor
from .serial import SerialExecutor

__all__ = ["Executor", "ExecutorError", "ProcessesExecutor", "SerialExecutor", "available_executors", "get_executor"]

_BUILTIN = ("serial", "processes", "spark")


def _plugins() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="labelstitch.executors")}


def available_executors() -> tuple[str, ...]:
    """Names accepted by :func:`get_executor` (built-ins first, then plugins)."""
    return tuple(_BUILTIN) + tuple(sorted(set(_plugins()) - set(_BUILTIN)))


def get_executor(name: str = "serial", *, workers: int | None = None) -> Executor:
    """The executor called ``name``, with ``workers`` where it uses them."""
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessesExecutor(workers)
    if name == "spark":
        from .spark import SparkExecutor  # the only place pyspark is imported

        return SparkExecutor(workers)
    plugins = _plugins()
    if name in plugins:
        executor = plugins[name].load()(workers=workers)  # type: ignore[attr-defined]
        if not isinstance(executor, Executor):
            raise ValueError(f"executor plugin {name!r} returned {type(executor).__name__}, not an Executor")
        return executor
    raise ValueError(f"unknown executor {name!r}; available: {', '.join(available_executors())}")
