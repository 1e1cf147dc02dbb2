"""Kernels of the lean voxel classifier: Sobel edges, eigenvalues of 3x3 Hessians in closed
form, and a random forest walked by eight voxels at once.

The forest's nodes are 8-byte records in breadth-first order, so that a node's two children
are adjacent: a voxel goes to ``child + (x[feature] > threshold)`` without a branch, and a
leaf is its own child with an infinite threshold, so that a walk may take more steps than
its path has. A record is the float32 threshold and one uint32 holding the left child (its
index among all the forest's nodes) above the feature's eight bits: eight records a cache
line instead of five, and no per-tree offset to add at each step. Eight neighbouring voxels
walk a tree together, which keeps the processor busy while each waits for memory and lets
them share the cache lines of the paths they mostly share; they stop together once none
moved in two steps (the deepest of eight neighbours is about 20 steps deep where a fixed
walk long enough for most voxels took 27; measured on gala's forests).
"""

from __future__ import annotations

import math

import numpy as np

from . import jit

NODE = np.dtype([("threshold", np.float32), ("meta", np.uint32)])
#: the bits of a record's meta that hold the feature (the child's index is above them)
FEATURE_BITS = 8

#: the closed form's error bound, relative to the matrix's norm bound (float64 rounding is
#: 1.1e-16; the margin covers the few dozen operations and LAPACK's own error)
_RELATIVE_ERROR = 1e-13


@jit(inline="always")
def _rounds_alike(e, error):  # type: ignore[no-untyped-def]
    """Whether every float64 within ``error`` of ``e`` rounds to the same float32: rounding
    is monotonic, so the two ends of the interval say it (a third of the eigenvalues' time
    less than asking for the float32 neighbours with ``nextafter``)."""
    return np.float32(e - error) == np.float32(e + error)


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


@jit
def sobel_magnitude(padded, out):  # type: ignore[no-untyped-def]
    """scikit-image's ``filters.sobel`` of a float32 volume, given with one voxel of margin on
    every side (``padded``: its neighbours, or the edge voxel repeated where the volume
    ends, as ndimage's mode ``reflect`` reads), into ``out`` (the volume's shape), to the
    bit: per axis, ``ndimage.convolve``'s sum over the kernel's non-zero taps in their
    order, in float64, rounded to float32; then the float32 square root of the float32 sum
    of the squares over the square root of three. About eight times faster than scikit-image's
    three general convolutions (measured on gala: no per-tap offsets or border checks, and
    the compiler vectorises the rows, which a strided output would prevent).

    The kernel along an axis, flipped as ``ndimage.convolve`` applies it, is the edge
    ``(-1, 0, 1)`` along that axis and the smoothing ``(1, 2, 1) / 4`` along the others;
    ndimage skips the zero taps. The weights are written as plain conditions on the loop
    counters, which the compiler folds."""
    depth, height, width = out.shape
    root3 = np.sqrt(np.float32(3.0))
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                total = np.float32(0.0)
                for axis in range(3):
                    tmp = 0.0
                    for i in range(3):
                        for j in range(3):
                            for k in range(3):
                                if axis == 0:
                                    if i == 1:
                                        continue
                                    w = (-1.0 if i == 0 else 1.0) * (0.5 if j == 1 else 0.25) * (0.5 if k == 1 else 0.25)
                                elif axis == 1:
                                    if j == 1:
                                        continue
                                    w = (0.5 if i == 1 else 0.25) * (-1.0 if j == 0 else 1.0) * (0.5 if k == 1 else 0.25)
                                else:
                                    if k == 1:
                                        continue
                                    w = (0.5 if i == 1 else 0.25) * (0.5 if j == 1 else 0.25) * (-1.0 if k == 0 else 1.0)
                                tmp += w * np.float64(padded[z + i, y + j, x + k])
                    r = np.float32(tmp)
                    total = total + r * r
                out[z, y, x] = np.sqrt(total) / root3


@jit(inline="always")
def _step(nodes, x, row, a):  # type: ignore[no-untyped-def]
    """One step of the walk at node ``a`` for the voxel whose features start at ``x[row]``
    (unsigned indices: no wraparound checks)."""
    node = nodes[a]
    meta = np.uint64(node.meta)
    return (meta >> np.uint64(FEATURE_BITS)) + np.uint64(x[row + (meta & np.uint64((1 << FEATURE_BITS) - 1))] > node.threshold)


@jit
def forest_probabilities(x, nodes, value, roots, out):  # type: ignore[no-untyped-def]
    """``out[i, c]`` = the mean over trees of ``value[leaf, c]`` for row ``x[i]`` (C order),
    summed in tree order in float64 and rounded to float32: what scikit-learn's
    ``predict_proba`` computes, to the bit (a threshold is stored as the largest float32 not
    above scikit-learn's float64 one, which sends every float32 value the same way)."""
    n, f = x.shape
    flat = x.ravel()
    channels = value.shape[1]
    width = np.uint64(f)
    acc = np.zeros((n, channels))
    for k in range(roots.size):
        root = np.uint64(roots[k])
        i = 0
        while i + 8 <= n:
            r0 = np.uint64(i) * width
            r1, r2, r3 = r0 + width, r0 + np.uint64(2) * width, r0 + np.uint64(3) * width
            r4, r5, r6, r7 = r0 + np.uint64(4) * width, r0 + np.uint64(5) * width, r0 + np.uint64(6) * width, r0 + np.uint64(7) * width
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = root
            while True:
                p0, p1, p2, p3, p4, p5, p6, p7 = a0, a1, a2, a3, a4, a5, a6, a7
                for _ in range(2):  # two steps between the checks: the check costs about a step
                    a0 = _step(nodes, flat, r0, a0)
                    a1 = _step(nodes, flat, r1, a1)
                    a2 = _step(nodes, flat, r2, a2)
                    a3 = _step(nodes, flat, r3, a3)
                    a4 = _step(nodes, flat, r4, a4)
                    a5 = _step(nodes, flat, r5, a5)
                    a6 = _step(nodes, flat, r6, a6)
                    a7 = _step(nodes, flat, r7, a7)
                if ((a0 == p0) & (a1 == p1) & (a2 == p2) & (a3 == p3) & (a4 == p4) & (a5 == p5) & (a6 == p6)
                        & (a7 == p7)):  # an inner node always moves: all eight are at their leaves
                    break
            for j, a in enumerate((a0, a1, a2, a3, a4, a5, a6, a7)):
                for c in range(channels):
                    acc[i + j, c] += value[a, c]
            i += 8
        while i < n:
            a, row = root, np.uint64(i) * width
            while True:
                b = _step(nodes, flat, row, a)
                if b == a:
                    break
                a = b
            for c in range(channels):
                acc[i, c] += value[a, c]
            i += 1
    trees = roots.size
    for i in range(n):
        for c in range(channels):
            out[i, c] = acc[i, c] / trees
