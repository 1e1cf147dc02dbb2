"""The reference executor: one item after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ._base import Executor

T = TypeVar("T")
R = TypeVar("R")


class SerialExecutor(Executor):
    """Runs everything in the calling process, in order."""

    name = "serial"

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, describe: Callable[[T], str] = repr) -> Iterator[R]:
        for item in items:
            yield fn(item)
