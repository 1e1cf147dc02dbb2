"""The whole pipeline on the gala volume read from and written to the DVID test server,
against the same run on local stores: identical outputs on every executor, ROIs,
preserved bodies, the refusals before work, and faults (a flaky server, a server that
goes down and comes back)."""

from __future__ import annotations

import threading
import time

import lz4.block
import numpy as np
import pytest
import requests

from labelstitch.stores import DvidError, StoreError, open_volume, volume_exists
from labelstitch.pipeline import run

SHAPE = (64, 128, 224)  # gala_test (50, 100, 200) padded with zeros to whole 32-voxel blocks
OPTIONS = {
    "chunk-size": 64,
    "overlap": 8,
    "segmentor": {
        "configuration": {
            "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
            "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.4}},
        }
    },
}
ROI_RUNS = [[0, 0, 0, 3], [0, 1, 0, 2], [1, 2, 3, 6], [1, 3, 4, 4]]  # [z, y, x0, x1] in 32-voxel blocks
KEEP = (0,)  # filled in by the gala fixture: a few ground-truth bodies to preserve


@pytest.fixture(scope="module")
def gala(shared_data, tmp_path_factory):
    data = np.load(shared_data / "gala_test.npz")
    folder = tmp_path_factory.mktemp("gala")
    raw = np.zeros(SHAPE, np.uint8)
    raw[:50, :100, :200] = data["raw"]
    gt = np.zeros(SHAPE, np.uint64)
    gt[:50, :100, :200] = data["gt"]
    np.save(folder / "raw.npy", raw)
    np.save(folder / "gt.npy", gt)
    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    keep = tuple(int(i) for i in ids[np.argsort(counts)[-3:]])  # the three largest bodies
    return folder, raw, gt, keep


def local_run(gala, name, **extra):
    """The reference: the same options on local stores (npy in, zarr out)."""
    folder, _, _, _ = gala
    out = folder / f"{name}.zarr"
    if not out.exists():
        run({"input": str(folder / "raw.npy"), "output": str(out), "options": {**OPTIONS, **extra.pop("options", {})}, **extra})
    with open_volume(str(out)) as store:
        return store.read()


@pytest.fixture
def node(dvid_server, gala):
    """A fresh repo holding the gala grayscale, its ground truth as labels, and an ROI."""
    _, raw, gt, _ = gala
    api = dvid_server.url
    root = requests.post(f"{api}/repos", json={"alias": "gala"}).json()["root"]
    for typename, name in [("uint8blk", "grayscale"), ("labelblk", "proofread"), ("roi", "roi")]:
        assert requests.post(f"{api}/repo/{root}/instance", json={"typename": typename, "dataname": name}).ok
    size = "_".join(map(str, SHAPE[::-1]))
    assert requests.post(f"{api}/node/{root}/grayscale/raw/0_1_2/{size}/0_0_0", data=raw.tobytes()).ok
    body = lz4.block.compress(gt.astype("<u8").tobytes(), store_size=False)
    assert requests.post(f"{api}/node/{root}/proofread/raw/0_1_2/{size}/0_0_0", params={"compression": "lz4"}, data=body).ok
    assert requests.post(f"{api}/node/{root}/roi/roi", json=ROI_RUNS).ok
    return root


def dvid_config(dvid_server, uuid, name, **extra):
    info = {"dvid-server": dvid_server.address, "uuid": uuid[:8], "segmentation-name": name, "grayscale": "grayscale"}
    info.update(extra.pop("dvid_info", {}))
    return {"dvid-info": info, "options": {**OPTIONS, **extra.pop("options", {})}, **extra}


