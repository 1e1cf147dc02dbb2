"""The DVID test server checked against the API reference (shared/docs/dvid-api.md), with
plain ``requests`` calls, so that the client is never tested against a server that merely
agrees with it."""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import sys

import lz4.block
import numpy as np
import pytest
import requests


@pytest.fixture
def api(dvid_server):
    return dvid_server.url


@pytest.fixture
def repo(api):
    reply = requests.post(f"{api}/repos", json={"alias": "test", "description": "server tests"})
    assert reply.status_code == 200
    return reply.json()["root"]


def add(api, uuid, typename, name, **extra):
    return requests.post(f"{api}/repo/{uuid}/instance", json={"typename": typename, "dataname": name, **extra})


def raw(api, uuid, name, shape_zyx, offset_zyx, suffix=""):
    size = "_".join(map(str, shape_zyx[::-1]))
    off = "_".join(map(str, offset_zyx[::-1]))
    return f"{api}/node/{uuid}/{name}/raw/0_1_2/{size}/{off}{suffix}"


def get_labels(api, uuid, name, shape, offset, **params):
    reply = requests.get(raw(api, uuid, name, shape, offset), params={"compression": "lz4", **params})
    assert reply.status_code == 200, reply.text
    data = lz4.block.decompress(reply.content, uncompressed_size=int(np.prod(shape)) * 8)
    return np.frombuffer(data, "<u8").reshape(shape)


def post_labels(api, uuid, name, offset, labels, **params):
    body = lz4.block.compress(np.ascontiguousarray(labels, "<u8").tobytes(), store_size=False)
    return requests.post(raw(api, uuid, name, labels.shape, offset), data=body, params={"compression": "lz4", **params})


def test_repos_instances_and_info(api, repo):
    assert requests.head(f"{api}/repo/{repo}").status_code == 200
    assert add(api, repo, "uint8blk", "grayscale").status_code == 200
    reply = add(api, repo, "labelarray", "seg")
    assert reply.status_code == 200 and "Added seg [labelarray]" in reply.json()["result"]
    again = add(api, repo, "labelblk", "seg")
    assert again.status_code == 400 and "already exists" in again.text
    assert add(api, repo, "nosuchtype", "x").status_code == 400
    assert requests.post(f"{api}/repo/{repo}/instance", json={"typename": "labelblk"}).status_code == 400
    info = requests.get(f"{api}/node/{repo[:5]}/seg/info").json()  # a unique prefix will do
    assert info["Base"]["TypeName"] == "labelarray" and info["Base"]["Name"] == "seg" and info["Base"]["Syncs"] == []
    assert info["Extended"]["BlockSize"] == [64, 64, 64]  # labelarray's default
    assert requests.get(f"{api}/node/{repo}/grayscale/info").json()["Extended"]["BlockSize"] == [32, 32, 32]
    repo_info = requests.get(f"{api}/repo/{repo}/info").json()
    assert set(repo_info["DataInstances"]) == {"grayscale", "seg"} and repo in repo_info["DAG"]["Nodes"]
    assert repo in requests.get(f"{api}/repos/info").json()
    # DVID answers 400 (not 404) for an unknown instance or UUID, and 404 for unmatched routes
    assert requests.get(f"{api}/node/{repo}/nosuch/info").status_code == 400
    assert requests.get(f"{api}/node/ffffffffff/seg/info").status_code == 400
    assert requests.get(f"{api}/nothing/here").status_code == 404
    assert requests.post(f"{api}/node/{repo}/seg/sync", json={"sync": "grayscale"}).status_code == 200
    assert requests.get(f"{api}/node/{repo}/seg/info").json()["Base"]["Syncs"] == ["grayscale"]


def test_grayscale_round_trip_any_geometry_and_aligned_posts(api, repo):
    add(api, repo, "uint8blk", "grayscale")
    gray = np.random.default_rng(0).integers(0, 256, (64, 32, 96), dtype=np.uint8)
    assert requests.post(raw(api, repo, "grayscale", gray.shape, (32, 0, 0)), data=gray.tobytes()).status_code == 200
    # any geometry reads back, never-written voxels (and negative offsets) are 0, ZYX order with x fastest
    reply = requests.get(raw(api, repo, "grayscale", (40, 20, 50), (20, -4, 10)))
    got = np.frombuffer(reply.content, np.uint8).reshape(40, 20, 50)
    want = np.zeros((40, 20, 50), np.uint8)
    want[12:, 4:, :] = gray[:28, :16, 10:60]
    np.testing.assert_array_equal(got, want)
    # older clients add /nD after the offset
    assert requests.get(raw(api, repo, "grayscale", (2, 2, 2), (32, 0, 0), "/nD")).content == gray[:2, :2, :2].tobytes()
    before = requests.get(raw(api, repo, "grayscale", (64, 32, 96), (32, 0, 0))).content
    bad = requests.post(raw(api, repo, "grayscale", (32, 32, 32), (32, 0, 16)), data=bytes(32**3))
    assert bad.status_code == 400 and "non-block aligned" in bad.text
    short = requests.post(raw(api, repo, "grayscale", (32, 32, 32), (32, 0, 0)), data=bytes(100))
    assert short.status_code == 400
    assert requests.get(raw(api, repo, "grayscale", (64, 32, 96), (32, 0, 0))).content == before
    info = requests.get(f"{api}/node/{repo}/grayscale/info").json()
    assert info["Extended"]["MinPoint"] == [0, 0, 32] and info["Extended"]["MaxPoint"] == [95, 31, 95]
    # an xy slice
    xy = requests.get(f"{api}/node/{repo}/grayscale/raw/0_1/8_4/3_2_40")
    np.testing.assert_array_equal(np.frombuffer(xy.content, np.uint8).reshape(4, 8), gray[8, 2:6, 3:11])


