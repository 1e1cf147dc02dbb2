"""Networks trained in PyTorch, the way labs train theirs, run blockwise as TorchScript: a
tiny network trained here on synthetic EM beats the naive predictions on an unseen volume,
its torch.export, TorchScript and ONNX exports give the same answers, blocked answers are the whole
volume's, and every executor writes the same bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch", reason="needs PyTorch (the labelstitch[torch] extra; CI installs the CPU build)")

from labelstitch import api  # noqa: E402
from labelstitch.plugins.builtin import naive_membrane_predictions, network_predictions  # noqa: E402
from labelstitch.plugins.classifier import membrane_annotations  # noqa: E402
from labelstitch.stores import open_volume  # noqa: E402
from labelstitch.synthetic import em_volume  # noqa: E402
from labelstitch.testing import executor_params, roc_auc  # noqa: E402
from labelstitch.testing.tiny_network import export_torch_network, train_tiny_torch_network  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=3)
    return train_tiny_torch_network(gray, membrane_annotations(truth) == 1, steps=300)


@pytest.fixture(scope="module", params=["pt2", "pt"])
def model(trained, tmp_path_factory, request):
    """The network as a torch.export program (.pt2) and as TorchScript (.pt)."""
    return export_torch_network(trained, tmp_path_factory.mktemp("torch") / f"boundary.{request.param}", tile=(8, 24, 24))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The torch.export program alone (the route PyTorch recommends now)."""
    return export_torch_network(trained, tmp_path_factory.mktemp("exported") / "boundary.pt2", tile=(8, 24, 24))


def test_a_network_trained_in_pytorch_beats_the_naive_predictions_on_an_unseen_volume(model):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=4)
    membrane = membrane_annotations(truth) == 1
    mask = np.zeros(gray.shape, bool)
    learned = network_predictions(gray, mask, model_path=str(model), device="cpu")
    assert learned.shape == gray.shape and learned.dtype == np.float32
    assert roc_auc(learned, membrane) > roc_auc(naive_membrane_predictions(gray, mask, sigma=1.0), membrane) + 0.005


def test_pytorch_and_onnx_exports_of_one_network_give_the_same_answers(trained, model, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the labelstitch[network] extra (ONNX Runtime)")
    pytest.importorskip("onnx", reason="needs the labelstitch[network] extra (onnx)")
    onnx_model = export_torch_network(trained, tmp_path / "boundary.onnx", tile=(8, 24, 24))
    gray, _ = em_volume((20, 40, 40), n_neurites=10, seed=5)
    mask = np.zeros(gray.shape, bool)
    torch_answer = network_predictions(gray, mask, model_path=str(model), device="cpu")
    onnx_answer = network_predictions(gray, mask, model_path=str(onnx_model), device="cpu")
    np.testing.assert_allclose(torch_answer, onnx_answer, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(start=st.tuples(st.integers(0, 10), st.integers(0, 20), st.integers(0, 20)),
       size=st.tuples(st.integers(1, 14), st.integers(1, 30), st.integers(1, 30)))
def test_a_box_with_the_models_margin_predicts_what_the_whole_volume_does(model, start, size):
    """Tiles, box edges and the mirrored volume edges leave no seam. PyTorch's CPU
    convolutions choose their blocking by the input's shape, so a voxel's answer may differ
    in its last bits between tile shapes (3.5e-10 seen): equal to float32 rounding."""
    gray, _ = em_volume((24, 48, 48), n_neurites=12, seed=6)
    whole = network_predictions(gray, np.zeros(gray.shape, bool), model_path=str(model), device="cpu")
    box = tuple(slice(s, min(s + n, d)) for s, n, d in zip(start, size, gray.shape))
    grown = tuple(slice(max(b.start - 2, 0), min(b.stop + 2, d)) for b, d in zip(box, gray.shape))
    part = network_predictions(gray[grown], np.zeros(gray[grown].shape, bool), model_path=str(model), device="cpu")
    inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))
    np.testing.assert_allclose(part[inner], whole[box], rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("executor", executor_params("processes", "spark", "dask"))
def test_every_executor_writes_the_serial_bytes(exported, tmp_path, executor):
    gray, _ = em_volume((24, 40, 40), n_neurites=12, seed=8)
    np.save(tmp_path / "gray.npy", gray)
    stage = {"function": "network_predictions", "parameters": {"model_path": str(exported), "device": "cpu"}}

    def run(name, how):
        config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{name}.zarr"),
                  "options": {"chunk-size": 12, "overlap": 4, "segmentor": {"configuration": {"predict-voxels": stage}}}}
        api.run(config, executor=how, workers=2 if how != "serial" else None, progress=False)
        with open_volume(str(tmp_path / f"{name}.zarr")) as out:
            return out.read()

    serial = run("serial", "serial")
    assert serial.max() > 1  # a real segmentation
    np.testing.assert_array_equal(run(executor, executor), serial)


