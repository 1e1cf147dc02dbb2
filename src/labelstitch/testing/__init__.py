"""Helpers for testing segmentations: compare partitions, not label values.

Stitched ids are arbitrary, so tests (ours and those of pipelines built on labelstitch)
compare which voxels are grouped together, not the ids themselves. :func:`executor_params`
gives the executors to run a test on, each skipped with its reason where this machine
lacks what it needs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..contingency import count_pairs
from .._validation import as_labels, check_same_shape, flat

__all__ = ["assert_same_partition", "executor_params", "is_refinement", "roc_auc"]


def _missing(executor: str) -> str:
    """Why ``executor`` cannot run here ("" when it can)."""
    if executor == "spark" and shutil.which("java") is None and "JAVA_HOME" not in os.environ:
        return "Spark needs Java"
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        return "needs the labelstitch[dask] extra"
    return ""


def executor_params(*executors: str) -> list[Any]:
    """``pytest.param`` for each executor, marked to skip with a one-line reason where it
    cannot run on this machine (Spark without Java, Dask without its extra)."""
    import pytest

    return [pytest.param(e, marks=pytest.mark.skipif(bool(_missing(e)), reason=_missing(e) or "runs")) for e in executors]


def _pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a_ = as_labels(a, "a")
    b_ = as_labels(b, "b")
    check_same_shape(a_, b_, "a", "b")
    ka, kb, _, _ = count_pairs(flat(a_), flat(b_))
    return ka, kb


def is_refinement(fine: ArrayLike, coarse: ArrayLike) -> bool:
    """True when every segment of ``fine`` lies inside one segment of ``coarse`` and
    background (0) is the same set of voxels in both.

    >>> is_refinement(np.array([1, 2, 3, 0]), np.array([5, 5, 7, 0]))
    True
    >>> is_refinement(np.array([1, 1, 3, 0]), np.array([5, 6, 7, 0]))
    False
    """
    ka, kb = _pairs(fine, coarse)
    if np.any((ka == 0) != (kb == 0)):
        return False
    return bool(np.unique(ka).size == ka.size)


def assert_same_partition(a: ArrayLike, b: ArrayLike) -> None:
    """Raise AssertionError unless ``a`` and ``b`` group the voxels identically (ids may differ).

    >>> assert_same_partition(np.array([1, 1, 2, 0]), np.array([9, 9, 4, 0]))
    """
    ka, kb = _pairs(a, b)
    bad_bg = np.flatnonzero((ka == 0) != (kb == 0))
    if bad_bg.size:
        raise AssertionError(f"background differs: label {ka[bad_bg[0]]} in a meets label {kb[bad_bg[0]]} in b")
    if np.unique(ka).size != ka.size:
        raise AssertionError(f"a segment of `a` is split in `b` ({ka.size} pairs for {np.unique(ka).size} labels)")
    if np.unique(kb).size != kb.size:
        raise AssertionError(f"a segment of `b` is split in `a` ({kb.size} pairs for {np.unique(kb).size} labels)")


def roc_auc(score: ArrayLike, label: ArrayLike) -> float:
    """The area under the ROC curve of ``score`` for the boolean ``label`` (the chance that a
    random positive voxel scores above a random negative one; ties count half).

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    from scipy.stats import rankdata

    ranks = rankdata(np.ravel(score))
    positive = np.ravel(label).astype(bool)
    n1, n0 = positive.sum(), positive.size - positive.sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