def test_labels_lz4_round_trip_is_byte_exact_and_unaligned_posts_change_nothing(api, repo):
    add(api, repo, "labelblk", "seg")
    labels = np.random.default_rng(1).integers(0, 2**64 - 1, (32, 64, 32), dtype=np.uint64)
    assert post_labels(api, repo, "seg", (0, 32, 64), labels).status_code == 200
    np.testing.assert_array_equal(get_labels(api, repo, "seg", labels.shape, (0, 32, 64)), labels)
    # the reply is one raw LZ4 block (no frame header, no size prefix)
    reply = requests.get(raw(api, repo, "seg", labels.shape, (0, 32, 64)), params={"compression": "lz4"})
    assert reply.content == lz4.block.compress(labels.astype("<u8").tobytes(), store_size=False)
    gz = requests.get(raw(api, repo, "seg", (5, 6, 7), (1, 40, 70)), params={"compression": "gzip"})
    np.testing.assert_array_equal(np.frombuffer(gzip.decompress(gz.content), "<u8").reshape(5, 6, 7), labels[1:6, 8:14, 6:13])
    plain = requests.get(raw(api, repo, "seg", (5, 6, 7), (1, 40, 70)))
    np.testing.assert_array_equal(np.frombuffer(plain.content, "<u8").reshape(5, 6, 7), labels[1:6, 8:14, 6:13])
    for offset in [(0, 32, 65), (16, 32, 64)]:
        bad = post_labels(api, repo, "seg", offset, np.ones((32, 32, 32), np.uint64))
        assert bad.status_code == 400 and 'cannot store labels for data "seg" in non-block aligned geometry' in bad.text
    np.testing.assert_array_equal(get_labels(api, repo, "seg", labels.shape, (0, 32, 64)), labels)
    empty = requests.post(raw(api, repo, "seg", (32, 32, 32), (0, 0, 0)), params={"compression": "lz4"}, data=b"")
    assert empty.status_code == 400 and "0 LZ4" in empty.text
    wrong = post_labels(api, repo, "seg", (0, 0, 0), np.ones((32, 32, 32), np.uint64)[:, :, :16].copy())
    assert wrong.status_code == 400
    assert requests.get(raw(api, repo, "seg", (1, 1, 1), (0, 0, 0)), params={"compression": "zstd"}).status_code == 400
    point = requests.get(f"{api}/node/{repo}/seg/label/65_33_0").json()
    assert point == {"Label": int(labels[0, 1, 1])}


def test_label_block_streams_omit_unwritten_blocks(api, repo):
    add(api, repo, "labelblk", "seg")
    labels = np.random.default_rng(3).integers(0, 50, (32, 32, 64), dtype=np.uint64)
    post_labels(api, repo, "seg", (32, 0, 32), labels)
    for compression in ("lz4", "uncompressed"):
        reply = requests.get(f"{api}/node/{repo}/seg/blocks/128_64_64/0_0_0", params={"compression": compression})
        assert reply.status_code == 200
        stream, records = reply.content, {}
        while stream:
            bx, by, bz, n = np.frombuffer(stream[:16], "<i4")
            data = stream[16 : 16 + n]
            if compression == "lz4":
                data = lz4.block.decompress(data, uncompressed_size=32**3 * 8)
            records[(int(bz), int(by), int(bx))] = np.frombuffer(data, "<u8").reshape(32, 32, 32)
            stream = stream[16 + n :]
        assert sorted(records) == [(1, 0, 1), (1, 0, 2)]
        np.testing.assert_array_equal(records[(1, 0, 2)], labels[:, :, 32:])
    assert requests.get(f"{api}/node/{repo}/seg/blocks/64_64_64/0_0_16").status_code == 400


