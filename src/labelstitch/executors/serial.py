"""The reference executor: one item after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ._base import Executor, raise_if_stopped

T = TypeVar("T")
R = TypeVar("R")


class SerialExecutor(Executor):
    """Runs everything in the calling process, in order."""

    name = "serial"
    in_process = True

    def __init__(self, *, workers: int | None = None) -> None:
        """``workers`` is accepted for a uniform interface and ignored: one item at a time."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        for item in items:
            raise_if_stopped()  # before each item: one at a time, a stop waits for no more than one
            yield fn(item)
