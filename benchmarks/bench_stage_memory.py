"""Peak memory per voxel of each built-in stage, and of a whole worker's subvolume.

    .venv/bin/python benchmarks/bench_stage_memory.py            # outer boxes of 128^3 and 208^3
    .venv/bin/python benchmarks/bench_stage_memory.py --sides 96 168

Each measurement is a fresh Python process: it builds the stage's inputs (mirror-tiled
gala_test grayscale, and the earlier stages' outputs), runs the stage once on a small box
so that imports, numba compilation and allocator pools are in place, reads its peak RSS
(``ru_maxrss``), runs the stage on the full box and reports how far the peak rose, per
voxel of the box. The inputs themselves are listed separately ("held"); the "worker" row
runs ``segment_subvolume`` (read, mask, three stages, encode) from a file and reports the
whole process's rise, which is what ``labelstitch run`` checks chunk sizes against.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAKE = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from bench_driver_memory import tiled
from labelstitch.plugins import resolve_stage
n, folder = int(sys.argv[1]), sys.argv[2]
gray = tiled(np.load(sys.argv[4])["raw"], n)
mask = np.zeros(gray.shape, bool)
pred = resolve_stage("predict-voxels", "naive_membrane_predictions", {"sigma": 1.0})(gray, mask)
svs = resolve_stage("create-supervoxels", "seeded_watershed")(pred, mask)
for k, v in {"gray": gray, "mask": mask, "pred": pred, "svs": svs}.items():
    np.save(f"{folder}/{k}.npy", v)
'''

PROBE = r'''
import json, resource, sys
import numpy as np
sys.path.insert(0, sys.argv[4])
from bench_driver_memory import tiled
from labelstitch.plugins import resolve_stage

stage, side, classifier = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = np.load(sys.argv[5])["raw"]
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def inputs(n):
    """The stage inputs for an n^3 box, made in a child process and loaded here, so that
    making them does not set this process's peak."""
    import os, subprocess, tempfile
    folder = tempfile.mkdtemp()
    MAKE = os.environ["BENCH_MAKE"]
    subprocess.run([sys.executable, "-c", MAKE, str(n), folder, sys.argv[4], sys.argv[5]], check=True)
    return tuple(np.load(f"{folder}/{k}.npy") for k in ("gray", "mask", "pred", "svs"))

def plain(path):
    from labelstitch.plugins.classifier import load_classifier, reference_probabilities
    return lambda g, m: reference_probabilities(load_classifier(path), g)

two = classifier + ".two"
STAGES = {
    "naive_membrane_predictions": ("predict-voxels", ("naive_membrane_predictions", {"sigma": 1.0}), lambda f, g, m, p, s: f(g, m)),
    "pixel_classifier": ("predict-voxels", ("pixel_classifier", {"classifier_path": classifier}), lambda f, g, m, p, s: f(g, m)),
    "pixel_classifier, plain": ("predict-voxels", (plain(classifier), {}), lambda f, g, m, p, s: f(g, m)),
    "two_stage_predictions": ("predict-voxels", ("two_stage_predictions", {"classifier_path": two}), lambda f, g, m, p, s: f(g, m)),
    "two_stage, plain": ("predict-voxels", (plain(two), {}), lambda f, g, m, p, s: f(g, m)),
    "affinity_classifier": ("predict-voxels", ("affinity_classifier", {"classifier_path": classifier + ".aff"}),
                            lambda f, g, m, p, s: f(g, m)),
    "network_predictions (tiny)": ("predict-voxels", ("network_predictions", {"model_path": classifier + ".onnx"}),
                                   lambda f, g, m, p, s: f(g, m)),
    "seeded_watershed": ("create-supervoxels", ("seeded_watershed", {}), lambda f, g, m, p, s: f(p, m)),
    "rag_agglomeration": ("agglomerate-supervoxels", ("rag_agglomeration", {}), lambda f, g, m, p, s: f(p, s)),
}
if stage.startswith("worker"):
    from labelstitch.geometry import Plan
    from labelstitch.pipeline.segment import segment_subvolume
    from labelstitch.pipeline.planning import prepare
    import tempfile, os
    folder = tempfile.mkdtemp()
    for n in (48, side):
        np.save(f"{folder}/g{n}.npy", tiled(raw, n))
    def run(n):
        from labelstitch.pipeline.config import RunConfig
        options = {"chunk-size": n, "overlap": 0, "resolution": [1, 1, 1]}
        if stage != "worker":  # the worker with the pixel classifier
            options["segmentor"] = {"configuration": {"predict-voxels": {
                "function": "pixel_classifier", "parameters": {"classifier_path": classifier}}}}
        prepared = prepare(RunConfig.load({"input": f"{folder}/g{n}.npy", "output": f"{folder}/o{n}.zarr",
                                           "options": options}))
        return segment_subvolume(prepared.plan[0], prepared.task)
    run(48)
    before = peak()
    run(side)
    print(json.dumps({"held": 0, "rise": peak() - before, "voxels": side ** 3}))
    raise SystemExit
