from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.measure import label as connected

from labelstitch import Plan, stitch
from labelstitch.synthetic import blockwise_segmentation, consistent_blocks, neurite_labels, random_ids
from labelstitch.testing import assert_same_partition, is_refinement

STITCHING_RULES = ["conservative", "medium", "aggressive"]


@st.composite
def tilings(draw, max_side=14):
    """A random volume of 26-connected segments and a random plan over it (halo >= 1), with
    at most 7 blocks along an axis (one-voxel blocks on small sides), so that no example
    costs thousands of blocks."""
    shape = draw(st.tuples(*(st.integers(2, max_side),) * 3))
    raw = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 3)))
    truth = connected(raw, connectivity=3, background=0).astype(np.uint32)
    block = tuple(draw(st.integers(-(-s // 7), s)) for s in shape)
    halo = tuple(draw(st.integers(1, b)) for b in block)
    return truth, Plan.grid(shape, block, halo)


@given(tilings(), st.integers(0, 2**32 - 1))
def test_consistent_tilings_are_reconstructed_exactly_by_every_rule(tiling, seed):
    truth, plan = tiling
    blocks = consistent_blocks(truth, plan, seed=seed)
    for rule in STITCHING_RULES:
        result = stitch(plan, blocks, rule)
        out = result.to_array()
        assert_same_partition(out, truth)
        assert result.n_bodies == len(np.unique(truth[truth > 0]))
    none = stitch(plan, blocks, "none").to_array()
    assert is_refinement(none, truth)


@st.composite
def spoiled_tilings(draw):
    """Truth plus imperfect blocks: shifted boundaries, splits and false merges."""
    shape = draw(st.tuples(st.integers(8, 24), st.integers(8, 24), st.integers(8, 24)))
    seed = draw(st.integers(0, 10_000))
    truth = neurite_labels(shape, n_neurites=draw(st.integers(2, 12)), seed=seed)
    block = tuple(draw(st.integers(4, s)) for s in shape)
    halo = tuple(draw(st.integers(1, min(b, 4))) for b in block)
    plan = Plan.grid(shape, block, halo)
    artifacts = draw(st.lists(st.sampled_from(plan.ids), max_size=2))
    blocks = blockwise_segmentation(
        truth, plan, jitter=0.3, split_prob=0.1, artifact_blocks=artifacts, merges_per_artifact=2, seed=seed
    )
    return plan, blocks


small_thresholds = {"min_overlap": 3, "min_one_sided": 6}


@given(spoiled_tilings(), st.integers(0, 2**32 - 1), st.booleans())
def test_result_does_not_depend_on_local_ids(tiling, seed, cc):
    plan, blocks = tiling
    rng = np.random.default_rng(seed)
    renamed = {k: random_ids(v, rng) for k, v in reversed(list(blocks.items()))}
    for rule in STITCHING_RULES:
        params = {k: v for k, v in small_thresholds.items() if k in ("min_overlap",) or rule == "aggressive"}
        first = stitch(plan, blocks, rule, connected_components=cc, **params)
        second = stitch(plan, renamed, rule, connected_components=cc, **params)
        assert_same_partition(first.to_array(), second.to_array())
        assert len(first.matches) == len(second.matches)


@given(spoiled_tilings(), st.booleans(), st.booleans())
def test_merges_are_nested_from_none_to_aggressive(tiling, small, cc):
    plan, blocks = tiling
    params = small_thresholds if small else {}
    results = [
        stitch(plan, blocks, "none", connected_components=cc),
        stitch(plan, blocks, "conservative", connected_components=cc, **{k: v for k, v in params.items() if k == "min_overlap"}),
        stitch(plan, blocks, "medium", connected_components=cc, **{k: v for k, v in params.items() if k == "min_overlap"}),
        stitch(plan, blocks, "aggressive", connected_components=cc, **params),
    ]
    arrays = [r.to_array() for r in results]
    match_sets = [{(int(f), int(a), int(b)) for f, a, b in zip(r.matches.face, r.matches.a, r.matches.b)} for r in results]
    for finer, coarser, fm, cm in zip(arrays, arrays[1:], match_sets, match_sets[1:]):
        assert is_refinement(finer, coarser)
        assert fm <= cm
    assert [r.n_bodies for r in results] == sorted((r.n_bodies for r in results), reverse=True)


def test_blocks_from_a_callable_and_in_any_order_give_identical_ids():
    truth = neurite_labels((30, 40, 50), n_neurites=15, seed=4)
    plan = Plan.grid(truth.shape, (16, 16, 16), 3)
    blocks = blockwise_segmentation(truth, plan, artifact_blocks=[plan.ids[3]], seed=1)
    reference = stitch(plan, blocks, "medium").to_array()
    shuffled = dict(sorted(blocks.items(), key=lambda kv: -kv[0]))
    calls = []

    def load(sv):
        calls.append(sv.id)
        return blocks[sv.id]

    np.testing.assert_array_equal(stitch(plan, shuffled, "medium").to_array(), reference)
    result = stitch(plan, load, "medium")
    assert sorted(calls) == sorted(plan.ids)  # each block read once for matching
    np.testing.assert_array_equal(result.to_array(), reference)
    assert reference.max() == result.n_bodies and np.unique(reference[reference > 0]).size == result.n_bodies


@pytest.mark.parametrize("rule", STITCHING_RULES)
def test_segments_crossing_only_at_an_edge_or_a_corner_stay_one_body(rule):
    # 2x2x2 blocks of 8; a thin body runs along the main diagonal, so it passes from block 0
    # to block 7 through the single corner point (8, 8, 8) and touches no face in between.
    n = 16
    truth = np.zeros((n, n, n), np.uint32)
    idx = np.arange(n)
    truth[idx, idx, idx] = 1
    truth[2, :, 13] = 2  # an edge crossing: a body along y at fixed z, x
    truth[:, 7, 7] = 3  # runs along z next to the corner
    truth[9, 9, 1:] = 4
    truth[idx, 15 - idx, 3] = 5  # a diagonal in the YZ plane crossing an edge between blocks
    plan = Plan.grid(truth.shape, 8, 1)
    result = stitch(plan, consistent_blocks(truth, plan, seed=5), rule)
    assert_same_partition(result.to_array(), truth)


def test_roi_mask_stitches_only_present_blocks():
    truth = neurite_labels((24, 24, 24), n_neurites=8, seed=2)
    mask = np.ones((3, 3, 3), bool)
    mask[1, 1, 1] = False
    plan = Plan.grid(truth.shape, 8, 2, roi=mask)
    out = stitch(plan, consistent_blocks(truth, plan), "medium").to_array()
    assert (out[8:16, 8:16, 8:16] == 0).all()
    inside = np.ones(truth.shape, bool)
    inside[8:16, 8:16, 8:16] = False
    assert is_refinement(out[inside], truth[inside])


# ----------------------------------------------------------------------------- bad input

PLAN = Plan.grid((8, 8, 16), (8, 8, 8), 2)


def good_blocks():
    return {sv.id: np.ones(sv.outer.shape, np.uint16) for sv in PLAN}


def test_missing_block_names_the_subvolume():
    blocks = good_blocks()
    del blocks[1]
    with pytest.raises(ValueError, match=r"`blocks` has no labels for subvolume 1 \(interior \[0:8, 0:8, 8:16\]\)"):
        stitch(PLAN, blocks)


def test_wrong_shape_names_the_subvolume_and_the_expected_box():
    blocks = good_blocks()
    blocks[1] = np.ones((8, 8, 8), np.uint16)
    with pytest.raises(ValueError, match=r"block for subvolume 1 has shape \(8, 8, 8\), expected \(8, 8, 10\)"):
        stitch(PLAN, blocks)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((8, 8, 10), 1.0), "`blocks` for subvolume 0 .* has dtype float64; labels must be non-negative integers"),
        (np.full((8, 8, 10), -3, np.int32), "`blocks` for subvolume 0 .* holds the negative label -3"),
    ],
)
def test_bad_labels_name_the_subvolume(bad, message):
    blocks = good_blocks()
    blocks[0] = bad
    with pytest.raises(ValueError, match=message):
        stitch(PLAN, blocks)


def test_problems_found_before_reading_any_block():
    def explode(sv):
        raise AssertionError("read a block")

    with pytest.raises(ValueError, match="unknown stitching rule 'mediun'"):
        stitch(PLAN, explode, "mediun")
    with pytest.raises(ValueError, match="has no parameter 'min_overlapp'"):
        stitch(PLAN, explode, "medium", min_overlapp=3)
    flat = Plan.grid((8, 8, 16), (8, 8, 8), (2, 2, 0))
    with pytest.raises(ValueError, match="`halo` is 0 along axis X"):
        stitch(flat, explode, "medium")
    with pytest.raises(ValueError, match="`plan` must be a labelstitch.Plan"):
        stitch("plan", explode)
    with pytest.raises(ValueError, match=r"`halo` \(9\) must not exceed `block` \(8\)"):
        Plan.grid((8, 8, 16), 8, 9)


def test_halo_zero_is_fine_without_stitching():
    flat = Plan.grid((8, 8, 16), (8, 8, 8), 0)
    blocks = {sv.id: np.full(sv.outer.shape, 5, np.uint8) for sv in flat}
    out = stitch(flat, blocks, "none").to_array()
    assert set(np.unique(out).tolist()) == {1, 2}


def test_to_array_dtype_and_relabel_of_a_given_block():
    truth = neurite_labels((16, 16, 16), n_neurites=5, seed=0)
    plan = Plan.grid(truth.shape, 8, 2)
    blocks = consistent_blocks(truth, plan)
    result = stitch(plan, blocks)
    small = result.to_array(dtype=np.uint8)
    assert small.dtype == np.uint8
    np.testing.assert_array_equal(small, result.to_array())
    sv = plan.subvolumes[5]
    np.testing.assert_array_equal(result.relabel(sv.id, blocks[sv.id]), small[sv.interior.slices()])
    with pytest.raises(ValueError, match="`dtype` must be an integer dtype, got bool"):
        result.to_array(dtype=bool)
    many = np.arange(16**3, dtype=np.uint32).reshape(16, 16, 16) + 1
    crowded = stitch(plan, consistent_blocks(many, plan))
    with pytest.raises(ValueError, match="4096 bodies do not fit `dtype` uint8"):
        crowded.to_array(dtype=np.uint8)
