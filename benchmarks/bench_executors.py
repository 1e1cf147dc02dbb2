"""Executors and checkpoint codecs, side by side in one run.

    .venv/bin/python benchmarks/bench_executors.py
    .venv/bin/python benchmarks/bench_executors.py --codecs   # only part 3

1. per-item overhead of each executor (a trivial function over 200 items);
2. the same segmentation plan (synthetic EM, 96x192x192 in 48^3 blocks) on serial,
   processes (2 workers), spark (local[2]) and dask (a LocalCluster of 2 worker processes,
   when the labelstitch[dask] extra is installed): wall time and speed-up over serial;
3. checkpoint codecs on label blocks, per kind: a real segmented subvolume (gala_test
   mirror-tiled to 168^3, naive stages: what a worker checkpoints), the gala ground truth, and
   synthetic segmentations: ratio against uint64, compress and decompress MB/s for
   labelstitch's codecs (``encode_labels``, checksums included) and for plain crackle
   settings (compresso too if installed).
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


def executors() -> tuple[str, ...]:
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("  (dask not installed: pip install 'labelstitch[dask]')")
        return ("serial", "processes", "spark")
    return ("serial", "processes", "spark", "dask")


def overhead() -> None:
    print("per-item overhead (200 trivial items):")
    for name in executors():
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
    for name in executors():
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


def codecs(kinds: dict[str, list[np.ndarray]]) -> None:
    candidates = {f"labelstitch {c}": (lambda c: lambda b: encode_labels(b, c))(c) for c in ("crackle", "lz4", "zlib")}
    decoders = {name: decode_labels for name in candidates}
    import crackle

    for label, options in (("crackle default", {}), ("crackle pins+markov2", {"allow_pins": 1, "markov_model_order": 2})):
        candidates[label] = (lambda o: lambda b: crackle.compress(b, **o))(options)
        decoders[label] = crackle.decompress
    try:
        import compresso

        candidates["compresso"] = lambda b: compresso.compress(b)
        decoders["compresso"] = compresso.decompress
    except ImportError:
        print("  (compresso not installed)")
    for kind, blocks in kinds.items():
        raw = sum(b.nbytes for b in blocks)
        print(f"checkpoint codecs on {kind}: {len(blocks)} uint64 blocks ({raw / 1e6:.1f} MB)")
        for name, enc in candidates.items():
            start = time.perf_counter()
            packed = [enc(b) for b in blocks]
            t_enc = time.perf_counter() - start
            start = time.perf_counter()
            for p in packed:
                decoders[name](p)
            t_dec = time.perf_counter() - start
            size = sum(len(p) for p in packed)
            print(f"  {name:<22} ratio {raw / size:7.1f}x   compress {raw / t_enc / 1e6:8.0f} MB/s   "
                  f"decompress {raw / t_dec / 1e6:8.0f} MB/s")


def segmented_subvolume(raw: np.ndarray) -> np.ndarray:
    """What a worker checkpoints: a real subvolume (168^3 of mirror-tiled EM) segmented by
    the naive stages."""
    import sys

    from labelstitch.plugins import resolve_stage

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_driver_memory import tiled

    gray = tiled(raw, 168)
    mask = np.zeros(gray.shape, bool)
    pred = resolve_stage("predict-voxels", "naive_membrane_predictions")(gray, mask)
    svs = resolve_stage("create-supervoxels", "seeded_watershed")(pred, mask)
    return resolve_stage("agglomerate-supervoxels", "rag_agglomeration")(pred, svs).astype(np.uint64)


def main() -> None:
    import sys

    from labelstitch.synthetic import neurite_labels

    if "--codecs" not in sys.argv:
        overhead()
        with tempfile.TemporaryDirectory() as tmp:
            pipeline(Path(tmp))
    kinds: dict[str, list[np.ndarray]] = {}
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "gala_test.npz"
    if shared.exists():
        gala = np.load(shared)
        kinds["a segmented gala subvolume (168^3)"] = [segmented_subvolume(gala["raw"])]
        gt = gala["gt"].astype(np.uint64)
        kinds["gala ground truth"] = [np.ascontiguousarray(gt[:, :, :100]), np.ascontiguousarray(gt[:, :, 100:])]
    kinds["synthetic neurites (96^3, 60 ids)"] = [
        neurite_labels((96, 96, 96), seed=s).astype(np.uint64) * np.uint64(2**33 + 1) for s in range(3)
    ]
    codecs(kinds)


if __name__ == "__main__":
    main()
