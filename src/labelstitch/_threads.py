"""How many threads the kernels may use.

The numba kernels release the GIL, so a large array is split into chunks that Python
threads count at once. ``LABELSTITCH_THREADS`` (or :func:`set_threads`) caps the number;
executors that already run one process per core set it to 1 in their workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0

#: arrays shorter than this are never split
MIN_CHUNK = 1 << 20


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_threads() -> int:
    """The thread cap: :func:`set_threads`, else ``LABELSTITCH_THREADS``, else the core count."""
    if _threads is not None:
        return _threads
    env = os.environ.get("LABELSTITCH_THREADS", "")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"LABELSTITCH_THREADS must be a positive integer, got {env!r}") from None
        if value < 1:
            raise ValueError(f"LABELSTITCH_THREADS must be a positive integer, got {env!r}")
        return value
    return usable_cores()


def set_threads(n: int | None) -> None:
    """Cap the kernels at ``n`` threads (``None``: back to the default)."""
    global _threads
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be a positive int or None, got {n!r}")
    _threads = n


def chunks(n: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges splitting ``n`` items for the current thread cap."""
    k = max(1, min(get_threads(), n // MIN_CHUNK))
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


def map_chunks(fn: Callable[[int, int], T], parts: Sequence[tuple[int, int]]) -> list[T]:
    """``[fn(start, stop) for each part]``, on threads when there is more than one part."""
    global _pool, _pool_size
    if len(parts) == 1:
        return [fn(*parts[0])]
    if _pool is None or _pool_size < len(parts):
        _pool = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="labelstitch")
        _pool_size = len(parts)
    futures = [_pool.submit(fn, start, stop) for start, stop in parts]
    return [f.result() for f in futures]