def test_labelarray_writes_need_its_64_blocks(api, repo):
    add(api, repo, "labelarray", "seg")
    assert post_labels(api, repo, "seg", (0, 0, 0), np.ones((32, 32, 32), np.uint64)).status_code == 400
    assert post_labels(api, repo, "seg", (64, 0, 0), np.full((64, 64, 64), 7, np.uint64)).status_code == 200
    assert requests.get(f"{api}/node/{repo}/seg/maxlabel").json() == {"maxlabel": 7}
    requests.post(f"{api}/node/{repo}/commit", json={})
    child = requests.post(f"{api}/node/{repo}/newversion", json={}).json()["child"]
    assert post_labels(api, child, "seg", (64, 0, 0), np.full((64, 64, 64), 3, np.uint64)).status_code == 200
    assert requests.get(f"{api}/node/{child}/seg/maxlabel").json() == {"maxlabel": 3}  # the child's own view
    assert requests.get(f"{api}/node/{repo}/seg/maxlabel").json() == {"maxlabel": 7}


def test_versions_copy_on_write_and_locked_nodes(api, repo):
    add(api, repo, "labelblk", "seg")
    add(api, repo, "keyvalue", "kv")
    parent = np.full((32, 32, 32), 5, np.uint64)
    post_labels(api, repo, "seg", (0, 0, 0), parent)
    requests.post(f"{api}/node/{repo}/kv/key/a", data=b"parent")
    assert requests.post(f"{api}/node/{repo}/newversion", json={}).status_code == 400  # parent not committed yet
    assert requests.get(f"{api}/node/{repo}/commit").json() == {"Locked": False}
    assert requests.post(f"{api}/node/{repo}/commit", json={"note": "done"}).json() == {"committed": repo}
    assert requests.get(f"{api}/node/{repo}/status").json() == {"Locked": True}
    assert requests.post(f"{api}/node/{repo}/commit", json={}).status_code == 400
    locked = post_labels(api, repo, "seg", (0, 0, 0), np.ones((32, 32, 32), np.uint64))
    assert locked.status_code == 400 and "locked node" in locked.text
    assert add(api, repo, "labelblk", "other").status_code == 400
    child = requests.post(f"{api}/node/{repo}/newversion", json={"note": "next"}).json()["child"]
    assert len(child) == 32 and child != repo
    # the child sees the parent's blocks; writing the child leaves the parent unchanged
    np.testing.assert_array_equal(get_labels(api, child, "seg", (32, 32, 32), (0, 0, 0)), parent)
    assert requests.get(f"{api}/node/{child}/kv/key/a").content == b"parent"
    changed = np.full((32, 32, 32), 9, np.uint64)
    assert post_labels(api, child, "seg", (0, 0, 0), changed).status_code == 200
    requests.post(f"{api}/node/{child}/kv/key/a", data=b"child")
    np.testing.assert_array_equal(get_labels(api, child, "seg", (32, 32, 32), (0, 0, 0)), changed)
    np.testing.assert_array_equal(get_labels(api, repo, "seg", (32, 32, 32), (0, 0, 0)), parent)
    assert requests.get(f"{api}/node/{repo}/kv/key/a").content == b"parent"
    # branches: names are unique, master names the root's branch
    branch = requests.post(f"{api}/node/{repo}/branch", json={"branch": "proofread"}).json()["child"]
    assert requests.post(f"{api}/node/{repo}/branch", json={"branch": "proofread"}).status_code == 400
    assert requests.get(f"{api}/node/{repo}:proofread/commit").status_code == 200
    np.testing.assert_array_equal(get_labels(api, f"{repo[:6]}:master", "seg", (32, 32, 32), (0, 0, 0)), changed)
    np.testing.assert_array_equal(get_labels(api, branch, "seg", (32, 32, 32), (0, 0, 0)), parent)


