"""The seam audit on real and synthetic EM: do the subvolume faces carry more error than
the subvolume middles, and how far do runs with other subvolume sizes, and the unblocked
run, agree? (docs/quality.md, "Does the blocking cost anything?")

    .venv/bin/python benchmarks/audit_seams.py [--out audit-output]

gala: the pixel classifier trained on gala_train with seeded_watershed 0.1 and
rag_agglomeration 0.5 (the settings benchmarks/quality_gala.py tunes on gala_train), run
on gala_test. Synthetic: the untrained defaults on a 96x192x192 volume (seed 3).
Each volume is segmented unblocked and in two chunkings, every stitching rule is written
(``compare --write``, whose table carries the audit's two columns), and the best rule's
output is audited against the ground truth, the other chunking and the unblocked run.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.plugins.classifier import membrane_annotations, train_pixel_classifier
from labelstitch.synthetic import em_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def volumes(out: Path) -> list[tuple[str, dict, list[list[int]], int]]:
    """(name, base config, two chunkings, overlap) per volume."""
    found = []
    if (SHARED / "gala_train.npz").exists():
        train, test = np.load(SHARED / "gala_train.npz"), np.load(SHARED / "gala_test.npz")
        clf = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]), n_estimators=50, max_samples=200_000)
        clf.save(out / "membranes.clf")
        np.save(out / "gala-raw.npy", test["raw"])
        np.save(out / "gala-gt.npy", test["gt"])
        configuration = {
            "predict-voxels": {"function": "pixel_classifier", "parameters": {"classifier_path": str(out / "membranes.clf")}},
            "create-supervoxels": {"function": "seeded_watershed",
                                   "parameters": {"seed_threshold": 0.1, "seed_size": 5, "min_segment_size": 20}},
            "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.5}},
        }
        found.append(("gala_test", {"input": str(out / "gala-raw.npy"), "ground-truth": str(out / "gala-gt.npy"),
                                    "options": {"segmentor": {"configuration": configuration}}},
                      [[25, 50, 50], [25, 50, 100]], 8))
    gray, truth = em_volume((96, 192, 192), n_neurites=150, seed=3)
    np.save(out / "syn-raw.npy", gray)
    np.save(out / "syn-gt.npy", truth)
    found.append(("synthetic 96x192x192", {"input": str(out / "syn-raw.npy"), "ground-truth": str(out / "syn-gt.npy"),
                                           "options": {"resolution": [8, 8, 8]}}, [[48, 48, 48], [64, 64, 64]], 8))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="audit-output")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(exist_ok=True)
    for name, base, chunkings, overlap in volumes(out):
        tag = name.split()[0]
        gt = base["ground-truth"]
        whole = json.loads(json.dumps(base))
        whole["output"] = str(out / f"{tag}-unblocked.zarr")
        shape = np.load(base["input"], mmap_mode="r").shape
        whole["options"].update({"chunk-size": list(shape), "overlap": 0, "stitch-algorithm": "none"})
        ls.run(whole, overwrite=True)
        best = {}
        print(f"\n### {name}\n")
        for block in chunkings:
            config = json.loads(json.dumps(base))
            key = "x".join(map(str, block))
            config["output"] = str(out / f"{tag}-{key}.zarr")
            ckpt = out / f"{tag}-ckpt-{key}"
            shutil.rmtree(ckpt, ignore_errors=True)
            config["options"].update({"chunk-size": block, "overlap": overlap, "checkpoint-dir": str(ckpt)})
            ls.run(config, overwrite=True)
            start = time.perf_counter()
            rows = ls.compare(config, gt, write=True)
            print(f"subvolumes {key}, overlap {overlap} (compare --write with the audit: {time.perf_counter() - start:.1f} s)\n")
            print("| rule | VI | f.merge | f.split | VI in face bands | VI in middle bands |")
            print("|---|---:|---:|---:|---:|---:|")
            for r in rows:
                print(f"| {r.name} | {r.total:.3f} | {r.merge:.3f} | {r.split:.3f} | {r.seams[0]:.3f} | {r.seams[1]:.3f} |")
            best[key] = min((r for r in rows if r.rule != "none"), key=lambda r: r.total)
            none = next(r for r in rows if r.rule == "none")
            print()
            for label, row in (("none", none), (best[key].name, best[key])):
                start = time.perf_counter()
                found = ls.audit(row.output, ground_truth=gt, against=whole["output"])
                seconds = time.perf_counter() - start
                g, a = found.ground_truth, found.against
                print(f"- `{label}` against the ground truth: faces {g.faces.total:.3f} bits, {g.faces.split_crossings} split / "
                      f"{g.faces.merge_crossings} merge crossings; middles {g.interiors.total:.3f} bits, "
                      f"{g.interiors.split_crossings} / {g.interiors.merge_crossings}. Against the unblocked run: "
                      f"{found.agreement.vi.total:.3f} bits, {found.agreement.same_bodies} of {found.agreement.bodies} bodies "
                      f"identical; faces {a.faces.total:.3f} bits against middles {a.interiors.total:.3f} ({seconds:.1f} s)")
            print()
        (k1, r1), (k2, r2) = best.items()
        agree = ls.audit(r1.output, against=r2.output)
        print(f"- chunking: `{r1.name}` at {k1} against `{r2.name}` at {k2}: {agree.agreement}; in {k1}'s bands, faces "
              f"{agree.against.faces.total:.3f} bits against middles {agree.against.interiors.total:.3f}")


if __name__ == "__main__":
    main()