def read_dvid(dvid_server, uuid, name):
    with open_volume(f"dvid://{dvid_server.address}/{uuid}/{name}") as store:
        assert store.shape == SHAPE
        return store.read()


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_gala_through_dvid_equals_the_local_run(dvid_server, node, gala, executor):
    expected = local_run(gala, "plain")
    result = run(dvid_config(dvid_server, node, "seg"), executor=executor, workers=2, create_output=True)
    assert result.output == f"dvid://{dvid_server.address}/{node[:8]}/seg"
    np.testing.assert_array_equal(read_dvid(dvid_server, node, "seg"), expected)
    info = requests.get(f"{dvid_server.url}/node/{node}/seg/info").json()
    assert info["Base"]["TypeName"] == "labelmap" and info["Extended"]["BlockSize"] == [32, 32, 32]
    # a labelmap gets supervoxels as compressed blocks, never indexed block by block through /raw
    log = [(m, path, p) for m, path, p in dvid_server.state.log if "/seg/" in path]
    blocks = [p for m, path, p in log if m == "POST" and path.endswith("/seg/blocks")]
    assert blocks and all(p["noindexing"] == "true" and p["throttle"] == "on" for p in blocks)
    assert not [path for m, path, _ in log if m == "POST" and "/seg/raw/" in path]
    assert info["Extended"]["MaxDownresLevel"] == 3  # down to one 32-voxel block: 224 -> 112 -> 56 -> 28


def test_dvid_write_bodies_puts_body_ids_in_the_voxels(dvid_server, node, gala):
    expected = local_run(gala, "plain")
    run(dvid_config(dvid_server, node, "seg", options={"dvid-write": "bodies"}), create_output=True)
    np.testing.assert_array_equal(read_dvid(dvid_server, node, "seg"), expected)
    svs = open_volume(f"dvid://{dvid_server.address}/{node}/seg?supervoxels=true").read()
    np.testing.assert_array_equal(svs, expected)  # each body is a supervoxel of its own
    posts = [p for m, path, p in dvid_server.state.log if m == "POST" and path.endswith("/seg/raw/0_1_2/64_64_64/64_0_0")]
    assert posts and all(p["compression"] == "lz4" and p["throttle"] == "on" for p in posts)
    with pytest.raises(StoreError, match="no supervoxel mapping"):
        run(dvid_config(dvid_server, node, "old", options={"dvid-write": "supervoxels"},
                        dvid_info={"segmentation-type": "labelblk"}), create_output=True)
    with pytest.raises(ValueError, match="dvid-write is for DVID outputs"):
        run({**dvid_config(dvid_server, node, "x", options={"dvid-write": "bodies"}), "output": str(gala[0] / "x.zarr")})