def test_roi_runs_partition_and_roi_masked_writes(api, repo):
    add(api, repo, "roi", "roi")
    add(api, repo, "labelblk", "seg")
    runs = [[1, 0, 2, 3], [0, 0, 0, 1], [0, 0, 1, 2], [1, 1, 0, 0]]  # unsorted and overlapping
    assert requests.post(f"{api}/node/{repo}/roi/roi", json=runs).status_code == 200
    assert requests.get(f"{api}/node/{repo}/roi/roi").json() == [[0, 0, 0, 2], [1, 0, 2, 3], [1, 1, 0, 0]]
    ext = requests.get(f"{api}/node/{repo}/roi/info").json()["Extended"]
    assert (ext["MinZ"], ext["MaxZ"]) == (0, 1)
    blocks = {(0, 0, x) for x in range(3)} | {(1, 0, 2), (1, 0, 3), (1, 1, 0)}
    partition = requests.get(f"{api}/node/{repo}/roi/partition", params={"batchsize": 2}).json()
    assert partition["NumActiveBlocks"] == len(blocks)
    covered = set()
    for sub in partition["Subvolumes"]:
        lo, hi = np.array(sub["MinPoint"][::-1]) // 32, np.array(sub["MaxPoint"][::-1]) // 32
        inside = {b for b in blocks if np.all(lo <= b) and np.all(np.array(b) <= hi)}
        assert sub["ActiveBlocks"] == len(inside) > 0
        covered |= inside
    assert covered == blocks
    assert requests.post(f"{api}/node/{repo}/roi/ptquery", json=[[70, 0, 0], [70, 0, 64], [0, 40, 40]]).json() == [
        True, False, True]
    mask = np.frombuffer(requests.get(f"{api}/node/{repo}/roi/mask/0_1_2/128_64_64/0_0_0").content, np.uint8)
    mask = mask.reshape(64, 64, 128)
    for z, y, x in np.ndindex(2, 2, 4):
        assert mask[z * 32, y * 32, x * 32] == ((z, y, x) in blocks)
    # a write with roi= leaves blocks outside the ROI untouched; a read with roi= zeroes them
    old = np.full((64, 64, 128), 3, np.uint64)
    post_labels(api, repo, "seg", (0, 0, 0), old)
    assert post_labels(api, repo, "seg", (0, 0, 0), np.full_like(old, 8), roi="roi").status_code == 200
    got = get_labels(api, repo, "seg", old.shape, (0, 0, 0))
    for z, y, x in np.ndindex(2, 2, 4):
        assert got[z * 32, y * 32, x * 32] == (8 if (z, y, x) in blocks else 3)
    masked = get_labels(api, repo, "seg", old.shape, (0, 0, 0), roi="roi")
    for z, y, x in np.ndindex(2, 2, 4):
        assert masked[z * 32 + 5, y * 32 + 5, x * 32 + 5] == (8 if (z, y, x) in blocks else 0)


def test_keyvalue(api, repo):
    add(api, repo, "keyvalue", "kv")
    assert requests.get(f"{api}/node/{repo}/kv/key/missing").status_code == 404
    assert requests.post(f"{api}/node/{repo}/kv/key/config", data=b'{"a": 1}').status_code == 200
    assert requests.post(f"{api}/node/{repo}/kv/key/bodies", data=b"[1, 2]").status_code == 200
    assert requests.get(f"{api}/node/{repo}/kv/key/config").json() == {"a": 1}
    assert requests.get(f"{api}/node/{repo}/kv/keys").json() == ["bodies", "config"]
    assert requests.get(f"{api}/node/{repo}/kv/keyrange/a/c").json() == ["bodies"]
    assert requests.delete(f"{api}/node/{repo}/kv/key/bodies").status_code == 200
    assert requests.get(f"{api}/node/{repo}/kv/keys").json() == ["config"]


def test_throttling_and_the_forced_503_hook(dvid_server, api, repo):
    add(api, repo, "uint8blk", "grayscale")
    url = raw(api, repo, "grayscale", (4, 4, 4), (0, 0, 0))
    dvid_server.faults.force_503 = 2
    assert [requests.get(url, params={"throttle": "on"}).status_code for _ in range(3)] == [503, 503, 200]
    assert requests.get(url, params={"throttle": "true"}).status_code == 200
    assert requests.post(f"{api}/server/settings", json={"throttle": 0}).status_code == 200
    busy = requests.get(url, params={"throttle": "on"})
    assert busy.status_code == 503 and "throttled operations (max = 0)" in busy.text
    assert requests.get(url).status_code == 200  # unthrottled requests are never refused


def test_injected_faults(dvid_server, api, repo):
    dvid_server.faults.error_rate = 1.0
    assert requests.get(f"{api}/node/{repo}/commit").status_code == 503
    dvid_server.faults.error_rate, dvid_server.faults.drop_rate = 0.0, 1.0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api}/node/{repo}/commit")
    dvid_server.faults.drop_rate = 0.0
    assert requests.get(f"{api}/node/{repo}/commit").status_code == 200


