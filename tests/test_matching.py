"""The stitching rules on the paper's Figure 5 scenarios and on the rule registry."""

from __future__ import annotations

import os

import numpy as np
import pytest

from labelstitch import Plan, Reason, available_rules, match_slabs, register_rule, rule_parameters, stitch
from labelstitch.plugins.rules import unregister_rule

# Two blocks stacked along Z: A owns z 0..9, B owns z 10..19; halo 4, so the slab is z 6..13.
PLAN = Plan.grid((20, 40, 40), block=(10, 40, 40), halo=4)
A, B = PLAN.subvolumes


def two_views(view_a, view_b):
    """Blocks cut from what A's and B's segmenters would each label over the whole volume."""
    return {A.id: view_a[A.outer.slices()], B.id: view_b[B.outer.slices()]}


def columns(*edges):
    """A volume split along x at ``edges`` into labels 1, 2, 3, ..."""
    vol = np.zeros(PLAN.shape, np.uint32)
    bounds = [0, *edges, PLAN.shape[2]]
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        vol[:, :, lo:hi] = k + 1
    return vol


def bodies(result, sv, x):
    """Body id of the voxel column at x in subvolume sv's interior."""
    out = result.to_array()
    z = (sv.interior.start[0] + sv.interior.stop[0]) // 2
    return int(out[z, 20, x])


@pytest.mark.parametrize("rule", ["conservative", "medium", "aggressive"])
def test_fig5a_shifted_boundary_matches_each_neuron_to_its_own_partner(rule):
    # Two parallel neurons; A puts the boundary at x=20, B at x=22 (small shift).
    result = stitch(PLAN, two_views(columns(20), columns(22)), rule)
    assert result.n_bodies == 2
    assert bodies(result, A, 5) == bodies(result, B, 5)
    assert bodies(result, A, 30) == bodies(result, B, 30)
    assert bodies(result, A, 5) != bodies(result, A, 30)


def test_fig5b_branch_joins_under_aggressive_only():
    # One neuron in B (x < 30) appears as two branches in A (x < 15 and 15 <= x < 30).
    view_a = columns(15, 30)
    view_b = columns(30)
    got = {rule: stitch(PLAN, two_views(view_a, view_b), rule) for rule in available_rules()[:4]}
    agg = got["aggressive"]
    assert bodies(agg, A, 5) == bodies(agg, A, 20) == bodies(agg, B, 10)
    med = got["medium"]
    assert bodies(med, A, 5) == bodies(med, B, 10) != bodies(med, A, 20)
    assert med.reports[0].refused == {"not-mutual": 1}
    cons = got["conservative"]
    assert len({bodies(cons, A, 5), bodies(cons, A, 20), bodies(cons, B, 10)}) == 3
    assert cons.reports[0].refused == {"below-fraction": 1, "not-mutual": 1}


def test_fig5c_false_merge_in_b_propagates_under_aggressive_not_conservative():
    # A segments two neurons correctly; B falsely merges them (an image artifact).
    view_a = columns(20)
    view_b = np.ones(PLAN.shape, np.uint32)
    agg = stitch(PLAN, two_views(view_a, view_b), "aggressive")
    assert bodies(agg, A, 5) == bodies(agg, A, 30)  # the merge spread into A (Fig. 5c)
    med = stitch(PLAN, two_views(view_a, view_b), "medium")
    assert bodies(med, A, 5) != bodies(med, A, 30)  # B's body joins one neuron only
    cons = stitch(PLAN, two_views(view_a, view_b), "conservative")
    assert len({bodies(cons, A, 5), bodies(cons, A, 30), bodies(cons, B, 5)}) == 3  # Fig. 5d
    truth = columns(20)
    a_part = A.interior.slices()
    from labelstitch import vi

    assert vi(cons.to_array()[a_part], truth[a_part]).merge == 0
    assert vi(agg.to_array()[a_part], truth[a_part]).merge == pytest.approx(1.0)


def test_connected_components_let_each_branch_find_its_partner():
    # B's neuron is U-shaped: two arms in the slab, joined at the top of B (outside A's view).
    view_b = np.zeros(PLAN.shape, np.uint32)
    view_b[:, :, :15] = 1
    view_b[:, :, 25:] = 1
    view_b[17:, :, 15:25] = 1  # the bend, above the slab
    view_b[:17, :, 15:25] = 2
    view_a = np.where(view_b == 1, 0, 3).astype(np.uint32)
    view_a[:, :, :15] = 1
    view_a[:, :, 25:] = 2
    plain = stitch(PLAN, two_views(view_a, view_b), "medium")
    assert bodies(plain, A, 5) != bodies(plain, A, 30)
    split = stitch(PLAN, two_views(view_a, view_b), "medium", connected_components=True)
    assert bodies(split, A, 5) == bodies(split, A, 30) == bodies(split, B, 5)
    assert bodies(split, A, 20) == bodies(split, B, 20) != bodies(split, A, 5)
    assert split.summary()["connected_components"] is True


