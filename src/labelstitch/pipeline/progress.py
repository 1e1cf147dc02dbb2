"""Progress bars on stderr (tqdm), or nothing: long steps of a run show how far they are."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar (work already done, e.g. restored from checkpoints, counts as done)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", leave=False)


def progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    """``items`` unchanged, counted on a bar."""
    counter = bar(total, desc, enabled)
    try:
        for item in items:
            yield item
            counter.update(1)
    finally:
        counter.close()
