"""Networks trained elsewhere, run blockwise: an ONNX or TorchScript model and the JSON beside it.

Labs train their boundary, affinity or LSD networks in PyTorch (PyTorch Connectomics,
gunpowder/LSD, volara-torch) and export them to ONNX or TorchScript. ``network_predictions``
runs such a model on every subvolume (``MODEL.onnx`` with ONNX Runtime; ``MODEL.pt2``, a
``torch.export`` program, or ``MODEL.pt``, TorchScript, with PyTorch), tile by tile with the margin the model's
valid output needs, and writes the channels the sidecar declares, so that the stages
that read them are checked against them before any work. The sidecar, ``MODEL.json``
beside the model::

    {"format": "labelstitch-network/1",
     "input": {"scale": 0.00392156862745098, "offset": -0.5},
     "margin": 2,
     "outputs": [{"meaning": "boundary"}, {"meaning": "affinity", "offset": [0, 0, -1]}],
     "tile": [32, 128, 128]}

``input``: the model sees ``grayscale * scale + offset`` as float32 of shape
(batch, 1, Z, Y, X). ``margin``: voxels its output lacks on each side of its input (a
model with valid convolutions; 0 for one that pads itself, though then tiles can seam).
``outputs``: one entry a channel, in order (``boundary``, ``affinity`` with its offset,
``mitochondria``, ``lsd``, or a lab's own word). ``tile``: the output box of a tile
(default 32 x 128 x 128); ``batch``: tiles of one shape sent in one call (default 4). The pipeline reads ``margin`` voxels more around every
subvolume (the stage's context), so that blocked predictions are those of the whole
volume, without seams.
"""

from __future__ import annotations

import itertools
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from .._threads import get_threads
from ..hookspecs import Channel

__all__ = ["NetworkModel", "declare_network", "load_network"]

log = logging.getLogger("labelstitch")

_FORMAT = "labelstitch-network/1"
#: suffixes of PyTorch files: exported programs (``torch.export``) and TorchScript; anything
#: else is read as ONNX
EXPORTED_SUFFIXES = (".pt2",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
_DEFAULT_TILE = (32, 128, 128)
_NOTED: list[bool] = []  # the CPU fallback was noted in this process


def _sidecar(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


@dataclass(frozen=True)
class NetworkModel:
    """A model file and what its sidecar says of it."""

    path: Path
    scale: float
    offset: float
    margin: int
    outputs: tuple[Channel, ...]
    tile: tuple[int, int, int]
    batch: int = 4

    @property
    def channels(self) -> int:
        return len(self.outputs)


def load_network(model_path: str | Path) -> NetworkModel:
    """Read the sidecar ``MODEL.json`` of ``MODEL.onnx`` (or ``MODEL.pt``) and check it, each
    problem in one line."""
    path = Path(model_path)
    side = _sidecar(path)
    if not str(model_path):
        raise ValueError("network_predictions needs `model_path`, an ONNX or TorchScript file with its sidecar JSON beside it")
    if not path.is_file():
        raise ValueError(f"no model file at {path}; export the network to ONNX or TorchScript (docs/pipeline.md, 'Networks')")
    try:
        spec = json.loads(side.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} has no sidecar {side.name} beside it saying its input scaling, margin and outputs "
                         "(docs/pipeline.md, 'Networks')") from None
    except ValueError as exc:
        raise ValueError(f"{side} is not JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != _FORMAT:
        raise ValueError(f"{side} must say \"format\": \"{_FORMAT}\"")
    outputs = spec.get("outputs")
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) and isinstance(o.get("meaning"), str)
                                                                for o in outputs):
        raise ValueError(f"{side}: \"outputs\" must list one {{\"meaning\": ...}} per output channel")
    channels = []
    for i, o in enumerate(outputs):
        offset = o.get("offset")
        if o["meaning"] == "affinity" and not (isinstance(offset, list) and len(offset) == 3
                                               and all(isinstance(v, int) for v in offset)):
            raise ValueError(f"{side}: output {i} is an affinity and needs its \"offset\" [z, y, x] in voxels")
        channels.append(Channel(o["meaning"], i, tuple(offset) if offset is not None else None))
    scaling = spec.get("input", {})
    margin, tile, batch = spec.get("margin", 0), tuple(spec.get("tile", _DEFAULT_TILE)), spec.get("batch", 4)
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"{side}: \"margin\" must be the voxels the output lacks on each side, an integer >= 0")
    if len(tile) != 3 or not all(isinstance(t, int) and t > 0 for t in tile):
        raise ValueError(f"{side}: \"tile\" must be the output box of one call, three positive integers")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"{side}: \"batch\" must be the tiles of one call, an integer >= 1")
    try:
        scale, offset = float(scaling.get("scale", 1.0)), float(scaling.get("offset", 0.0))
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{side}: \"input\" must give numbers \"scale\" and \"offset\"") from None
    return NetworkModel(path, scale, offset, margin, tuple(channels), tile, batch)  # type: ignore[arg-type]


