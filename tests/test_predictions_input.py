"""Predictions made elsewhere: a config's ``predictions`` volumes instead of the
predict-voxels stage, read per subvolume with its halo and context."""

from __future__ import annotations

import json

import numpy as np
import pytest

import labelstitch
from labelstitch._cli.main import ExitCode, main
from labelstitch.plugins.builtin import naive_membrane_predictions
from labelstitch.stores import open_volume, staged_output
from labelstitch.synthetic import em_volume
from labelstitch.testing import executor_params


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictions")
    gray, truth = em_volume((32, 64, 64), n_neurites=14, seed=8)
    np.save(folder / "gray.npy", gray)
    boundary = naive_membrane_predictions(gray, np.zeros(gray.shape, bool))  # what the predictor makes, pointwise
    with staged_output(str(folder / "pred.zarr/boundary"), gray.shape, np.float32, chunks=(16, 32, 32)) as store:
        store.write(labelstitch.Box.from_shape(gray.shape), boundary)
    np.save(folder / "boundary-u8.npy", (255 - gray.astype(np.int16)).astype(np.uint8))
    np.save(folder / "boundary-scaled.npy", (255 - gray.astype(np.float32)) / np.float32(255))
    mito = np.zeros(gray.shape, np.float32)
    mito[10:14, 20:30, 20:30] = 0.9
    np.save(folder / "mito.npy", mito)
    return folder, gray, truth


def _config(folder, output, **more):
    options = {"chunk-size": [16, 32, 32], "overlap": 4, "background-value": None, "resolution": [8, 8, 8]}
    options.update(more.pop("options", {}))
    return {"input": str(folder / "gray.npy"), "output": str(folder / output), "options": options, **more}


def _labels(path):
    with open_volume(str(path)) as store:
        return store.read()


def test_stored_predictions_give_what_the_predictor_gives(volume):
    folder, _, _ = volume
    labelstitch.run(_config(folder, "by-stage.zarr"))
    labelstitch.run(_config(folder, "from-volume.zarr", predictions=str(folder / "pred.zarr/boundary")))
    np.testing.assert_array_equal(_labels(folder / "by-stage.zarr"), _labels(folder / "from-volume.zarr"))
    made = labelstitch.info(str(folder / "from-volume.zarr"))["provenance"][0]
    assert "predictions[0]" in made["inputs"]  # fingerprinted like the input
    # with context, the predictions are read over the larger box too: still the predictor's answer
    labelstitch.run(_config(folder, "by-stage-ctx.zarr", options={"context": 6}))
    labelstitch.run(_config(folder, "from-volume-ctx.zarr", predictions=str(folder / "pred.zarr/boundary"),
                            options={"context": 6}))
    np.testing.assert_array_equal(_labels(folder / "by-stage-ctx.zarr"), _labels(folder / "from-volume-ctx.zarr"))


def test_uint8_predictions_are_read_as_value_over_255(volume):
    folder, _, _ = volume
    labelstitch.run(_config(folder, "u8.zarr", predictions=str(folder / "boundary-u8.npy")))
    labelstitch.run(_config(folder, "scaled.zarr", predictions=str(folder / "boundary-scaled.npy")))
    np.testing.assert_array_equal(_labels(folder / "u8.zarr"), _labels(folder / "scaled.zarr"))


@pytest.mark.parametrize("executor", executor_params("processes", "spark"))
def test_every_executor_reads_the_same_predictions(volume, executor):
    folder, _, _ = volume
    pred = str(folder / "pred.zarr/boundary")
    labelstitch.run(_config(folder, "serial.zarr", predictions=pred), overwrite=True)
    labelstitch.run(_config(folder, f"{executor}.zarr", predictions=pred), executor=executor, workers=2, overwrite=True)
    np.testing.assert_array_equal(_labels(folder / "serial.zarr"), _labels(folder / f"{executor}.zarr"))


