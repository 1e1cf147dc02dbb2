"""DVID transfer speed: the dvid:// client against the local zarr store, in one run.

    .venv/bin/python benchmarks/bench_dvid.py

The DVID test server (``labelstitch.testing.dvid``) runs in its own process on
127.0.0.1, so client and server each have a core. Every transfer is a 128^3 box of a
256^3 volume (the size of a subvolume write); MB/s counts uncompressed voxel bytes.

- labels: realistic neurite labels (uint64) written and read through ``DvidStore``
  (raw LZ4 blocks, as DVIDSparkServices sends them) and through plain uncompressed
  requests, against a zarr array with 128^3 chunks (zstd, zarr's default);
- grayscale: synthetic EM (uint8) read through ``DvidStore`` (DVID sends grayscale
  uncompressed) against zarr.

The test server is pure Python, so these numbers measure the client and the wire format
over loopback, not what a real DVID (Go, with its own block store) sustains.

A second table times DVID's compressed label-block encoding (``labelmap`` outputs) on the
same labels cut into 64^3 blocks: the client's numba encoder (which also counts each block's
supervoxels) against the reference's numpy recipe, in voxels per second, and the bytes
posted against the raw uint64 labels.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

from labelstitch.geometry import Box
from labelstitch.stores import create_volume, open_volume
from labelstitch.stores._dvid import dvid_request
from labelstitch.stores._dvid_labelmap import encode_block, gzip_bytes
from labelstitch.testing._labelmap import encode_block as reference_encode
from labelstitch.synthetic import em_volume

SHAPE = (256, 256, 256)
BOX = 128
REPEAT = 3


def boxes() -> list[Box]:
    return [Box((z, y, x), (z + BOX, y + BOX, x + BOX)) for z in (0, 128) for y in (0, 128) for x in (0, 128)]


def timed(fn, nbytes: int) -> float:
    """Best MB/s of REPEAT runs of ``fn``."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return nbytes / 1e6 / best


def serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelstitch.testing.dvid", "--port", str(port), "--throttle", "4"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/api/server/info", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def raw_path(node: str, name: str, box: Box) -> str:
    return f"node/{node}/{name}/raw/0_1_2/{'_'.join(map(str, box.shape[::-1]))}/{'_'.join(map(str, box.start[::-1]))}"


def main() -> None:
    gray, truth = em_volume(SHAPE, seed=0)
    labels = truth.astype(np.uint64)
    label_bytes = labels.nbytes
    gray_bytes = gray.nbytes
    proc, server = serve()
    rows = []
    try:
        root = dvid_request(server, "POST", "repos", json_body={}).json()["root"]
        node = f"dvid://{server}/{root}"
        with tempfile.TemporaryDirectory() as tmp:
            zarr_labels = create_volume(f"{tmp}/labels.zarr", SHAPE, np.uint64, chunks=(BOX,) * 3, staged=False)
            # a labelblk: the server neither indexes nor downsamples, so this times the transfer
            dvid_labels = create_volume(f"{node}/labels?type=labelblk", SHAPE, np.uint64, create_instance=True)
            dvid_request(server, "POST", f"repo/{root}/instance", json_body={"typename": "labelblk", "dataname": "plain"})

            def write_all(store):
                return lambda: [store.write(b, labels[b.slices()]) for b in boxes()]

            def write_plain():
                for b in boxes():
                    body = np.ascontiguousarray(labels[b.slices()], "<u8").tobytes()
                    dvid_request(server, "POST", raw_path(root, "plain", b), data=body, throttle=True)

            rows.append(("write labels", "zarr (zstd)", timed(write_all(zarr_labels), label_bytes)))
            rows.append(("write labels", "dvid, lz4", timed(write_all(dvid_labels), label_bytes)))
            rows.append(("write labels", "dvid, uncompressed", timed(write_plain, label_bytes)))

            def read_all(store):
                return lambda: [store.read(b) for b in boxes()]

            def read_plain():
                for b in boxes():
                    reply = dvid_request(server, "GET", raw_path(root, "plain", b), throttle=True)
                    np.frombuffer(reply.content, "<u8").reshape(b.shape)

            rows.append(("read labels", "zarr (zstd)", timed(read_all(zarr_labels), label_bytes)))
            rows.append(("read labels", "dvid, lz4", timed(read_all(open_volume(f"{node}/labels")), label_bytes)))
            rows.append(("read labels", "dvid, uncompressed", timed(read_plain, label_bytes)))
            check = open_volume(f"{node}/labels").read(Box((0, 0, 0), SHAPE))
            assert np.array_equal(check, labels), "DVID round trip changed the labels"

            zarr_gray = create_volume(f"{tmp}/gray.zarr", SHAPE, np.uint8, chunks=(BOX,) * 3, staged=False)
            zarr_gray.write(Box((0, 0, 0), SHAPE), gray)
            dvid_request(server, "POST", f"repo/{root}/instance", json_body={"typename": "uint8blk", "dataname": "gray"})
            dvid_request(server, "POST", raw_path(root, "gray", Box((0, 0, 0), SHAPE)), data=gray.tobytes())
            rows.append(("read grayscale", "zarr (zstd)", timed(read_all(zarr_gray), gray_bytes)))
            rows.append(("read grayscale", "dvid (uncompressed)", timed(read_all(open_volume(f"{node}/gray")), gray_bytes)))
            ratio = label_bytes / sum(
                len(dvid_request(server, "GET", raw_path(root, "labels", b), params={"compression": "lz4"}).content)
                for b in boxes()
            )
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"volume {SHAPE}, {len(boxes())} boxes of {BOX}^3, best of {REPEAT}; lz4 ratio on these labels {ratio:.0f}x")
    print(f"{'transfer':<16}{'store':<22}{'MB/s':>8}")
    for what, store, rate in rows:
        print(f"{what:<16}{store:<22}{rate:>8.0f}")
    encode_table(labels)


def encode_table(labels: np.ndarray) -> None:
    blocks = [np.ascontiguousarray(labels[z : z + 64, y : y + 64, x : x + 64])
              for z in range(0, SHAPE[0], 64) for y in range(0, SHAPE[1], 64) for x in range(0, SHAPE[2], 64)]
    encode_block(blocks[0])  # compile
    voxels = sum(b.size for b in blocks)
    timings = {}
    for name, fn in [("numba (labelstitch)", lambda b: encode_block(b)[0]), ("numpy (reference recipe)", reference_encode)]:
        start = time.perf_counter()
        out = [fn(b) for b in blocks]
        timings[name] = time.perf_counter() - start
    assert [encode_block(b)[0] for b in blocks] == out, "the encoders disagree"
    start = time.perf_counter()
    posted = sum(len(gzip_bytes(d)) for d in out)
    gzip_seconds = time.perf_counter() - start
    print(f"\nDVID compressed blocks: {len(blocks)} blocks of 64^3, {voxels * 8 / posted:.0f}x smaller than raw uint64 "
          f"once gzipped (gzip level 1: {voxels / gzip_seconds / 1e6:.0f} Mvoxel/s)")
    print(f"{'encoder':<26}{'Mvoxel/s':>10}{'ratio':>8}")
    for name, seconds in timings.items():
        print(f"{name:<26}{voxels / seconds / 1e6:>10.1f}{timings['numpy (reference recipe)'] / seconds:>8.1f}")


if __name__ == "__main__":
    main()