kind, spec, call = STAGES[stage]
fn = resolve_stage(kind, *spec)
call(fn, *inputs(40))
held = inputs(side)
before = peak()
call(fn, *held)
print(json.dumps({"held": sum(a.nbytes for a in held), "rise": peak() - before, "voxels": side ** 3}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 208])
    parser.add_argument("--stages", nargs="+", help="only these rows")
    args = parser.parse_args()
    gala = ROOT.parent / "shared" / "data" / "gala_test.npz"
    folder = Path(tempfile.mkdtemp(prefix="bench-stage-memory-"))
    classifier = folder / "pixel.clf"
    subprocess.run([sys.executable, "-c", (
        "import numpy as np, sys\nfrom labelstitch import api as ls\n"
        f"d = np.load({str(ROOT.parent / 'shared' / 'data' / 'gala_train.npz')!r})\n"
        f"np.save({str(folder / 'g.npy')!r}, d['raw']); np.save({str(folder / 't.npy')!r}, d['gt'])\n"
        f"ls.train_pixel_classifier({str(folder / 'g.npy')!r}, {str(folder / 't.npy')!r}, {str(classifier)!r})\n"
        f"ls.train_pixel_classifier({str(folder / 'g.npy')!r}, {str(folder / 't.npy')!r}, {str(classifier) + '.two'!r}, two_stage=True)\n"
        f"ls.train_pixel_classifier({str(folder / 'g.npy')!r}, {str(folder / 't.npy')!r}, {str(classifier) + '.aff'!r}, affinities=True)\n"
        "from labelstitch.plugins.classifier import membrane_annotations\n"
        "from labelstitch.testing.tiny_network import export_tiny_network, train_tiny_network\n"
        f"export_tiny_network(train_tiny_network(d['raw'], membrane_annotations(d['gt']) == 1), {str(classifier) + '.onnx'!r})\n"
    )], check=True)
    print(f"{'stage':28} " + " ".join(f"{f'{s}^3 B/voxel':>16}" for s in args.sides) + f" {'inputs held B/voxel':>20}")
    stages = ("naive_membrane_predictions", "pixel_classifier", "pixel_classifier, plain", "two_stage_predictions",
              "two_stage, plain", "affinity_classifier", "network_predictions (tiny)", "seeded_watershed", "rag_agglomeration", "worker",
              "worker, pixel classifier")
    for stage in [s for s in stages if not args.stages or s in args.stages]:
        cells, held = [], 0.0
        for side in args.sides:
            done = subprocess.run([sys.executable, "-c", PROBE, stage, str(side), str(classifier), str(ROOT / "benchmarks"), str(gala)],
                                  capture_output=True, text=True, env={**os.environ, "BENCH_MAKE": MAKE})
            if done.returncode:
                raise SystemExit(done.stderr)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            cells.append(row["rise"] / row["voxels"])
            held = row["held"] / row["voxels"]
        print(f"{stage:28} " + " ".join(f"{c:>16.1f}" for c in cells) + f" {held:>20.1f}", flush=True)
    subprocess.run(["rm", "-rf", str(folder)], check=True)


if __name__ == "__main__":
    main()
