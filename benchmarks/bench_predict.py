"""Voxel prediction speed: the lean predictor against the plain one, same model, same run.

    .venv/bin/python benchmarks/bench_predict.py                   # gala_test, and cubes of 96 and 160
    .venv/bin/python benchmarks/bench_predict.py --sides 128 208 --trees 50
    .venv/bin/python benchmarks/bench_predict.py --runtimes          # ONNX Runtime against PyTorch, same networks

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
    parser.add_argument("--runtimes", action="store_true",
                        help="only ONNX Runtime against PyTorch (exported program and TorchScript) on the same networks")
    args = parser.parse_args()
    if args.runtimes:
        _runtimes()
        return
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


def _runtimes() -> None:
    """The same networks run by ``network_predictions`` from ONNX, from a torch.export program
    and from TorchScript, on the CPU with the executor's threads (2 here): the tiny test
    network, and a wider one closer to a lab's (four valid 3x3x3 convolutions of 16 channels,
    margin 4; random weights, which do not change the cost). Voxels per core-second of the
    process's CPU time, best of 2, on a 64x192x192 box of gala_test tiled."""
    import tempfile

    import torch

    from labelstitch.plugins.builtin import network_predictions
    from labelstitch.testing.tiny_network import export_torch_network

    data = ROOT.parent / "shared" / "data"
    box = tiled(np.load(data / "gala_test.npz")["raw"], 192)[:64]
    mask = np.zeros(box.shape, bool)
    torch.manual_seed(0)
    conv = torch.nn.Conv3d
    networks = {
        "tiny (2 conv, 6 ch)": torch.nn.Sequential(conv(1, 6, 3), torch.nn.ReLU(), conv(6, 1, 3), torch.nn.Sigmoid()),
        "wide (4 conv, 16 ch)": torch.nn.Sequential(conv(1, 16, 3), torch.nn.ReLU(), conv(16, 16, 3), torch.nn.ReLU(),
                                                    conv(16, 16, 3), torch.nn.ReLU(), conv(16, 1, 3), torch.nn.Sigmoid()),
    }
    folder = Path(tempfile.mkdtemp())
    print(f"{'network':22} {'runtime':26} {'kvox/core-s':>12} {'max diff to ONNX':>17}  (box {box.shape}, torch {torch.__version__})")
    for name, net in networks.items():
        answers = {}
        for runtime, suffix in (("ONNX Runtime", "onnx"), ("PyTorch, torch.export", "pt2"), ("PyTorch, TorchScript", "pt")):
            model = export_torch_network(net.eval(), folder / f"{name.split()[0]}.{suffix}", tile=(32, 96, 96))
            network_predictions(box[:8, :32, :32], mask[:8, :32, :32], model_path=str(model), device="cpu")  # load, warm up
            best = min(_cpu(network_predictions, box, mask, str(model), "cpu")[1] for _ in range(2))
            answers[runtime] = network_predictions(box, mask, model_path=str(model), device="cpu")
            diff = float(np.abs(answers[runtime] - answers["ONNX Runtime"]).max())
            print(f"{name:22} {runtime:26} {box.size / best / 1e3:>12.0f} {diff:>17.1g}", flush=True)


if __name__ == "__main__":
    main()
