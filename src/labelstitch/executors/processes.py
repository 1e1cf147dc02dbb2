"""All cores of one machine: a pool of spawned worker processes.

Workers are started with the ``spawn`` method (safe with threads, numba and any OS), run
kernels single-threaded (one process per core already fills the machine), and record which
item they hold, so a worker that dies is reported with that item.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from ._base import Executor, ExecutorError

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(ledger: str) -> None:
    os.environ["LABELSTITCH_THREADS"] = "1"
    os.environ["LABELSTITCH_LEDGER"] = ledger


def _run_item(fn: Callable[[Any], Any], item: Any, description: str) -> Any:
    """Run ``fn(item)`` in a worker, leaving a note of the item while it runs."""
    note = Path(os.environ["LABELSTITCH_LEDGER"]) / str(os.getpid())
    note.write_text(description)
    result = fn(item)
    note.unlink()
    return result


class ProcessesExecutor(Executor):
    """Runs items on ``workers`` spawned processes (default: every usable core)."""

    name = "processes"

    def __init__(self, *, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = workers or usable
        self._ledger = tempfile.mkdtemp(prefix="labelstitch-workers-")
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._ledger,),
            )
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        pool = self._get_pool()
        futures = [pool.submit(_run_item, fn, item, describe(item)) for item in items]
        try:
            for future in futures:
                yield future.result()
        except BrokenProcessPool:
            held = sorted(p.read_text() for p in Path(self._ledger).iterdir())
            self.close()
            raise ExecutorError(
                f"a worker process died (killed, or out of memory) while holding {', '.join(held) or 'an item'}; "
                "completed work is kept where checkpoints are enabled (run again with --resume)"
            ) from None
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
