"""Executors map a function over items and gather the results; nothing more.

The serial executor is the reference and the debugging path. The processes and Spark
executors come with the executor issue; ``--executor`` already takes the name.
"""

from __future__ import annotations

from ._base import Executor
from .serial import SerialExecutor

__all__ = ["Executor", "SerialExecutor", "get_executor", "EXECUTORS"]

EXECUTORS = ("serial",)


def get_executor(name: str = "serial", *, workers: int | None = None) -> Executor:
    """The executor called ``name``."""
    if name == "serial":
        return SerialExecutor()
    if name in ("processes", "spark"):
        raise ValueError(f"executor {name!r} is not available yet (it comes with the executor issue); use 'serial'")
    raise ValueError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