def test_declared_channels_reach_the_stages(volume):
    """A mitochondria channel from a second volume is what a context-aware agglomeration
    reads; without it, that agglomeration is refused before any work."""
    folder, _, _ = volume
    stages = {"agglomerate-supervoxels": {"function": "rag_agglomeration",
                                          "parameters": {"threshold": 0.4, "mitochondria_channel": 1}}}
    two = [str(folder / "pred.zarr/boundary"), str(folder / "mito.npy")]
    channels = [{"meaning": "boundary"}, {"meaning": "mitochondria"}]
    labelstitch.run(_config(folder, "mito.zarr", predictions=two,
                            options={"prediction-channels": channels, "segmentor": {"configuration": {
                                "create-supervoxels": {"function": "seeded_watershed",
                                                       "parameters": {"seed_threshold": 0.3, "min_segment_size": 50}},
                                **stages}}}))
    assert _labels(folder / "mito.zarr").max() > 0
    with pytest.raises(labelstitch.api.PluginError, match="reads mitochondria from channel 1 .*predictions volumes.* writes boundary \\(channel 0\\)"):
        labelstitch.run(_config(folder, "nomito.zarr", predictions=str(folder / "pred.zarr/boundary"),
                                options={"segmentor": {"configuration": {
                                    "create-supervoxels": {"function": "seeded_watershed", "parameters": {}}, **stages}}}))
    assert not (folder / "nomito.zarr").exists()
    stage = labelstitch.api.resolve_stage  # the affinity offset is kept in the declared channel
    from labelstitch.pipeline.predictions import stored_predictions_stage

    declared = stored_predictions_stage(({"meaning": "boundary"}, {"meaning": "affinity", "offset": [-1, 0, 0]}))
    assert [(c.meaning, c.offset) for c, _ in declared.channels("writes")] == [("boundary", None), ("affinity", (-1, 0, 0))]
    assert declared.info.bytes_per_voxel == 12 and stage is not None


@pytest.mark.parametrize("make, more, message", [
    (lambda f: np.save(f / "small.npy", np.zeros((8, 8, 8), np.float32)), {"predictions": "small.npy"},
     "predictions[0] {folder}/small.npy has shape (8, 8, 8); input has (32, 64, 64)"),
    (lambda f: np.save(f / "int16.npy", np.zeros((32, 64, 64), np.int16)), {"predictions": "int16.npy"},
     "has dtype int16; expected float probabilities in [0, 1] or uint8"),
    (lambda f: None, {"predictions": ["pred.zarr/boundary", "mito.npy"]},
     "predictions gives 2 volume(s) but options.prediction-channels describes 0"),
    (lambda f: None, {"predictions": "pred.zarr/boundary", "output": "pred.zarr"},
     "would overwrite predictions[0]"),
])
def test_bad_predictions_are_refused_in_one_line_before_anything_is_written(volume, tmp_path, capsys, make, more, message):
    folder, _, _ = volume
    make(folder)
    config = _config(folder, "refused.zarr")
    config.update({k: ([str(folder / p) for p in v] if isinstance(v, list) else str(folder / v)) for k, v in more.items()})
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(folder=folder) in err[0], err
    assert not (folder / "refused.zarr").exists()


def test_predictions_outside_zero_one_fail_the_block_with_its_box(volume):
    folder, gray, _ = volume
    np.save(folder / "percent.npy", 100 * naive_membrane_predictions(gray, np.zeros(gray.shape, bool)))
    with pytest.raises(Exception, match="predictions\\[0\\] .*percent.npy holds values from .* must be probabilities in \\[0, 1\\]"):
        labelstitch.run(_config(folder, "percent.zarr", predictions=str(folder / "percent.npy"), options={"retries": 0}))


def test_changed_predictions_refuse_a_resume(volume, tmp_path):
    folder, gray, _ = volume
    pred = tmp_path / "pred.npy"
    np.save(pred, naive_membrane_predictions(gray, np.zeros(gray.shape, bool)))
    config = _config(folder, "resumed.zarr", predictions=str(pred), options={"checkpoint-dir": str(tmp_path / "ckpt")})
    labelstitch.run(config, overwrite=True)
    np.save(pred, np.clip(np.load(pred) * 0.5, 0, 1).astype(np.float32))  # the lab predicted again
    with pytest.raises(ValueError, match="predictions\\[0\\]"):
        labelstitch.run(config, resume=True, overwrite=True)
