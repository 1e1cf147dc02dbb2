"""Executors map a function over items and gather the results; nothing more.

``serial`` is the reference and the debugging path; ``processes`` uses every core of one
machine; ``spark`` runs on a Spark master (``local[*]`` by default). Executors are found,
built-ins and plugins alike, through the plugin registry:
:func:`labelstitch.plugins.get_executor` (``get_executor("spark", workers=8,
master="spark://host:7077")``). Only ``executors/spark.py`` imports pyspark.
"""

from __future__ import annotations

from ._base import Executor, ExecutorError, shielded, stop_all, stop_requested, stop_with, track
from .processes import ProcessesExecutor
from .serial import SerialExecutor

__all__ = ["Executor", "ExecutorError", "ProcessesExecutor", "SerialExecutor", "shielded", "spark_executor", "stop_all", "stop_requested", "stop_with", "track"]


def spark_executor(*, workers: int | None = None, master: str | None = None) -> Executor:
    """A :class:`~labelstitch.executors.spark.SparkExecutor`, importing pyspark only when asked for."""
    from .spark import SparkExecutor

    return SparkExecutor(workers=workers, master=master)
