"""Dask: the same plan on a Dask cluster, or on a local one made for the run.

This module is an executor plugin like a third party's: it is registered through the
``labelstitch.plugins`` entry point in ``pyproject.toml`` (``dask =
"labelstitch.executors.dask"``), not by the built-in plugin, and it imports
``distributed`` only when an executor is made, so ``labelstitch plugins`` lists it
without the optional extra (``pip install 'labelstitch[dask]'``).

``--executor dask`` alone starts a ``LocalCluster`` of worker processes with one thread
each (kernels run single-threaded, as on the other executors) and closes it at the end;
``--dask-scheduler tcp://HOST:8786`` connects to a running scheduler and leaves it
running. Tasks are submitted with keys of their own, so a task that killed its worker
(``KilledWorker``: the scheduler has already tried it on other workers, as
many times as its ``distributed.scheduler.allowed-failures`` allows) is reported with
its item. A grouped map keeps the emitted values on
the workers: the client learns only the keys, and each reduce task receives the futures
of its values, which the workers send each other.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
import uuid
from contextlib import nullcontext
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .._threads import usable_cores
from ..hookspecs import hookimpl
from ._base import Executor, ExecutorError, _emit_list, raise_if_stopped
from .processes import main_script_hidden, main_script_unguarded

T = TypeVar("T")
R = TypeVar("R")


def _local_addresses() -> set[str]:
    """The addresses that name this machine."""
    found = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return found


def _host_of(address: str) -> str:
    """``tcp://10.0.0.5:40123`` -> ``10.0.0.5``."""
    return urllib.parse.urlsplit(address).hostname or address


def _is_local(host: str) -> bool:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return host in _local_addresses()


def _keys_of(pairs: list[tuple[Any, Any]]) -> list[Any]:
    return [key for key, _ in pairs]


class _ReducePicked:
    """A reduce task: its values are picked, in item order, out of the emitted lists that
    the scheduler hands it (worker to worker)."""

    def __init__(self, reduce: Callable[[tuple[Any, list[Any]]], Any]) -> None:
        self.reduce = reduce

    def __call__(self, key: Any, positions: list[int], *emitted: list[tuple[Any, Any]]) -> Any:
        return self.reduce((key, [pairs[k][1] for pairs, k in zip(emitted, positions)]))


class DaskExecutor(Executor):
    """Maps over items with ``Client.map`` on a Dask cluster (``scheduler``: its address;
    default a ``LocalCluster`` of ``workers`` processes on this machine)."""

    name = "dask"

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ExecutorError(
                f"the dask executor needs dask.distributed ({exc}): pip install 'labelstitch[dask]'"
            ) from None
        self._cluster: Any = None
        if scheduler is None:
            # workers of a script without a __main__ guard start without importing it (see processes.py)
            unguarded = main_script_hidden() if main_script_unguarded() else nullcontext()
            with unguarded:
                self._cluster = LocalCluster(
                    n_workers=workers or usable_cores(), threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0", silence_logs=50, env={"LABELSTITCH_THREADS": "1"},
                )
            self.client = Client(self._cluster, set_as_default=False)
        else:
            if workers is not None:
                raise ValueError("--workers does not apply to --dask-scheduler: the cluster's workers are its own")
            try:
                self.client = Client(scheduler, timeout="20s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        found = self.client.scheduler_info(n_workers=-1)["workers"]
        if not found:
            self.close()
            raise ExecutorError(f"the Dask scheduler at {scheduler} has no workers: start some with `dask worker {scheduler}`")
        local = all(_is_local(_host_of(address)) for address in found)
        #: items run on this machine when every worker does; its memory check counts their threads
        self.shares_files = local
        self.items_at_once = sum(int(w.get("nthreads", 1)) for w in found.values()) if local else None
        self.workers = len(found)

    def _submit(self, fn: Callable[..., Any], items: list[Any]) -> list[Any]:
        tag = uuid.uuid4().hex[:12]
        return self.client.map(fn, items, key=[f"labelstitch-{tag}-{k}" for k in range(len(items))], pure=False)

    def _gather(self, futures: list[Any], describe: Callable[[int], str]) -> Iterator[Any]:
        """Each future's result in order; a killed worker becomes an :class:`ExecutorError`
        with the item it held and the results that did finish."""
        from distributed.scheduler import KilledWorker

        try:
            for future in futures:
                try:
                    yield future.result()
                except KilledWorker:
                    lost = futures.index(future)
                    done = {}
                    for k, other in enumerate(futures):
                        if k != lost and other.status != "cancelled":
                            try:
                                done[k] = other.result()
                            except Exception:
                                pass
                    raise ExecutorError(
                        f"a Dask worker died (killed, or out of memory) while holding {describe(lost)}; "
                        "completed work is kept where checkpoints are enabled (run again with --resume)",
                        lost=(lost,), done=done,
                    ) from None
        finally:
            self._cancel([f for f in futures if not f.done()])

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        raise_if_stopped()
        listed = list(items)
        if not listed:
            return
        yield from self._gather(self._submit(fn, listed), lambda k: describe(listed[k]))

    def map_grouped(
        self,
        emit: Callable[[T], Iterable[tuple[Any, Any]]],
        items: Iterable[T],
        reduce: Callable[[tuple[Any, list[Any]]], R],
        *,
        describe: Callable[[T], str] = repr,
    ) -> Iterator[R]:
        """Emit on the workers, learn only the keys, and run each reduce with the futures of
        its values: the slabs move between workers and never through this client."""
        raise_if_stopped()
        listed = list(items)
        if not listed:
            return
        emitted = self._submit(_emit_list(emit), listed)
        keys = list(self._gather(self._submit(_keys_of, emitted), lambda k: describe(listed[k])))
        groups: dict[Any, list[tuple[int, int]]] = {}
        for index, item_keys in enumerate(keys):
            for position, key in enumerate(item_keys):
                groups.setdefault(key, []).append((index, position))
        task = _ReducePicked(reduce)
        tag = uuid.uuid4().hex[:12]
        futures = [
            self.client.submit(task, key, [p for _, p in where], *[emitted[i] for i, _ in where],
                               key=f"labelstitch-{tag}-{n}", pure=False)
            for n, (key, where) in enumerate(groups.items())
        ]
        names = list(groups)
        try:
            yield from self._gather(futures, lambda k: repr(names[k]))
        finally:
            self._cancel(emitted)

    def _cancel(self, futures: list[Any]) -> None:
        """Drop futures no one will read; none to drop once a signal has closed the cluster."""
        from distributed.client import ClosedClientError

        if self.client is None or self.client.status != "running":
            return
        try:
            self.client.cancel(futures)
        except ClosedClientError:  # closed between the check and the call
            pass

    def stop_now(self) -> None:
        """Close a local cluster at once, so that its worker processes end and no task goes
        on writing (for instance into an output being discarded). From a signal handler: in
        a thread of its own, waited for at most 30 s. A remote cluster's running tasks
        cannot be interrupted from here; they finish, and their results are dropped."""
        if self._cluster is not None:
            closing = threading.Thread(target=self._cluster.close, daemon=True)
            closing.start()
            closing.join(timeout=30)

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None  # type: ignore[assignment]
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


@hookimpl
def labelstitch_executors() -> dict[str, Callable[..., Executor]]:
    return {"dask": DaskExecutor}