def test_a_bad_torchscript_file_or_device_is_refused_in_one_line(model, tmp_path):
    import torch

    gray = np.zeros((8, 8, 8), np.uint8)
    mask = np.zeros(gray.shape, bool)
    spec = json.loads(model.with_suffix(".json").read_text())
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "junk.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="is not a TorchScript model PyTorch can load") as raised:
        network_predictions(gray, mask, model_path=str(tmp_path / "junk.pt"))
    assert "\n" not in str(raised.value)
    (tmp_path / "junk.pt2").write_bytes(b"not a model")
    (tmp_path / "junk.json").rename(tmp_path / "junk2.json")
    (tmp_path / "junk2.json").rename(tmp_path / "junk.json")
    with pytest.raises(ValueError, match=r"is not an exported program \(torch.export\) PyTorch can load") as raised:
        network_predictions(gray, mask, model_path=str(tmp_path / "junk.pt2"))
    assert "\n" not in str(raised.value)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device cuda asked for, but PyTorch sees no CUDA device"):
            network_predictions(gray, mask, model_path=str(model), device="cuda")
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        network_predictions(gray, mask, model_path=str(model), device="tpu")


def test_float16_runs_where_its_first_batch_shows_it_safe_and_float32_elsewhere(model, tmp_path, caplog):
    """``precision`` float16 is checked on the first batch against float32: a network whose
    activations stay in float16's range runs in float16 (answers within 0.01, not the same
    bits); one that overflows it (here its input scaled by 10^5) runs in float32 with a
    note. ``auto`` on the CPU is float32, to the bit."""
    gray, _ = em_volume((12, 30, 30), n_neurites=8, seed=9)
    mask = np.zeros(gray.shape, bool)
    exact = network_predictions(gray, mask, model_path=str(model), device="cpu", precision="float32")
    np.testing.assert_array_equal(network_predictions(gray, mask, model_path=str(model), device="cpu"), exact)
    half = network_predictions(gray, mask, model_path=str(model), device="cpu", precision="float16")
    assert not np.array_equal(half, exact) and np.abs(half - exact).max() < 0.01
    spec = json.loads(model.with_suffix(".json").read_text())
    spec["input"] = {"scale": 1e5, "offset": 0.0}
    loud = tmp_path / f"loud{model.suffix}"
    loud.write_bytes(model.read_bytes())
    loud.with_suffix(".json").write_text(json.dumps(spec))
    caplog.set_level("WARNING", logger="labelstitch")
    exact = network_predictions(gray, mask, model_path=str(loud), device="cpu", precision="float32")
    np.testing.assert_array_equal(network_predictions(gray, mask, model_path=str(loud), device="cpu", precision="float16"),
                                  exact)
    notes = [r.getMessage() for r in caplog.records if r.name == "labelstitch"]
    assert len(notes) == 1 and "float16 answers differ from float32 ones by" in notes[0], notes


def test_a_bad_precision_is_refused_before_any_work(model, tmp_path):
    from labelstitch.plugins.network import declare_network

    with pytest.raises(ValueError, match="precision must be auto, float32 or float16, not 'half'"):
        declare_network(str(model), precision="half")
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda, not 'gpu'"):
        declare_network(str(model), device="gpu")
    pytest.importorskip("onnxruntime", reason="needs the labelstitch[network] extra (ONNX Runtime)")
    onnx_model = tmp_path / "m.onnx"
    onnx_model.write_bytes(b"")
    onnx_model.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
    gray = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="is an ONNX model, which runs in the precision it was exported in"):
        network_predictions(gray, np.zeros(gray.shape, bool), model_path=str(onnx_model), precision="float16")
