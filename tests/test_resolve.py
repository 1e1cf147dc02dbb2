from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelstitch import resolve


def reference(matches, nodes):
    """Plain-Python union-find; bodies numbered by their smallest node."""
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for n in nodes:
        find(n)
    for a, b in matches:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups = {}
    for n in parent:
        groups.setdefault(find(n), []).append(n)
    needed = [g for g in groups.values() if any(n in nodes for n in g)]
    needed.sort(key=min)
    return {n: i + 1 for i, g in enumerate(needed) for n in g}


node = st.tuples(st.integers(0, 6), st.sampled_from([1, 2, 3, 2**40, 2**64 - 1]))


@given(st.lists(st.tuples(node, node), max_size=30), st.lists(node, max_size=20), st.randoms())
def test_resolution_matches_reference_and_ignores_order(matches, nodes, rnd):
    nodes = sorted(set(nodes) | {m[0] for m in matches[::2]})

    def run(ms, ns):
        return resolve(
            [a[0] for a, _ in ms],
            [a[1] for a, _ in ms],
            [b[0] for _, b in ms],
            [b[1] for _, b in ms],
            nodes=([n[0] for n in ns], [n[1] for n in ns]),
        )

    got = run(matches, nodes)
    assert got.as_dict() == reference(matches, set(nodes))
    shuffled = [(b, a) if rnd.random() < 0.5 else (a, b) for a, b in matches]
    rnd.shuffle(shuffled)
    ns = list(nodes)
    rnd.shuffle(ns)
    again = run(shuffled, ns)
    assert again.as_dict() == got.as_dict()
    assert again.n_bodies == got.n_bodies == len(set(got.as_dict().values()))
    if got.n_bodies:
        assert sorted(set(got.body.tolist())) == list(range(1, got.n_bodies + 1))


def test_many_random_matches():
    rng = np.random.default_rng(0)
    m = 2_000_000
    sa = rng.integers(0, 1000, m)
    la = rng.integers(1, 2000, m)
    sb = sa + 1
    lb = rng.integers(1, 2000, m)
    mapping = resolve(sa, la, sb, lb)
    # compare with scipy's connected components on the same graph
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = np.unique(np.concatenate([sa * 4096 + la, sb * 4096 + lb]))
    ia = np.searchsorted(keys, sa * 4096 + la)
    ib = np.searchsorted(keys, sb * 4096 + lb)
    n, comp = connected_components(coo_matrix((np.ones(m), (ia, ib)), shape=(keys.size, keys.size)), directed=False)
    assert mapping.n_bodies == n
    ours = mapping.body[np.searchsorted(mapping.subvolume * np.uint64(4096) + mapping.label, keys.astype(np.uint64))]
    pairs = np.unique(np.stack([ours, comp], axis=1), axis=0)
    assert len(pairs) == n  # the two partitions agree


def test_lookup_and_errors():
    m = resolve([0], [5], [1], [6], nodes=([0, 1, 1], [5, 6, 9]))
    assert m.body_of(0, 5) == m.body_of(1, 6) == 1 and m.body_of(1, 9) == 2 and m.body_of(1, 0) == 0
    assert m.bodies_of([0, 1, 1, 1, 5], [5, 6, 9, 77, 1]).tolist() == [1, 1, 2, 0, 0]
    labels, bodies = m.for_subvolume(1)
    assert labels.tolist() == [6, 9] and bodies.tolist() == [1, 2]
    with pytest.raises(KeyError, match="label 7 of subvolume 0"):
        m.body_of(0, 7)
    with pytest.raises(ValueError, match="label 0"):
        resolve([0], [0], [1], [3])
    with pytest.raises(ValueError, match="equal lengths"):
        resolve([0, 1], [1], [1], [3])
