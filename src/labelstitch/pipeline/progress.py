"""Progress of long steps on stderr: tqdm bars on a terminal, plain lines elsewhere.

A cluster job's log is a file: carriage-return bars would become one long line there, so
when stderr is not a terminal each step prints when it starts, how far it is (at most
every few seconds, and at each tenth of the way) with its rate, and when it ends. Every
bar and every step closes, also when the step stops early.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: seconds between two progress lines of one step (when stderr is not a terminal)
LINE_EVERY = 5.0


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """A step's progress as plain lines: start, ``done/total (percent), rate``, end."""

    def __init__(self, total: int, desc: str, initial: int = 0) -> None:
        self.total, self.desc, self.done, self.initial = total, desc, initial, initial
        self.start = self.last = time.monotonic()
        self.tenth = self._tenth()
        self.closed = False
        already = f", {initial} done already" if initial else ""
        self._say(f"started, {total} items{already}")

    def _tenth(self) -> int:
        return (10 * self.done) // self.total if self.total else 10

    def _say(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        tenth = self._tenth()
        if (now - self.last >= LINE_EVERY or tenth > self.tenth) and self.done < self.total:
            rate = (self.done - self.initial) / max(now - self.start, 1e-9)  # this run's items only
            self._say(f"{self.done}/{self.total} ({100 * self.done // max(self.total, 1)}%), {rate:.1f}/s")
            self.last, self.tenth = now, tenth

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            state = "done" if self.done >= self.total else "stopped at"
            self._say(f"{state} {self.done}/{self.total} in {time.monotonic() - self.start:.1f} s")


def bar(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    """A counter for a step of ``total`` items (work already done, e.g. restored from
    checkpoints, counts as done): a tqdm bar on a terminal, plain lines elsewhere."""
    if not enabled:
        return _NoBar()
    if not sys.stderr.isatty():
        return _Lines(total, desc, initial)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", leave=False)


def progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    """``items`` unchanged, counted; the counter closes however the loop ends."""
    counter = bar(total, desc, enabled)
    try:
        for item in items:
            yield item
            counter.update(1)
    finally:
        counter.close()