@pytest.mark.parametrize("rule", ["conservative", "medium", "aggressive"])
def test_exact_agreement_always_matches_however_small(rule):
    view = np.zeros(PLAN.shape, np.uint32)
    view[:, 3, 3] = 7  # a one-voxel-thin neurite: 8 voxels in the slab, far below 50
    view[8:12, 30, 30] = 9
    result = stitch(PLAN, two_views(view, view * 3), rule)
    assert result.n_bodies == 2
    assert len(result.matches) == 2


def test_segments_off_the_middle_plane_are_refused():
    view = np.zeros(PLAN.shape, np.uint32)
    view[6:9, 10:20, 10:20] = 4  # inside the slab, on A's side, never reaching z = 10
    result = stitch(PLAN, two_views(view, view), "medium")
    assert len(result.matches) == 0
    assert result.reports[0].refused == {"not-on-plane": 1}
    assert result.reports[0].considered_a == 0


def test_rule_none_matches_nothing():
    result = stitch(PLAN, two_views(columns(20), columns(20)), "none")
    assert len(result.matches) == 0 and result.n_bodies == 4


def test_ties_go_to_the_pair_seen_first_not_the_smaller_label():
    slab_a = np.zeros((2, 1, 4), np.uint32)
    slab_a[:, 0, :2] = 9
    slab_a[:, 0, 2:] = 1
    slab_b = np.full((2, 1, 4), 5, np.uint32)
    matches, report = match_slabs(slab_a, slab_b, axis=0, plane=1, rule="medium", min_overlap=0)
    assert matches.a.tolist() == [9] and report.refused == {"not-mutual": 1}


def test_rule_registry():
    assert available_rules()[:4] == ("none", "conservative", "medium", "aggressive")
    assert rule_parameters("aggressive") == {"min_overlap": 50, "min_fraction": 0.9, "min_one_sided": 1000}

    def largest_only(c, *, min_count=0):
        ok = c.mutual & (c.count >= min_count)
        return np.where(ok, Reason.ACCEPTED, Reason.BELOW_SIZE)

    register_rule("largest-only", largest_only)
    try:
        with pytest.raises(ValueError, match="exists already"):
            register_rule("largest-only", largest_only)
        result = stitch(PLAN, two_views(columns(20), columns(22)), "largest-only", min_count=10)
        assert result.n_bodies == 2 and result.params == {"min_count": 10}
        with pytest.raises(ValueError, match=r"has no parameter 'min_size'; its parameters are: min_count=0"):
            stitch(PLAN, two_views(columns(20), columns(22)), "largest-only", min_size=3)
    finally:
        unregister_rule("largest-only")
    with pytest.raises(ValueError, match="unknown stitching rule 'largest-only'; known rules: none, conservative"):
        stitch(PLAN, two_views(columns(20), columns(22)), "largest-only")


def test_a_rule_returning_the_wrong_shape_is_reported():
    register_rule("broken", lambda c: np.zeros(1, np.int8))
    try:
        with pytest.raises(ValueError, match="returned \\(1,\\) reasons for 2 pairs"):
            stitch(PLAN, two_views(columns(20), columns(20)), "broken")
    finally:
        unregister_rule("broken")


MY_RULE = '''
import numpy as np
from labelstitch import Reason

def mutual_only(candidates, *, min_count=0):
    ok = candidates.mutual & (candidates.count >= min_count)
    return np.where(ok, Reason.ACCEPTED, Reason.NOT_MUTUAL).astype(np.int8)
'''


def test_the_rule_registry_is_the_plugin_managers_and_workers_receive_the_rule_itself(tmp_path, monkeypatch):
    """A rule registered in this process runs in worker processes too: workers get the rule
    looked up once on the driver, not a name to look up in a registry of their own."""
    import numpy as np

    import labelstitch as ls
    from labelstitch.plugins import get_plugin_manager
    from labelstitch.synthetic import em_volume

    (tmp_path / "myrules.py").write_text(MY_RULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    import myrules

    register_rule("mutual-only", myrules.mutual_only)
    try:
        assert get_plugin_manager().get_plugin("labelstitch.rule.mutual-only") is not None
        assert available_rules()[-1] == "mutual-only" and rule_parameters("mutual-only") == {"min_count": 0}
        gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
        np.save(tmp_path / "gray.npy", gray)
        out = {}
        for executor in ("serial", "processes"):
            config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{executor}.zarr"),
                      "options": {"chunk-size": 32, "overlap": 4, "stitch-algorithm": "mutual-only",
                                  "stitch-parameters": {"min_count": 10}}}
            result = ls.run(config, executor=executor, workers=2)
            assert result.stitch["rule"] == "mutual-only" and result.counts["matches"] > 0
            with ls.stores.open_volume(str(tmp_path / f"{executor}.zarr")) as store:
                out[executor] = store.read()
        np.testing.assert_array_equal(out["serial"], out["processes"])
    finally:
        unregister_rule("mutual-only")
    assert "mutual-only" not in available_rules()
