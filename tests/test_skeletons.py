"""Skeletons made subvolume by subvolume and joined into one tree per body, written where
cloud-volume and SWC readers find them, and the expected run length (ERL) of a segmentation
along ground-truth skeletons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import labelstitch as ls
from labelstitch.testing import executor_params
from labelstitch._cli.main import ExitCode, main
from labelstitch.geometry import Plan
from labelstitch.skeletons import Skeleton, cable_length, components, expected_run_length, join_skeletons, skeletonize_labels
from labelstitch.stores import staged_output
from labelstitch.stores._precomputed import PrecomputedShapes, read_skeletons

pytest.importorskip("kimimaro", reason="needs kimimaro (the labelstitch[skeletons] extra)")


def _tube(points, radius, shape=(96, 96, 96), label=1, out=None):
    """A tube of ``radius`` voxels around a polyline (with round ends)."""
    labels = np.zeros(shape, np.uint64) if out is None else out
    grid = np.stack(np.mgrid[: shape[0], : shape[1], : shape[2]], -1).astype(float)
    for a, b in zip(points[:-1], points[1:]):
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        t = np.clip(((grid - a) @ d) / (d @ d), 0, 1)
        labels[np.linalg.norm(grid - (a + t[..., None] * d), axis=-1) < radius] = label
    return labels


def _blockwise(labels, resolution, block, context):
    pieces: dict[int, list] = {}
    for sv in Plan.grid(labels.shape, block, 0):
        box = sv.interior.grow(context).clip(Plan.grid(labels.shape, labels.shape, 0).subvolumes[0].interior)
        found = skeletonize_labels(labels[box.slices()], box.start, resolution, interior=(sv.interior.start, sv.interior.stop))
        for body, piece in found.items():
            pieces.setdefault(body, []).append(piece)
    return {body: join_skeletons(p, voxel=float(np.linalg.norm(resolution))) for body, p in pieces.items()}


def _is_tree(skeleton):
    return components(skeleton) == 1 and len(skeleton.edges) == len(skeleton.vertices) - 1


TUBES = {
    "straight": [(5, 48, 48), (90, 48, 48)],
    "oblique": [(10, 10, 10), (85, 80, 70)],
    "bent": [(10, 20, 20), (50, 70, 30), (85, 40, 80)],
    "zigzag": [(8, 10, 10), (30, 80, 20), (60, 15, 60), (88, 85, 85)],
}


@pytest.mark.parametrize("name", sorted(TUBES))
@pytest.mark.parametrize("resolution", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_a_tube_skeletonised_blockwise_is_one_tree_as_long_as_the_unblocked_one(name, resolution):
    points, radius = TUBES[name], 4.5
    labels = _tube(points, radius)
    whole, _ = skeletonize_labels(labels, (0, 0, 0), resolution)[1]
    for block in (24, 32):
        blocked = _blockwise(labels, resolution, block, 16)[1]
        assert _is_tree(blocked), (block, components(blocked))
        # measured: 0-2.0 % apart over these tubes (docs/meshes.md)
        assert cable_length(blocked) == pytest.approx(cable_length(whole), rel=0.025)
    if name in ("straight", "oblique"):  # a straight tube's centre line, round ends included
        res = np.asarray(resolution)
        truth = np.linalg.norm((np.subtract(points[1], points[0])) * res) + 2 * radius * res[np.argmax(np.abs(np.subtract(points[1], points[0])))]
        assert cable_length(blocked) == pytest.approx(truth, rel=0.05)


def test_skeleton_vertices_are_at_voxel_centres_in_physical_xyz():
    labels = _tube([(2, 10, 30), (2, 10, 70)], 1.5, shape=(5, 20, 100))  # a thin rod along X
    skeleton, inside = skeletonize_labels(labels, (0, 0, 0), (40.0, 8.0, 4.0))[1]
    assert inside.all() and _is_tree(skeleton)
    # every vertex at the centre of a voxel of the rod, in nm, XYZ
    voxels = skeleton.vertices[:, ::-1] / np.array([40.0, 8.0, 4.0]) - 0.5
    assert np.array_equal(voxels, np.round(voxels))
    assert np.all(labels[tuple(np.round(voxels).astype(int).T)] == 1)
    assert skeleton.vertices[:, 0].max() - skeleton.vertices[:, 0].min() > 35 * 4.0


# ----------------------------------------------------------------------------- ERL


def _line(n, label=1):
    vertices = np.stack([np.arange(n), np.zeros(n), np.zeros(n)], 1).astype(np.float32)
    return Skeleton(vertices, np.stack([np.arange(n - 1), np.arange(1, n)], 1).astype(np.uint32), np.ones(n, np.float32))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(2, 30), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_erl_is_the_most_for_a_perfect_segmentation_and_falls_with_every_error(lengths, seed):
    rng = np.random.default_rng(seed)
    skeletons = {k + 1: _line(n) for k, n in enumerate(lengths)}
    perfect = {k: np.full(len(s.vertices), 100 + k, np.uint64) for k, s in skeletons.items()}
    score = expected_run_length(skeletons, perfect)
    total = sum(n - 1 for n in lengths)
    assert score.erl == pytest.approx(sum((n - 1) ** 2 for n in lengths) / total) == pytest.approx(score.max_erl)
    assert score.merges == score.splits == score.omitted == 0
    # a split anywhere: ERL falls, one split counted
    k = int(rng.integers(1, len(lengths) + 1))
    cut = dict(perfect)
    cut[k] = perfect[k].copy()
    at = int(rng.integers(1, lengths[k - 1]))
    cut[k][at:] = 999
    split = expected_run_length(skeletons, cut)
    assert split.erl < score.erl and split.splits == 1 and split.merges == 0
    # a merge of two skeletons: both lose their runs
    if len(lengths) > 1:
        merged = dict(perfect)
        merged[2] = perfect[1].copy()[: len(skeletons[2].vertices)] if lengths[0] >= lengths[1] else np.full(lengths[1], 101, np.uint64)
        merged[2] = np.full(lengths[1], 101, np.uint64)
        found = expected_run_length(skeletons, merged)
        assert found.merges == 1 and found.erl < score.erl


# ----------------------------------------------------------------------------- the pipeline step


def _write(path, labels, block=32, resolution=(8.0, 4.0, 4.0)):
    with staged_output(str(path), labels.shape, np.uint64, chunks=(block,) * 3, overwrite=True) as store:
        store.write(store.box, labels)
        store.set_voxel_size(resolution)
        store.set_metadata({"plan": Plan.grid(labels.shape, block, 4).to_dict()})


def _neurites(shape=(48, 80, 80)):
    labels = np.zeros(shape, np.uint64)
    _tube([(2, 10, 10), (45, 70, 60)], 3.5, shape, 1, labels)
    _tube([(5, 70, 8), (25, 40, 40), (44, 8, 70)], 3.0, shape, 2, labels)
    _tube([(24, 2, 40), (24, 77, 44)], 2.5, shape, 3, labels)
    return labels


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "fragments" not in p.parts}


def test_every_body_gets_one_tree_that_cloud_volume_and_swc_readers_read(tmp_path):
    labels = _neurites()
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    summary = ls.skeletonize(str(out), swc=str(tmp_path / "swc"))
    shapes = PrecomputedShapes(tmp_path / "seg.zarr.precomputed")
    assert summary.bodies == 3 and summary.flawed == [] and shapes.bodies("skeletons") == [1, 2, 3]
    whole = skeletonize_labels(labels, (0, 0, 0), (8.0, 4.0, 4.0))
    for body in (1, 2, 3):
        skeleton = shapes.read_skeleton(body)
        assert _is_tree(skeleton)
        assert cable_length(skeleton) == pytest.approx(cable_length(whole[body][0]), rel=0.02)
    swc = read_skeletons(tmp_path / "swc")
    assert sorted(swc) == [1, 2, 3]
    for body, skeleton in swc.items():
        assert cable_length(skeleton) == pytest.approx(cable_length(shapes.read_skeleton(body)), rel=1e-5)
    info = json.loads((tmp_path / "seg.zarr.precomputed" / "info").read_text())
    assert info["skeletons"] == "skeletons"

    cloudvolume = pytest.importorskip("cloudvolume", reason="needs cloud-volume (the test extra)")
    cv = cloudvolume.CloudVolume(f"file://{tmp_path / 'seg.zarr.precomputed'}", progress=False)
    for body in (1, 2, 3):
        read = cv.skeleton.get(body)
        mine = shapes.read_skeleton(body)
        assert np.array_equal(np.asarray(read.vertices), mine.vertices) and np.array_equal(np.asarray(read.edges), mine.edges)
        assert np.array_equal(np.asarray(read.radius), mine.radii)


@pytest.mark.parametrize("executor", executor_params("processes", "spark", "dask"))
def test_every_executor_writes_the_same_files_and_resume_keeps_them(tmp_path, executor):
    labels = _neurites()
    for name in ("serial", executor):
        _write(tmp_path / f"{name}.zarr", labels)
    ls.skeletonize(str(tmp_path / "serial.zarr"), swc=str(tmp_path / "serial-swc"))
    ls.skeletonize(str(tmp_path / f"{executor}.zarr"), executor=executor, workers=2, swc=str(tmp_path / f"{executor}-swc"))
    root = tmp_path / "serial.zarr.precomputed"
    assert _files(root) == _files(tmp_path / f"{executor}.zarr.precomputed")
    assert _files(tmp_path / "serial-swc") == _files(tmp_path / f"{executor}-swc")
    again = ls.skeletonize(str(tmp_path / "serial.zarr"), resume=True)
    assert again.subvolumes == 0 and again.bodies_kept == again.bodies == 3
    with pytest.raises(ls.api.StoreError, match="already has skeletons"):
        ls.skeletonize(str(tmp_path / "serial.zarr"))


def test_erl_along_skeletons_from_the_cli(tmp_path, capsys):
    truth = _neurites()
    _write(tmp_path / "gt.zarr", truth)
    ls.skeletonize(str(tmp_path / "gt.zarr"), swc=str(tmp_path / "gt-swc"))
    perfect = truth * np.uint64(7)  # other ids, same bodies
    _write(tmp_path / "perfect.zarr", perfect)
    split = perfect.copy()
    split[24:][split[24:] == 7] = 70  # body 1 cut in two at z = 24
    _write(tmp_path / "split.zarr", split)
    merged = perfect.copy()
    merged[merged == 21] = 14  # bodies 2 and 3 joined
    _write(tmp_path / "merged.zarr", merged)
    scores = {}
    for name in ("perfect", "split", "merged"):
        assert main(["evaluate", str(tmp_path / f"{name}.zarr"), "--skeletons", str(tmp_path / "gt-swc"), "--json"]) == ExitCode.OK
        scores[name] = json.loads(capsys.readouterr().out)["skeletons"]
    assert scores["perfect"]["erl"] == pytest.approx(scores["perfect"]["max_erl"]) and scores["perfect"]["splits"] == 0
    assert scores["split"]["splits"] == 1 and scores["split"]["merges"] == 0 and scores["split"]["erl"] < scores["perfect"]["erl"]
    assert scores["merged"]["merges"] == 1 and scores["merged"]["erl"] < scores["perfect"]["erl"]
    # the precomputed folder reads the same as the SWC files
    assert ls.evaluate_skeletons(str(tmp_path / "split.zarr"), str(tmp_path / "gt.zarr.precomputed")).to_dict() == pytest.approx(scores["split"])
    assert main(["evaluate", str(tmp_path / "split.zarr"), str(tmp_path / "gt.zarr"), "--skeletons",
                 str(tmp_path / "gt-swc")]) == ExitCode.OK
    assert "ERL" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "split.zarr")]) == ExitCode.USAGE_ERROR
    assert "--skeletons" in capsys.readouterr().err


def test_gala_ground_truth_skeletonised_blockwise_matches_skeletonising_it_at_once(shared_data):
    gt = np.load(shared_data / "gala_test.npz")["gt"].astype(np.uint64)
    res = (10.0, 10.0, 10.0)
    whole = skeletonize_labels(gt, (0, 0, 0), res)
    blocked = _blockwise(gt, res, 32, 16)
    total_whole = sum(cable_length(s) for s, _ in whole.values())
    total_blocked = sum(cable_length(s) for s in blocked.values())
    assert set(blocked) == set(whole)
    assert total_blocked == pytest.approx(total_whole, rel=0.03)
    assert sum(components(s) > components(whole[b][0]) for b, s in blocked.items()) <= 0.05 * len(blocked)
