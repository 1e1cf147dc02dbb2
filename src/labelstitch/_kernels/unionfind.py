"""Union-find over ``(subvolume, label)`` nodes, with roots chosen by key order.

Every union links the root with the larger ``(subvolume, label)`` key under the one with the
smaller key, so each component's root is its smallest node whatever order the matches
arrive in. That is what makes the global ids deterministic.
"""

from __future__ import annotations

import numpy as np

from . import jit
from .hashing import COUNT, EXTRA, KEY_A, KEY_B, _MIN_BITS, pair_rehash, pair_slot, pair_table


@jit
def _find(parent, i):  # type: ignore[no-untyped-def]
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@jit
def _fill(sa, la, sb, lb, sn, ln, k, table, bits, node_s, node_l, parent, n, n_listed, end_a):  # type: ignore[no-untyped-def]
    """Process items from ``k`` on until the table is half full.

    Items ``0 .. sn.size-1`` are the listed nodes; after them come the two ends of each
    match in turn. Returns ``(k, n, n_listed, end_a)``.
    """
    total = sn.size + 2 * sa.size
    limit = table.shape[0] // 2
    while k < total and n < limit:
        if k < sn.size:
            s, lab = sn[k], ln[k]
        elif (k - sn.size) % 2 == 0:
            s, lab = sa[(k - sn.size) // 2], la[(k - sn.size) // 2]
        else:
            s, lab = sb[(k - sn.size) // 2], lb[(k - sn.size) // 2]
        slot = pair_slot(table, bits, s, lab)
        if table[slot, COUNT] == 0:
            table[slot, KEY_A] = s
            table[slot, KEY_B] = lab
            table[slot, COUNT] = 1
            table[slot, EXTRA] = n
            node_s[n] = s
            node_l[n] = lab
            parent[n] = n
            i = n
            n += 1
        else:
            i = np.int64(table[slot, EXTRA])
        if k < sn.size:
            n_listed = n
        elif (k - sn.size) % 2 == 0:
            end_a = i
        else:
            ra = _find(parent, end_a)
            rb = _find(parent, i)
            if ra != rb:
                if node_s[ra] < node_s[rb] or (node_s[ra] == node_s[rb] and node_l[ra] < node_l[rb]):
                    parent[rb] = ra
                else:
                    parent[ra] = rb
        k += 1
    return k, n, n_listed, end_a


@jit
def _grow(arr, size):  # type: ignore[no-untyped-def]
    out = np.empty(size, arr.dtype)
    out[: arr.size] = arr
    return out


@jit
def union_nodes(sa, la, sb, lb, sn, ln):  # type: ignore[no-untyped-def]
    """Join node ``(sa[k], la[k])`` with ``(sb[k], lb[k])`` for every k; also add ``(sn, ln)``.

    Returns ``(node_s, node_l, root, n_listed)``: every distinct node once, in first-seen
    order (the listed nodes ``(sn, ln)`` first: ``n_listed`` of them are distinct), and the
    index of its component's root, which is the component's smallest node.
    """
    bits = _MIN_BITS
    table = pair_table(bits)
    cap = table.shape[0] // 2
    node_s = np.empty(cap, np.uint64)
    node_l = np.empty(cap, np.uint64)
    parent = np.empty(cap, np.int64)
    k, n, n_listed, end_a = _fill(sa, la, sb, lb, sn, ln, 0, table, bits, node_s, node_l, parent, 0, 0, 0)
    while k < sn.size + 2 * sa.size:
        bits += 1
        table = pair_rehash(table, bits)
        cap = table.shape[0] // 2
        node_s, node_l, parent = _grow(node_s, cap), _grow(node_l, cap), _grow(parent, cap)
        k, n, n_listed, end_a = _fill(sa, la, sb, lb, sn, ln, k, table, bits, node_s, node_l, parent, n, n_listed, end_a)
    root = np.empty(n, np.int64)
    for i in range(n):
        root[i] = _find(parent, i)
    return node_s[:n].copy(), node_l[:n].copy(), root, n_listed
