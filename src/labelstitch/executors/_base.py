"""The executor interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """Work could not be run (a worker died, the cluster went away)."""


class Executor(ABC):
    """Maps a top-level, picklable function over items and yields the results in order.

    That is all an executor does: the pipeline decides what to map (subvolumes to
    segment, faces to match, subvolumes to write) and gathers the results.
    """

    name: str = "executor"

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        """``fn(item)`` for every item, in the items' order. ``describe(item)`` names an item
        in error messages (e.g. "subvolume 12")."""

    def close(self) -> None:
        """Release workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
