"""Open-addressing hash tables on uint64 keys, written for numba.

Two table shapes are used:

* a *pair* table keyed on ``(x, y)`` with an ``int64`` count and the flat position of the
  first occurrence (``count == 0`` marks an empty slot, so every key, 0 included, is legal);
* a *single* table keyed on ``x`` with a ``uint64`` value and a ``used`` flag.

Tables have a power-of-two capacity, are probed linearly from the high bits of a
SplitMix64-style hash, and are rebuilt at twice the size when half full.
"""

from __future__ import annotations

import numpy as np

from . import jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_MIN_BITS = 10


@jit
def mix64(x):  # type: ignore[no-untyped-def]
    """SplitMix64 finaliser: a bijective, well-spread hash of a uint64."""
    x = (x ^ (x >> _S30)) * _MUL1
    x = (x ^ (x >> _S27)) * _MUL2
    return x ^ (x >> _S31)


@jit
def hash_pair(x, y):  # type: ignore[no-untyped-def]
    return mix64(x ^ mix64(y + _GOLDEN))


@jit
def bits_for(n):  # type: ignore[no-untyped-def]
    """Smallest table size exponent keeping ``n`` entries at most half full."""
    bits = _MIN_BITS
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


# --------------------------------------------------------------------------- pair tables


@jit
def pair_insert(ka, kb, cnt, first, bits, x, y, run, pos):  # type: ignore[no-untyped-def]
    """Add ``run`` to the count of ``(x, y)``; return 1 if the key is new, else 0."""
    mask = ka.size - 1
    slot = np.intp(hash_pair(x, y) >> np.uint64(64 - bits))
    while True:
        c = cnt[slot]
        if c == 0:
            ka[slot] = x
            kb[slot] = y
            cnt[slot] = run
            first[slot] = pos
            return 1
        if ka[slot] == x and kb[slot] == y:
            cnt[slot] = c + run
            if pos < first[slot]:
                first[slot] = pos
            return 0
        slot = (slot + 1) & mask


@jit
def pair_rehash(ka, kb, cnt, first, bits):  # type: ignore[no-untyped-def]
    size = np.intp(1) << bits
    nka = np.zeros(size, np.uint64)
    nkb = np.zeros(size, np.uint64)
    ncnt = np.zeros(size, np.int64)
    nfirst = np.zeros(size, np.int64)
    for s in range(ka.size):
        if cnt[s] != 0:
            pair_insert(nka, nkb, ncnt, nfirst, bits, ka[s], kb[s], cnt[s], first[s])
    return nka, nkb, ncnt, nfirst


@jit
def pair_compact(ka, kb, cnt, first, used):  # type: ignore[no-untyped-def]
    oa = np.empty(used, np.uint64)
    ob = np.empty(used, np.uint64)
    oc = np.empty(used, np.int64)
    of = np.empty(used, np.int64)
    k = 0
    for s in range(ka.size):
        if cnt[s] != 0:
            oa[k] = ka[s]
            ob[k] = kb[s]
            oc[k] = cnt[s]
            of[k] = first[s]
            k += 1
    return oa, ob, oc, of


@jit
def pair_counts(a, b):  # type: ignore[no-untyped-def]
    """Count every distinct ``(a[i], b[i])`` pair of two equally long 1-D arrays.

    Returns ``(a_keys, b_keys, counts, first)`` in table order, where ``first`` is the
    smallest index at which the pair occurs. Runs of equal pairs are counted once, which
    makes label data (long runs along x) several times faster than random data.
    """
    n = a.size
    bits = _MIN_BITS
    size = 1 << bits
    ka = np.zeros(size, np.uint64)
    kb = np.zeros(size, np.uint64)
    cnt = np.zeros(size, np.int64)
    first = np.zeros(size, np.int64)
    used = 0
    i = 0
    while i < n:
        x = a[i]
        y = b[i]
        j = i + 1
        while j < n and a[j] == x and b[j] == y:
            j += 1
        used += pair_insert(ka, kb, cnt, first, bits, np.uint64(x), np.uint64(y), j - i, i)
        if 2 * used > ka.size:
            bits += 1
            ka, kb, cnt, first = pair_rehash(ka, kb, cnt, first, bits)
        i = j
    return pair_compact(ka, kb, cnt, first, used)