def get(dvid_server, node, call, **kwargs):
    reply = requests.get(f"{dvid_server.url}/node/{node}/seg/{call}", **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_proofreader_gets_bodies_made_of_supervoxels(dvid_server, node, gala):
    """What a proofreading tool sees, through plain HTTP: bodies, their supervoxels, sizes,
    the scales, and room to cleave a body along its supervoxels."""
    folder, _, gt, keep = gala
    expected = local_run(gala, "preserved", **{"preserve-bodies": {"segmentation": str(folder / "gt.npy"), "bodies": list(keep)}})
    preserve = {"segmentation": f"dvid://{dvid_server.address}/{node}/proofread", "bodies": list(keep)}
    run(dvid_config(dvid_server, node, "seg", **{"preserve-bodies": preserve}), create_output=True)
    api, size = dvid_server.url, "_".join(map(str, SHAPE[::-1]))

    def raw(**params):
        reply = requests.get(f"{api}/node/{node}/seg/raw/0_1_2/{size}/0_0_0", params={"compression": "lz4", **params})
        return np.frombuffer(lz4.block.decompress(reply.content, uncompressed_size=int(np.prod(SHAPE)) * 8), "<u8").reshape(SHAPE)

    bodies, svs = raw(), raw(supervoxels="true")
    np.testing.assert_array_equal(bodies, expected)  # exactly the local run's bodies
    body_ids, sv_ids = np.unique(bodies[bodies > 0]), np.unique(svs[svs > 0])
    pairs = np.unique(np.stack([svs[svs > 0], bodies[svs > 0]]), axis=1)
    assert pairs.shape[1] == sv_ids.size  # every supervoxel lies in one body
    kept = np.isin(sv_ids, keep)
    assert not np.isin(sv_ids[~kept], body_ids).any()  # new supervoxel ids never collide with body ids
    assert sv_ids.size > body_ids.size  # bodies cut by subvolume boundaries are several supervoxels
    assert get(dvid_server, node, "maxlabel")["maxlabel"] >= max(sv_ids.max(), body_ids.max())
    assert get(dvid_server, node, "mapping", json=pairs[0].tolist()) == pairs[1].tolist()
    sizes = get(dvid_server, node, "sizes", json=body_ids.tolist())
    assert sizes == [int((bodies == b).sum()) for b in body_ids]
    for b in body_ids[:: max(1, body_ids.size // 15)]:
        assert sorted(get(dvid_server, node, f"supervoxels/{b}")) == pairs[0][pairs[1] == b].tolist()
    assert get(dvid_server, node, f"size/{sv_ids[-1]}", params={"supervoxels": "true"})["voxels"] == int((svs == sv_ids[-1]).sum())
    # the scales are DVID's 2x2x2 mode of the supervoxels
    from labelstitch.pyramid import downsample_labels

    low = svs
    for scale in (1, 2, 3):
        low = downsample_labels(low)
        shape = "_".join(map(str, low.shape[::-1]))
        reply = requests.get(f"{api}/node/{node}/seg/raw/0_1_2/{shape}/0_0_0", params={"scale": scale, "supervoxels": "true"})
        np.testing.assert_array_equal(np.frombuffer(reply.content, "<u8").reshape(low.shape), low)
    # a proofreader cleaves the body with the most supervoxels along them: it gets a fresh id
    counts = np.bincount(np.searchsorted(body_ids, pairs[1]))
    target = int(body_ids[np.argmax(counts)])
    mine = pairs[0][pairs[1] == target]
    top = get(dvid_server, node, "maxlabel")["maxlabel"]
    cleave = requests.post(f"{api}/node/{node}/seg/cleave/{target}", json=mine[:1].tolist()).json()
    assert cleave["CleavedLabel"] > top
    assert get(dvid_server, node, "sizes", json=[target, cleave["CleavedLabel"]]) == [
        int(np.isin(svs, mine[1:]).sum()), int((svs == mine[0]).sum())]


def test_agglomeration_across_blocks_gives_proofreaders_its_supervoxels(dvid_server, node, gala):
    """Across blocks the stitched supervoxels are the labelmap's supervoxels and the
    agglomeration on the driver is its mapping: the same bodies as the local run."""
    across = {"agglomerate-across-blocks": True,
              "segmentor": {"configuration": {**OPTIONS["segmentor"]["configuration"],
                                              "agglomerate-supervoxels": {"function": "rag_agglomeration",
                                                                          "parameters": {"threshold": 0.5}}}}}
    expected = local_run(gala, "across", options=across)
    result = run(dvid_config(dvid_server, node, "seg", options=across), create_output=True)
    info = result.stitch["agglomeration"]
    assert info["bodies"] < info["supervoxels"]  # the driver's agglomeration merged supervoxels
    bodies = read_dvid(dvid_server, node, "seg")
    np.testing.assert_array_equal(bodies, expected)
    svs = open_volume(f"dvid://{dvid_server.address}/{node}/seg?supervoxels=true").read()
    pairs = np.unique(np.stack([svs[svs > 0], bodies[svs > 0]]), axis=1)
    assert pairs.shape[1] == np.unique(svs[svs > 0]).size  # every supervoxel lies in one body
    assert np.unique(pairs[1]).size < pairs.shape[1]  # and bodies are made of several


def test_serial_processes_and_spark_write_bitwise_the_same_labelmap(dvid_server, node, gala):
    expected = local_run(gala, "plain")
    names = ("serial", "processes", "spark")
    for name in names:
        run(dvid_config(dvid_server, node, name), executor=name, workers=2, create_output=True)
        np.testing.assert_array_equal(read_dvid(dvid_server, node, name), expected)
    mappings = [requests.get(f"{dvid_server.url}/node/{node}/{name}/mappings").text for name in names]
    assert mappings[0] and mappings[0] == mappings[1] == mappings[2]  # bodies are mappings, the same ones
    svs = [open_volume(f"dvid://{dvid_server.address}/{node}/{name}?supervoxels=true").read() for name in names]
    np.testing.assert_array_equal(svs[0], svs[1])
    np.testing.assert_array_equal(svs[0], svs[2])
    bodies = np.unique(expected[expected > 0]).tolist()
    sizes = [requests.get(f"{dvid_server.url}/node/{node}/{name}/sizes", json=bodies).json() for name in names]
    assert sizes[0] == sizes[1] == sizes[2]


def test_preserved_bodies_and_inputs_read_from_a_labelmap(dvid_server, node, gala):
    """A labelmap read gives bodies (its mapping applied), ``?supervoxels=true`` its supervoxels:
    preserving a body of an earlier labelmap run keeps that body whole, not one supervoxel."""
    run(dvid_config(dvid_server, node, "first"), create_output=True)
    bodies = read_dvid(dvid_server, node, "first")
    svs = open_volume(f"dvid://{dvid_server.address}/{node}/first?supervoxels=true").read()
    ids, counts = np.unique(bodies[bodies > 0], return_counts=True)
    several = [int(b) for b in ids[np.argsort(counts)[::-1]] if np.unique(svs[bodies == b]).size > 1][:2]
    assert several  # bodies made of more than one supervoxel
    preserve = {"segmentation": f"dvid://{dvid_server.address}/{node}/first", "bodies": several}
    run(dvid_config(dvid_server, node, "second", **{"preserve-bodies": preserve}), create_output=True)
    second = read_dvid(dvid_server, node, "second")
    kept = np.isin(bodies, several)
    np.testing.assert_array_equal(second[kept], bodies[kept])  # whole bodies kept, under their ids


def test_an_roi_limits_segmentation_and_writes_to_its_blocks(dvid_server, node, gala):
    folder = gala[0]
    # the output already holds labels everywhere: blocks outside the ROI must keep them
    api = dvid_server.url
    requests.post(f"{api}/repo/{node}/instance", json={"typename": "labelarray", "dataname": "seg", "BlockSize": "32,32,32"})
    size = "_".join(map(str, SHAPE[::-1]))
    old = lz4.block.compress(np.full(SHAPE, 7, "<u8").tobytes(), store_size=False)
    assert requests.post(f"{api}/node/{node}/seg/raw/0_1_2/{size}/0_0_0", params={"compression": "lz4"}, data=old).ok
    with pytest.raises(StoreError, match="holds labels already"):
        run(dvid_config(dvid_server, node, "seg", dvid_info={"roi": "roi"}))
    result = run(dvid_config(dvid_server, node, "seg", dvid_info={"roi": "roi"}), overwrite=True)
    assert result.counts["subvolumes"] == 5  # only the 64-voxel chunks the ROI touches (of 8)
    seg = read_dvid(dvid_server, node, "seg")
    inside = np.zeros(SHAPE, bool)
    for z, y, x0, x1 in ROI_RUNS:
        inside[z * 32 : z * 32 + 32, y * 32 : y * 32 + 32, x0 * 32 : x1 * 32 + 32] = True
    assert np.all(seg[~inside] == 7)
    assert np.count_nonzero(seg[inside]) > 0.5 * inside.sum()
    # the same ROI with local input and output segments the same voxels the same way
    local = str(folder / "roi.zarr")
    run({"input": str(folder / "raw.npy"), "output": local,
         "options": {**OPTIONS, "roi": f"dvid://{dvid_server.address}/{node}/roi"}}, overwrite=True)
    with open_volume(local) as store:
        mine = store.read()
    assert np.all(mine[~inside] == 0)
    np.testing.assert_array_equal(mine[inside], seg[inside])  # so every ROI block was written anew


def test_preserved_bodies_read_from_dvid(dvid_server, node, gala):
    folder, _, gt, keep = gala
    expected = local_run(gala, "preserved", **{"preserve-bodies": {"segmentation": str(folder / "gt.npy"), "bodies": list(keep)}})
    preserve = {"segmentation": f"dvid://{dvid_server.address}/{node}/proofread", "bodies": list(keep)}
    run(dvid_config(dvid_server, node, "seg", **{"preserve-bodies": preserve}), create_output=True)
    seg = read_dvid(dvid_server, node, "seg")
    np.testing.assert_array_equal(seg, expected)
    kept = np.isin(gt, keep)
    np.testing.assert_array_equal(seg[kept], gt[kept])
    assert not np.isin(seg[~kept], keep).any()


def test_refusals_come_before_any_work(dvid_server, node, gala, tmp_path):
    checkpoints = tmp_path / "ckpt"
    config = dvid_config(dvid_server, node, "seg", options={"checkpoint-dir": str(checkpoints)})
    with pytest.raises(StoreError, match="no instance 'seg'.*pass --create-output"):
        run(config)
    assert requests.get(f"{dvid_server.url}/node/{node}/seg/info").status_code == 400  # nothing created
    assert not checkpoints.exists()
    with pytest.raises(ValueError, match="whole 32-voxel blocks.*multiple of 32"):
        run(dvid_config(dvid_server, node, "seg", options={"chunk-size": 48}), create_output=True)
    with pytest.raises(StoreError, match="not a DVID volume"):
        run({"input": f"dvid://{dvid_server.address}/{node}", "output": str(tmp_path / "o.zarr")})
    requests.post(f"{dvid_server.url}/node/{node}/commit", json={})
    with pytest.raises(StoreError, match="committed \\(locked\\)"):
        run(config, create_output=True)
    assert not checkpoints.exists()
    # the paper's dvid-info with a local output (explicit keys win)
    out = tmp_path / "local.zarr"
    run({**dvid_config(dvid_server, node, "unused"), "output": str(out)})
    np.testing.assert_array_equal(open_volume(str(out)).read(), local_run(gala, "plain"))


def test_a_flaky_server_gives_the_same_output(dvid_server, node, gala):
    expected = local_run(gala, "plain")
    faults = dvid_server.faults
    faults.error_rate, faults.drop_rate, faults.delay = 0.2, 0.05, 0.002
    run(dvid_config(dvid_server, node, "seg"), executor="processes", workers=2, create_output=True)
    faults.error_rate = faults.drop_rate = faults.delay = 0.0
    np.testing.assert_array_equal(read_dvid(dvid_server, node, "seg"), expected)
    assert dvid_server.state.status_counts.get(503, 0) >= 3


def test_a_slow_server_and_timed_out_requests_give_the_same_output(dvid_server, node, gala, monkeypatch):
    expected = local_run(gala, "plain")
    monkeypatch.setenv("LABELSTITCH_DVID_TIMEOUT", "0.5")
    faults = dvid_server.faults
    faults.delay, faults.stall_rate, faults.stall = 0.02, 0.1, 1.0  # every reply late, one in ten too late
    run(dvid_config(dvid_server, node, "seg"), create_output=True)
    faults.delay = faults.stall_rate = 0.0
    assert faults.stalled >= 2
    np.testing.assert_array_equal(read_dvid(dvid_server, node, "seg"), expected)


def _stop_after(server, predicate, count=1):
    """Stop the server from a thread as soon as ``count`` requests match ``predicate``."""

    def watch():
        while sum(predicate(m, path, params) for m, path, params in list(server.state.log)) < count:
            time.sleep(0.002)
        server.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("phase", ["segment", "write", "indices", "mappings", "scales"])
def test_a_server_that_stays_down_fails_clearly_and_resume_finishes(dvid_server, node, gala, tmp_path, monkeypatch, phase):
    expected = local_run(gala, "plain")
    config = dvid_config(dvid_server, node, "seg", options={"checkpoint-dir": str(tmp_path / "ckpt")})
    monkeypatch.setenv("LABELSTITCH_DVID_RETRIES", "3")
    if phase == "segment":  # down after the third grayscale read
        watcher = _stop_after(dvid_server, lambda m, p, q: "/grayscale/raw/" in p, count=3)
    else:  # down while the supervoxels, the bodies' label indices and mappings, or the scales are written
        dvid_server.faults.delay = 0.05
        # the second write arrives only after the first one was answered, so one is in
        call = {"write": "/seg/blocks", "indices": "/seg/indices", "mappings": "/seg/mappings", "scales": "/seg/blocks"}[phase]
        scaled = phase == "scales"
        watcher = _stop_after(dvid_server, lambda m, p, q: m == "POST" and p.endswith(call) and ("scale" in q) == scaled, count=2)
    with pytest.raises(DvidError, match="failed after 4 attempts.*--resume"):
        run(config, create_output=True)
    watcher.join()
    done = len(list((tmp_path / "ckpt").glob("sv-*.blk")))
    assert (0 < done < 8) if phase == "segment" else done == 8
    dvid_server.faults.delay = 0.0
    dvid_server.start()  # back, with its data, on the same port
    if phase != "segment":
        assert volume_exists(f"dvid://{dvid_server.address}/{node}/seg")  # a part was written
    result = run(config, resume=True, create_output=True)
    assert result.counts["restored from checkpoints"] == done
    seg = read_dvid(dvid_server, node, "seg")
    np.testing.assert_array_equal(seg, expected)
    bodies = np.unique(seg[seg > 0])  # no index counted twice, no body left half-indexed
    assert get(dvid_server, node, "sizes", json=bodies.tolist()) == [int((seg == b).sum()) for b in bodies]
    reply = requests.get(f"{dvid_server.url}/node/{node}/seg/raw/0_1_2/28_16_8/0_0_0", params={"scale": "3", "supervoxels": "true"})
    assert np.count_nonzero(np.frombuffer(reply.content, "<u8")) > 0  # the top scale is there


def test_the_command_line_with_a_dvid_info_config(dvid_server, node, gala, tmp_path, capsys, monkeypatch):
    import json

    from labelstitch._cli.main import ExitCode, main

    path = tmp_path / "dvid.json"
    checkpoints = tmp_path / "ckpt"
    path.write_text(json.dumps(dvid_config(dvid_server, node, "seg", options={"checkpoint-dir": str(checkpoints)})))
    assert main(["run", str(path), "-q"]) == ExitCode.USAGE_ERROR
    assert "pass --create-output" in capsys.readouterr().err
    assert main(["run", str(path), "-q", "--create-output"]) == ExitCode.OK
    output = f"dvid://{dvid_server.address}/{node[:8]}/seg"
    assert f"wrote {output}" in capsys.readouterr().out
    seg = read_dvid(dvid_server, node, "seg")
    np.testing.assert_array_equal(seg, local_run(gala, "plain"))
    # the stitch report of a DVID output lives in the checkpoint folder
    assert (checkpoints / "seg.stitch.md").exists()
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    body = str(ids[np.argmax(counts)])
    assert main(["explain", body, "--output", output]) == ExitCode.USAGE_ERROR
    assert "give --checkpoints DIR" in capsys.readouterr().err
    assert main(["explain", body, "--output", output, "--checkpoints", str(checkpoints), "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["body"] == int(body)
    monkeypatch.setenv("LABELSTITCH_DVID_RETRIES", "1")
    dvid_server.stop()
    assert main(["run", str(path), "-q", "--overwrite"]) == ExitCode.FAILED
    assert "failed after 2 attempts" in capsys.readouterr().err


def test_checkpoints_without_supervoxels_are_segmented_again_for_a_labelmap(dvid_server, node, gala, tmp_path, caplog):
    """Checkpoints of a run into a file output keep no supervoxels; resuming into a labelmap
    output segments those subvolumes again rather than writing a labelmap without them."""
    folder = gala[0]
    checkpoints = str(tmp_path / "ckpt")
    local = {"input": str(folder / "raw.npy"), "output": str(tmp_path / "first.zarr"),
             "options": {**OPTIONS, "checkpoint-dir": checkpoints}}
    assert run(local).counts["segmented now"] == 8
    config = dvid_config(dvid_server, node, "seg", options={"checkpoint-dir": checkpoints})
    config["input"] = str(folder / "raw.npy")
    result = run(config, resume=True, create_output=True)
    assert result.counts["segmented now"] == 8 and result.counts["restored from checkpoints"] == 0
    assert "without the supervoxels this output keeps" in caplog.text
    np.testing.assert_array_equal(read_dvid(dvid_server, node, "seg"), local_run(gala, "plain"))
