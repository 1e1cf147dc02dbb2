"""Executors and checkpoint codecs, side by side in one run.

    .venv/bin/python benchmarks/bench_executors.py

1. per-item overhead of each executor (a trivial function over 200 items);
2. the same segmentation plan (synthetic EM, 96x192x192 in 48^3 blocks) on serial,
   processes (2 workers) and spark (local[2]): wall time and speed-up over serial;
3. checkpoint codecs on real label blocks (the gala ground truth and the demo's blocks):
   compression ratio, compress and decompress MB/s (crackle-codec / compresso if installed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from labelstitch.codec import decode_labels, encode_labels
from labelstitch.plugins import get_executor
from labelstitch.synthetic import em_volume
from labelstitch.pipeline import run


def noop(x: int) -> int:
    return x


def overhead() -> None:
    print("per-item overhead (200 trivial items):")
    for name in ("serial", "processes", "spark"):
        with get_executor(name, workers=2) as pool:
            list(pool.map(noop, range(4)))  # start workers / the session
            start = time.perf_counter()
            list(pool.map(noop, range(200)))
            per = (time.perf_counter() - start) / 200
        print(f"  {name:<10} {per * 1e3:8.3f} ms per item")


def pipeline(folder: Path) -> None:
    gray, truth = em_volume((96, 192, 192), n_neurites=150, seed=0)
    np.save(folder / "gray.npy", gray)
    print("the same plan on each executor (96x192x192, 48^3 blocks, overlap 8, 32 subvolumes):")
    base = None
    for name in ("serial", "processes", "spark"):
        config = {
            "input": str(folder / "gray.npy"),
            "output": str(folder / f"{name}.zarr"),
            "options": {
                "chunk-size": 48,
                "overlap": 8,
                "segmentor": {
                    "configuration": {
                        "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                        "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}},
                    }
                },
            },
        }
        with get_executor(name, workers=2) as pool:
            start = time.perf_counter()
            run({**config, "output": str(folder / f"cold-{name}.zarr")}, executor=pool)  # starts and compiles
            cold = time.perf_counter() - start
            start = time.perf_counter()
            result = run(config, executor=pool)  # warm workers
            seconds = time.perf_counter() - start
        base = base or seconds
        print(f"  {name:<10} {seconds:7.2f} s (first run {cold:5.2f} s)   speed-up over serial {base / seconds:4.2f}x   "
              f"(segment {result.seconds['segment']:.2f} s, stitch {result.seconds['stitch']:.2f} s, "
              f"write {result.seconds['write']:.2f} s)")


def codecs(blocks: list[np.ndarray]) -> None:
    raw = sum(b.nbytes for b in blocks)
    print(f"checkpoint codecs on {len(blocks)} uint64 label blocks ({raw / 1e6:.1f} MB):")
    candidates = {"lz4": lambda b: encode_labels(b, "lz4"), "zlib": lambda b: encode_labels(b, "zlib")}
    decoders = {"lz4": decode_labels, "zlib": decode_labels}
    try:
        import crackle

        candidates["crackle"] = lambda b: crackle.compress(b)
        decoders["crackle"] = crackle.decompress
    except ImportError:
        print("  (crackle-codec not installed)")
    try:
        import compresso

        candidates["compresso"] = lambda b: compresso.compress(b)
        decoders["compresso"] = compresso.decompress
    except ImportError:
        print("  (compresso not installed)")
    for name, enc in candidates.items():
        start = time.perf_counter()
        packed = [enc(b) for b in blocks]
        t_enc = time.perf_counter() - start
        start = time.perf_counter()
        for p in packed:
            decoders[name](p)
        t_dec = time.perf_counter() - start
        size = sum(len(p) for p in packed)
        print(f"  {name:<10} ratio {raw / size:7.1f}x   compress {raw / t_enc / 1e6:8.0f} MB/s   "
              f"decompress {raw / t_dec / 1e6:8.0f} MB/s")


def main() -> None:
    overhead()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline(folder)
        from labelstitch.stores import open_volume

        with open_volume(str(folder / "serial.zarr")) as seg:
            labels = seg.read().astype(np.uint64)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "gala_test.npz"
    blocks = [labels[z : z + 48, y : y + 96, x : x + 96] for z in (0, 48) for y in (0, 96) for x in (0, 96)]
    if shared.exists():
        gt = np.load(shared)["gt"].astype(np.uint64)
        blocks += [np.ascontiguousarray(gt[:, :, :100]), np.ascontiguousarray(gt[:, :, 100:])]
    codecs([np.ascontiguousarray(b) for b in blocks])


if __name__ == "__main__":
    main()
