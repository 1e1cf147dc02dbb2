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
_MIN_BITS = 10  # smallest table: 1024 slots


@jit
def mix64(x):  # type: ignore[no-untyped-def]
    """SplitMix64 finaliser: a bijective, well-spread hash of a uint64."""
    x = (x ^ (x >> _S30)) * _MUL1
    x = (x ^ (x >> _S27)) * _MUL2
    return x ^ (x >> _S31)


@jit
def hash_pair(x, y):  # type: ignore[no-untyped-def]
    """A cheap hash of a key pair; tables index by its high bits, which mix well."""
    h = ((x * _GOLDEN) ^ y) * _MUL1
    return h ^ (h >> _S31)


@jit
def bits_for(n):  # type: ignore[no-untyped-def]
    """Smallest table size exponent keeping ``n`` entries at most half full."""
    bits = _MIN_BITS
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


# --------------------------------------------------------------------------- pair tables
# A pair table is one (capacity, 4) uint64 array with columns KEY_A, KEY_B, COUNT, EXTRA, so
# that a probe touches a single cache line. COUNT == 0 marks an empty slot. EXTRA holds the
# first position of the pair (pair_counts) or a node index (union-find).

KEY_A, KEY_B, COUNT, EXTRA = 0, 1, 2, 3


@jit
def pair_table(bits):  # type: ignore[no-untyped-def]
    return np.zeros((1 << bits, 4), np.uint64)


@jit
def pair_slot(table, bits, x, y):  # type: ignore[no-untyped-def]
    """Slot holding ``(x, y)``, or the empty slot where it would go."""
    mask = table.shape[0] - 1
    slot = np.intp(hash_pair(x, y) >> np.uint64(64 - bits))
    while table[slot, COUNT] != 0 and (table[slot, KEY_A] != x or table[slot, KEY_B] != y):
        slot = (slot + 1) & mask
    return slot


@jit
def pair_rows(table):  # type: ignore[no-untyped-def]
    """The used slots as ``(key_a, key_b, count, extra)`` columns (counts and extras as int64)."""
    rows = table[table[:, COUNT] != 0]
    return (
        rows[:, KEY_A].copy(),
        rows[:, KEY_B].copy(),
        rows[:, COUNT].astype(np.int64),
        rows[:, EXTRA].astype(np.int64),
    )


@jit
def pair_rehash(table, bits):  # type: ignore[no-untyped-def]
    """The same entries in a new table of ``2**bits`` slots."""
    new = pair_table(bits)
    for s in range(table.shape[0]):
        if table[s, COUNT] != 0:
            slot = pair_slot(new, bits, table[s, KEY_A], table[s, KEY_B])
            for c in range(4):
                new[slot, c] = table[s, c]
    return new


@jit
def _pair_fill(a, b, i, table, bits, used):  # type: ignore[no-untyped-def]
    """Count pairs from index ``i`` until the table is half full; return ``(i, used)``.

    The table is never reassigned in here, which lets numba drop the reference counting
    around every insert (several times faster than growing the table inside the loop).
    """
    n = a.size
    limit = table.shape[0] // 2
    last = -1  # slot of the previous run: label rows often alternate between few pairs
    while i < n and used < limit:
        x = a[i]
        y = b[i]
        j = i + 1
        while j < n and a[j] == x and b[j] == y:
            j += 1
        ux = np.uint64(x)
        uy = np.uint64(y)
        if last >= 0 and table[last, KEY_A] == ux and table[last, KEY_B] == uy:
            slot = last
        else:
            slot = pair_slot(table, bits, ux, uy)
            if table[slot, COUNT] == 0:
                table[slot, KEY_A] = ux
                table[slot, KEY_B] = uy
                table[slot, EXTRA] = np.uint64(i)
                used += 1
        table[slot, COUNT] += np.uint64(j - i)
        last = slot
        i = j
    return i, used


@jit
def pair_counts(a, b):  # type: ignore[no-untyped-def]
    """Count every distinct ``(a[i], b[i])`` pair of two equally long 1-D arrays.

    Returns ``(a_keys, b_keys, counts, first)`` in table order, where ``first`` is the
    smallest index at which the pair occurs. Runs of equal pairs are counted once, which
    makes label data (long runs along x) several times faster than random data.
    """
    bits = _MIN_BITS
    table = pair_table(bits)
    i, used = _pair_fill(a, b, 0, table, bits, 0)
    while i < a.size:
        bits += 1
        table = pair_rehash(table, bits)
        i, used = _pair_fill(a, b, i, table, bits, used)
    return pair_rows(table)


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
def single_insert(keys, vals, used, bits, key, val):  # type: ignore[no-untyped-def]
    """Add ``val`` to the value of ``key`` (inserting it); return 1 if the key is new."""
    slot = single_find(keys, used, bits, key)
    if used[slot]:
        vals[slot] += val
        return 0
    used[slot] = True
    keys[slot] = key
    vals[slot] = val
    return 1


