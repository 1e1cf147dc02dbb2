"""A tiny 3-D convolutional network, trained here in numpy and exported to ONNX with its
sidecar: a real model for the ``network_predictions`` stage's tests and examples, with
no PyTorch needed.

Two valid 3x3x3 convolutions (one input channel, ``hidden`` ReLU channels, one sigmoid
output): a 5x5x5 receptive field, so the model's margin is 2. Trained by Adam on the
balanced binary cross-entropy of membrane against inside at random voxels.

The same network can also be trained in PyTorch, the way labs train theirs, and exported as
TorchScript or ONNX (:func:`train_tiny_torch_network`, :func:`export_torch_network`; PyTorch
is then needed, the ``labelstitch[torch]`` extra).

"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["TinyNetwork", "export_torch_network", "export_tiny_network", "train_tiny_network", "train_tiny_torch_network"]

SCALE, OFFSET = 1.0 / 255.0, -0.5


@dataclass
class TinyNetwork:
    """Weights: ``w1`` (27 taps, hidden), ``b1`` (hidden), ``w2`` (27 positions, hidden), ``b2``."""

    w1: NDArray[np.float32]
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]
    b2: NDArray[np.float32]


def _patches(image: NDArray[np.float32], centres: NDArray[np.intp]) -> NDArray[np.float32]:
    """(batch, 27 positions of the first layer's output, 27 taps) around each centre."""
    z, y, x = np.unravel_index(centres, image.shape)
    offsets = np.arange(-2, 3)
    cubes = image[(z[:, None, None, None] + offsets[:, None, None]), (y[:, None, None, None] + offsets[None, :, None]),
                  (x[:, None, None, None] + offsets[None, None, :])]
    windows = np.lib.stride_tricks.sliding_window_view(cubes, (3, 3, 3), axis=(1, 2, 3))
    return windows.reshape(len(centres), 27, 27)


def train_tiny_network(grayscale: NDArray[Any], membrane: NDArray[np.bool_], *, hidden: int = 6, steps: int = 300,
                       batch: int = 512, seed: int = 0, rate: float = 0.02) -> TinyNetwork:
    """Fit the network to say ``membrane`` (True) against the rest, from ``grayscale``."""
    rng = np.random.default_rng(seed)
    image = (grayscale.astype(np.float32) * np.float32(SCALE) + np.float32(OFFSET)).astype(np.float32)
    inner = np.zeros(image.shape, bool)
    inner[2:-2, 2:-2, 2:-2] = True
    where = [np.flatnonzero((membrane == side) & inner) for side in (True, False)]
    params = [rng.normal(0, 0.3, (27, hidden)), np.zeros(hidden), rng.normal(0, 0.3, (27, hidden)), np.zeros(1)]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(1, steps + 1):
        centres = np.concatenate([rng.choice(w, batch // 2) for w in where])  # balanced classes
        target = np.repeat([1.0, 0.0], batch // 2)
        cols = _patches(image, centres).astype(np.float64)
        w1, b1, w2, b2 = params
        pre = cols @ w1 + b1
        h = np.maximum(pre, 0)
        out = 1 / (1 + np.exp(-(np.einsum("bpc,pc->b", h, w2) + b2[0])))
        dz = (out - target) / batch
        dh = dz[:, None, None] * w2[None] * (pre > 0)
        grads = [np.einsum("bpt,bpc->tc", cols, dh), dh.sum(axis=(0, 1)), np.einsum("b,bpc->pc", dz, h), np.array([dz.sum()])]
        for p, g, (m, v) in zip(params, grads, moments):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    w1, b1, w2, b2 = (p.astype(np.float32) for p in params)
    return TinyNetwork(w1, b1, w2, b2)


def export_tiny_network(network: TinyNetwork, path: str | Path, *, tile: tuple[int, int, int] = (32, 128, 128)) -> Path:
    """Write ``path`` (ONNX: Conv, Relu, Conv, Sigmoid, any batch and box size) and its
    sidecar JSON beside it; returns ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden = network.w1.shape[1]
    conv1 = network.w1.T.reshape(hidden, 1, 3, 3, 3)  # tap (dz, dy, dx) of each hidden channel
    conv2 = network.w2.T.reshape(1, hidden, 3, 3, 3)  # position (pz, py, px) of the first layer's output
    dims = ["n", 1, "z", "y", "x"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w1", "b1"], ["a"], kernel_shape=[3, 3, 3]),
         helper.make_node("Relu", ["a"], ["h"]),
         helper.make_node("Conv", ["h", "w2", "b2"], ["b"], kernel_shape=[3, 3, 3]),
         helper.make_node("Sigmoid", ["b"], ["boundary"])],
        "tiny_boundary_network",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("boundary", TensorProto.FLOAT, ["n", 1, "oz", "oy", "ox"])],
        [numpy_helper.from_array(np.ascontiguousarray(conv1, np.float32), "w1"),
         numpy_helper.from_array(network.b1.astype(np.float32), "b1"),
         numpy_helper.from_array(np.ascontiguousarray(conv2, np.float32), "w2"),
         numpy_helper.from_array(network.b2.astype(np.float32), "b2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    target = Path(path)
    onnx.save(model, str(target))
    sidecar = {"format": "labelstitch-network/1", "input": {"scale": SCALE, "offset": OFFSET}, "margin": 2,
               "outputs": [{"meaning": "boundary"}], "tile": list(tile)}
    target.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return target


def train_tiny_torch_network(grayscale: NDArray[Any], membrane: NDArray[np.bool_], *, hidden: int = 6, steps: int = 300,
                             crop: int = 12, batch: int = 8, seed: int = 0, rate: float = 0.01) -> Any:
    """The same architecture in PyTorch (``torch.nn.Sequential``), trained by Adam on random
    crops with the classes' weights balanced; returned in eval mode on the CPU."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, hidden, 3), torch.nn.ReLU(), torch.nn.Conv3d(hidden, 1, 3), torch.nn.Sigmoid())
    image = torch.from_numpy((grayscale.astype(np.float32) * np.float32(SCALE) + np.float32(OFFSET)).astype(np.float32))
    target = torch.from_numpy(membrane.astype(np.float32))
    share = float(membrane.mean())
    weight_in, weight_out = 0.5 / max(share, 1e-6), 0.5 / max(1 - share, 1e-6)
    optimiser = torch.optim.Adam(net.parameters(), lr=rate)
    side = crop + 4
    for _ in range(steps):
        corners = [tuple(int(rng.integers(0, n - side + 1)) for n in grayscale.shape) for _ in range(batch)]
        x = torch.stack([image[z:z + side, y:y + side, w:w + side] for z, y, w in corners])[:, None]
        t = torch.stack([target[z + 2:z + side - 2, y + 2:y + side - 2, w + 2:w + side - 2] for z, y, w in corners])[:, None]
        weights = t * weight_in + (1 - t) * weight_out
        loss = torch.nn.functional.binary_cross_entropy(net(x), t, weight=weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def export_torch_network(network: Any, path: str | Path, *, tile: tuple[int, int, int] = (32, 128, 128)) -> Path:
    """Write a PyTorch module with valid convolutions (margin 2, one boundary channel) as an
    exported program (``.pt2``, ``torch.export`` with the batch and box dynamic), TorchScript
    (``.pt``, traced) or ONNX (``.onnx``), with its sidecar JSON beside it; returns ``path``.
    The recipes docs/pipeline.md gives for a lab's own model."""
    import warnings

    import torch

    target = Path(path)
    example = torch.zeros(2, 1, 12, 20, 20)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript and the ONNX exporter it uses are deprecated
        if target.suffix == ".onnx":
            axes = {0: "n", 2: "z", 3: "y", 4: "x"}
            torch.onnx.export(network, example, str(target), input_names=["image"], output_names=["boundary"],
                              dynamic_axes={"image": axes, "boundary": axes}, opset_version=17, dynamo=False)
        elif target.suffix == ".pt2":
            auto = torch.export.Dim.AUTO
            torch.export.save(torch.export.export(network, (example,), dynamic_shapes=({0: auto, 2: auto, 3: auto, 4: auto},)),
                              str(target))
        else:
            torch.jit.trace(network, example).save(str(target))
        margin = (example.shape[2] - network(example).shape[2]) // 2
    sidecar = {"format": "labelstitch-network/1", "input": {"scale": SCALE, "offset": OFFSET}, "margin": int(margin),
               "outputs": [{"meaning": "boundary"}], "tile": list(tile)}
    target.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return target
