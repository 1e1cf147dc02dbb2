"""Numba kernels: plain loops over flat, C-contiguous arrays.

Kernels trust their inputs. The public wrappers in :mod:`labelstitch.contingency`,
:mod:`labelstitch.relabel`, :mod:`labelstitch.resolve` and :mod:`labelstitch.metrics`
validate, convert and then call exactly one kernel. Nothing here imports from the
rest of the package.

Compilation is lazy (on first call, per input dtype), so ``import labelstitch`` compiles
nothing, and cached on disk (numba's cache, next to this package or in
``NUMBA_CACHE_DIR``), so a kernel is compiled once per machine and installed version, not
once in every worker of every run. Compilations are serialised across processes by a
file lock beside the cache: numba numbers a kernel's cache files by the count it read
from the index, so two processes compiling at once can write each other's files (numba
issue 4807); under the lock the second process finds the first one's entry and loads it.
``LABELSTITCH_NUMBA_CACHE=0`` turns the disk cache (and the lock) off.
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any

import numba

_CACHE = os.environ.get("LABELSTITCH_NUMBA_CACHE", "1") != "0"
_depth = threading.local()  # compiles nest (a kernel compiles the kernels it calls)


class _LockedCompile:
    """A dispatcher's ``compile`` run under an exclusive lock file in its cache folder."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.compile = dispatcher.compile

    def __call__(self, sig: Any) -> Any:
        if getattr(_depth, "n", 0):
            return self.compile(sig)
        try:
            folder = self.dispatcher._cache._cache_path
            os.makedirs(folder, exist_ok=True)
            handle = open(os.path.join(folder, "labelstitch-compile.lock"), "a+b")
        except (AttributeError, OSError):  # no usable cache folder: numba compiles in memory
            return self.compile(sig)
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _depth.n = 1
            try:
                return self.compile(sig)
            finally:
                _depth.n = 0


def jit(fn=None, **options):  # type: ignore[no-untyped-def]
    """``numba.njit(nogil=True, **options)``, cached on disk, compiled under the package's
    lock; ``@jit`` or ``@jit(inline="always")``."""
    if fn is None:
        return lambda f: jit(f, **options)
    dispatcher = numba.njit(nogil=True, cache=_CACHE, **options)(fn)
    if _CACHE:
        dispatcher.compile = _LockedCompile(dispatcher)
    return dispatcher
