"""Kernels of the lean voxel classifier: eigenvalues of 3x3 Hessians in closed form, and a
random forest walked by eight voxels at once.

The forest's nodes are 8-byte records in breadth-first order, so that a node's two children
are adjacent: a voxel goes to ``child + (x[feature] > threshold)`` without a branch, and a
leaf is its own child with an infinite threshold, so that a walk may take more steps than
its path has. A record is the float32 threshold and one int32 holding the left child (its
index in the tree) above the feature's ``shift`` bits: eight records a cache line instead of
five, which made the walk 20 % faster than 12-byte records (measured on gala's forests). Eight walks interleaved keep the processor busy while each waits for memory;
each tree first takes the number of steps most voxels need (``steps``), and the few voxels
still inside finish one by one.
"""

from __future__ import annotations

import math

import numpy as np

from . import jit

NODE = np.dtype([("threshold", np.float32), ("meta", np.int32)])

#: the closed form's error bound, relative to the matrix's norm bound (float64 rounding is
#: 1.1e-16; the margin covers the few dozen operations and LAPACK's own error)
_RELATIVE_ERROR = 1e-13


@jit(inline="always")
def _rounds_alike(e, error):  # type: ignore[no-untyped-def]
    """Whether every float64 within ``error`` of ``e`` rounds to the same float32."""
    r = np.float32(e)
    below = np.float64(np.nextafter(r, np.float32(-np.inf)))
    above = np.float64(np.nextafter(r, np.float32(np.inf)))
    middle = np.float64(r)
    return abs(e - (middle + below) / 2.0) > error and abs(e - (middle + above) / 2.0) > error


@jit
def hessian_eigenvalues(h00, h01, h02, h11, h12, h22, out, column, uncertain):  # type: ignore[no-untyped-def]
    """Eigenvalues of the symmetric matrices ``[[h00 h01 h02] [h01 h11 h12] [h02 h12 h22]]``
    (flat float32 arrays), largest first, into ``out[:, column:column + 3]``.

    Computed in float64 by the trigonometric closed form and rounded to float32. numpy's
    ``eigvalsh`` computes them with LAPACK in float64 and rounds them to float32; the two
    float64 values differ by less than a bound on both errors, so they round alike unless
    a float32 rounding boundary lies within that bound: there ``uncertain[i]`` is set, for
    the caller to ask LAPACK (a few voxels in a million).
    """
    for i in range(h00.size):
        a00 = np.float64(h00[i])
        a01 = np.float64(h01[i])
        a02 = np.float64(h02[i])
        a11 = np.float64(h11[i])
        a12 = np.float64(h12[i])
        a22 = np.float64(h22[i])
        off = a01 * a01 + a02 * a02 + a12 * a12
        if off == 0.0:  # diagonal: the entries themselves, exactly
            e1 = max(a00, max(a11, a22))
            e3 = min(a00, min(a11, a22))
            e2 = max(min(a00, a11), min(max(a00, a11), a22))
            error = 0.0
        else:
            q = (a00 + a11 + a22) / 3.0
            b00 = a00 - q
            b11 = a11 - q
            b22 = a22 - q
            p = math.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0)
            det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
            r = min(max(det / (2.0 * p * p * p), -1.0), 1.0)
            angle = math.acos(r) / 3.0
            e1 = q + 2.0 * p * math.cos(angle)
            e3 = q + 2.0 * p * math.cos(angle + 2.0 * math.pi / 3.0)
            e2 = 3.0 * q - e1 - e3
            # both methods' error, relative to a bound of the norm; acos amplifies the error
            # of r near +-1 (two eigenvalues nearly equal)
            error = (_RELATIVE_ERROR * (abs(a00) + abs(a11) + abs(a22) + 2.0 * (abs(a01) + abs(a02) + abs(a12)))
                     + 1e-14 * p / math.sqrt(max(1.0 - r * r, 1e-30)))
        out[i, column] = e1
        out[i, column + 1] = e2
        out[i, column + 2] = e3
        if not (_rounds_alike(e1, error) and _rounds_alike(e2, error) and _rounds_alike(e3, error)):
            uncertain[i] = True


@jit(inline="always")
def _step(nodes, x, i, a, root, shift, mask):  # type: ignore[no-untyped-def]
    node = nodes[a]
    meta = node.meta
    return root + (meta >> shift) + np.int64(x[i, meta & mask] > node.threshold)


@jit
def _finish(nodes, x, i, a, root, shift, mask):  # type: ignore[no-untyped-def]
    while root + (nodes[a].meta >> shift) != a:
        a = _step(nodes, x, i, a, root, shift, mask)
    return a


@jit
def forest_probabilities(x, nodes, value, roots, steps, shift, out):  # type: ignore[no-untyped-def]
    """``out[i, c]`` = the mean over trees of ``value[leaf, c]`` for row ``x[i]``, summed in
    tree order in float64 and rounded to float32: what scikit-learn's ``predict_proba``
    computes, to the bit (a threshold is stored as the largest float32 not above
    scikit-learn's float64 one, which sends every float32 value the same way)."""
    n = x.shape[0]
    channels = value.shape[1]
    mask = (1 << shift) - 1
    acc = np.zeros((n, channels))
    for k in range(roots.size):
        root = roots[k]
        i = 0
        while i + 8 <= n:
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = root
            for _ in range(steps[k]):
                a0 = _step(nodes, x, i, a0, root, shift, mask)
                a1 = _step(nodes, x, i + 1, a1, root, shift, mask)
                a2 = _step(nodes, x, i + 2, a2, root, shift, mask)
                a3 = _step(nodes, x, i + 3, a3, root, shift, mask)
                a4 = _step(nodes, x, i + 4, a4, root, shift, mask)
                a5 = _step(nodes, x, i + 5, a5, root, shift, mask)
                a6 = _step(nodes, x, i + 6, a6, root, shift, mask)
                a7 = _step(nodes, x, i + 7, a7, root, shift, mask)
            for j, a in enumerate((a0, a1, a2, a3, a4, a5, a6, a7)):
                leaf = _finish(nodes, x, i + j, a, root, shift, mask)
                for c in range(channels):
                    acc[i + j, c] += value[leaf, c]
            i += 8
        while i < n:
            leaf = _finish(nodes, x, i, root, root, shift, mask)
            for c in range(channels):
                acc[i, c] += value[leaf, c]
            i += 1
    trees = roots.size
    for i in range(n):
        for c in range(channels):
            out[i, c] = acc[i, c] / trees
