"""A Dask cluster of separate processes on this machine: ``dask scheduler`` and ``dask worker``
started as commands, bound to 127.0.0.1, the way a cluster's job scripts start them.

For tests and for trying ``--dask-scheduler tcp://...`` before a real cluster::

    with scheduler_and_workers(workers=2) as address:    # "tcp://127.0.0.1:PORT"
        labelstitch.run(config, executor="dask", dask_scheduler=address)

The context manager waits until every worker has registered with the scheduler and stops
every process it started when it exits (the whole process group of each), also on errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ClusterError", "scheduler_and_workers"]


class ClusterError(RuntimeError):
    """The cluster did not come up."""


def _dask_command() -> str:
    found = Path(sys.executable).parent / "dask"
    if found.exists():
        return str(found)
    on_path = shutil.which("dask")
    if on_path is None:
        raise ClusterError("no `dask` command: pip install 'labelstitch[dask]'")
    return on_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


@contextmanager
def scheduler_and_workers(workers: int = 2, *, threads: int = 1, timeout: float = 90.0) -> Iterator[str]:
    """Start ``dask scheduler`` and ``workers`` × ``dask worker`` (``threads`` threads each)
    on 127.0.0.1 and yield the scheduler's address; stop them all on exit."""
    from distributed import Client

    dask = _dask_command()
    folder = Path(tempfile.mkdtemp(prefix="labelstitch-dask-cluster-"))
    address_file = folder / "scheduler.json"
    env = {**os.environ, "LABELSTITCH_THREADS": "1"}
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str) -> None:
        with open(folder / log, "wb") as out:
            started.append(subprocess.Popen([dask, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
               "--scheduler-file", str(address_file)], "scheduler.log")
        deadline = time.monotonic() + timeout
        while not address_file.exists() or not address_file.read_text().strip():
            if started[0].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the Dask scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(address_file.read_text())["address"]
        for k in range(workers):
            start(["worker", address, "--host", "127.0.0.1", "--nthreads", str(threads), "--nworkers", "1",
                   "--no-dashboard", "--name", f"worker-{k}", "--local-directory", str(folder / f"worker-{k}")],
                  f"worker-{k}.log")
        with Client(address, timeout="30s", set_as_default=False) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
                if time.monotonic() > deadline:
                    logs = "".join((folder / f"worker-{k}.log").read_text()[-1000:] for k in range(workers))
                    raise ClusterError(f"the Dask workers did not register within {timeout:.0f} s: {logs}")
                time.sleep(0.2)
        yield address
    finally:
        for process in reversed(started):
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)
