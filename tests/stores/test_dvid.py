"""The dvid:// store against the DVID test server on loopback: reads, aligned writes,
metadata, the checks before a run, and retries."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import requests

from labelstitch.geometry import Box
from labelstitch.stores import DvidError, StoreError, check_output, create_volume, open_volume, volume_exists
from labelstitch.stores._dvid_client import _session, dvid_request


@pytest.fixture
def node(dvid_server):
    root = requests.post(f"{dvid_server.url}/repos", json={}).json()["root"]
    return f"dvid://{dvid_server.address}/{root}"


def post_gray(dvid_server, node, name, gray):
    uuid = node.rsplit("/", 1)[1]
    requests.post(f"{dvid_server.url}/repo/{uuid}/instance", json={"typename": "uint8blk", "dataname": name})
    size = "_".join(map(str, gray.shape[::-1]))
    assert requests.post(f"{dvid_server.url}/node/{uuid}/{name}/raw/0_1_2/{size}/0_0_0", data=gray.tobytes()).ok


def test_grayscale_reads_any_box_and_every_call_names_user_and_app(dvid_server, node):
    gray = np.random.default_rng(0).integers(0, 256, (32, 64, 96), dtype=np.uint8)
    post_gray(dvid_server, node, "grayscale", gray)
    setup = len(dvid_server.state.log)  # the plain requests above
    with open_volume(f"{node}/grayscale") as volume:
        assert volume.shape == gray.shape and volume.dtype == np.uint8 and not volume.bounded
        np.testing.assert_array_equal(volume.read(Box((3, 5, 7), (29, 60, 90))), gray[3:29, 5:60, 7:90])
        outside = volume.read(Box((-4, 60, 90), (4, 70, 100)))  # DVID answers 0 where nothing was written
        np.testing.assert_array_equal(outside[4:, :4, :6], gray[:4, 60:, 90:])
        assert outside[:4].max() == 0
    calls = list(dvid_server.state.log)[setup:]
    assert calls and all(p.get("app") == "labelstitch" and p.get("u") for _, _, p in calls)
    assert all(p.get("throttle") == "on" for _, path, p in calls if "/raw/" in path)


def test_labels_round_trip_aligned_writes_padding_and_metadata(dvid_server, node):
    uri = f"{node}/seg"
    assert check_output(uri, create_instance=True) == (32, 32, 32)
    labels = np.random.default_rng(1).integers(0, 2**63, (40, 64, 70), dtype=np.uint64)
    with create_volume(uri, labels.shape, np.uint64, create_instance=True) as out:
        out.write(Box((0, 0, 0), (32, 64, 64)), labels[:32, :, :64])
        out.write(Box((32, 0, 64), (40, 64, 70)), labels[32:, :, 64:])  # ends at the volume's edge: padded
        with pytest.raises(StoreError, match="whole 32-voxel DVID blocks.*axis X"):
            out.write(Box((0, 0, 16), (32, 32, 48)), labels[:32, :32, 16:48])
        out.write(Box((32, 0, 0), (40, 64, 64)), labels[32:, :, :64])
        out.write(Box((0, 0, 64), (32, 64, 70)), labels[:32, :, 64:])
        out.set_metadata({"note": "hello"})
    info = requests.get(f"{dvid_server.url}/node/{uri.split('/')[-2]}/seg/info").json()
    assert info["Base"]["TypeName"] == "labelmap" and info["Extended"]["BlockSize"] == [32, 32, 32]
    with open_volume(uri) as back:
        assert back.shape == labels.shape  # from labelstitch's metadata, not DVID's padded extents
        np.testing.assert_array_equal(back.read(), labels)
        assert back.metadata["note"] == "hello"
        with pytest.raises(StoreError, match="read-only"):
            back.write(Box((0, 0, 0), (32, 32, 32)), labels[:32, :32, :32])
    assert volume_exists(uri)


def test_output_checks_before_any_work(dvid_server, node):
    uuid = node.rsplit("/", 1)[1]
    with pytest.raises(StoreError, match="pass --create-output"):
        check_output(f"{node}/missing")
    post_gray(dvid_server, node, "grayscale", np.zeros((32, 32, 32), np.uint8))
    with pytest.raises(StoreError, match="is a uint8blk instance"):
        check_output(f"{node}/grayscale")
    with create_volume(f"{node}/seg", (32, 32, 32), np.uint64, create_instance=True) as out:
        out.write(Box((0, 0, 0), (32, 32, 32)), np.ones((32, 32, 32), np.uint64))
    with pytest.raises(StoreError, match="holds labels already; pass overwrite"):
        check_output(f"{node}/seg")
    # a labelmap keeps supervoxels by default, and their label indices cannot be listed to clear
    with pytest.raises(StoreError, match="would leave stale bodies.*dvid-write: bodies"):
        check_output(f"{node}/seg", overwrite=True)
    assert check_output(f"{node}/seg?write=bodies", overwrite=True) == (32, 32, 32)
    with pytest.raises(StoreError, match="write='cells'; use supervoxels or bodies"):
        check_output(f"{node}/seg?write=cells")
    requests.post(f"{dvid_server.url}/node/{uuid}/commit", json={})
    with pytest.raises(StoreError, match="committed \\(locked\\).*newversion"):
        check_output(f"{node}/seg?write=bodies", overwrite=True)
    # and if a write reaches a locked node anyway, DVID's own message comes through
    with open_volume(f"{node}/seg", read_only=False) as store:
        with pytest.raises(DvidError, match="400 Cannot do POST on locked node"):
            store.write(Box((0, 0, 0), (32, 32, 32)), np.ones((32, 32, 32), np.uint64))
    with pytest.raises(StoreError, match="not a DVID volume"):
        open_volume("dvid://127.0.0.1:1/only-one-part")
    with pytest.raises(StoreError, match="unknown option"):
        open_volume(f"{node}/seg?colour=red")


def test_busy_and_flaky_servers_are_retried(dvid_server, node):
    gray = np.random.default_rng(2).integers(0, 256, (32, 32, 64), dtype=np.uint8)
    post_gray(dvid_server, node, "grayscale", gray)
    volume = open_volume(f"{node}/grayscale")
    dvid_server.faults.force_503 = 5
    np.testing.assert_array_equal(volume.read(), gray)
    assert dvid_server.faults.force_503 == 0 and dvid_server.state.status_counts[503] == 5
    dvid_server.faults.error_rate, dvid_server.faults.drop_rate = 0.3, 0.2
    for _ in range(10):
        np.testing.assert_array_equal(volume.read(Box((1, 2, 3), (30, 31, 60))), gray[1:30, 2:31, 3:60])


def test_refusals_are_not_retried_and_a_dead_server_gives_a_clear_error(dvid_server, node, monkeypatch):
    before = len(dvid_server.state.log)
    with pytest.raises(StoreError, match="no instance 'nothing'"):
        open_volume(f"{node}/nothing")
    assert len(dvid_server.state.log) - before <= 3  # a 400 is DVID's answer, not a hiccup
    monkeypatch.setenv("LABELSTITCH_DVID_RETRIES", "2")
    dvid_server.stop()
    with pytest.raises(DvidError, match=r"failed after 3 attempts; last: no reply.*--resume") as err:
        dvid_request(dvid_server.address, "GET", "repos/info")
    assert err.value.url.endswith("/api/repos/info") and err.value.status is None


def test_one_session_per_process():
    assert _session() is _session()


def test_a_busy_server_has_its_own_larger_retry_budget(dvid_server, node, monkeypatch):
    gray = np.random.default_rng(3).integers(0, 256, (32, 32, 32), dtype=np.uint8)
    post_gray(dvid_server, node, "grayscale", gray)
    volume = open_volume(f"{node}/grayscale")
    monkeypatch.setenv("LABELSTITCH_DVID_RETRIES", "1")
    dvid_server.state.max_throttled_ops = 0  # every throttled call: "already running 0 throttled operations"
    threading.Timer(0.3, lambda: setattr(dvid_server.state, "max_throttled_ops", 1)).start()
    np.testing.assert_array_equal(volume.read(), gray)  # waited out the busy spell despite RETRIES=1
    assert dvid_server.state.status_counts[503] > 2
    monkeypatch.setenv("LABELSTITCH_DVID_BUSY_RETRIES", "2")
    dvid_server.state.max_throttled_ops = 0
    with pytest.raises(DvidError, match="failed after 3 attempts; last: 503 Server already running 0 throttled"):
        volume.read()


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"<html>proxy error</html>", "is not JSON"),
        (b'{"Base": {"TypeName": "uint8blk"}}', "no Extended section"),
        (b'{"Base": {"TypeName": "uint8blk"}, "Extended": {"BlockSize": [32, 32, 32], "MaxPoint": ["a", 1, 2]}}',
         r"Extended.MaxPoint is \['a', 1, 2\], not three whole numbers"),
    ],
)
def test_a_malformed_dvid_reply_is_one_clear_line(reply, message, capsys):
    import http.server
    import threading

    from labelstitch._cli.main import ExitCode, main

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"dvid://127.0.0.1:{server.server_address[1]}/abc123/grayscale"
        with pytest.raises(DvidError, match=message):
            open_volume(uri)
        assert main(["evaluate", uri, uri]) == ExitCode.FAILED
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and ("instance description" in err or "not JSON" in err)
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- labelmap formats


from hypothesis import given, settings, strategies as st  # noqa: E402

from labelstitch.stores._dvid_labelmap import (  # noqa: E402
    block_key, encode_block, encode_label_indices, encode_mapping_ops,
)
from labelstitch.testing import _labelmap as reference  # noqa: E402


@st.composite
def label_blocks(draw):
    """Blocks of 8³ sub-blocks with 1 to ~600 labels, runs and noise, ids up to 2^64 - 1."""
    shape = tuple(8 * draw(st.integers(1, 3)) for _ in range(3))
    n = draw(st.sampled_from([1, 2, 3, 5, 17, 300, 600]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.array([0, 1, 2**64 - 1, 2**40 + 3], np.uint64), 2, replace=False)
    palette = np.unique(np.concatenate([ids, rng.integers(0, 2**63, n, dtype=np.uint64)]))[:n]
    block = palette[rng.integers(0, palette.size, shape)]
    if draw(st.booleans()):
        block[: shape[0] // 2] = palette[0]  # solid sub-blocks beside mixed ones
    return block


@settings(max_examples=60, deadline=None)
@given(label_blocks())
def test_the_numba_block_encoder_matches_the_reference_format(block):
    data, labels, counts = encode_block(block)
    assert data == reference.encode_block(block)  # byte for byte the numpy recipe of the reference
    np.testing.assert_array_equal(reference.decode_block(data, block.shape), block)
    uniq, expected = np.unique(block, return_counts=True)
    np.testing.assert_array_equal(labels, uniq)
    np.testing.assert_array_equal(counts, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**63), st.integers(0, 2**20 - 1), st.integers(1, 2**63), st.integers(1, 2**32 - 1)),
                min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1], r[2])))
def test_label_indices_and_mappings_parse_back(rows):
    arr = np.array(rows, dtype=np.uint64)
    message = encode_label_indices(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3].astype(np.uint32), mutid=7)
    parsed = {label: (blocks, mutid) for label, blocks, mutid in reference.parse_label_indices(message)}
    expected: dict = {}
    for body, block, sv, n in rows:
        expected.setdefault(body, {}).setdefault(block, {})[sv] = n
    assert {label: blocks for label, (blocks, _) in parsed.items()} == expected
    assert all(mutid == 7 for _, mutid in parsed.values())
    ops = reference.parse_mapping_ops(encode_mapping_ops(arr[:, 0], arr[:, 2]))
    assert {(mapped, sv) for _, mapped, svs in ops for sv in svs} == {(b, s) for b, _, s, _ in rows}


def test_block_keys_pack_as_dvid_does():
    for z, y, x in [(0, 0, 0), (3, 2, 1), (-1, 5, -7), (2**20 - 1, 0, 4)]:
        assert reference.unpack_key(block_key(z, y, x)) == (z, y, x)
    with pytest.raises(ValueError, match="20-bit"):
        block_key(2**20, 0, 0)
