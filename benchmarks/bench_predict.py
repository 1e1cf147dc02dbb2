"""Voxel prediction speed: the lean predictor against the plain one, same model, same run.

    .venv/bin/python benchmarks/bench_predict.py                   # gala_test, and cubes of 96 and 160
    .venv/bin/python benchmarks/bench_predict.py --sides 128 208 --trees 50

A one-stage and a two-stage classifier are trained on gala_train (the forests `labelstitch
train` makes: 50 trees, 200 000 samples by default). Each is applied to gala_test and to
gala_test mirror-tiled to cubes, by ``PixelClassifier.predict`` (the lean path) and by
``reference_probabilities`` (scikit-image's full feature stack and scikit-learn's
``predict_proba``, which is what ``pixel_classifier`` computed before). Reported: voxels
per core-second (voxels over the process's CPU time, every thread counted), the ratio,
and the largest difference between the two answers (0: the same bits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_driver_memory import tiled  # noqa: E402

from labelstitch.plugins.classifier import membrane_annotations, reference_probabilities, train_pixel_classifier  # noqa: E402


def _cpu(fn, *args):  # type: ignore[no-untyped-def]
    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="*", default=[96, 160])
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--network-only", action="store_true", help="only the network stage")
    args = parser.parse_args()
    data = ROOT.parent / "shared" / "data"
    train, test = np.load(data / "gala_train.npz"), np.load(data / "gala_test.npz")
    boxes = {f"gala_test {'x'.join(map(str, test['raw'].shape))}": test["raw"]}
    boxes.update({f"gala_test tiled {s}^3": tiled(test["raw"], s) for s in args.sides})
    print(f"{'classifier':10} {'box':26} {'lean kvox/core-s':>17} {'plain kvox/core-s':>18} {'ratio':>6} {'max diff':>9}")
    for two_stage in () if args.network_only else (False, True):
        clf = train_pixel_classifier(train["raw"], membrane_annotations(train["gt"]), n_estimators=args.trees,
                                     max_samples=args.samples, two_stage=two_stage)
        clf.predict(test["raw"][:8])  # compile and load the kernels before timing
        for name, box in boxes.items():
            lean, lean_s = _cpu(clf.predict, box)
            plain, plain_s = _cpu(reference_probabilities, clf, box)
            print(f"{'two-stage' if two_stage else 'one-stage':10} {name:26} {box.size / lean_s / 1e3:>17.0f} "
                  f"{box.size / plain_s / 1e3:>18.0f} {plain_s / lean_s:>6.2f} {float(np.abs(lean - plain).max()):>9.1g}",
                  flush=True)
    _network(train, boxes)


def _network(train, boxes) -> None:  # type: ignore[no-untyped-def]
    """The tiny test network (two 3x3x3 convolutions, 6 channels) through network_predictions:
    far smaller than a lab's U-Net, so this measures the stage's own costs (tiling,
    scaling, ONNX Runtime's calls), not a real network's."""
    import tempfile

    from labelstitch.plugins.builtin import network_predictions
    from labelstitch.testing.tiny_network import export_tiny_network, train_tiny_network

    model = export_tiny_network(train_tiny_network(train["raw"], membrane_annotations(train["gt"]) == 1),
                                Path(tempfile.mkdtemp()) / "tiny.onnx")
    print(f"{'network':10} {'box':26} {'kvox/core-s':>17}")
    for name, box in boxes.items():
        mask = np.zeros(box.shape, bool)
        network_predictions(box[:8], mask[:8], model_path=str(model))
        _, seconds = _cpu(network_predictions, box, mask, str(model))
        print(f"{'tiny':10} {name:26} {box.size / seconds / 1e3:>17.0f}", flush=True)


if __name__ == "__main__":
    main()
