"""A Spark standalone cluster on this machine: one master and some workers, each its own JVM
started with pyspark's own ``spark-class`` script, bound to 127.0.0.1.

For tests and for trying ``--spark-master spark://...`` before a real cluster::

    with standalone_cluster(workers=2) as master:      # "spark://127.0.0.1:PORT"
        labelstitch.run(config, executor="spark", master=master)

The context manager waits until every worker has registered with the master (polled on the
master's JSON status page) and stops all the JVMs when it exits, also on errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ClusterError", "spark_home", "standalone_cluster"]


class ClusterError(RuntimeError):
    """The cluster did not come up."""


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package (found, not imported)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("pyspark is not installed; pip install pyspark")
    return Path(list(spec.submodule_search_locations)[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:
            status = json.load(answer)
    except (OSError, ValueError):
        return 0
    return sum(1 for w in status.get("workers", []) if w.get("state") == "ALIVE")


@contextmanager
def standalone_cluster(
    workers: int = 2, *, cores: int = 1, memory: str = "2g", timeout: float = 120.0
) -> Iterator[str]:
    """Start a master and ``workers`` workers (``cores`` cores, ``memory`` each) on
    127.0.0.1 and yield the master's URL; stop them all on exit."""
    home = spark_home()
    script = home / "bin" / "spark-class"
    if not script.exists():
        raise ClusterError(f"pyspark at {home} has no bin/spark-class; reinstall pyspark")
    if shutil.which("java") is None and "JAVA_HOME" not in os.environ:
        raise ClusterError("Spark needs Java (java on PATH or JAVA_HOME); install a JDK 17")
    folder = Path(tempfile.mkdtemp(prefix="labelstitch-spark-cluster-"))
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(folder / "logs"),
        "SPARK_WORKER_DIR": str(folder / "work"),
        "PYSPARK_PYTHON": sys.executable,
    }
    port, ui_port = _free_port(), _free_port()
    master = f"spark://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with open(folder / f"{name}.log", "wb") as log:  # the JVM keeps its own handle
            processes.append(subprocess.Popen(
                [str(script), *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui_port))
        for i in range(workers):
            start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                  "--cores", str(cores), "--memory", memory, "--webui-port", str(_free_port()),
                  "--work-dir", str(folder / f"work-{i}"))
        deadline = time.monotonic() + timeout
        while _alive_workers(ui_port) < workers:
            dead = [p for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join((folder / f).read_text(errors="replace")[-2000:] for f in sorted(os.listdir(folder)) if f.endswith(".log"))
                why = "a JVM exited" if dead else f"not all {workers} workers registered within {timeout:.0f} s"
                raise ClusterError(f"the Spark standalone cluster did not start ({why}); logs:\n{logs}")
            time.sleep(0.5)
        yield master
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(folder, ignore_errors=True)
