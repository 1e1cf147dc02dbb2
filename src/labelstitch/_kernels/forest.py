"""Random-forest prediction over flat tree arrays (trees trained by scikit-learn, evaluated
here so that an agglomeration can score a few edges at a time without scikit-learn's
per-call overhead)."""

from __future__ import annotations

from . import jit


@jit
def forest_predict(x, feature, threshold, left, right, value, roots, out):  # type: ignore[no-untyped-def]
    """``out[i]`` = the mean over trees of the leaf value reached by row ``x[i]``. Node arrays
    of all trees are concatenated; ``roots[k]`` is tree k's root; ``left[n] < 0`` marks a
    leaf; a row goes left where ``x[feature] <= threshold``."""
    trees = roots.size
    for i in range(x.shape[0]):
        acc = 0.0
        for k in range(trees):
            node = roots[k]
            while left[node] >= 0:
                if x[i, feature[node]] <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            acc += value[node]
        out[i] = acc / trees
