"""The blocked affinity pipeline against volara's, on the same boundary map (docs/benchmarks.md,
"Blocked affinity pipeline against volara").

volara is installed in the benchmark's own environment, never as a dependency:

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install volara waterz mwatershed -e .
    /tmp/peers/bin/python benchmarks/bench_volara.py [--out volara-output] [--workers 2]

Both sides read the same affinities, made from one boundary map (nearest neighbours and
(3, 9, 9) long-range offsets, one minus the largest boundary on the path), and run in
blocks of the same size with 2 workers:

* volara: ExtractFrags (blockwise mutex watershed) -> AffAgglom (mean affinities between
  fragments into SQLite) -> GraphMWS (mutex watershed on the fragment graph) -> Relabel,
  with the biases of volara's own example, all shifted by -0.2 to +0.1;
* labelstitch: ``labelstitch.run`` (processes executor) with ``predictions`` = the boundary
  map, ``seeded_watershed`` supervoxels and ``affinity_agglomeration`` at thresholds 0.4 to
  0.7, stitched with ``medium``; and once with ``mutex_watershed`` supervoxels.

Each side's best row is an oracle's choice among its four settings on the scored volume
(the same number of tries for both; the mutex-watershed row is a fifth, shown apart).

Throughput is voxels per second of wall time for the whole pipeline (2 workers); VI against
the ground truth. Prints Markdown.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.plugins.affinities import affinities_from_boundary, neighbourhood
from labelstitch.plugins.builtin import naive_membrane_predictions
from labelstitch.synthetic import em_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def volumes():
    if (SHARED / "gala_train.npz").exists():
        from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier

        train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
        pixel = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]))
        yield ("gala_test", test["raw"], pixel.predict(test["raw"]), test["gt"], (25, 50, 50),
               {"seed_threshold": 0.1, "min_segment_size": 20}, 0.5)
    gray, truth = em_volume((96, 256, 256), n_neurites=200, seed=6)
    yield ("synthetic 96x256x256", gray, naive_membrane_predictions(gray, np.zeros(gray.shape, bool), sigma=1.0), truth,
           (48, 128, 128), {"seed_threshold": 0.3, "min_segment_size": 50}, 0.6)


def run_volara(folder: Path, boundary: np.ndarray, block: tuple[int, ...], workers: int, shift: float = 0.0) -> tuple[np.ndarray, float]:
    from funlib.geometry import Coordinate
    from funlib.persistence import prepare_ds
    from volara.blockwise import AffAgglom, ExtractFrags, GraphMWS, Relabel
    from volara.datasets import Affs, Labels
    from volara.dbs import SQLite
    from volara.lut import LUT

    offsets = neighbourhood(9, 3)
    store = folder / f"volara{shift:+.1f}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    affs = affinities_from_boundary(boundary, offsets)
    array = prepare_ds(str(store / "affs"), affs.shape, offset=Coordinate(0, 0, 0), voxel_size=Coordinate(1, 1, 1),
                       axis_names=["c^", "z", "y", "x"], dtype=np.float32, chunk_shape=(len(offsets), *block),
                       custom_metadata={"neighborhood": offsets})
    array[:] = affs
    affs_ds = Affs(store=store / "affs", neighborhood=[Coordinate(o) for o in offsets])
    graph = SQLite(path=store / "fragments.db", edge_attrs={"xy_aff": "float", "z_aff": "float", "lr_aff": "float"})
    frags = Labels(store=store / "fragments")
    segments = Labels(store=store / "segments")
    lut = LUT(path=store / "lut.npz")
    size = Coordinate(block)
    pipeline = (
        ExtractFrags(db=graph, affs_data=affs_ds, frags_data=frags, block_size=size, context=Coordinate(3, 9, 9),
                     bias=[b + shift for b in [-0.6] + [-0.4] * 2 + [-0.6] + [-0.8] * 2],
                     strides=[Coordinate(1, 1, 1)] * 3 + [Coordinate(1, 3, 3)] * 3, randomized_strides=True,
                     remove_debris=64, num_workers=workers)
        + AffAgglom(db=graph, affs_data=affs_ds, frags_data=frags, block_size=size, context=Coordinate(3, 9, 9),
                    scores={"z_aff": affs_ds.neighborhood[0:1], "xy_aff": affs_ds.neighborhood[1:3],
                            "lr_aff": affs_ds.neighborhood[3:]}, num_workers=workers)
        + GraphMWS(db=graph, lut=lut, weights={"xy_aff": (1, -0.4 + shift), "z_aff": (1, -0.6 + shift), "lr_aff": (1, -0.6 + shift)},
                   roi=array.roi)
        + Relabel(lut=lut, frags_data=frags, seg_data=segments, block_size=size, num_workers=workers)
    )
    pipeline.drop(drop_outputs=False)  # forget the blocks an earlier setting finished (kept in a meta folder)
    start = time.perf_counter()
    pipeline.run_blockwise(multiprocessing=workers > 1)
    seconds = time.perf_counter() - start
    return np.asarray(segments.array("r")[:]), seconds


def run_ours(folder: Path, gray: np.ndarray, boundary: np.ndarray, block: tuple[int, ...], workers: int,
             supervoxels: dict, agglomeration: dict) -> tuple[np.ndarray, float]:
    np.save(folder / "pred.npy", boundary.astype(np.float32))
    np.save(folder / "gray.npy", gray)  # read for the background mask only: the predictions are given
    config = {"input": str(folder / "gray.npy"), "output": str(folder / "ours.zarr"), "predictions": str(folder / "pred.npy"),
              "options": {"chunk-size": list(block), "overlap": 8, "resolution": [8, 8, 8], "background-value": None,
                          "segmentor": {"configuration": {
                              "create-supervoxels": supervoxels,
                              "agglomerate-supervoxels": agglomeration}}}}
    start = time.perf_counter()
    result = ls.run(config, executor="processes", workers=workers, overwrite=True)
    seconds = time.perf_counter() - start
    from labelstitch.stores import open_volume

    with open_volume(result.output) as out:
        return out.read(), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="volara-output")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    folder = Path(args.out).resolve()
    folder.mkdir(exist_ok=True)
    os.chdir(folder)  # daisy writes its workers' logs to ./volara_logs: keep them with the outputs, out of the checkout
    for name, gray, boundary, truth, block, seeds, bias in volumes():
        n = boundary.size
        print(f"\n### {name} ({n / 1e6:.1f} M voxels, blocks {block}, {args.workers} workers)\n")
        print("| pipeline | VI | f.merge | f.split | seconds | M voxels/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for shift in (-0.2, -0.1, 0.0, 0.1):
            seg, seconds = run_volara(folder, boundary, block, args.workers, shift)
            score = ls.vi(seg, truth)
            print(f"| volara (ExtractFrags, AffAgglom, GraphMWS, Relabel), biases {shift:+.1f} | {score.total:.3f} | "
                  f"{score.merge:.3f} | {score.split:.3f} | {seconds:.1f} | {n / seconds / 1e6:.2f} |", flush=True)
        settings = [(f"seeded_watershed + affinity_agglomeration {t}", {"function": "seeded_watershed", "parameters": seeds}, t)
                    for t in (0.4, 0.5, 0.6, 0.7)]
        settings.append((f"mutex_watershed {bias} + affinity_agglomeration 0.6",
                         {"function": "mutex_watershed", "parameters": {"bias": bias}}, 0.6))
        for label, supervoxels, threshold in settings:
            agglomeration = {"function": "affinity_agglomeration", "parameters": {"threshold": threshold}}
            seg, seconds = run_ours(folder, gray, boundary, block, args.workers, supervoxels, agglomeration)
            score = ls.vi(seg, truth)
            print(f"| labelstitch ({label}, medium) | {score.total:.3f} | {score.merge:.3f} | {score.split:.3f} | "
                  f"{seconds:.1f} | {n / seconds / 1e6:.2f} |", flush=True)

if __name__ == "__main__":
    mp.set_start_method("fork", force=True)
    main()