# ------------------------------------------------------------------------- single tables


@jit
def single_find(keys, used, bits, x):  # type: ignore[no-untyped-def]
    """Slot holding ``x``, or the empty slot where it would go."""
    mask = keys.size - 1
    slot = np.intp(mix64(x) >> np.uint64(64 - bits))
    while used[slot] and keys[slot] != x:
        slot = (slot + 1) & mask
    return slot


@jit
def value_counts(a):  # type: ignore[no-untyped-def]
    """Distinct values of a 1-D array with their counts, in table order."""
    n = a.size
    bits = _MIN_BITS
    keys = np.zeros(1 << bits, np.uint64)
    vals = np.zeros(1 << bits, np.int64)
    used = np.zeros(1 << bits, np.bool_)
    nused = 0
    i = 0
    while i < n:
        x = a[i]
        j = i + 1
        while j < n and a[j] == x:
            j += 1
        key = np.uint64(x)
        slot = single_find(keys, used, bits, key)
        if used[slot]:
            vals[slot] += j - i
        else:
            used[slot] = True
            keys[slot] = key
            vals[slot] = j - i
            nused += 1
            if 2 * nused > keys.size:
                bits += 1
                nkeys = np.zeros(1 << bits, np.uint64)
                nvals = np.zeros(1 << bits, np.int64)
                nused_flags = np.zeros(1 << bits, np.bool_)
                for s in range(keys.size):
                    if used[s]:
                        t = single_find(nkeys, nused_flags, bits, keys[s])
                        nused_flags[t] = True
                        nkeys[t] = keys[s]
                        nvals[t] = vals[s]
                keys, vals, used = nkeys, nvals, nused_flags
        i = j
    out_k = np.empty(nused, np.uint64)
    out_v = np.empty(nused, np.int64)
    k = 0
    for s in range(keys.size):
        if used[s]:
            out_k[k] = keys[s]
            out_v[k] = vals[s]
            k += 1
    return out_k, out_v


@jit
def build_lut(keys_in, vals_in):  # type: ignore[no-untyped-def]
    """Hash table mapping ``keys_in[i] -> vals_in[i]`` (keys must be distinct)."""
    bits = bits_for(keys_in.size)
    keys = np.zeros(1 << bits, np.uint64)
    vals = np.zeros(1 << bits, np.uint64)
    used = np.zeros(1 << bits, np.bool_)
    for i in range(keys_in.size):
        slot = single_find(keys, used, bits, keys_in[i])
        used[slot] = True
        keys[slot] = keys_in[i]
        vals[slot] = vals_in[i]
    return keys, vals, used, bits


@jit
def apply_lut(labels, keys, vals, used, bits, out, preserve_missing):  # type: ignore[no-untyped-def]
    """Write ``lut[labels[i]]`` into ``out[i]``; return the first index without an entry.

    With ``preserve_missing`` a label without an entry is copied unchanged and the
    return value is -1. Otherwise the kernel stops at the first such label and returns
    its index; ``out`` is then partly written.
    """
    n = labels.size
    if n == 0:
        return -1
    prev = labels[0]
    slot = single_find(keys, used, bits, np.uint64(prev))
    if used[slot]:
        prev_out = vals[slot]
    elif preserve_missing:
        prev_out = np.uint64(prev)
    else:
        return 0
    out[0] = prev_out
    for i in range(1, n):
        x = labels[i]
        if x != prev:
            slot = single_find(keys, used, bits, np.uint64(x))
            if used[slot]:
                prev_out = vals[slot]
            elif preserve_missing:
                prev_out = np.uint64(x)
            else:
                return i
            prev = x
        out[i] = prev_out
    return -1


@jit
def first_missing(labels, keys, used, bits):  # type: ignore[no-untyped-def]
    """Index of the first label without an entry in the table, or -1."""
    n = labels.size
    if n == 0:
        return -1
    prev = labels[0]
    if not used[single_find(keys, used, bits, np.uint64(prev))]:
        return 0
    for i in range(1, n):
        x = labels[i]
        if x != prev:
            if not used[single_find(keys, used, bits, np.uint64(x))]:
                return i
            prev = x
    return -1
