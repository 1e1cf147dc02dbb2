"""Meshes made subvolume by subvolume: the welded pieces are the mesh of the whole body
(closed, same area and volume), they are written in Neuroglancer's precomputed format that
cloud-volume reads, every executor writes the same files, and ``--resume`` meshes only what
changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import labelstitch as ls
from labelstitch._cli.main import ExitCode, main
from labelstitch.geometry import Plan
from labelstitch.meshing import Mesh, enclosed_volume, mesh_labels, mesh_read_box, open_edges, simplify, surface_area, weld
from labelstitch.stores import open_volume, parse_volume, staged_output
from labelstitch.stores._precomputed import PrecomputedShapes, decode_legacy_mesh
from labelstitch.testing import executor_params

pytest.importorskip("zmesh", reason="needs zmesh (a core dependency)")


def _blobs(seed: int, shape=(30, 40, 44), bodies=10) -> np.ndarray:
    """Dense blob-shaped bodies (nearest of random centres), with a background shell."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (bodies, 3)) * np.array(shape)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    labels = (((grid[..., None, :] - centres) ** 2).sum(-1).argmin(-1) + 1).astype(np.uint64)
    labels[rng.random(shape) < 0.02] = 0  # holes and specks: surfaces of every shape
    return labels


def _blockwise(labels, block, resolution=(1.0, 1.0, 1.0), max_error=0.0):
    pieces: dict[int, list] = {}
    for sv in Plan.grid(labels.shape, block, 0):
        box, low, high = mesh_read_box(sv.interior, labels.shape)
        for body, piece in mesh_labels(labels[box.slices()], box.start, resolution, pad_low=low, pad_high=high).items():
            pieces.setdefault(body, []).append(piece)
    return {body: simplify(weld(p), max_error) for body, p in pieces.items()}


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.sampled_from([7, 12, 16, (9, 20, 13)]))
def test_welded_pieces_are_the_whole_volume_mesh(seed, block):
    labels = _blobs(seed)
    whole = mesh_labels(labels, (0, 0, 0), (1.0, 1.0, 1.0))
    welded = _blockwise(labels, block)
    assert set(welded) == set(whole) == set(np.unique(labels[labels > 0]).tolist())
    for body, mesh in welded.items():
        assert len(mesh.faces) == len(whole[body].faces)
        assert open_edges(mesh) == 0  # closed, also where the body touches the volume's border
        assert surface_area(mesh) == pytest.approx(surface_area(whole[body]), rel=1e-6)
        assert enclosed_volume(mesh) == pytest.approx(enclosed_volume(whole[body]), rel=1e-6)
        # the enclosed volume is the body's voxels, give or take the corners marching cubes cuts
        assert enclosed_volume(mesh) == pytest.approx(np.count_nonzero(labels == body), rel=0.35)


def _ball(n=96, radius=30.0):
    z, y, x = np.mgrid[:n, :n, :n] + 0.5
    return ((((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2)) < radius**2).astype(np.uint64) * 5


def test_a_sphere_simplified_blockwise_matches_the_sphere_meshed_at_once_and_its_analytic_shape():
    radius, res = 30.0, (4.0, 4.0, 4.0)
    labels = _ball(radius=radius)
    whole = simplify(mesh_labels(labels, (0, 0, 0), res)[5], 4.0)
    blocked = _blockwise(labels, 32, res, max_error=4.0)[5]
    assert open_edges(blocked) == 0 and len(blocked.faces) < 0.3 * len(mesh_labels(labels, (0, 0, 0), res)[5].faces)
    assert surface_area(blocked) == pytest.approx(surface_area(whole), rel=0.01)
    assert enclosed_volume(blocked) == pytest.approx(enclosed_volume(whole), rel=0.01)
    r = radius * 4.0
    assert enclosed_volume(blocked) == pytest.approx(4 / 3 * np.pi * r**3, rel=0.01)
    # marching cubes on voxels overestimates a smooth surface's area by ~9 % (the staircase)
    assert 1.0 < surface_area(blocked) / (4 * np.pi * r**2) < 1.12
    triangles = blocked.vertices.astype(float)[blocked.faces.astype(int)]
    areas = np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1)
    centre = (areas[:, None] * triangles.mean(axis=1)).sum(axis=0) / areas.sum()
    assert np.allclose(centre, 48 * 4.0, atol=0.5)  # physical units, voxel i spans [i, i+1)


