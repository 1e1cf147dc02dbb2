"""The executor interface."""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")


class _emit_list:
    """``emit`` with its pairs materialised (picklable, unlike a closure)."""

    def __init__(self, emit: Callable[[Any], Iterable[tuple[Any, Any]]]) -> None:
        self.emit = emit

    def __call__(self, item: Any) -> list[tuple[Any, Any]]:
        return list(self.emit(item))


class ExecutorError(RuntimeError):
    """Work could not be run (a worker died, the cluster went away).

    An executor that knows which items it lost says so: ``lost`` holds the positions (in
    the mapped items) of those a dead worker held, and ``done`` the results, by position,
    of those that finished anyway; the pipeline retries the lost items and keeps the rest.
    Both are empty when the executor cannot tell.
    """

    def __init__(self, message: str, *, lost: tuple[int, ...] = (), done: dict[int, Any] | None = None) -> None:
        super().__init__(message)
        self.lost = tuple(lost)
        self.done = dict(done or {})


class Executor(ABC):
    """Maps a top-level, picklable function over items and yields the results in order.

    That is all an executor does: the pipeline decides what to map (subvolumes to
    segment, faces to match, subvolumes to write) and gathers the results.
    """

    name: str = "executor"
    #: items run in the calling process, so they see its memory (in-memory volumes)
    #: and the store handles it holds open; the pipeline then writes through the driver's
    #: handle instead of opening the output again in every worker
    in_process: bool = False
    #: items run on this machine, so they can write files the driver reads (a run folder
    #: for segmented subvolumes); False for workers that may be elsewhere
    shares_files: bool = True
    #: how many items run at once on this machine (what memory checks multiply by); None
    #: for workers on other machines, whose memory this machine cannot see
    items_at_once: int | None = 1

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        """``fn(item)`` for every item, in the items' order. ``describe(item)`` names an item
        in error messages (e.g. "subvolume 12")."""

    def map_grouped(
        self,
        emit: Callable[[T], Iterable[tuple[K, V]]],
        items: Iterable[T],
        reduce: Callable[[tuple[K, list[V]]], R],
        *,
        describe: Callable[[T], str] = repr,
    ) -> Iterator[R]:
        """``emit`` ``(key, value)`` pairs from every item, group the values by key, and yield
        ``reduce((key, values))`` for every key (values in item order; keys in first-seen order).

        This default groups on the driver with :meth:`map` on both sides; executors with a
        shuffle (Spark's ``groupByKey``) override it so the values never pass the driver.
        """
        groups: dict[K, list[V]] = {}
        for pairs in self.map(_emit_list(emit), items, describe=describe):
            for key, value in pairs:
                groups.setdefault(key, []).append(value)
        yield from self.map(reduce, list(groups.items()), describe=lambda kv: repr(kv[0]))

    def close(self) -> None:
        """Release workers."""

    def stop_now(self) -> None:
        """Stop the items that are running, at once (called from a signal handler, so it
        takes no locks and waits for nothing); :meth:`abort` cleans up after. Default:
        nothing (the serial executor's item is the interrupted code itself)."""

    def abort(self) -> None:
        """Release workers without waiting for running items (on an error or a signal);
        default :meth:`close`."""
        self.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None:
            self.abort()
        else:
            self.close()


#: the executors made by name in this process (``get_executor``) and not yet collected
_LIVE: weakref.WeakSet[Executor] = weakref.WeakSet()


def track(executor: Executor) -> Executor:
    """Note an executor, so that :func:`stop_all` reaches it."""
    _LIVE.add(executor)
    return executor


def stop_all() -> None:
    """Stop the running items of every executor of this process (from a signal handler)."""
    for executor in list(_LIVE):
        try:
            executor.stop_now()
        except Exception:  # a signal handler must not fail; abort() still cleans up
            pass


_SHIELDED = 0
_PENDING: list[BaseException] = []
_REQUESTED: list[BaseException] = []


def stop_with(exc: BaseException) -> None:
    """Raise ``exc`` (from a signal handler) now, or, inside :func:`shielded`, when the
    shielded call returns: an exception raised in the middle of a call to another
    process's gateway (Spark's py4j) would leave its connection broken and its log shouting.

    ``exc`` is also remembered (:func:`stop_requested`): Python drops an exception raised
    where it cannot propagate (a garbage-collector callback, a ``__del__``), and the run
    must still end as stopped when the next thing fails on the stopped workers."""
    if not _REQUESTED:
        _REQUESTED.append(exc)
    if _SHIELDED:
        _PENDING.append(exc)
        return
    raise exc


def stop_requested() -> BaseException | None:
    """The exception of the signal that stopped this process's work, if one came."""
    return _REQUESTED[0] if _REQUESTED else None


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for, where Python dropped its exception (the handler ran
    inside a finalizer, as py4j's are, between two maps): every executor calls this before
    it starts work, so that the next map ends the run instead of running to the end (the
    stopped workers of the map before may have had nothing left to fail on)."""
    stop = stop_requested()
    if stop is not None:
        raise stop


@contextmanager
def shielded() -> Iterator[None]:
    """A block that a signal does not interrupt: the signal's exception is raised when the
    block ends (after :meth:`Executor.stop_now` made the block return early)."""
    global _SHIELDED
    _SHIELDED += 1
    try:
        yield
    finally:
        _SHIELDED -= 1
        if not _SHIELDED and _PENDING:
            raise _PENDING.pop()
