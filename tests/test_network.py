"""Networks trained elsewhere, run blockwise: a tiny network trained in the test on
synthetic EM, exported to ONNX with its sidecar, run by ``network_predictions`` on every
executor; blocked answers are the whole volume's, and a bad model or sidecar is refused
in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime", reason="needs the labelstitch[network] extra (ONNX Runtime)")
pytest.importorskip("onnx", reason="needs the labelstitch[network] extra (onnx)")

from labelstitch import api  # noqa: E402
from labelstitch.plugins import resolve_stage  # noqa: E402
from labelstitch.plugins.builtin import naive_membrane_predictions, network_predictions  # noqa: E402
from labelstitch.plugins.classifier import membrane_annotations  # noqa: E402
from labelstitch.stores import open_volume  # noqa: E402
from labelstitch.synthetic import em_volume  # noqa: E402
from labelstitch.testing import executor_params, roc_auc  # noqa: E402
from labelstitch.testing.tiny_network import export_tiny_network, train_tiny_network  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=3)
    network = train_tiny_network(gray, membrane_annotations(truth) == 1, steps=300)
    return export_tiny_network(network, tmp_path_factory.mktemp("net") / "boundary.onnx", tile=(8, 24, 24))


def test_a_network_trained_here_beats_the_naive_predictions_on_an_unseen_volume(model):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=4)
    membrane = membrane_annotations(truth) == 1
    mask = np.zeros(gray.shape, bool)
    learned = network_predictions(gray, mask, model_path=str(model))
    assert learned.shape == gray.shape and learned.dtype == np.float32
    assert roc_auc(learned, membrane) > roc_auc(naive_membrane_predictions(gray, mask, sigma=1.0), membrane) + 0.005


@settings(max_examples=25)
@given(start=st.tuples(st.integers(0, 10), st.integers(0, 20), st.integers(0, 20)),
       size=st.tuples(st.integers(1, 14), st.integers(1, 30), st.integers(1, 30)))
def test_a_box_with_the_models_margin_predicts_what_the_whole_volume_does(model, start, size):
    """Tiles, box edges and the mirrored volume edges leave no seam: the same bits."""
    gray, _ = em_volume((24, 48, 48), n_neurites=12, seed=6)
    whole = network_predictions(gray, np.zeros(gray.shape, bool), model_path=str(model))
    box = tuple(slice(s, min(s + n, d)) for s, n, d in zip(start, size, gray.shape))
    grown = tuple(slice(max(b.start - 2, 0), min(b.stop + 2, d)) for b, d in zip(box, gray.shape))
    part = network_predictions(gray[grown], np.zeros(gray[grown].shape, bool), model_path=str(model))
    inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))
    np.testing.assert_array_equal(part[inner], whole[box])


def test_the_stage_declares_the_sidecars_channels_margin_and_memory(model):
    stage = resolve_stage("predict-voxels", "network_predictions", {"model_path": str(model)})
    assert stage.info.context == 2
    assert [(c.meaning, c.index) for c in stage.info.writes] == [("boundary", 0)]
    assert stage.info.bytes_per_voxel == 16
    assert resolve_stage("predict-voxels", "network_predictions").info.writes == ()  # no model yet: nothing declared


@pytest.mark.parametrize("executor", executor_params("processes", "spark", "dask"))
def test_every_executor_writes_the_serial_bytes(model, tmp_path, executor):
    gray, _ = em_volume((24, 40, 40), n_neurites=12, seed=8)
    np.save(tmp_path / "gray.npy", gray)
    stage = {"function": "network_predictions", "parameters": {"model_path": str(model)}}

    def run(name, chunk, how):
        config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{name}.zarr"),
                  "options": {"chunk-size": chunk, "overlap": 4, "segmentor": {"configuration": {"predict-voxels": stage}}}}
        api.run(config, executor=how, workers=2 if how != "serial" else None, progress=False)
        with open_volume(str(tmp_path / f"{name}.zarr")) as out:
            return out.read()

    serial = run("serial", 12, "serial")
    assert serial.max() > 1  # a real segmentation
    np.testing.assert_array_equal(run(executor, 12, executor), serial)


def test_a_bad_model_or_sidecar_is_refused_in_one_line(model, tmp_path):
    gray = np.zeros((8, 8, 8), np.uint8)
    mask = np.zeros(gray.shape, bool)
    with pytest.raises(ValueError, match=r"no model file at .*missing.onnx"):
        network_predictions(gray, mask, model_path=str(tmp_path / "missing.onnx"))
    bare = tmp_path / "bare.onnx"
    shutil.copy(model, bare)
    with pytest.raises(ValueError, match=r"has no sidecar bare.json beside it"):
        network_predictions(gray, mask, model_path=str(bare))
    spec = json.loads(model.with_suffix(".json").read_text())
    for change, message in [({"format": "x"}, "must say \"format\""),
                            ({"outputs": [{"meaning": "affinity"}]}, "needs its \"offset\""),
                            ({"margin": -1}, "\"margin\" must be"),
                            ({"outputs": [{"meaning": "boundary"}, {"meaning": "mitochondria"}]},
                             r"gave an output of shape \(1, 1, 8, 8, 8\).*promises \(1, 2, 8, 8, 8\)"),
                            ({"margin": 1}, r"promises \(1, 1, 8, 8, 8\)")]:
        (tmp_path / "bare.json").write_text(json.dumps({**spec, **change}))
        with pytest.raises(ValueError, match=message) as raised:
            network_predictions(gray, mask, model_path=str(bare))
        assert "\n" not in str(raised.value)
    (tmp_path / "bare.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="device cuda asked for"):
        network_predictions(gray, mask, model_path=str(bare), device="cuda")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="is not a model ONNX Runtime can run"):
        network_predictions(gray, mask, model_path=str(tmp_path / "junk.onnx"))


def test_a_stage_reading_a_channel_the_network_does_not_write_is_refused_before_any_work(model, tmp_path):
    np.save(tmp_path / "gray.npy", np.zeros((16, 16, 16), np.uint8))
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "out.zarr"),
              "options": {"chunk-size": 8, "overlap": 2, "segmentor": {"configuration": {
                  "predict-voxels": {"function": "network_predictions", "parameters": {"model_path": str(model)}},
                  "agglomerate-supervoxels": {"function": "rag_agglomeration",
                                              "parameters": {"mitochondria_channel": 1}}}}}}
    with pytest.raises(ValueError, match="mitochondria"):
        api.run(config, progress=False)
    assert not (tmp_path / "out.zarr").exists()


def test_device_auto_falls_back_to_the_cpu_with_one_note_and_the_same_answer(model, caplog, monkeypatch):
    import onnxruntime

    from labelstitch.plugins import network

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider: auto runs on the GPU")
    monkeypatch.setattr(network, "_NOTED", [])
    gray, _ = em_volume((12, 24, 24), n_neurites=6, seed=2)
    mask = np.zeros(gray.shape, bool)
    with caplog.at_level("WARNING", logger="labelstitch"):
        auto = [network_predictions(gray, mask, model_path=str(model)) for _ in range(2)]
    notes = [r.getMessage() for r in caplog.records if "running on the CPU" in r.getMessage()]
    assert len(notes) == 1
    np.testing.assert_array_equal(auto[0], auto[1])
    np.testing.assert_array_equal(network_predictions(gray, mask, model_path=str(model), device="cpu"), auto[0])
