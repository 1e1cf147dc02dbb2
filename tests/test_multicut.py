"""The multicut of a region graph: greedy additive edge contraction against a plain-Python
reference, the node moves' local optimality, planted partitions, and the stage per block
and across blocks."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from labelstitch.multicut import multicut, multicut_objective, multicut_weights
from labelstitch.rag import roots_of
from labelstitch._kernels.multicut import greedy_additive
from labelstitch.pipeline import run
from labelstitch.stores import open_volume
from labelstitch.testing import assert_same_partition

from test_across_blocks import STAGES, oversegmentation  # noqa: F401  (the ids pipeline)


def _graph(seed: int, n: int, density: float):
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1) if rng.random() < density]
    if not pairs:
        pairs = [(1, 2)] if n >= 2 else []
    u = np.array([a for a, _ in pairs], np.int64)
    v = np.array([b for _, b in pairs], np.int64)
    w = rng.normal(0.3, 1.0, u.size)
    return u, v, w


def _reference_gaec(u, v, w, n):
    """GAEC in plain Python, as the papers state it."""
    adjacency = [dict() for _ in range(n + 1)]
    for a, b, x in zip(u.tolist(), v.tolist(), w.tolist()):
        adjacency[a][b] = adjacency[a].get(b, 0.0) + x
        adjacency[b][a] = adjacency[b].get(a, 0.0) + x
    parent = list(range(n + 1))
    alive = [True] * (n + 1)
    while True:
        best = max(((x, a, b) for a in range(n + 1) if alive[a] for b, x in adjacency[a].items() if a < b),
                   default=None)
        if best is None or best[0] <= 0:
            break
        _, a, b = best
        parent[b], alive[b] = a, False
        del adjacency[a][b]
        for c, x in adjacency[b].items():
            if c == a:
                continue
            del adjacency[c][b]
            adjacency[a][c] = adjacency[a].get(c, 0.0) + x
            adjacency[c][a] = adjacency[a][c]
        adjacency[b] = {}
    return roots_of(np.array(parent))


def _partition(roots):
    groups: dict[int, set[int]] = {}
    for node, root in enumerate(np.asarray(roots).tolist()):
        groups.setdefault(root, set()).add(node)
    return sorted(sorted(g) for g in groups.values())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(2, 30), density=st.floats(0.05, 0.6))
def test_the_compiled_gaec_is_the_reference_gaec(seed, n, density):
    u, v, w = _graph(seed, n, density)
    compiled = roots_of(greedy_additive(u, v, w, n))
    assert _partition(compiled) == _partition(_reference_gaec(u, v, w, n))


def _connected(u, v, roots):
    """Every cluster is connected by edges inside it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(roots)
    same = roots[u] == roots[v]
    _, piece = connected_components(coo_matrix((np.ones(same.sum()), (u[same], v[same])), shape=(n, n)), directed=False)
    return all(len(set(piece[roots == r])) == 1 for r in np.unique(roots))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(2, 40), density=st.floats(0.05, 0.5))
def test_the_refined_multicut_is_locally_optimal_connected_and_no_worse(seed, n, density):
    u, v, w = _graph(seed, n, density)
    gaec = multicut(u, v, w, n, refine=False)
    refined = multicut(u, v, w, n)
    assert refined[0] == 0 and _connected(u, v, refined)
    best = multicut_objective(u, v, w, refined)
    assert best <= multicut_objective(u, v, w, gaec) + 1e-9
    # no single node is better off in a neighbouring cluster or alone
    labels = refined.copy()
    fresh = n + 10
    for i in range(1, n + 1):
        near = set(labels[v[u == i]]) | set(labels[u[v == i]])
        for target in near | {fresh}:
            moved = labels.copy()
            moved[i] = target
            assert multicut_objective(u, v, w, moved) >= best - 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), groups=st.integers(1, 6))
def test_a_planted_partition_is_found(seed, groups):
    """Strong attraction inside planted groups, repulsion between them, noise smaller than
    both: the multicut is the planted partition."""
    rng = np.random.default_rng(seed)
    n = 30
    planted = np.concatenate([[0], rng.integers(0, groups, n)])
    u, v = np.triu_indices(n + 1, 1)
    keep = (u > 0) & (rng.random(u.size) < 0.5)
    u, v = u[keep], v[keep]
    w = np.where(planted[u] == planted[v], 2.0, -2.0) + rng.uniform(-1, 1, u.size)
    roots = multicut(u, v, w, n)
    # planted groups that the sampled edges leave connected are the clusters
    expected = np.arange(n + 1)
    for g in range(groups):
        members = np.flatnonzero(planted == g)
        members = members[members > 0]
        if members.size:
            expected[members] = members.min()
    connected = multicut(u[planted[u] == planted[v]], v[planted[u] == planted[v]], np.ones(int((planted[u] == planted[v]).sum())), n)
    assert _partition(roots) == _partition(connected)


def test_weights_follow_the_cut_probability_and_the_prior():
    w = multicut_weights([0.2, 0.8], [10, 30])
    assert w[0] > 0 > w[1] and abs(w[1]) == pytest.approx(3 * w[0])  # sizes 10 and 30: 0.5 and 1.5 of the mean
    assert multicut_weights([0.5], beta=0.7)[0] < 0 < multicut_weights([0.5], beta=0.3)[0]
    with pytest.raises(ValueError, match="`beta` must lie strictly between 0 and 1"):
        multicut_weights([0.5], beta=1.0)


@pytest.fixture()
def stages(tmp_path, monkeypatch):
    (tmp_path / "acrossstages.py").write_text(STAGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "acrossstages"


def _config(tmp_path, ids, name, *, block, halo, across, beta=0.5):
    np.save(tmp_path / "ids.npy", ids.astype(np.uint8))
    return {
        "input": str(tmp_path / "ids.npy"), "output": str(tmp_path / f"{name}.zarr"),
        "options": {
            "chunk-size": block, "overlap": halo, "background-value": None, "agglomerate-across-blocks": across,
            "segmentor": {"configuration": {
                "predict-voxels": {"function": "acrossstages.boundary_of_ids"},
                "create-supervoxels": {"function": "acrossstages.ids_as_supervoxels"},
                "agglomerate-supervoxels": {"function": "multicut_agglomeration", "parameters": {"beta": beta}},
            }},
        },
    }


def _read(result):
    with open_volume(result.output) as store:
        return store.read()


def test_multicut_across_blocks_is_the_unblocked_multicut(stages, tmp_path):
    ids = oversegmentation()
    whole = run(_config(tmp_path, ids, "whole", block=list(ids.shape), halo=0, across=False))
    assert whole.counts["bodies"] < ids.max() - 20  # it merges plenty
    across = run(_config(tmp_path, ids, "across", block=12, halo=2, across=True))
    assert_same_partition(_read(across), _read(whole))
    parallel = run(_config(tmp_path, ids, "parallel", block=12, halo=2, across=True), executor="processes", workers=2)
    np.testing.assert_array_equal(_read(parallel), _read(across))
    more = run(_config(tmp_path, ids, "more-cuts", block=list(ids.shape), halo=0, across=False, beta=0.8))
    assert more.counts["bodies"] > whole.counts["bodies"]  # a higher prior of a cut: more bodies
