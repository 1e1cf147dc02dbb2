"""All cores of one machine: a pool of spawned worker processes.

Workers are started with the ``spawn`` method (safe with threads, numba and any OS), run
kernels single-threaded (one process per core already fills the machine), and record which
item they hold, so a worker that dies is reported with that item.

A spawned worker normally imports the user's main script again, which runs the script's
work a second time unless it sits under ``if __name__ == "__main__":``. For a script
without that guard, the workers are started without importing it: everything they run
comes from importable modules (a stage function defined in such a script cannot run on
workers; put it in a module, or add the guard).
"""

from __future__ import annotations

import ast
import atexit
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from .._processes import oom_kills, why_it_ended
from .._threads import usable_cores
from ._base import Executor, ExecutorError, raise_if_stopped

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(ledger: str) -> None:
    os.environ["LABELSTITCH_THREADS"] = "1"
    os.environ["LABELSTITCH_LEDGER"] = ledger
    # Ctrl-C reaches the whole process group: the driver decides, and stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(_exit_quickly)  # registered first, so it runs last of the exit handlers


def _exit_quickly() -> None:
    """End a worker without tearing its interpreter down. A spawned worker that leaves the
    pool exits through ``sys.exit``, and tearing down numba's compiled kernels, zarr's event
    loop and every module took 0.2-0.4 s a worker, which the driver waited for at the end
    of every run (a fifth of a small run's time). By then every item's files are written
    and closed; the other exit handlers (registered later, so run before this one) have
    run; the logs and standard streams are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _run_item(fn: Callable[[Any], Any], item: Any, index: int, description: str) -> Any:
    """Run ``fn(item)`` in a worker, leaving a note of the item (its position and name)
    while it runs."""
    note = Path(os.environ["LABELSTITCH_LEDGER"]) / str(os.getpid())
    note.write_text(f"{index}\t{description}")
    result = fn(item)
    note.unlink()
    return result


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    texts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and texts == ["__main__"]


def main_script_unguarded() -> bool:
    """Whether the running program is a Python script whose top level has no
    ``if __name__ == "__main__":`` block (a spawned worker importing it would run it again)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return False
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return False
    return not any(isinstance(node, ast.If) and _is_main_test(node.test) for node in tree.body)


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """While inside, processes spawned from this one do not import the main script: the
    preparation data a spawned child receives is made without its file and spec."""
    main = sys.modules["__main__"]
    hidden = {key: main.__dict__.pop(key) for key in ("__file__",) if key in main.__dict__}
    spec = main.__dict__.get("__spec__")
    main.__spec__ = None  # type: ignore[assignment]
    try:
        yield
    finally:
        main.__dict__.update(hidden)
        main.__spec__ = spec  # type: ignore[assignment]


class _ProcessWithoutMain(multiprocessing.context.SpawnProcess):
    """A spawned process that does not import the main script (see the module docstring)."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with main_script_hidden():
            return multiprocessing.context.SpawnProcess._Popen(process_obj)


class _SpawnWithoutMain(multiprocessing.context.SpawnContext):
    Process = _ProcessWithoutMain


def _spawn_context() -> Any:
    """``spawn``, without importing an unguarded main script in the workers."""
    return _SpawnWithoutMain() if main_script_unguarded() else multiprocessing.get_context("spawn")


class _EmitToFiles:
    """Step one of a grouped map on worker processes: write each ``(key, value)`` an item
    emits to its own file and hand back only the keys and file names."""

    def __init__(self, emit: Callable[[Any], Iterable[tuple[Any, Any]]], folder: str) -> None:
        self.emit = emit
        self.folder = folder

    def __call__(self, indexed: tuple[int, Any]) -> list[tuple[Any, str]]:
        index, item = indexed
        out = []
        for k, (key, value) in enumerate(self.emit(item)):
            path = os.path.join(self.folder, f"{index}-{k}.pickle")
            with open(path, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            out.append((key, path))
        return out


class _ReduceFromFiles:
    """Step two: read one key's values from their files (in item order) and reduce them."""

    def __init__(self, reduce: Callable[[tuple[Any, list[Any]]], Any]) -> None:
        self.reduce = reduce

    def __call__(self, group: tuple[Any, list[str]]) -> Any:
        key, paths = group
        values = []
        for path in paths:
            with open(path, "rb") as f:
                values.append(pickle.load(f))
            os.unlink(path)
        return self.reduce((key, values))


