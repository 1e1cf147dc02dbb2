"""The seam audit: bands at subvolume faces against bands at subvolume middles, and the
agreement of two runs made with other subvolume sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import labelstitch
from labelstitch._cli.main import ExitCode, main
from labelstitch.geometry import Plan
from labelstitch.seams import agreement_blockwise, audit_bands, seam_bands
from labelstitch.synthetic import em_volume


def _truth(seed: int, shape=(24, 40, 40), bodies=12) -> np.ndarray:
    """A dense label volume of blob-shaped bodies (nearest of random centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (bodies, 3)) * np.array(shape)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    distance = ((grid[..., None, :] - centres) ** 2).sum(-1)
    return (distance.argmin(-1) + 1).astype(np.uint64)


def _cut_at(labels: np.ndarray, axis: int, planes: list[int]) -> np.ndarray:
    """Every body given a new id on each side of each plane: splits exactly there."""
    slab = np.zeros(labels.shape[axis], np.uint64)
    for p in planes:
        slab[p:] += 1
    shape = [1, 1, 1]
    shape[axis] = -1
    return labels * np.uint64(100) + slab.reshape(shape)


def _audit(seg, gt, plan, **kw):
    return audit_bands(plan, lambda box: (seg[box.slices()], gt[box.slices()]), **kw)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.sampled_from([8, 10, 12]), width=st.integers(1, 4),
       permute=st.booleans())
def test_a_perfect_segmentation_has_no_error_at_faces_or_middles(seed, block, width, permute):
    gt = _truth(seed)
    seg = gt
    if permute:  # other ids, same bodies
        ids = np.random.default_rng(seed).permutation(int(gt.max()) + 1).astype(np.uint64) + 1000
        seg = ids[gt]
    audit = _audit(seg, gt, Plan.grid(gt.shape, block, 2), width=width, min_contact=1)
    for bands in (audit.faces, audit.interiors):
        assert bands.total == 0 and bands.split_crossings == bands.merge_crossings == 0
    agree = agreement_blockwise(gt.shape, lambda box: (seg[box.slices()], gt[box.slices()]), region=16)
    assert agree.same_bodies == agree.bodies == np.unique(gt).size and agree.changed_voxels == 0 and agree.vi.total == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), axis=st.integers(0, 2), width=st.integers(1, 4), at_faces=st.booleans())