def test_the_server_runs_by_hand_and_serves_a_volume_to_segment(shared_data, tmp_path):
    import json

    from labelstitch.pipeline import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelstitch.testing.dvid", "--port", str(port),
         "--grayscale", f"{shared_data / 'gala_test.npz'}:raw"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        root = proc.stdout.readline().split()[-1]
        assert "stored as (64, 128, 224)" in proc.stdout.readline()
        config = json.loads(proc.stdout.readline())
        reply = requests.get(f"http://127.0.0.1:{port}/api/repo/{root}/info", timeout=5)
        assert reply.json()["Root"] == root
        config["options"]["checkpoint-dir"] = str(tmp_path / "ckpt")
        result = run(config, create_output=True)
        assert result.counts["subvolumes"] == 8 and result.counts["bodies"] > 50
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_requests_too_large_to_serve_get_413_not_an_allocation(dvid_server):
    import http.client

    api = dvid_server.url
    repo = requests.post(f"{api}/repos", json={"alias": "caps"}).json()["root"]
    requests.post(f"{api}/repo/{repo}/instance", json={"typename": "labelblk", "dataname": "seg"})
    huge = requests.get(f"{api}/node/{repo}/seg/raw/0_1_2/4096_4096_4096/0_0_0")
    assert huge.status_code == 413 and "over this server's limit" in huge.text
    stream = requests.get(f"{api}/node/{repo}/seg/blocks/4096_4096_4096/0_0_0")
    assert stream.status_code == 413
    connection = http.client.HTTPConnection(dvid_server.host, dvid_server.port, timeout=10)
    connection.putrequest("POST", f"/api/node/{repo}/seg/raw/0_1_2/32_32_32/0_0_0")
    connection.putheader("Content-Length", str(2**40))  # a body it never sends
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == 413 and b"request body of 1099511627776 bytes" in reply.read()
    connection.close()
    import gzip

    bomb = gzip.compress(bytes(32 * 32 * 32 * 8 * 64))  # inflates to 64 times what a 32^3 box holds
    posted = requests.post(f"{api}/node/{repo}/seg/raw/0_1_2/32_32_32/0_0_0?compression=gzip", data=bomb)
    assert posted.status_code == 400 and "expected 262144 bytes" in posted.text
    assert requests.get(f"{api}/server/info").status_code == 200  # and it still serves


# ----------------------------------------------------------------------------- labelmap (dvid-labelmap.md)


def ref_block(block):
    """A compressed block by the numpy recipe of dvid-labelmap.md section 4, gzipped."""
    gz, gy, gx = (n // 8 for n in block.shape)
    labels = np.unique(block)
    out = struct.pack("<4I", gx, gy, gz, labels.size) + labels.astype("<u8").tobytes()
    if labels.size > 1:
        subs = block.reshape(gz, 8, gy, 8, gx, 8).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 512)
        ns, idx, codes = [], [], b""
        for sb in subs:
            u = np.unique(sb)
            ns.append(u.size)
            idx += np.searchsorted(labels, u).tolist()
            if u.size > 1:
                b = int(np.ceil(np.log2(u.size)))
                c = np.searchsorted(u, sb)
                codes += np.packbits(((c[:, None] >> np.arange(b - 1, -1, -1)) & 1).astype(np.uint8)).tobytes()
        out += np.array(ns, "<u2").tobytes() + np.array(idx, "<u4").tobytes() + codes
    return gzip.compress(out)


def records(blocks):
    """``POST /blocks`` body: ``int32 bx, by, bz, nbytes`` then the gzipped block."""
    return b"".join(struct.pack("<4i", x, y, z, len(data)) + data for (z, y, x), data in blocks)


def varint(v):
    out = b""
    while True:
        out += bytes([(v & 0x7F) | (0x80 if v >> 7 else 0)])
        v >>= 7
        if not v:
            return out


