"""2x2x2 downsampling of label volumes by the rule DVID uses for its label pyramids."""

from __future__ import annotations

import numpy as np

from . import jit


@jit
def downsample_mode(labels, out):  # type: ignore[no-untyped-def]
    """``out[z, y, x]`` = the most frequent non-zero label of the 2x2x2 cell of ``labels`` at
    ``(2z, 2y, 2x)`` (cells at odd far edges are smaller), ties to the smaller id, 0 when
    the cell is all 0. ``labels`` is C-contiguous uint64 (Z, Y, X); ``out`` has shape
    (ceil(Z/2), ceil(Y/2), ceil(X/2))."""
    nz, ny, nx = labels.shape
    values = np.zeros(8, np.uint64)
    for z in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                n = 0
                for dz in range(2):
                    zz = 2 * z + dz
                    if zz >= nz:
                        continue
                    for dy in range(2):
                        yy = 2 * y + dy
                        if yy >= ny:
                            continue
                        for dx in range(2):
                            xx = 2 * x + dx
                            if xx < nx:
                                v = labels[zz, yy, xx]
                                if v != 0:
                                    values[n] = v
                                    n += 1
                best = np.uint64(0)
                best_count = 0
                for i in range(n):
                    count = 0
                    for j in range(n):
                        if values[j] == values[i]:
                            count += 1
                    if count > best_count or (count == best_count and values[i] < best):
                        best = values[i]
                        best_count = count
                out[z, y, x] = best
