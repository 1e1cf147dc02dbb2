"""Spark: the same plan on a Spark cluster (or ``local[*]``), as in the seed paper.

Only this module imports pyspark. Items are spread over two partitions per core; results
are collected in item order. The session is created once per process and reused (starting Spark takes
seconds); the master is an option of the executor (``--spark-master``, ``master=``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ._base import Executor, ExecutorError, raise_if_stopped, shielded

T = TypeVar("T")
R = TypeVar("R")

_SESSIONS: dict[str, tuple[str, Any]] = {}


#: the Java versions pyspark 3.5/4 runs on
JAVA_VERSIONS = "17 or 21 (pyspark 4; pyspark 3.5 also runs on 11)"


def java_command() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java`` when ``JAVA_HOME`` is set, else
    the one on the ``PATH`` (None: none)."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def check_java() -> None:
    """Refuse, before starting Spark, a machine without the Java that Spark runs on (pyspark
    would end with a bare ``JAVA_GATEWAY_EXITED``)."""
    if java_command() is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") else "no java on the PATH"
        raise ExecutorError(
            f"the spark executor needs Java {JAVA_VERSIONS} on the driver ({where}): install a JDK or JRE (Debian: "
            "apt-get install openjdk-17-jre-headless) or set JAVA_HOME, or use --executor processes"
        )


def _session(master: str) -> Any:
    """A Spark session for ``master``, created on first use and stopped at exit.

    The driver's ``PYTHONPATH`` and ``sys.path`` are handed to the Python workers, so stage
    functions named by dotted path import there too; a session made under another path is
    stopped and made anew."""
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep) + sys.path
    path = os.pathsep.join(dict.fromkeys(p for p in entries if p))
    if master in _SESSIONS:
        made_with, session = _SESSIONS[master]
        if made_with == path:
            return session
        session.stop()
        del _SESSIONS[master]
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark is a dependency
        raise ExecutorError(f"the spark executor needs pyspark: {exc}") from None
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep a local session on loopback
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("labelstitch")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executorEnv.LABELSTITCH_THREADS", "1")
        .config("spark.executorEnv.PYTHONPATH", path)
        .config("spark.driver.maxResultSize", "0")
        .config("spark.python.worker.reuse", "true")
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    _SESSIONS[master] = (path, session)
    return session


@atexit.register
def _stop_sessions() -> None:
    for _, session in _SESSIONS.values():
        session.stop()
    _SESSIONS.clear()


def _local_cores(master: str) -> int | None:
    """Tasks at once on this machine for a ``local[N]`` / ``local[*]`` / ``local`` master;
    None for a cluster."""
    if master == "local":
        return 1
    if master.startswith("local["):
        inside = master[len("local["):].split(",")[0].rstrip("]")
        return os.cpu_count() or 1 if inside == "*" else int(inside)
    return None


def _cancel_quietly(context: Any) -> None:
    """Cancel a context's jobs; one that the run has stopped meanwhile has none to cancel."""
    try:
        context.cancelAllJobs()
    except Exception:
        pass


def _task_failed(exc: Exception) -> ExecutorError:
    """A short error from a Spark failure: the last line of the Python traceback it carries."""
    message = str(exc).strip().splitlines()
    tail = next((line for line in reversed(message) if "Error" in line), message[-1] if message else "")
    return ExecutorError(f"a Spark task failed: {tail}")


class SparkExecutor(Executor):
    """Maps over items with Spark: ``parallelize`` (two partitions per core), ``map``, ``collect``."""

    name = "spark"

    def __init__(self, *, workers: int | None = None, master: str | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        check_java()
        self.master = master or f"local[{workers or '*'}]"
        self.shares_files = self.master.startswith("local")  # a cluster's workers may be on other machines
        self.items_at_once = _local_cores(self.master)
        self.session = _session(self.master)

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        raise_if_stopped()
        indexed = list(enumerate(items))
        if not indexed:
            return
        try:
            with shielded():  # a signal cancels the job (stop_now) and is raised once the gateway answers
                context = self.session.sparkContext
                # a few partitions per core: one per item would pay Spark's task overhead per item
                slices = min(len(indexed), max(1, context.defaultParallelism * 2))
                rdd = context.parallelize(indexed, numSlices=slices)
                results = rdd.map(lambda pair: (pair[0], fn(pair[1]))).collect()
        except Exception as exc:
            raise _task_failed(exc) from exc
        for _, result in sorted(results, key=lambda pair: pair[0]):
            yield result

    def map_grouped(
        self,
        emit: Callable[[T], Iterable[tuple[Any, Any]]],
        items: Iterable[T],
        reduce: Callable[[tuple[Any, list[Any]]], R],
        *,
        describe: Callable[[T], str] = repr,
    ) -> Iterator[R]:
        """``flatMap(emit)`` → ``groupByKey`` → ``map(reduce)`` → ``collect``: the grouped values
        move between workers in Spark's shuffle and never pass the driver (the paper's Figure 7)."""
        raise_if_stopped()
        indexed = list(enumerate(items))
        if not indexed:
            return

        def tagged(pair: tuple[int, T]) -> list[tuple[Any, tuple[int, Any]]]:
            return [(key, (pair[0], value)) for key, value in emit(pair[1])]

        def reduce_sorted(group: tuple[Any, Iterable[tuple[int, Any]]]) -> R:
            key, values = group
            return reduce((key, [value for _, value in sorted(values, key=lambda v: v[0])]))

        try:
            with shielded():
                context = self.session.sparkContext
                slices = min(len(indexed), max(1, context.defaultParallelism * 2))
                grouped = context.parallelize(indexed, numSlices=slices).flatMap(tagged).groupByKey()
                results = grouped.map(reduce_sorted).collect()
        except Exception as exc:
            raise _task_failed(exc) from exc
        yield from results

    def stop_now(self) -> None:
        """Cancel the running Spark jobs from another thread (the main thread is inside a
        gateway call, which a signal must not interrupt: see ``shielded``)."""
        threading.Thread(target=_cancel_quietly, args=(self.session.sparkContext,), daemon=True).start()

    def abort(self) -> None:
        """Cancel the running jobs and stop the session, so no task goes on writing."""
        if not any(session is self.session for _, session in _SESSIONS.values()):
            return  # stopped already
        try:
            self.session.sparkContext.cancelAllJobs()
        finally:
            for master, (_, session) in list(_SESSIONS.items()):
                if session is self.session:
                    session.stop()
                    del _SESSIONS[master]