def ld(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def label_index(label, blocks):
    """LabelIndex{blocks: {key: SVCount{counts: {sv: n}}}, label} (dvid-labelmap.md section 6)."""
    body = b""
    for key, counts in blocks.items():
        svc = b"".join(ld(1, varint(8) + varint(sv) + varint(16) + varint(n)) for sv, n in counts.items())
        body += ld(1, varint(8) + varint(key) + ld(2, svc))
    return body + varint(16) + varint(label)


def mapping_ops(ops):
    """MappingOps{mappings: [MappingOp{mapped, original (packed)}]}."""
    return b"".join(ld(1, varint(16) + varint(mapped) + ld(3, b"".join(varint(s) for s in svs))) for mapped, svs in ops)


def key(z, y, x):
    return z << 42 | y << 21 | x


@pytest.fixture
def labelmap(api, repo):
    spec = {"typename": "labelmap", "dataname": "seg", "BlockSize": "32,32,32", "MaxDownresLevel": "1"}
    assert add(api, repo, **{k: v for k, v in spec.items() if k not in ("typename", "dataname")},
               typename="labelmap", name="seg").status_code == 200
    return f"{api}/node/{repo}/seg"


def add(api, uuid, typename, name, **extra):  # noqa: F811 - the same helper, taking keyword names too
    return requests.post(f"{api}/repo/{uuid}/instance", json={"typename": typename, "dataname": name, **extra})


def test_labelmap_instance_config_follows_dvid(api, repo):
    assert add(api, repo, "labelmap", "a", BlockSize=64).status_code == 400  # values must be strings
    assert "was not a string" in add(api, repo, "labelmap", "a", MaxDownresLevel=2).text
    assert add(api, repo, "labelmap", "b", BlockSize="40,40,40").status_code == 400  # multiples of 16
    assert add(api, repo, "labelmap", "c", maxdownreslevel="300").status_code == 400
    assert add(api, repo, "labelmap", "d", maxdownreslevel="2", indexedlabels="false").status_code == 200  # case-insensitive
    info = requests.get(f"{api}/node/{repo}/d/info").json()["Extended"]
    assert info["BlockSize"] == [64, 64, 64] and info["MaxDownresLevel"] == 2 and info["IndexedLabels"] is False
    assert requests.get(f"{api}/node/{repo}/d/maxlabel").status_code == 400  # not indexed: no maxlabel
    assert requests.get(f"{api}/node/{repo}/d/info").json()["Base"]["Compression"] == "gzip"


def test_compressed_blocks_round_trip_with_the_reference_edge_cases(labelmap):
    rng = np.random.default_rng(0)
    vol = np.zeros((32, 32, 64), np.uint64)
    vol[:, :, 32:] = 7  # a solid block: N = 1, 24 bytes before gzip
    vol[:, :, :32] = rng.integers(1, 300, (32, 32, 32)) * 1000  # up to 9-bit codes
    vol[:8, :8, :8] = 5  # a one-label sub-block inside a mixed block
    vol[8:16, :8, :8] = rng.integers(1, 3, (8, 8, 8))  # 1-bit codes
    assert len(gzip.decompress(ref_block(vol[:, :, 32:]))) == 24
    body = records([((0, 0, 0), ref_block(vol[:, :, :32])), ((0, 0, 1), ref_block(vol[:, :, 32:]))])
    assert requests.post(f"{labelmap}/blocks", params={"noindexing": "true"}, data=body).status_code == 200
    got = requests.get(f"{labelmap}/raw/0_1_2/64_32_32/0_0_0", params={"supervoxels": "true"})
    np.testing.assert_array_equal(np.frombuffer(got.content, "<u8").reshape(vol.shape), vol)
    stream = requests.get(f"{labelmap}/blocks/64_32_32/0_0_0", params={"compression": "blocks", "supervoxels": "true"}).content
    bx, by, bz, n = struct.unpack_from("<4i", stream)  # records in any order; each decodes to its block
    assert gzip.decompress(stream[16 : 16 + n]) == gzip.decompress(ref_block(vol[:, :, bx * 32 : bx * 32 + 32]))
    # the reference's refusals; records before a bad one stay stored
    empty = struct.pack("<4I", 4, 4, 4, 0)
    for bad in (records([((0, 0, 2), gzip.compress(empty))]),  # 0 labels
                struct.pack("<4i", 2, 0, 0, 0),  # nbytes 0
                records([((0, 0, 2), ref_block(np.zeros((64, 64, 64), np.uint64)))])):  # 8x8x8 sub-blocks, not 4x4x4
        assert requests.post(f"{labelmap}/blocks", data=bad).status_code == 400
    assert requests.post(f"{labelmap}/blocks", params={"compression": "lz4"}, data=body).status_code == 400
    assert requests.post(f"{labelmap}/blocks", params={"downres": "true", "scale": "1"}, data=body).status_code == 400


def test_indices_mappings_and_the_endpoints_that_read_them(labelmap):
    vol = np.zeros((32, 32, 64), np.uint64)
    vol[:, :, :20], vol[:, :, 20:40], vol[:, :, 40:] = 11, 12, 13
    assert requests.get(f"{labelmap}/maxlabel").status_code == 400  # nothing recorded yet
    body = records([((0, 0, x), ref_block(vol[:, :, 32 * x : 32 * x + 32])) for x in (0, 1)])
    assert requests.post(f"{labelmap}/blocks", params={"noindexing": "true"}, data=body).ok
    assert requests.get(f"{labelmap}/maxlabel").json() == {"maxlabel": 13}  # set from the block labels
    assert requests.get(f"{labelmap}/supervoxels/100").status_code == 404  # no index: no body
    assert requests.get(f"{labelmap}/supervoxels/0").status_code == 400
    n = 32 * 32
    indices = ld(1, label_index(100, {key(0, 0, 0): {11: 20 * n, 12: 12 * n}, key(0, 0, 1): {12: 8 * n}}))
    indices += ld(1, label_index(101, {key(0, 0, 1): {13: 24 * n}}))
    indices += ld(1, varint(16) + varint(13))  # a tombstone for a supervoxel id that is not a body
    assert requests.post(f"{labelmap}/indices", data=indices).ok
    assert requests.post(f"{labelmap}/mappings", data=mapping_ops([(100, [11, 12]), (101, [13])])).ok
    assert requests.get(f"{labelmap}/maxlabel").json() == {"maxlabel": 101}  # raised by /indices
    assert sorted(requests.get(f"{labelmap}/supervoxels/100").json()) == [11, 12]
    assert requests.get(f"{labelmap}/size/100").json() == {"voxels": 40 * n}
    assert requests.get(f"{labelmap}/size/12", params={"supervoxels": "true"}).json() == {"voxels": 20 * n}
    assert requests.get(f"{labelmap}/size/7").status_code == 404
    assert requests.get(f"{labelmap}/sizes", json=[100, 101, 5]).json() == [40 * n, 24 * n, 0]
    assert requests.get(f"{labelmap}/mapping", json=[11, 12, 13, 99]).json() == [100, 100, 101, 0]
    assert requests.get(f"{labelmap}/mapping", json=[99], params={"nolookup": "true"}).json() == [99]
    assert requests.get(f"{labelmap}/mappings").text.split("\n")[:3] == ["11 100", "12 100", "13 101"]
    binary = np.frombuffer(requests.get(f"{labelmap}/mappings", params={"format": "binary"}).content, "<u8")
    assert binary.reshape(-1, 2).tolist() == [[11, 100], [12, 100], [13, 101]]
    mapped = requests.get(f"{labelmap}/raw/0_1_2/64_32_32/0_0_0")  # without supervoxels=true: bodies
    assert np.unique(np.frombuffer(mapped.content, "<u8")).tolist() == [100, 101]
    assert requests.get(f"{labelmap}/label/25_3_3").json() == {"Label": 100}
    assert requests.get(f"{labelmap}/labels", json=[[25, 3, 3], [50, 0, 0]], params={"supervoxels": "true"}).json() == [12, 13]
    index = requests.get(f"{labelmap}/index/100")
    assert index.ok and index.content.endswith(varint(16) + varint(100))
    assert requests.get(f"{labelmap}/index/100", params={"metadata-only": "true"}).json()["num_voxels"] == 40 * n
    assert requests.post(f"{labelmap}/index/102", data=label_index(100, {})).status_code == 400  # label differs from the URL
    assert requests.post(f"{labelmap}/indices", data=ld(1, label_index(0, {1: {1: 1}}))).status_code == 400
    # a proofreader's cleave takes a fresh id above maxlabel; a merge joins the indices again
    cleave = requests.post(f"{labelmap}/cleave/100", json=[12]).json()
    assert cleave["CleavedLabel"] == 102 and requests.get(f"{labelmap}/mapping", json=[11, 12]).json() == [100, 102]
    assert requests.get(f"{labelmap}/sizes", json=[100, 102]).json() == [20 * n, 20 * n]
    assert requests.post(f"{labelmap}/cleave/100", json=[11]).status_code == 400  # would empty the body
    assert requests.post(f"{labelmap}/merge", json=[100, 102]).ok
    assert requests.get(f"{labelmap}/size/100").json() == {"voxels": 40 * n}
    assert requests.get(f"{labelmap}/supervoxels/102").status_code == 404
    assert requests.post(f"{labelmap}/maxlabel/500").status_code == 400  # admin only
    assert requests.get(f"{labelmap}/nextlabel").json() == {"nextlabel": 103}
    assert requests.post(f"{labelmap}/nextlabel/5").json() == {"start": 103, "end": 107}


def test_raw_writes_index_downres_and_keep_dvid_quirks(labelmap):
    vol = np.zeros((32, 32, 32), np.uint64)
    vol[:, :, :16] = 5
    vol[:, :, 16:] = 6
    assert post_labels_url(labelmap, vol).ok  # /raw always indexes: each sv its own body at first
    assert requests.get(f"{labelmap}/sizes", json=[5, 6]).json() == [16 * 1024, 16 * 1024]
    assert post_labels_url(labelmap, vol).ok  # without mutate=true a rewrite adds blindly
    assert requests.get(f"{labelmap}/size/5").json() == {"voxels": 32 * 1024}
    assert post_labels_url(labelmap, vol, mutate="true").ok  # with it the old block is diffed
    assert requests.get(f"{labelmap}/size/5").json() == {"voxels": 32 * 1024}
    # once sv 7 is mapped to body 5, /raw voxels of sv 7 are not indexed (body 5's index lacks it)
    assert requests.post(f"{labelmap.rsplit('/', 1)[0]}/seg/mappings", data=mapping_ops([(5, [7])])).ok
    vol[:, :, 16:] = 7
    assert post_labels_url(labelmap, vol, mutate="true").ok
    assert requests.get(f"{labelmap}/size/5").json() == {"voxels": 32 * 1024}
    # the diff took one write's worth off sv 6; the blind rewrite's double count stays, as in DVID
    assert requests.get(f"{labelmap}/size/6").json() == {"voxels": 16 * 1024}
    # scale 1 was recomputed: the most frequent non-zero label of each 2x2x2 cell
    low = requests.get(f"{labelmap}/raw/0_1_2/16_16_16/0_0_0", params={"scale": "1", "supervoxels": "true"})
    expected = np.zeros((16, 16, 16), np.uint64)
    expected[:, :, :8], expected[:, :, 8:] = 5, 7
    np.testing.assert_array_equal(np.frombuffer(low.content, "<u8").reshape(16, 16, 16), expected)
    assert requests.get(f"{labelmap}/raw/0_1_2/16_16_16/0_0_0", params={"scale": "2"}).status_code == 400


def post_labels_url(url, labels, **params):
    size = "_".join(map(str, labels.shape[::-1]))
    return requests.post(f"{url}/raw/0_1_2/{size}/0_0_0", data=labels.astype("<u8").tobytes(), params=params)


def test_a_child_version_maps_and_indexes_apart_from_its_parent(api, repo, labelmap):
    block = np.full((32, 32, 32), 3, np.uint64)
    assert requests.post(f"{labelmap}/blocks", params={"noindexing": "true"}, data=records([((0, 0, 0), ref_block(block))])).ok
    assert requests.post(f"{labelmap}/indices", data=ld(1, label_index(9, {key(0, 0, 0): {3: 32**3}}))).ok
    assert requests.post(f"{labelmap}/mappings", data=mapping_ops([(9, [3])])).ok
    assert requests.post(f"{api}/node/{repo}/commit", json={"note": "done"}).ok
    assert requests.post(f"{labelmap}/mappings", data=mapping_ops([(8, [3])])).status_code == 400  # locked
    child = requests.post(f"{api}/node/{repo}/newversion", json={}).json()["child"]
    other = f"{api}/node/{child}/seg"
    assert requests.post(f"{other}/cleave/9", json=[3]).status_code == 400  # its only supervoxel
    assert requests.post(f"{other}/mappings", data=mapping_ops([(20, [3])])).ok
    assert requests.get(f"{other}/mapping", json=[3], params={"nolookup": "true"}).json() == [20]
    assert requests.get(f"{labelmap}/mapping", json=[3]).json() == [9]


def test_tarsupervoxels_files_and_a_bodys_tar_through_the_synced_labelmap(api, repo, labelmap):
    """DVID's tarsupervoxels help text: an Extension is required, ``load`` takes a tar of
    ``ID.EXT`` files, ``tarfile/BODY`` gives the body's supervoxels' files (``ID.missing`` for
    one without), ``HEAD`` says whether all are there, ``exists`` answers per supervoxel."""
    import io
    import tarfile

    assert add(api, repo, "tarsupervoxels", "svm").status_code == 400  # no Extension
    assert add(api, repo, "tarsupervoxels", "svm", Extension="drc").status_code == 200
    svm = f"{api}/node/{repo}/svm"
    assert requests.get(f"{svm}/info").json()["Extended"] == {"Extension": "drc"}
    n = 32**3 // 64
    indices = ld(1, label_index(100, {key(0, 0, 0): {11: 20 * n, 12: 12 * n}, key(0, 0, 1): {12: 8 * n}}))
    assert requests.post(f"{labelmap}/indices", data=indices).ok
    assert requests.get(f"{svm}/tarfile/100").status_code == 400  # not synced to the labelmap yet
    assert requests.post(f"{svm}/sync", json={"sync": "seg"}).ok

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("11.drc", b"eleven"), ("13.drc", b"thirteen")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    assert requests.post(f"{svm}/load", data=buffer.getvalue()).ok
    assert requests.get(f"{svm}/supervoxel/11").content == b"eleven"
    assert requests.get(f"{svm}/exists", json=[11, 12, 13]).json() == [True, False, True]
    assert requests.head(f"{svm}/tarfile/100").status_code == 400  # supervoxel 12 has no file
    with tarfile.open(fileobj=io.BytesIO(requests.get(f"{svm}/tarfile/100").content)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == ["11.drc", "12.missing"]
    assert requests.post(f"{svm}/supervoxel/12", data=b"twelve").ok
    assert requests.head(f"{svm}/tarfile/100").status_code == 200
    with tarfile.open(fileobj=io.BytesIO(requests.get(f"{svm}/tarfile/100").content)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == {"11.drc": b"eleven", "12.drc": b"twelve"}
    assert requests.delete(f"{svm}/supervoxel/12").ok
    assert requests.get(f"{svm}/supervoxel/12").status_code == 404
    assert requests.get(f"{svm}/tarfile/999").status_code == 400  # no such body
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("11.obj"), io.BytesIO(b""))
    assert requests.post(f"{svm}/load", data=bad.getvalue()).status_code == 400  # not the instance's extension