@jit
def _value_fill(a, i, keys, vals, used, bits, nused):  # type: ignore[no-untyped-def]
    """Count values from index ``i`` until the table is half full; return ``(i, nused)``."""
    n = a.size
    limit = keys.size // 2
    while i < n and nused < limit:
        x = a[i]
        j = i + 1
        while j < n and a[j] == x:
            j += 1
        nused += single_insert(keys, vals, used, bits, np.uint64(x), j - i)
        i = j
    return i, nused


@jit
def value_counts(a):  # type: ignore[no-untyped-def]
    """Distinct values of a 1-D array with their counts, in table order."""
    bits = _MIN_BITS
    keys = np.zeros(1 << bits, np.uint64)
    vals = np.zeros(1 << bits, np.int64)
    used = np.zeros(1 << bits, np.bool_)
    i, nused = _value_fill(a, 0, keys, vals, used, bits, 0)
    while i < a.size:
        bits += 1
        nkeys = np.zeros(1 << bits, np.uint64)
        nvals = np.zeros(1 << bits, np.int64)
        nflags = np.zeros(1 << bits, np.bool_)
        for s in range(keys.size):
            if used[s]:
                single_insert(nkeys, nvals, nflags, bits, keys[s], vals[s])
        keys, vals, used = nkeys, nvals, nflags
        i, nused = _value_fill(a, i, keys, vals, used, bits, nused)
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


@jit
def pair_sum(ka, kb, cnt, first):  # type: ignore[no-untyped-def]
    """Merge partial pair counts: sum ``cnt`` and keep the smallest ``first`` per pair."""
    bits = bits_for(ka.size)
    table = pair_table(bits)
    used = 0
    for i in range(ka.size):
        slot = pair_slot(table, bits, ka[i], kb[i])
        if table[slot, COUNT] == 0:
            table[slot, KEY_A] = ka[i]
            table[slot, KEY_B] = kb[i]
            table[slot, EXTRA] = np.uint64(first[i])
            used += 1
        elif np.uint64(first[i]) < table[slot, EXTRA]:
            table[slot, EXTRA] = np.uint64(first[i])
        table[slot, COUNT] += np.uint64(cnt[i])
    return pair_rows(table)


# ------------------------------------------------------------------------- pair numbering


@jit
def _number_fill(a, b, i, table, bits, used, out):  # type: ignore[no-untyped-def]
    """Number pairs from index ``i`` until the table is half full (see :func:`number_pairs`).

    The probe is :func:`_pair_fill`'s, written out again: a shared helper returning
    (slot, added) measured 10 % slower in :func:`pair_counts`, the hottest loop there is."""
    n = a.size
    limit = table.shape[0] // 2
    last = -1
    while i < n and used < limit:
        if b[i] == 0:
            out[i] = 0
            i += 1
            continue
        ux = np.uint64(a[i])
        uy = np.uint64(b[i])
        if last >= 0 and table[last, KEY_A] == ux and table[last, KEY_B] == uy:
            slot = last
        else:
            slot = pair_slot(table, bits, ux, uy)
            if table[slot, COUNT] == 0:
                table[slot, KEY_A] = ux
                table[slot, KEY_B] = uy
                used += 1
                table[slot, EXTRA] = np.uint64(used)
        table[slot, COUNT] += np.uint64(1)
        out[i] = table[slot, EXTRA]
        last = slot
        i += 1
    return i, used


@jit
def number_pairs(a, b, out):  # type: ignore[no-untyped-def]
    """``out[i]`` = the number of the pair ``(a[i], b[i])``: 1, 2, ... in the order pairs
    first occur, and 0 wherever ``b[i]`` is 0. Returns the table's rows
    ``(a_keys, b_keys, counts, numbers)``."""
    bits = _MIN_BITS
    table = pair_table(bits)
    i, used = _number_fill(a, b, 0, table, bits, 0, out)
    while i < a.size:
        bits += 1
        table = pair_rehash(table, bits)
        i, used = _number_fill(a, b, i, table, bits, used, out)
    return pair_rows(table)
