"""Transitive resolution of matches into global body ids.

Nodes are ``(subvolume id, local label)`` pairs. Matches join nodes; each connected group
of nodes becomes one body. Bodies are numbered 1, 2, ... in the order of their smallest
node, so the ids depend only on *which* matches exist, never on the order in which blocks
or faces were processed. Label 0 is background and never a node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from numba.typed import List

from ._kernels.unionfind import (
    index_ordered,
    insertion_points,
    match_words_inplace,
    number_bodies,
    number_sorted_keys,
    pack_keys,
    union_words,
)
from ._validation import as_uint64_1d

__all__ = ["LabelMapping", "resolve"]


def _index_nodes(
    parts_s: list[NDArray[np.uint64]], parts_l: list[NDArray[np.uint64]]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64]]:
    """Distinct ``(s, l)`` nodes in key order, and the node index of every entry of the
    concatenated ``parts`` (as uint64).

    When subvolume, label and position bits fit one 64-bit word, the entries are packed
    and sorted as plain integers (numpy's SIMD sort), and sorted once more by position to
    hand each entry its node index without a random scatter. Otherwise a two-key
    ``lexsort`` is used.
    """
    n = sum(p.size for p in parts_s)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    s_bits = max(max(int(p.max()) for p in parts_s if p.size).bit_length(), 1)
    l_bits = max(max(int(p.max()) for p in parts_l if p.size).bit_length(), 1)
    p_bits = max(int(n - 1).bit_length(), 1)
    if s_bits + l_bits + p_bits <= 64 and p_bits <= 32:
        words = pack_keys(List(parts_s), List(parts_l), l_bits, p_bits)
        words.sort()
        keys = number_sorted_keys(words, p_bits)
        words.sort()
        words &= np.uint64((1 << p_bits) - 1)
        return keys >> np.uint64(l_bits), keys & np.uint64((1 << l_bits) - 1), words
    s, lab = np.concatenate(parts_s), np.concatenate(parts_l)
    index_of = np.empty(n, np.uint64)
    node_s, node_l = index_ordered(s, lab, np.lexsort((lab, s)), index_of)
    return node_s, node_l, index_of


def _index_listed_nodes(
    sn: NDArray[np.uint64], ln: NDArray[np.uint64], ends_s: list[NDArray[np.uint64]], ends_l: list[NDArray[np.uint64]]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64]] | None:
    """:func:`_index_nodes` for the pipeline's case, without sorting every entry: the listed
    nodes arrive sorted by ``(s, l)`` and distinct (each subvolume's sorted labels, in
    subvolume order), so they are numbered in place, and each match end is found by a binary
    search within its subvolume's run. Ends not listed (labels seen only in halos) become
    extra nodes merged into the order. None when the listed nodes are not sorted and
    distinct, or subvolume ids are too sparse for a table of run starts."""
    n = sn.size
    top = int(max([sn.max(initial=0)] + [e.max(initial=0) for e in ends_s]))
    if n == 0 or top > 4 * n + 1024:
        return None
    if n > 1 and not np.all((sn[1:] > sn[:-1]) | ((sn[1:] == sn[:-1]) & (ln[1:] > ln[:-1]))):
        return None
    starts = np.searchsorted(sn, np.arange(top + 2, dtype=np.uint64)).astype(np.int64)
    index_of = np.empty(n + sum(e.size for e in ends_s), np.uint64)
    index_of[:n] = np.arange(n, dtype=np.uint64)
    found = np.empty(index_of.size - n, np.bool_)
    at = index_of[n:]  # insertion points of the ends, then their node indices
    done = 0
    for s_part, l_part in zip(ends_s, ends_l):
        insertion_points(starts, ln, s_part, l_part, at[done : done + s_part.size], found[done : done + s_part.size])
        done += s_part.size
    missing = np.flatnonzero(~found)
    if missing.size == 0:
        return sn, ln, index_of
    # extra nodes: the distinct missing ends in (s, l) order, each placed after the listed
    # nodes that sort before it
    miss_s = np.concatenate(ends_s)[missing]
    miss_l = np.concatenate(ends_l)[missing]
    order = np.lexsort((miss_l, miss_s))
    first = np.ones(order.size, bool)
    first[1:] = (miss_s[order[1:]] != miss_s[order[:-1]]) | (miss_l[order[1:]] != miss_l[order[:-1]])
    extra_of = np.cumsum(first) - 1  # extra number of each sorted missing end
    extras = order[first]
    listed_before = at[missing[extras]].astype(np.int64)  # non-decreasing
    extra_index = np.arange(extras.size, dtype=np.int64) + listed_before
    shift = np.cumsum(np.bincount(listed_before, minlength=n + 1))[:n]  # extras before listed node i
    listed_index = (np.arange(n, dtype=np.int64) + shift).astype(np.uint64)
    node_s = np.empty(n + extras.size, np.uint64)
    node_l = np.empty(n + extras.size, np.uint64)
    node_s[listed_index], node_l[listed_index] = sn, ln
    node_s[extra_index], node_l[extra_index] = miss_s[extras], miss_l[extras]
    hit = np.flatnonzero(found)
    at[hit] = listed_index[at[hit].astype(np.int64)]
    at[missing[order]] = extra_index[extra_of].astype(np.uint64)
    index_of[:n] = listed_index
    return node_s, node_l, index_of


@dataclass(frozen=True)
class LabelMapping:
    """The global body id of every ``(subvolume, label)`` node, sorted by node.

    Attributes
    ----------
    subvolume, label, body : (N,) ndarray of uint64
        Node keys and their body ids (1..n_bodies).
    n_bodies : int
        Number of distinct bodies.
    """

    subvolume: NDArray[np.uint64]
    label: NDArray[np.uint64]
    body: NDArray[np.uint64]
    n_bodies: int

    def __len__(self) -> int:
        return int(self.subvolume.size)

    def for_subvolume(self, sv_id: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        """``(labels, bodies)`` of one subvolume, ready for :func:`labelstitch.remap`."""
        # uint64 keys: Python ints would make numpy compare in float64, copying the whole array
        lo, hi = np.searchsorted(self.subvolume, np.array([sv_id, sv_id + 1], np.uint64))
        return self.label[lo:hi], self.body[lo:hi]

    def body_of(self, sv_id: int, label: int) -> int:
        """The body id of one node (0 for label 0)."""
        if label == 0:
            return 0
        labels, bodies = self.for_subvolume(sv_id)
        i = int(np.searchsorted(labels, np.uint64(label)))
        if i == labels.size or labels[i] != label:
            raise KeyError(f"label {label} of subvolume {sv_id} is not in the mapping")
        return int(bodies[i])

    def bodies_of(self, subvolumes: ArrayLike, labels: ArrayLike) -> NDArray[np.uint64]:
        """Vectorised :meth:`body_of`: 0 for label 0 and for nodes not in the mapping (labels
        that exist only in halos)."""
        svs = as_uint64_1d(subvolumes, "subvolumes")
        labs = as_uint64_1d(labels, "labels")
        out = np.zeros(labs.size, np.uint64)
        for sv in np.unique(svs):
            rows = np.flatnonzero(svs == sv)
            known, bodies = self.for_subvolume(int(sv))
            if known.size == 0:
                continue
            pos = np.minimum(np.searchsorted(known, labs[rows]), known.size - 1)
            hit = known[pos] == labs[rows]
            out[rows[hit]] = bodies[pos[hit]]
        return out

    def as_dict(self) -> dict[tuple[int, int], int]:
        """``{(subvolume, label): body}``; for small mappings and tests."""
        return {(int(s), int(lab)): int(b) for s, lab, b in zip(self.subvolume, self.label, self.body)}


def resolve(
    sv_a: ArrayLike,
    label_a: ArrayLike,
    sv_b: ArrayLike,
    label_b: ArrayLike,
    *,
    nodes: tuple[ArrayLike, ArrayLike] | None = None,
) -> LabelMapping:
    """Join matched nodes transitively and number the resulting bodies.

    Parameters
    ----------
    sv_a, label_a, sv_b, label_b : (M,) array of int
        Match ``k`` joins node ``(sv_a[k], label_a[k])`` with ``(sv_b[k], label_b[k])``.
    nodes : pair of (N,) arrays, optional
        The ``(subvolume, label)`` nodes that need a body id, matched or not (in
        :func:`~labelstitch.stitch`, every label of every interior). When given, groups
        that hold none of these nodes (labels seen only in halos) are left out of the
        mapping, so that body ids are exactly 1..n_bodies over the listed nodes. Nodes
        with label 0 are dropped.

    Returns
    -------
    LabelMapping

    Raises
    ------
    ValueError
        If the match arrays differ in length, or a match involves label 0.

    Examples
    --------
    >>> m = resolve([0, 1], [5, 7], [1, 2], [7, 9], nodes=([0, 2], [4, 9]))
    >>> m.as_dict()
    {(0, 4): 1, (0, 5): 2, (1, 7): 2, (2, 9): 2}
    """
    names = ("sv_a", "label_a", "sv_b", "label_b")
    arrays = [as_uint64_1d(x, name) for x, name in zip((sv_a, label_a, sv_b, label_b), names)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"match arrays must have equal lengths, got {[a.size for a in arrays]}")
    sa, la, sb, lb = arrays
    if np.any(la == 0) or np.any(lb == 0):
        raise ValueError("a match involves label 0 (background), which never matches")
    if nodes is None:
        sn = ln = np.zeros(0, np.uint64)
    else:
        sn = as_uint64_1d(nodes[0], "nodes[0]")
        ln = as_uint64_1d(nodes[1], "nodes[1]")
        if sn.size != ln.size:
            raise ValueError(f"`nodes` arrays must have equal lengths, got {sn.size} and {ln.size}")
        nonzero = ln != 0
        sn, ln = sn[nonzero], ln[nonzero]
    n_listed, m = sn.size, sa.size
    listed = _index_listed_nodes(sn, ln, [sa, sb], [la, lb]) if n_listed else None
    node_s, node_l, index_of = listed if listed is not None else _index_nodes([sn, sa, sb], [ln, la, lb])
    if node_s.size >= 2**32:
        raise ValueError(f"{node_s.size} distinct nodes: resolve handles at most 2**32 - 1")
    match_words_inplace(index_of, n_listed, m)
    words = index_of[n_listed : n_listed + m]
    words.sort()
    root = union_words(words, node_s.size)
    if nodes is None:
        needed = np.ones(root.size, bool)
    else:
        needed = np.zeros(root.size, bool)
        needed[root[index_of[:n_listed].astype(np.intp)]] = True
    del index_of, words
    body, n_bodies = number_bodies(root, needed)
    if nodes is not None:
        keep = body != 0
        if not keep.all():  # groups of halo-only labels: left out (a copy only then)
            node_s, node_l, body = node_s[keep], node_l[keep], body[keep]
    return LabelMapping(node_s, node_l, body, int(n_bodies))
