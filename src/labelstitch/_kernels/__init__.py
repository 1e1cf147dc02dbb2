"""Numba kernels: plain loops over flat, C-contiguous arrays.

Kernels trust their inputs. The public wrappers in :mod:`labelstitch.contingency`,
:mod:`labelstitch.relabel`, :mod:`labelstitch.resolve` and :mod:`labelstitch.metrics`
validate, convert and then call exactly one kernel. Nothing here imports from the
rest of the package.

Compilation is lazy (on first call, per input dtype), so ``import labelstitch`` compiles
nothing. Numba's on-disk cache is off unless ``LABELSTITCH_NUMBA_CACHE=1`` is set, because
cache files shared between processes that compile at once have crashed numba before.
"""

from __future__ import annotations

import os
import warnings

import numba

_CACHE = os.environ.get("LABELSTITCH_NUMBA_CACHE", "") == "1"
if _CACHE:  # pragma: no cover - depends on the environment
    warnings.warn(
        "LABELSTITCH_NUMBA_CACHE=1: numba kernels are cached on disk; two processes compiling "
        "the same kernel at once can corrupt the cache (numba issue 4807).",
        RuntimeWarning,
        stacklevel=2,
    )


def jit(fn):  # type: ignore[no-untyped-def]
    """``numba.njit(nogil=True)`` with the package's cache setting."""
    return numba.njit(nogil=True, cache=_CACHE)(fn)

