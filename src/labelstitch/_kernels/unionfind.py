"""Node indexing and union-find for the resolution of matches into bodies.

Nodes are ``(subvolume, label)`` pairs, indexed 0..n-1 in key order. Matches become words
``lower_index << 32 | higher_index`` and are sorted, so the union-find sweeps memory mostly
in order. Every union links the larger root index under the smaller one, so
``parent[i] <= i`` always holds and each component's root is its smallest node whatever
order the matches arrive in: global ids are deterministic, and one forward pass resolves
every root. Everything here streams through memory except the union-find itself, because
random access is what large label tables make expensive.
"""

from __future__ import annotations

import numpy as np

from . import jit

_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@jit
def pack_keys(parts_s, parts_l, l_bits, p_bits):  # type: ignore[no-untyped-def]
    """``s << (l_bits + p_bits) | l << p_bits | position`` over several (s, l) array pairs
    taken as one concatenated sequence, in a single allocation."""
    total = 0
    for k in range(len(parts_s)):
        total += parts_s[k].size
    out = np.empty(total, np.uint64)
    s_shift = np.uint64(l_bits + p_bits)
    l_shift = np.uint64(p_bits)
    pos = 0
    for k in range(len(parts_s)):
        s = parts_s[k]
        lab = parts_l[k]
        for i in range(s.size):
            out[pos] = (s[i] << s_shift) | (lab[i] << l_shift) | np.uint64(pos)
            pos += 1
    return out


@jit
def number_sorted_keys(words, p_bits):  # type: ignore[no-untyped-def]
    """Walk sorted ``key << p_bits | position`` words; number the distinct keys 0..n-1.

    Rewrites each word in place as ``position << p_bits | node`` (sort them again to get
    the node index of every position) and returns the distinct keys in order.
    """
    mask = (np.uint64(1) << np.uint64(p_bits)) - np.uint64(1)
    shift = np.uint64(p_bits)
    keys = np.empty(words.size, np.uint64)
    n = 0
    prev = np.uint64(0)
    for i in range(words.size):
        key = words[i] >> shift
        if n == 0 or key != prev:
            keys[n] = key
            n += 1
            prev = key
        words[i] = ((words[i] & mask) << shift) | np.uint64(n - 1)
    return keys[:n].copy()


@jit
def index_ordered(s, lab, order, index_of):  # type: ignore[no-untyped-def]
    """For keys that do not pack: ``order`` sorts ``(s, lab)``; write each entry's node index
    into ``index_of`` and return the distinct nodes."""
    node_s = np.empty(order.size, np.uint64)
    node_l = np.empty(order.size, np.uint64)
    n = 0
    for i in range(order.size):
        p = order[i]
        if n == 0 or s[p] != node_s[n - 1] or lab[p] != node_l[n - 1]:
            node_s[n] = s[p]
            node_l[n] = lab[p]
            n += 1
        index_of[p] = np.uint64(n - 1)
    return node_s[:n].copy(), node_l[:n].copy()


@jit
def match_words_inplace(index_of, first, m):  # type: ignore[no-untyped-def]
    """Overwrite ``index_of[first:first+m]`` with ``lo << 32 | hi`` for each match, where
    the match's ends have node indices ``index_of[first+k]`` and ``index_of[first+m+k]``."""
    for k in range(m):
        x = index_of[first + k]
        y = index_of[first + m + k]
        if x > y:
            x, y = y, x
        index_of[first + k] = (x << _S32) | y


@jit
def union_words(words, n):  # type: ignore[no-untyped-def]
    """Join the two nodes of every ``lo << 32 | hi`` word; return each node's root."""
    parent = np.arange(n)
    for k in range(words.size):
        x = np.int64(words[k] >> _S32)
        y = np.int64(words[k] & _LOW32)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for i in range(n):  # parent[i] <= i: one forward pass finishes every path
        parent[i] = parent[parent[i]]
    return parent


@jit
def number_bodies(root, needed):  # type: ignore[no-untyped-def]
    """Body ids 1..k for the roots marked in ``needed``, in node order; 0 for the rest.

    Relies on ``root[i] <= i``, so a root is always numbered before its members.
    """
    body = np.zeros(root.size, np.uint64)
    k = 0
    for i in range(root.size):
        r = root[i]
        if r == i:
            if needed[i]:
                k += 1
                body[i] = k
        else:
            body[i] = body[r]
    return body, k


@jit
def insertion_points(starts, labels, s_ends, l_ends, out, found):  # type: ignore[no-untyped-def]
    """For each end ``(s, l)``: where ``l`` goes in the sorted run ``labels[starts[s]:starts[s+1]]``
    of subvolume ``s`` (an index into ``labels``, written to ``out``), and whether it is
    there (``found``). Consecutive ends mostly share a subvolume, so each search stays
    within one small, cached run."""
    n_s = starts.size - 1
    for m in range(s_ends.size):
        s = np.int64(s_ends[m])
        if s >= n_s:
            out[m] = starts[n_s]
            found[m] = False
            continue
        lo = starts[s]
        end = starts[s + 1]
        hi = end
        lab = l_ends[m]
        while lo < hi:
            mid = (lo + hi) >> 1
            if labels[mid] < lab:
                lo = mid + 1
            else:
                hi = mid
        out[m] = lo
        found[m] = lo < end and labels[lo] == lab