def test_vertices_are_in_physical_xyz_with_each_axis_scaled():
    labels = np.zeros((10, 20, 30), np.uint64)
    labels[2:4, 5:10, 10:25] = 3  # a box: z 2..4, y 5..10, x 10..25
    mesh = mesh_labels(labels, (0, 0, 0), (40.0, 8.0, 4.0))[3]
    assert mesh.vertices.min(axis=0).tolist() == pytest.approx([10 * 4.0, 5 * 8.0, 2 * 40.0], abs=2.01 * 4)
    assert mesh.vertices.max(axis=0).tolist() == pytest.approx([25 * 4.0, 10 * 8.0, 4 * 40.0], abs=2.01 * 4)
    assert enclosed_volume(mesh) > 0 and open_edges(mesh) == 0


# ----------------------------------------------------------------------------- the pipeline step


def _write(path, labels, block=32, resolution=(8.0, 4.0, 4.0)):
    with staged_output(str(path), labels.shape, np.uint64, chunks=(block,) * 3, overwrite=True) as store:
        store.write(store.box, labels)
        store.set_voxel_size(resolution)
        store.set_metadata({"plan": Plan.grid(labels.shape, block, 4).to_dict()})


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "fragments" not in p.parts}


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meshes")
    labels = _blobs(3, shape=(40, 64, 72), bodies=14)
    _write(folder / "seg.zarr", labels)
    return folder, labels


def test_every_body_gets_a_closed_mesh_that_cloud_volume_reads(volume, tmp_path):
    folder, labels = volume
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    summary = ls.mesh(str(out))
    bodies = set(np.unique(labels[labels > 0]).tolist())
    meshes = PrecomputedShapes.of(parse_volume(str(out)))
    assert meshes.root == out.with_name(out.name + ".precomputed")
    assert summary.bodies == len(bodies) and summary.flawed == [] and set(meshes.bodies("mesh")) == bodies
    assert summary.subvolumes == len(Plan.grid(labels.shape, 32, 0))
    whole = mesh_labels(labels, (0, 0, 0), (8.0, 4.0, 4.0))
    for body in bodies:
        mesh = meshes.read_mesh(body)
        reference = simplify(whole[body], 4.0)
        assert open_edges(mesh) == 0
        assert surface_area(mesh) == pytest.approx(surface_area(reference), rel=0.01)
        assert enclosed_volume(mesh) == pytest.approx(enclosed_volume(reference), rel=0.01)
    info = json.loads((out.with_name(out.name + ".precomputed") / "info").read_text())
    assert info["mesh"] == "mesh" and info["scales"][0]["resolution"] == [4.0, 4.0, 8.0]
    assert json.loads((out.with_name(out.name + ".precomputed") / "mesh" / "info").read_text())["@type"] == "neuroglancer_legacy_mesh"

    cloudvolume = pytest.importorskip("cloudvolume", reason="needs cloud-volume (the test extra) to read meshes back")
    cv = cloudvolume.CloudVolume(f"file://{out.with_name(out.name + '.precomputed')}", progress=False)
    read = cv.mesh.get(sorted(bodies), fuse=False)
    assert set(read) == bodies
    for body in bodies:
        mine = meshes.read_mesh(body)
        assert np.array_equal(np.asarray(read[body].vertices), mine.vertices)
        assert np.array_equal(np.asarray(read[body].faces), mine.faces)


@pytest.mark.parametrize("executor", executor_params("processes", "spark", "dask"))
def test_every_executor_writes_the_same_files(volume, tmp_path, executor):
    folder, labels = volume
    reference = tmp_path / "serial.zarr"
    other = tmp_path / f"{executor}.zarr"
    for path in (reference, other):
        _write(path, labels)
    ls.mesh(str(reference))
    ls.mesh(str(other), executor=executor, workers=2)
    assert _files(reference.with_name("serial.zarr.precomputed")) == _files(other.with_name(f"{executor}.zarr.precomputed"))


