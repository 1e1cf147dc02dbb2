"""Union-find over ``(subvolume, label)`` nodes, with roots chosen by key order.

Every union links the root with the larger ``(subvolume, label)`` key under the one with the
smaller key, so each component's root is its smallest node whatever order the matches
arrive in. That is what makes the global ids deterministic.
"""

from __future__ import annotations

import numpy as np

from . import jit
from .hashing import bits_for, hash_pair, pair_rehash



@jit
def _node_index(ka, kb, cnt, idx, bits, s, lab, next_index):  # type: ignore[no-untyped-def]
    """Index of node ``(s, lab)``; inserted with ``next_index`` when new (then ``new`` is True)."""
    mask = ka.size - 1
    slot = np.intp(hash_pair(s, lab) >> np.uint64(64 - bits))
    while True:
        if cnt[slot] == 0:
            ka[slot] = s
            kb[slot] = lab
            cnt[slot] = 1
            idx[slot] = next_index
            return next_index, True
        if ka[slot] == s and kb[slot] == lab:
            return idx[slot], False
        slot = (slot + 1) & mask


@jit
def _find(parent, i):  # type: ignore[no-untyped-def]
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@jit
def union_nodes(sa, la, sb, lb, sn, ln):  # type: ignore[no-untyped-def]
    """Join node ``(sa[k], la[k])`` with ``(sb[k], lb[k])`` for every k; also add ``(sn, ln)``.

    Returns ``(node_s, node_l, root, n_listed)``: every distinct node once, in first-seen
    order (the listed nodes ``(sn, ln)`` first: ``n_listed`` of them are distinct), and the
    index of its component's root, which is the component's smallest node.
    """
    bits = bits_for(min(sn.size + 2 * sa.size, 1 << 24))
    ka = np.zeros(1 << bits, np.uint64)
    kb = np.zeros(1 << bits, np.uint64)
    cnt = np.zeros(1 << bits, np.int64)
    idx = np.zeros(1 << bits, np.int64)
    cap = max(sn.size + 2 * sa.size, 1)
    node_s = np.empty(cap, np.uint64)
    node_l = np.empty(cap, np.uint64)
    parent = np.empty(cap, np.int64)
    n = 0
    n_listed = 0
    end_a = 0
    for k in range(sn.size + 2 * sa.size):
        if k < sn.size:
            s, lab = sn[k], ln[k]
        elif (k - sn.size) % 2 == 0:
            s, lab = sa[(k - sn.size) // 2], la[(k - sn.size) // 2]
        else:
            s, lab = sb[(k - sn.size) // 2], lb[(k - sn.size) // 2]
        i, new = _node_index(ka, kb, cnt, idx, bits, s, lab, n)
        if new:
            node_s[n] = s
            node_l[n] = lab
            parent[n] = n
            n += 1
            if 2 * n > ka.size:
                bits += 1
                ka, kb, cnt, idx = pair_rehash(ka, kb, cnt, idx, bits)
        if k < sn.size:
            n_listed = n
            continue
        if (k - sn.size) % 2 == 0:
            end_a = i
            continue
        ra = _find(parent, end_a)
        rb = _find(parent, i)
        if ra == rb:
            continue
        if node_s[ra] < node_s[rb] or (node_s[ra] == node_s[rb] and node_l[ra] < node_l[rb]):
            parent[rb] = ra
        else:
            parent[ra] = rb
    root = np.empty(n, np.int64)
    for i in range(n):
        root[i] = _find(parent, i)
    return node_s[:n].copy(), node_l[:n].copy(), root, n_listed
