from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelstitch import Box, Plan

triples = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40))


@st.composite
def plans(draw):
    shape = draw(triples)
    block = tuple(draw(st.integers(max(1, s // 12), s + 3)) for s in shape)
    halo = tuple(draw(st.integers(0, b)) for b in block)
    return Plan.grid(shape, block, halo, iterations=draw(st.integers(1, 5)))


@given(plans())
def test_interiors_tile_the_volume_exactly(plan):
    cover = np.zeros(plan.shape, np.int32)
    for sv in plan:
        cover[sv.interior.slices()] += 1
        assert sv.outer == sv.interior.grow(plan.halo).clip(Box.from_shape(plan.shape))
        assert sv.outer.contains(sv.interior)
    assert (cover == 1).all()


@given(plans())
def test_faces_list_each_six_neighbour_pair_once(plan):
    faces = plan.faces()
    pairs = [(f.a, f.b) for f in faces]
    assert len(pairs) == len(set(pairs))
    by_index = {sv.index: sv.id for sv in plan}
    expected = set()
    for sv in plan:
        for axis in range(3):
            up = list(sv.index)
            up[axis] += 1
            if tuple(up) in by_index:
                expected.add((sv.id, by_index[tuple(up)]))
    assert set(pairs) == expected
    for f in faces:
        a, b = plan[f.a], plan[f.b]
        assert f.box == a.outer.intersect(b.outer)
        assert f.plane == a.interior.stop[f.axis] == b.interior.start[f.axis]
        if not f.box.empty:
            assert f.middle.shape[f.axis] == 1
            assert f.box.contains(f.middle)


@given(plans())
def test_ids_are_deterministic_and_round_trip(plan):
    again = Plan.grid(plan.shape, plan.block, plan.halo, iterations=plan.iterations)
    assert again == plan
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.ids == tuple(sorted(plan.ids))


@given(plans())
def test_iterations_split_subvolumes_into_balanced_groups(plan):
    sizes = [len(plan.iteration(k)) for k in range(plan.iterations)]
    assert sum(sizes) == len(plan)
    assert max(sizes) - min(sizes) <= 1
    assert [sv.iteration for sv in plan] == sorted(sv.iteration for sv in plan)


def test_box_roi_is_tiled_exactly_and_reads_context_outside_it():
    plan = Plan.grid((50, 60, 70), block=16, halo=4, roi=Box((5, 10, 20), (40, 60, 51)))
    cover = np.zeros(plan.shape, np.int32)
    for sv in plan:
        cover[sv.interior.slices()] += 1
    assert cover[5:40, 10:60, 20:51].min() == 1 and cover.sum() == 35 * 50 * 31
    first = plan.subvolumes[0]
    assert first.interior.start == (5, 10, 20)
    assert first.outer.start == (1, 6, 16)  # the halo reaches outside the ROI
    assert plan.roi == Box((5, 10, 20), (40, 60, 51))


def test_block_mask_roi_keeps_ids_and_faces_between_kept_blocks_only():
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[1, 1, 1] = True
    plan = Plan.grid((20, 20, 20), 10, 2, roi=mask)
    assert plan.ids == (0, 1, 7)
    assert [(f.a, f.b, f.axis) for f in plan.faces()] == [(0, 1, 2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (10, 10), "block": 4}, "`shape` must be an int or 3 ints"),
        ({"shape": (10, 10, 10), "block": 0}, "`block` must be positive"),
        ({"shape": (10, 10, 10), "block": 4, "halo": -1}, "`halo` must not be negative"),
        ({"shape": (10, 10, 10), "block": 4, "halo": 5}, r"`halo` \(5\) must not exceed `block` \(4\) on axis Z"),
        ({"shape": (10, 10, 10), "block": 4, "roi": Box((0, 0, 0), (11, 5, 5))}, "must be a non-empty box inside"),
        ({"shape": (10, 10, 10), "block": 4, "roi": np.ones((2, 2, 2), bool)}, "expected the block grid shape"),
        ({"shape": (10, 10, 10), "block": 4, "roi": np.zeros((3, 3, 3), bool)}, "selects no block"),
        ({"shape": (10, 10, 10), "block": 4, "iterations": 0}, "`iterations` must be a positive int"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plan.grid(**kwargs)


def test_box_algebra():
    a = Box((0, 0, 0), (10, 10, 10))
    b = Box((5, -2, 8), (12, 3, 9))
    assert a.intersect(b) == Box((5, 0, 8), (10, 3, 9))
    assert a.intersect(Box((20, 20, 20), (30, 30, 30))).empty
    assert b.relative_to(a) == b
    assert Box((2, 3, 4), (5, 6, 7)).slices((1, 1, 1)) == (slice(1, 4), slice(2, 5), slice(3, 6))
    with pytest.raises(ValueError, match="must not be below"):
        Box((0, 5, 0), (1, 4, 1))
    with pytest.raises(KeyError, match="no subvolume with id 99"):
        Plan.grid((4, 4, 4), 2)[99]


# ----------------------------------------------------------------------------- block-run ROIs

from labelstitch.geometry import misaligned_axis, roi_chunks, roi_mask, roi_runs_near  # noqa: E402

_run = st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 3)).map(
    lambda r: [r[0], r[1], r[2], r[2] + r[3]]
)


def _voxels(runs, block, shape):
    """Brute force: the ROI as a voxel mask over ``shape``."""
    out = np.zeros(shape, bool)
    for z, y, x0, x1 in runs:
        out[z * block : (z + 1) * block, y * block : (y + 1) * block, x0 * block : (x1 + 1) * block] = True
    return out


@given(
    runs=st.lists(_run, max_size=12),
    block=st.sampled_from([2, 3, 4]),
    start=st.tuples(*[st.integers(-3, 20)] * 3),
    size=st.tuples(*[st.integers(1, 12)] * 3),
)
def test_roi_mask_and_runs_near_agree_with_brute_force(runs, block, start, size):
    box = Box(start, tuple(a + n for a, n in zip(start, size)))
    full = _voxels(runs, block, (40, 40, 60))
    shifted = np.zeros((50, 50, 70), bool)
    shifted[5:45, 5:45, 5:65] = full  # room for negative starts
    want = shifted[tuple(slice(a + 5, b + 5) for a, b in zip(box.start, box.stop))]
    np.testing.assert_array_equal(roi_mask(runs, block, box), want)
    near = roi_runs_near(runs, block, box)
    np.testing.assert_array_equal(roi_mask(near, block, box), want)  # the nearby runs are enough
    assert len(near) <= len(runs)


@given(runs=st.lists(_run, min_size=1, max_size=12), block=st.sampled_from([2, 4]), chunk=st.integers(3, 9))
def test_roi_chunks_marks_exactly_the_chunks_the_roi_touches(runs, block, chunk):
    shape = (20, 22, 30)
    full = _voxels(runs, block, (40, 40, 60))[:20, :22, :30]
    mask = roi_chunks(runs, block, shape, chunk)
    for index in np.ndindex(mask.shape):
        sl = tuple(slice(i * chunk, (i + 1) * chunk) for i in index)
        assert mask[index] == full[sl].any()


def test_misaligned_axis_allows_the_far_edge_only():
    assert misaligned_axis(Box((32, 0, 0), (64, 32, 50)), (32, 32, 32), (64, 64, 50)) is None
    assert misaligned_axis(Box((32, 0, 0), (64, 32, 50)), (32, 32, 32), (64, 64, 64)) == 2
    assert misaligned_axis(Box((30, 0, 0), (64, 32, 32)), (32, 32, 32), (64, 64, 64)) == 0
    with pytest.raises(ValueError, match="ends before it starts"):
        roi_mask([[0, 0, 3, 1]], 32, Box((0, 0, 0), (1, 1, 1)))