def test_resume_meshes_only_what_changed_and_keeps_every_other_file(tmp_path):
    labels = _blobs(8, shape=(40, 64, 64), bodies=12)
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    first = ls.mesh(str(out))
    root = out.with_name(out.name + ".precomputed")
    before = {p: p.stat().st_mtime_ns for p in (root / "mesh").iterdir()}
    nothing = ls.mesh(str(out), resume=True)
    assert (nothing.subvolumes, nothing.subvolumes_kept) == (0, first.subvolumes)
    assert nothing.bodies_kept == nothing.bodies == first.bodies
    assert {p: p.stat().st_mtime_ns for p in (root / "mesh").iterdir()} == before

    # a re-stitch that changes one corner: a body there swallows its neighbour
    changed = labels.copy()
    corner = changed[:20, :20, :20]
    victim, winner = int(corner[5, 5, 5]), int(corner[15, 15, 15])
    if victim == winner:
        winner = int(changed.max()) + 1
    changed[changed == victim] = winner
    _write(out, changed)
    holders = {sv.id for sv in Plan.grid(labels.shape, 32, 0)
               if np.any(np.isin(labels[mesh_read_box(sv.interior, labels.shape)[0].slices()], [victim, winner]))}
    again = ls.mesh(str(out), resume=True)
    assert again.subvolumes == len(holders) and again.removed == 1
    assert again.bodies - again.bodies_kept == 1  # only the winner is welded again
    fresh = tmp_path / "fresh.zarr"
    _write(fresh, changed)
    ls.mesh(str(fresh))
    assert _files(root) == _files(fresh.with_name("fresh.zarr.precomputed"))


def test_a_crash_while_meshing_costs_only_unfinished_subvolumes(tmp_path):
    labels = _blobs(4, shape=(40, 64, 64))
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    ls.mesh(str(out))
    root = out.with_name(out.name + ".precomputed")
    complete = _files(root)
    fragments = sorted((root / "fragments" / "mesh").glob("*.npz"))
    for path in fragments[::2]:  # as if killed with half the subvolumes done and no body welded
        path.unlink()
    for path in (root / "mesh").glob("*:0*"):
        path.unlink()
    resumed = ls.mesh(str(out), resume=True)
    assert resumed.subvolumes == len(fragments[::2]) and resumed.subvolumes_kept == len(fragments) - len(fragments[::2])
    assert _files(root) == complete


def test_only_the_bodies_asked_for_are_meshed(volume, tmp_path):
    folder, labels = volume
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    chosen = sorted(np.unique(labels[labels > 0]).tolist())[:3]
    summary = ls.mesh(str(out), bodies=chosen)
    assert summary.bodies == 3 and PrecomputedShapes(out.with_name(out.name + ".precomputed")).bodies("mesh") == chosen