def _check_choices(device: str, precision: str) -> None:
    """Refuse a ``device`` or ``precision`` the stage does not know, in one line."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"network_predictions: device must be auto, cpu or cuda, not {device!r}")
    if precision not in ("auto", "float32", "float16"):
        raise ValueError(f"network_predictions: precision must be auto, float32 or float16, not {precision!r}")


def declare_network(model_path: str = "", device: str = "auto", precision: str = "auto", **_: Any) -> dict[str, Any]:
    """The stage descriptor's fields that the model's sidecar decides: the channels it
    writes, the context it needs (its margin), and its memory per voxel (the scaled input,
    its mirrored copy and the output, float32, on top of its tiles: 25 bytes a voxel
    measured for one channel before the scaling was made in place). ``device`` and
    ``precision`` are checked here too, before any work."""
    _check_choices(device, precision)
    if not model_path:
        return {}
    model = load_network(model_path)
    return {"writes": model.outputs, "context": model.margin, "bytes_per_voxel": 4 * (model.channels + 3)}


def _cpu_note(runtime: str) -> None:
    if not _NOTED:
        _NOTED.append(True)  # once a process
        log.warning(f"network_predictions: {runtime} has no CUDA device here; running on the CPU "
                    "(device cpu says so without this note)")


def _onnx_runner(model: NetworkModel, device: str) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("network_predictions needs ONNX Runtime for an ONNX model: pip install 'labelstitch[network]'") from None
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ValueError("network_predictions: device cuda asked for, but this ONNX Runtime has no CUDA provider "
                         "(pip install onnxruntime-gpu on a machine with a GPU, or device auto)")
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "auto":
        _cpu_note("ONNX Runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = get_threads()  # one per executor core, as the other stages
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model.path), options, providers=providers)
    except Exception as exc:  # ONNX Runtime's own error types: a file it cannot read as a model
        raise ValueError(f"{model.path} is not a model ONNX Runtime can run: {str(exc).splitlines()[0]}") from None
    name = session.get_inputs()[0].name
    return lambda tiles: session.run(None, {name: tiles})[0]


def _torch_runner(model: NetworkModel, device: str, precision: str) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    try:
        import torch
    except ImportError:
        raise ValueError(f"network_predictions needs PyTorch for the model {model.path.name}: "
                         "pip install 'labelstitch[torch]', or export the model to ONNX") from None
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ValueError("network_predictions: device cuda asked for, but PyTorch sees no CUDA device here (device auto "
                         "or cpu)")
    where = "cuda" if device in ("auto", "cuda") and cuda else "cpu"
    if device == "auto" and where == "cpu":
        _cpu_note("PyTorch")
    torch.set_num_threads(get_threads())  # one per executor core, as the other stages
    exported = model.path.suffix.lower() in EXPORTED_SUFFIXES

    def load() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # PyTorch deprecates TorchScript; its files still load
            if exported:
                return torch.export.load(str(model.path)).module().to(where)
            return torch.jit.load(str(model.path), map_location=where).eval()

    try:
        network = load()
    except Exception as exc:  # PyTorch's own error types: a file it cannot read
        what = "an exported program (torch.export)" if exported else "a TorchScript model"
        raise ValueError(f"{model.path} is not {what} PyTorch can load: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None

    def run(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.inference_mode():
            return network(torch.from_numpy(tiles).to(where)).float().cpu().numpy()

    if not (precision == "float16" or (precision == "auto" and where == "cuda")):
        return run  # float32: on the CPU always, unless float16 is asked for
    try:
        half_network = load().half()  # a second copy: the first batch is checked against float32
    except Exception as exc:  # a module PyTorch cannot convert
        log.warning(f"network_predictions: {model.path.name} cannot run in float16 ({exc}); running in float32")
        return run

    def run_half(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.inference_mode():
            return half_network(torch.from_numpy(tiles).to(where).half()).float().cpu().numpy()

    return _checked_half(run, run_half, model.path.name)


#: float16 answers may differ from float32 ones by this much, relative to the largest
#: float32 answer (at least 1): a probability by 0.01
HALF_TOLERANCE = 0.01


def _checked_half(run: Callable[[NDArray[np.float32]], NDArray[np.float32]],
                  run_half: Callable[[NDArray[np.float32]], NDArray[np.float32]],
                  name: str) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """``run_half`` where it is safe: its first batch is computed in float32 too, and float16
    is kept only if every answer is finite and within :data:`HALF_TOLERANCE` of float32's
    (a network whose activations overflow float16's range, 65504, or that leans on small
    differences, is run in float32 with a note). The check is made once a process."""
    chosen: list[Callable[[NDArray[np.float32]], NDArray[np.float32]]] = []

    def run_checked(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        if chosen:
            return chosen[0](tiles)
        exact = run(tiles)
        try:
            half = run_half(tiles)
        except Exception as exc:  # an operation without a float16 kernel on this device
            half, problem = None, f"it failed in float16 ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        if half is not None:
            error = float(np.max(np.abs(half - exact))) if np.isfinite(half).all() else float("inf")
            limit = HALF_TOLERANCE * max(1.0, float(np.max(np.abs(exact))))
            problem = "" if error <= limit else f"float16 answers differ from float32 ones by {error:.3g} (> {limit:.3g})"
        if problem:
            log.warning(f"network_predictions: {name}: {problem}; running in float32")
            chosen.append(run)
            return exact
        chosen.append(run_half)
        return half

    return run_checked


def _runner(model: NetworkModel, device: str, precision: str = "auto") -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """A function from a batch of input tiles to the model's outputs, on ``device``, in
    ``precision`` (auto: float16 on a CUDA device where it is safe, float32 on the CPU)."""
    _check_choices(device, precision)
    if model.path.suffix.lower() in EXPORTED_SUFFIXES + TORCHSCRIPT_SUFFIXES:
        return _torch_runner(model, device, precision)
    if precision == "float16":
        raise ValueError(f"network_predictions: {model.path.name} is an ONNX model, which runs in the precision it was "
                         "exported in; precision float16 needs the PyTorch file (.pt2 or .pt)")
    return _onnx_runner(model, device)


def predict_network(model: NetworkModel, grayscale: NDArray[Any], device: str = "auto",
                    precision: str = "auto") -> NDArray[np.float32]:
    """The model's channels over ``grayscale``, (Z, Y, X, C) float32: tile by tile, each
    tile's input its output box plus the margin (the box's own edges mirrored), so that
    every voxel's answer is the one of the whole volume wherever the box lies in it.

    A box one voxel thin is computed two voxels thick and cut (exported PyTorch programs
    refuse outputs of size 1: they specialise on it), which needs one more mirrored voxel
    on the high sides."""
    run = _runner(model, device, precision)
    m = model.margin
    image = grayscale.astype(np.float32)
    image *= np.float32(model.scale)
    image += np.float32(model.offset)
    padded = np.pad(image, [(m, m + 1)] * 3, mode="symmetric")
    del image
    out = np.empty(grayscale.shape + (model.channels,), np.float32)
    boxes: dict[tuple[int, ...], list[tuple[slice, ...]]] = {}  # output boxes of one shape, batched together
    for z0, y0, x0 in itertools.product(*(range(0, n, t) for n, t in zip(grayscale.shape, model.tile))):
        box = tuple(slice(a, min(a + t, n)) for a, t, n in zip((z0, y0, x0), model.tile, grayscale.shape))
        boxes.setdefault(tuple(b.stop - b.start for b in box), []).append(box)
    for shape, same in boxes.items():
        for first in range(0, len(same), model.batch):
            group = same[first:first + model.batch]
            grown = tuple(max(n, 2) for n in shape)
            tiles = np.stack([padded[tuple(slice(b.start, b.start + g + 2 * m) for b, g in zip(box, grown))]
                              for box in group])[:, None]
            answer = run(tiles)
            want = (len(group), model.channels, *grown)
            if answer.shape != want:
                raise ValueError(f"{model.path} gave an output of shape {answer.shape} for an input of shape "
                                 f"{tiles.shape}; its sidecar (margin {m}, {model.channels} outputs) promises {want}")
            for box, tile in zip(group, answer):
                out[box] = np.moveaxis(tile[:, :shape[0], :shape[1], :shape[2]], 0, -1)
    return out