def test_cuts_are_found_where_they_are_made(seed, axis, width, at_faces):
    """Cutting every body at the faces is seen at the faces only; at the middles, there only
    (subvolumes cut along one axis, so that every band crosses the cuts' axis)."""
    gt = _truth(seed)
    block = list(gt.shape)
    block[axis] = 8
    plan = Plan.grid(gt.shape, block, 2)
    faces, middles = seam_bands(plan, width)
    bands = faces if at_faces else middles
    planes = sorted({box.start[a] + box.shape[a] // 2 for box, a in bands if a == axis})
    seg = _cut_at(gt, axis, planes)
    audit = _audit(seg, gt, plan, width=width, min_contact=1)
    hit, clean = (audit.faces, audit.interiors) if at_faces else (audit.interiors, audit.faces)
    assert hit.split > 0 and hit.split_crossings > 0 and hit.merge == 0 and hit.merge_crossings == 0
    assert clean.total == 0 and clean.split_crossings == 0
    # every body that crosses a cut plane inside a band is one split crossing there
    expected = 0
    for box, a in bands:
        if a != axis:
            continue
        g = gt[box.slices()]
        mid = box.shape[a] // 2
        both = np.take(g, mid - 1, axis=a) == np.take(g, mid, axis=a)
        expected += np.unique(np.take(g, mid, axis=a)[both]).size
    assert hit.split_crossings == expected


def test_a_merge_across_a_face_is_a_merge_crossing_there():
    gt = np.ones((4, 4, 16), np.uint64)
    gt[..., 8:] = 2  # two bodies that meet at the face x = 8
    plan = Plan.grid(gt.shape, (4, 4, 8), (0, 0, 2))
    merged = np.ones_like(gt)
    audit = _audit(merged, gt, plan, width=2, min_contact=16)
    assert audit.faces.merge_crossings == 1 and audit.faces.merge_voxels == 16 and audit.faces.merge == 1.0
    assert audit.interiors.merge_crossings == 0 and audit.interiors.total == 0
    assert _audit(merged, gt, plan, width=2, min_contact=17).faces.merge_crossings == 0  # too few voxel pairs
    agree = agreement_blockwise(gt.shape, lambda box: (merged[box.slices()], gt[box.slices()]), region=8)
    assert (agree.bodies, agree.same_bodies, agree.changed_voxels) == (1, 0, gt.size)
    assert agree.vi.merge == 1.0 and agree.vi.split == 0


def test_bad_widths_are_refused():
    plan = Plan.grid((8, 8, 8), 4, 1)
    gt = np.ones((8, 8, 8), np.uint64)
    with pytest.raises(ValueError, match="`width` must be at least 1"):
        _audit(gt, gt, plan, width=0)
    with pytest.raises(ValueError, match="`min_contact` must be at least 1"):
        _audit(gt, gt, plan, min_contact=0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """One synthetic volume segmented with subvolumes of 32 and of 48, each without stitching
    and with the conservative rule."""
    folder = tmp_path_factory.mktemp("seams")
    gray, truth = em_volume((48, 96, 96), n_neurites=30, seed=5)
    np.save(folder / "gray.npy", gray)
    np.save(folder / "truth.npy", truth)
    outputs = {}
    for size in (32, 48):
        for rule in ("none", "conservative"):
            name = folder / f"seg-{size}-{rule}.zarr"
            labelstitch.run({"input": str(folder / "gray.npy"), "output": str(name),
                             "options": {"chunk-size": size, "overlap": 6, "stitch-algorithm": rule,
                                         "resolution": [8, 8, 8]}})
            outputs[size, rule] = str(name)
    return folder, outputs


def test_unstitched_faces_carry_the_splits_and_stitching_removes_them(two_runs):
    folder, outputs = two_runs
    truth = str(folder / "truth.npy")
    none = labelstitch.audit(outputs[32, "none"], ground_truth=truth)
    stitched = labelstitch.audit(outputs[32, "conservative"], ground_truth=truth)
    assert none.plan.block == (32, 32, 32) and len(none.plan.faces()) == 33  # the grid it was made with
    assert none.ground_truth.faces.split > none.ground_truth.interiors.split + 0.2
    assert none.ground_truth.faces.split_crossings > 5 * max(none.ground_truth.interiors.split_crossings, 1)
    assert stitched.ground_truth.faces.split_crossings < none.ground_truth.faces.split_crossings / 3
    assert stitched.ground_truth.faces.split < none.ground_truth.faces.split
    # the middles do not see the stitching: the same bands, the same segments
    assert stitched.ground_truth.interiors.split_crossings == none.ground_truth.interiors.split_crossings
    assert "faces carry more error" in none.ground_truth.verdict
    assert stitched.whole == labelstitch.evaluate(outputs[32, "conservative"], truth)


def test_stitching_makes_two_chunkings_agree(two_runs):
    folder, outputs = two_runs
    unstitched = labelstitch.audit(outputs[32, "none"], against=outputs[48, "none"], width=6)
    stitched = labelstitch.audit(outputs[32, "conservative"], against=outputs[48, "conservative"], width=6)
    assert stitched.ground_truth is None and stitched.agreement is not None
    assert 0 < stitched.agreement.vi.total < unstitched.agreement.vi.total / 3
    assert stitched.agreement.same_bodies < stitched.agreement.bodies
    assert unstitched.agreement.changed_voxels > stitched.agreement.changed_voxels
    # unstitched, each run is cut at its own faces: the 32-grid's faces show it (the 48-grid's
    # faces at 48 fall in the 32-grid's middles, so those bands see it too)
    assert unstitched.against.faces.split_crossings > 10 and unstitched.against.faces.split > 0.2
    itself = labelstitch.audit(outputs[32, "conservative"], against=outputs[32, "conservative"])
    assert itself.agreement.vi.total == 0 and itself.agreement.same_bodies == itself.agreement.bodies
    assert itself.against.faces.total == 0 and itself.against.faces.split_crossings == 0


def test_audit_command(two_runs, capsys):
    folder, outputs = two_runs
    assert main(["audit", outputs[32, "none"], "--ground-truth", str(folder / "truth.npy"),
                 "--against", outputs[48, "none"], "--json", "--width", "4"]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert report["subvolume"] == [32, 32, 32] and report["faces"] == 33
    assert report["ground-truth"]["width"] == 4 and report["against"]["other"] == outputs[48, "none"]
    assert report["ground-truth"]["faces"]["split_crossings"] > report["ground-truth"]["interiors"]["split_crossings"]
    assert main(["audit", outputs[32, "none"], "--ground-truth", str(folder / "truth.npy"), "-q"]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "at faces" in text and "subvolume middles" in text and "blocking costs something" in text
    # another grid than the recorded one
    assert main(["audit", outputs[32, "none"], "--ground-truth", str(folder / "truth.npy"), "--subvolume-size", "24,48,48",
                 "--json", "-q"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["subvolume"] == [24, 48, 48]


@pytest.mark.parametrize("argv, message", [
    (["audit", "{seg}"], "audit needs a reference: --ground-truth GT, --against OTHER_OUTPUT, or both"),
    (["audit", "{truth}", "--ground-truth", "{truth}"], "records no subvolume plan (labelstitch did not make it): give"),
    (["audit", "{small}", "--ground-truth", "{truth}", "--subvolume-size", "4"], "has shape (8, 8, 8) but ground truth"),
])
def test_audit_refusals_are_one_line(two_runs, capsys, argv, message):
    folder, outputs = two_runs
    np.save(folder / "small.npy", np.ones((8, 8, 8), np.uint32))
    names = {"seg": outputs[32, "none"], "truth": str(folder / "truth.npy"), "small": str(folder / "small.npy")}
    assert main([a.format(**names) for a in argv]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