def test_the_cli_meshes_refuses_to_mesh_twice_and_mesh_follows_run(tmp_path, capsys):
    from labelstitch.synthetic import em_volume

    gray, _ = em_volume((32, 64, 64), n_neurites=12, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {"chunk-size": 32, "overlap": 6, "resolution": [8, 8, 8],
                          "checkpoint-dir": str(tmp_path / "ckpt")}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "run.json"), "--mesh", "-q"]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert "meshes of" in printed and "subvolumes made" in printed
    with open_volume(str(tmp_path / "seg.zarr")) as seg:
        bodies = set(np.unique(seg.read()).tolist()) - {0}
    meshes = PrecomputedShapes(tmp_path / "seg.zarr.precomputed")
    assert set(meshes.bodies("mesh")) == bodies
    mesh = decode_legacy_mesh((meshes.folder("mesh") / f"{min(bodies)}:0:0").read_bytes())
    assert mesh.vertices.max() <= 64 * 8.0 + 8.0 and mesh.vertices.min() >= -8.0  # nm; simplified by up to one voxel

    assert main(["mesh", str(tmp_path / "seg.zarr")]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "already has meshes" in err
    assert main(["mesh", str(tmp_path / "seg.zarr"), "--resume", "--json"]) == ExitCode.OK
    found = json.loads(capsys.readouterr().out)
    assert found["subvolumes"] == 0 and found["bodies_kept"] == len(bodies)
    np.save(tmp_path / "probabilities.npy", gray.astype(np.float32) / 255)
    assert main(["mesh", str(tmp_path / "probabilities.npy")]) == ExitCode.USAGE_ERROR
    assert "not labels" in capsys.readouterr().err

    # a re-stitch with another rule meshes only what it changed, and ends where a fresh mesh would
    import shutil

    with open_volume(str(tmp_path / "seg.zarr")) as seg:
        old = seg.read()
    assert main(["stitch", str(tmp_path / "run.json"), "--rule", "medium", "--param", "min_overlap=1000", "--overwrite",
                 "--mesh", "-q"]) == ExitCode.OK
    import re

    found = re.search(r"meshes of (\d+) bodies .*; (\d+) subvolumes made, (\d+) kept, (\d+) bodies unchanged", capsys.readouterr().out)
    total, made, kept, unchanged = (int(v) for v in found.groups())
    with open_volume(str(tmp_path / "seg.zarr")) as seg:
        new = seg.read()
    same = sum(np.array_equal(old == np.bincount(old[new == b]).argmax(), new == b) for b in np.unique(new[new > 0]))
    assert total > len(bodies) and 0 < unchanged == same < total  # a few merges undone: only those bodies meshed again
    shutil.copytree(tmp_path / "seg.zarr", tmp_path / "fresh.zarr")
    ls.mesh(str(tmp_path / "fresh.zarr"))
    assert _files(tmp_path / "seg.zarr.precomputed") == _files(tmp_path / "fresh.zarr.precomputed")


def test_gala_ground_truth_meshed_blockwise_matches_meshing_it_at_once(shared_data):
    gt = np.load(shared_data / "gala_test.npz")["gt"].astype(np.uint64)
    res = (10.0, 10.0, 10.0)
    whole = mesh_labels(gt, (0, 0, 0), res)
    blocked = _blockwise(gt, 24, res)
    area = [surface_area(blocked[b]) / surface_area(whole[b]) for b in whole]
    assert set(blocked) == set(whole) and max(abs(a - 1) for a in area) < 1e-6
    assert all(open_edges(m) == 0 for m in blocked.values())


def test_a_dvid_output_gets_its_meshes_and_skeletons_where_flyem_tools_read_them(dvid_server, tmp_path):
    import lz4.block
    import requests

    from labelstitch.stores import StoreError
    from labelstitch.stores._precomputed import decode_skeleton, read_skeletons

    labels = _blobs(6, shape=(64, 64, 96), bodies=8)
    api, size = dvid_server.url, "_".join(map(str, labels.shape[::-1]))
    root = requests.post(f"{api}/repos", json={"alias": "meshes"}).json()["root"]
    assert requests.post(f"{api}/repo/{root}/instance", json={"typename": "labelblk", "dataname": "seg"}).ok

    def post(volume):
        body = lz4.block.compress(volume.astype("<u8").tobytes(), store_size=False)
        assert requests.post(f"{api}/node/{root}/seg/raw/0_1_2/{size}/0_0_0", params={"compression": "lz4"}, data=body).ok

    post(labels)
    seg = f"dvid://{dvid_server.address}/{root}/seg"
    with pytest.raises(StoreError, match="--work"):  # no run recorded a checkpoint folder for this volume
        ls.mesh(seg, subvolume_size=32)
    summary = ls.mesh(seg, subvolume_size=32, work=str(tmp_path), executor="processes", workers=2)
    bodies = sorted(np.unique(labels[labels > 0]).tolist())
    assert summary.bodies == len(bodies) and summary.flawed == []
    local = PrecomputedShapes(tmp_path / "seg.precomputed")
    keys = requests.get(f"{api}/node/{root}/seg_meshes/keys").json()
    assert keys == sorted(f"{b}.ngmesh" for b in bodies)
    for body in bodies:
        served = decode_legacy_mesh(requests.get(f"{api}/node/{root}/seg_meshes/key/{body}.ngmesh").content)
        assert np.array_equal(served.vertices, local.read_mesh(body).vertices) and open_edges(served) == 0

    pytest.importorskip("kimimaro", reason="needs kimimaro (the labelstitch[skeletons] extra)")
    ls.skeletonize(seg, subvolume_size=32, work=str(tmp_path))
    swc = tmp_path / "from-dvid"
    swc.mkdir()
    for body in bodies:
        (swc / f"{body}.swc").write_bytes(requests.get(f"{api}/node/{root}/seg_skeletons/key/{body}_swc").content)
    for body, skeleton in read_skeletons(swc).items():
        mine = decode_skeleton((tmp_path / "seg.precomputed" / "skeletons" / str(body)).read_bytes())
        assert len(skeleton.vertices) == len(mine.vertices) and len(skeleton.edges) == len(mine.edges)

    gone = bodies[0]
    post(np.where(labels == gone, 0, labels))  # a body removed (say, by proofreading): its mesh goes too
    again = ls.mesh(seg, subvolume_size=32, work=str(tmp_path), resume=True)
    assert again.removed == 1
    assert requests.get(f"{api}/node/{root}/seg_meshes/key/{gone}.ngmesh").status_code == 404
    assert requests.get(f"{api}/node/{root}/seg_meshes/key/{bodies[1]}.ngmesh").ok


def test_a_labelmap_outputs_supervoxels_get_draco_meshes_in_its_tarsupervoxels_instance(dvid_server, tmp_path, capsys):
    """A labelmap output written with supervoxels: ``mesh --supervoxels`` posts one Draco mesh
    per supervoxel to NAME_sv_meshes, which DVID serves per body as a tar (where NeuTu and
    neuclease read them); together they fill the body's own mesh."""
    import io
    import tarfile

    import requests

    from labelstitch.stores import StoreError
    from labelstitch.stores._shape_formats import decode_draco
    from labelstitch.synthetic import em_volume

    api = dvid_server.url
    uuid = requests.post(f"{api}/repos", json={"alias": "sv"}).json()["root"]
    assert requests.post(f"{api}/repo/{uuid}/instance", json={"typename": "uint8blk", "dataname": "grayscale"}).ok
    gray = em_volume((64, 64, 96), n_neurites=30, seed=3)[0]
    assert requests.post(f"{api}/node/{uuid}/grayscale/raw/0_1_2/96_64_64/0_0_0", data=gray.tobytes()).ok
    config = {"dvid-info": {"dvid-server": dvid_server.address, "uuid": uuid[:6], "segmentation-name": "seg",
                            "grayscale": "grayscale"}, "options": {"chunk-size": 32, "overlap": 4}}
    seg = ls.run(config, create_output=True, progress=False).output
    assert ls.api.keeps_supervoxels(seg)
    ls.mesh(seg, work=str(tmp_path))
    summary = ls.mesh(seg, work=str(tmp_path), supervoxels=True, executor="processes", workers=2)
    assert summary.root == str(tmp_path / "seg_supervoxels.precomputed") and summary.flawed == []
    info = requests.get(f"{api}/node/{uuid}/seg_sv_meshes/info").json()
    assert info["Base"]["TypeName"] == "tarsupervoxels" and info["Base"]["Syncs"] == ["seg"]
    assert info["Extended"]["Extension"] == "drc"

    bodies = sorted(int(k.split(".")[0]) for k in requests.get(f"{api}/node/{uuid}/seg_meshes/keys").json())
    every, volumes = [], []
    for body in bodies:
        svs = requests.get(f"{api}/node/{uuid}/seg/supervoxels/{body}").json()
        every += svs
        assert requests.head(f"{api}/node/{uuid}/seg_sv_meshes/tarfile/{body}").status_code == 200
        with tarfile.open(fileobj=io.BytesIO(requests.get(f"{api}/node/{uuid}/seg_sv_meshes/tarfile/{body}").content)) as tar:
            found = {m.name: decode_draco(tar.extractfile(m).read()) for m in tar.getmembers()}
        assert sorted(found) == sorted(f"{sv}.drc" for sv in svs)
        assert all(open_edges(weld([m])) == 0 for m in found.values())  # each supervoxel's surface is closed
        whole = decode_legacy_mesh(requests.get(f"{api}/node/{uuid}/seg_meshes/key/{body}.ngmesh").content)
        volumes.append((sum(enclosed_volume(m) for m in found.values()), enclosed_volume(whole)))
    assert requests.get(f"{api}/node/{uuid}/seg_sv_meshes/exists", json=every).json() == [True] * len(every)
    assert summary.bodies == len(every) > len(bodies)
    parts, wholes = np.array(volumes).T
    # marching cubes closes each supervoxel half a voxel inside where two meet at an edge or corner
    assert np.abs(parts / wholes - 1).max() < 0.1 and abs(parts.sum() / wholes.sum() - 1) < 0.03

    again = ls.mesh(seg, work=str(tmp_path), supervoxels=True, resume=True)
    assert again.bodies_kept == again.bodies == len(every)
    capsys.readouterr()
    assert main(["mesh", seg, "--supervoxels", "--resume", "--work", str(tmp_path), "--json", "-q"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["bodies_kept"] == len(every)
    # `run --mesh` into a new labelmap: refused before any work without a folder for the pieces,
    # then bodies and supervoxels meshed after the run
    config["dvid-info"]["segmentation-name"] = "seg2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "config.json"), "--create-output", "--mesh", "-q"]) == ExitCode.USAGE_ERROR
    assert "set options.checkpoint-dir or give --work DIR" in capsys.readouterr().err
    assert requests.get(f"{api}/node/{uuid}/seg2/info").status_code != 200  # nothing was written
    assert main(["run", str(tmp_path / "config.json"), "--create-output", "--mesh", "--work", str(tmp_path / "w"),
                 "-q"]) == ExitCode.OK
    assert requests.get(f"{api}/node/{uuid}/seg2_meshes/keys").json()
    assert requests.get(f"{api}/node/{uuid}/seg2_sv_meshes/info").json()["Extended"]["Extension"] == "drc"
    assert (tmp_path / "w" / "seg2_supervoxels.precomputed" / "mesh" / "info").exists()

    _write(tmp_path / "local.zarr", _blobs(1, shape=(8, 8, 8), bodies=2))
    with pytest.raises(StoreError, match="keeps no supervoxels"):
        ls.mesh(str(tmp_path / "local.zarr"), supervoxels=True)
    with pytest.raises(StoreError, match="skeletons are made of bodies"):
        ls.skeletonize(f"{seg}?supervoxels=true", work=str(tmp_path))


def test_levels_of_detail_in_the_multiresolution_format_that_cloud_volume_reads(volume, tmp_path):
    from labelstitch.stores._shape_formats import _zorder, multilod_nodes

    folder, labels = volume
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    summary = ls.mesh(str(out), lods=3)
    shapes = PrecomputedShapes(tmp_path / "seg.zarr.precomputed")
    info = json.loads((shapes.folder("mesh") / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco" and summary.flawed == []
    whole = mesh_labels(labels, (0, 0, 0), (8.0, 4.0, 4.0))
    for body in sorted(whole)[:5]:
        levels = [shapes.read_mesh(body, lod) for lod in range(3)]
        assert [len(m.faces) for m in levels[1:]] == sorted((len(m.faces) for m in levels[1:]), reverse=True)  # coarser, fewer
        assert all(open_edges(m) == 0 for m in levels)  # the octree's pieces join into closed surfaces
        assert surface_area(levels[0]) == pytest.approx(surface_area(simplify(whole[body], 4.0)), rel=0.01)
        assert enclosed_volume(levels[0]) == pytest.approx(enclosed_volume(simplify(whole[body], 4.0)), rel=0.01)
        assert enclosed_volume(levels[2]) == pytest.approx(enclosed_volume(whole[body]), rel=0.15)  # 16 nm error on small blobs
        # an octree: one root, up to 4 cells a side at the finest level, every node's parent listed, Z-curve order
        nodes = multilod_nodes((shapes.body_folder("mesh") / f"{body}.index").read_bytes())
        assert [cell for cell, _ in nodes[2]] == [(0, 0, 0)] and len(nodes[0]) > len(nodes[1]) > 1
        for lod in (0, 1):
            cells = np.array([cell for cell, _ in nodes[lod]])
            assert cells.max() < 2 ** (2 - lod) and list(np.argsort(_zorder(cells), kind="stable")) == list(range(len(cells)))
            assert {(x >> 1, y >> 1, z >> 1) for x, y, z in cells.tolist()} <= {cell for cell, _ in nodes[lod + 1]}
    with pytest.raises(ls.api.StoreError, match="--overwrite"):
        ls.mesh(str(out), resume=True)  # the legacy format over multi-resolution meshes
    cloudvolume = pytest.importorskip("cloudvolume", reason="needs cloud-volume (the test extra) to read meshes back")
    cv = cloudvolume.CloudVolume(f"file://{shapes.root}", progress=False)
    body = sorted(whole)[0]
    for lod in (0, 2):
        read = cv.mesh.get(body, lod=lod)[body]
        mine = shapes.read_mesh(body, lod)
        assert len(read.faces) >= len(mine.faces)  # its pieces as they are; ours joined, slivers that 16 bits flatten left out
        assert surface_area(Mesh(np.asarray(read.vertices, np.float32), np.asarray(read.faces, np.uint32))) == pytest.approx(
            surface_area(mine), rel=1e-4)
        assert np.allclose(np.asarray(read.vertices).min(axis=0), mine.vertices.min(axis=0), atol=0.05)
        assert np.allclose(np.asarray(read.vertices).max(axis=0), mine.vertices.max(axis=0), atol=0.05)


def test_sharded_meshes_and_skeletons_that_cloud_volume_reads_and_resume_repacks_only_touched_shards(tmp_path, monkeypatch):
    import labelstitch.stores._precomputed as precomputed
    from labelstitch.stores._shape_formats import decode_multilod, sharding_spec

    # few bodies: ask for four shards of two minishards, as many bodies would get
    monkeypatch.setattr(precomputed, "sharding_spec", lambda n: {**sharding_spec(n), "shard_bits": 2, "minishard_bits": 1})
    labels = _blobs(5, shape=(40, 64, 64), bodies=16)
    out = tmp_path / "seg.zarr"
    _write(out, labels)
    summary = ls.mesh(str(out), sharded=True, lods=2)
    shapes = PrecomputedShapes(tmp_path / "seg.zarr.precomputed", sharded=True, lods=2)
    bodies = sorted(np.unique(labels[labels > 0]).tolist())
    shards = sorted(p.name for p in shapes.folder("mesh").glob("*.shard"))
    assert summary.shards == len(shards) == 4 and shards == ["0.shard", "1.shard", "2.shard", "3.shard"]
    info = json.loads((shapes.folder("mesh") / "info").read_text())
    assert info["sharding"]["shard_bits"] == 2 and info["@type"] == "neuroglancer_multilod_draco"
    for body in bodies:  # the chunk in the shard is the body's manifest
        assert shapes.read_sharded("mesh", body) == (shapes.body_folder("mesh") / f"{body}.index").read_bytes()

    cloudvolume = pytest.importorskip("cloudvolume", reason="needs cloud-volume (the test extra) to read shards back")
    cv = cloudvolume.CloudVolume(f"file://{shapes.root}", progress=False)
    for body in bodies[:6]:
        read = cv.mesh.get(body, lod=1)[body]
        mine = shapes.read_mesh(body, 1)
        assert len(read.faces) == len(mine.faces)
        assert np.allclose(np.sort(np.asarray(read.vertices), axis=0), np.sort(mine.vertices, axis=0), atol=0.05)

    ls.skeletonize(str(out), sharded=True)
    from labelstitch.stores._shape_formats import read_skeletons

    assert sorted(read_skeletons(shapes.root)) == bodies  # ground truth from shards reads back too
    cv = cloudvolume.CloudVolume(f"file://{shapes.root}", progress=False)
    for body in bodies[:6]:
        assert np.array_equal(np.asarray(cv.skeleton.get(body).vertices), shapes.read_skeleton(body).vertices)

    before = {p.name: p.stat().st_mtime_ns for p in shapes.folder("mesh").glob("*.shard")}
    changed = labels.copy()
    changed[changed == bodies[0]] = 0  # one body gone: only its shard is packed again
    _write(out, changed)
    again = ls.mesh(str(out), sharded=True, lods=2, resume=True)
    assert again.removed == 1 and again.shards >= 1
    after = {p.name: p.stat().st_mtime_ns for p in shapes.folder("mesh").glob("*.shard")}
    home = f"{(bodies[0] >> 1) & 3:x}.shard"
    assert {name for name in after if after[name] != before.get(name)} == {home}
    assert shapes.read_sharded("mesh", bodies[0]) is None
    with pytest.raises(ls.api.StoreError, match="--overwrite"):
        ls.mesh(str(out), resume=True)  # unsharded over sharded
    assert decode_multilod(shapes.read_sharded("mesh", bodies[1]), (shapes.body_folder("mesh") / str(bodies[1])).read_bytes(), 0).faces.size