class ProcessesExecutor(Executor):
    """Runs items on ``workers`` spawned processes (default: every usable core)."""

    name = "processes"

    def __init__(self, *, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        self.workers = workers or usable_cores()
        self.items_at_once = self.workers
        self._ledger_parent = tempfile.mkdtemp(prefix="labelstitch-workers-")
        self._ledger = os.path.join(self._ledger_parent, "ledger")
        os.mkdir(self._ledger)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            os.makedirs(self._ledger, exist_ok=True)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_spawn_context(),
                initializer=_init_worker,
                initargs=(self._ledger,),
            )
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        raise_if_stopped()
        pool = self._get_pool()
        oom_before = oom_kills()
        futures: list[Any] = []
        processes: dict[int, Any] = {}  # kept: the pool forgets them when it breaks
        try:
            # a worker can die (and the pool break) while the items are still being submitted
            for k, item in enumerate(items):
                futures.append(pool.submit(_run_item, fn, item, k, describe(item)))
                processes.update(getattr(pool, "_processes", None) or {})
            for future in futures:
                yield future.result()
        except BrokenProcessPool:
            raise self._lost_worker(futures, processes, oom_before) from None
        finally:
            for future in futures:
                future.cancel()

    def _lost_worker(self, futures: list[Any], processes: dict[int, Any], oom_before: int | None) -> ExecutorError:
        """What a broken pool lost: the items its dead worker held (the pool then stops the
        others with SIGTERM; their items are not blamed) and the results that finished."""
        held = {}
        for note in Path(self._ledger).iterdir():
            index, _, description = note.read_text().partition("\t")
            if index.isdigit():  # a note half-written when its worker died names nothing
                held[int(note.name)] = (int(index), description)
        processes = {**processes, **(getattr(self._pool, "_processes", None) or {})}
        for pid in held:  # the pool may not have reaped them yet, or be reaping them in its own thread
            deadline = time.monotonic() + 10
            while pid in processes and processes[pid].exitcode is None and time.monotonic() < deadline:
                processes[pid].join(timeout=0.1)
        ended = {pid: getattr(processes.get(pid), "exitcode", None) for pid in held}
        culprits = {pid: item for pid, item in held.items() if ended[pid] != -signal.SIGTERM} or held
        done = {k: f.result() for k, f in enumerate(futures) if f.done() and not f.cancelled() and f.exception() is None}
        self.close()
        said = "; ".join(f"{description} ({why_it_ended(ended[pid], oom_before)})"
                         for pid, (_, description) in sorted(culprits.items(), key=lambda kv: kv[1][0]))
        return ExecutorError(
            f"a worker process died while holding {said or 'an item'}; completed work is kept where checkpoints "
            "are enabled (run again with --resume)",
            lost=tuple(sorted(index for index, _ in culprits.values())), done=done,
        )

    def map_grouped(
        self,
        emit: Callable[[T], Iterable[tuple[Any, Any]]],
        items: Iterable[T],
        reduce: Callable[[tuple[Any, list[Any]]], R],
        *,
        describe: Callable[[T], str] = repr,
    ) -> Iterator[R]:
        """Group through files: each worker writes the values it emits to a folder of this
        executor and the driver collects only keys and file names, so the grouped values
        (stitching's face slabs) never pass through the driver's memory."""
        folder = tempfile.mkdtemp(prefix="groups-", dir=self._ledger_parent)
        try:
            indexed = list(enumerate(items))
            groups: dict[Any, list[str]] = {}
            emitted = self.map(_EmitToFiles(emit, folder), indexed, describe=lambda pair: describe(pair[1]))
            for pairs in emitted:
                for key, path in pairs:
                    groups.setdefault(key, []).append(path)
            yield from self.map(_ReduceFromFiles(reduce), list(groups.items()), describe=lambda kv: repr(kv[0]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        shutil.rmtree(self._ledger_parent, ignore_errors=True)

    def stop_now(self) -> None:
        """SIGTERM to every worker process (no locks: safe in a signal handler)."""
        for process in list((getattr(self._pool, "_processes", None) or {}).values()):
            if process.exitcode is None:
                process.terminate()

    def abort(self) -> None:
        """Stop the workers without waiting for their items, and make sure they are gone."""
        if self._pool is not None:
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self.stop_now()
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=10)
                if process.exitcode is None:
                    process.kill()
                    process.join(timeout=5)
            self._pool = None
        shutil.rmtree(self._ledger_parent, ignore_errors=True)
