"""``labelstitch train``: a whole segmentor trained and tuned on one volume, used as it is
by a run on another."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import labelstitch as ls
from labelstitch._cli.main import ExitCode, main
from labelstitch.pipeline import run
from labelstitch.plugins.training import split_validation
from labelstitch.synthetic import em_volume


def test_train_writes_a_segmentor_a_run_can_use_and_it_beats_the_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gray, truth = em_volume((64, 96, 96), n_neurites=30, seed=11)
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "20", "--samples", "40000",
                 "--validation", "48:64", "-q"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "validation (z 48:64)" in out and "floor" in out and "+ learned_agglomeration threshold" in out
    segmentor = json.loads((tmp_path / "model" / "segmentor.json").read_text())
    assert segmentor["predict-voxels"]["function"] == "pixel_classifier"
    assert (tmp_path / "model" / "pixel-classifier.pkl").exists()
    learned = segmentor["agglomerate-supervoxels"]["function"] == "learned_agglomeration"
    assert (tmp_path / "model" / "agglomeration.npz").exists() == learned  # a model only where it is used
    # another volume, segmented in blocks with the trained segmentor and with the defaults
    other_gray, other_truth = em_volume((48, 96, 96), n_neurites=30, seed=12)
    np.save("other.npy", other_gray)
    np.save("other-truth.npy", other_truth)
    options = {"chunk-size": 48, "overlap": 8}
    trained = run({"input": "other.npy", "output": "trained.zarr", "ground-truth": "other-truth.npy",
                   "options": {**options, "segmentor": {"configuration": segmentor}}})
    default = run({"input": "other.npy", "output": "default.zarr", "ground-truth": "other-truth.npy", "options": options})
    assert trained.vi.total < default.vi.total, (trained.vi, default.vi)


def test_validation_ranges_are_checked():
    assert split_validation(40, (0, 10)) == (slice(10, 40), slice(0, 10))
    with pytest.raises(ValueError, match="not inside the volume's depth 40"):
        split_validation(40, (30, 50))
    with pytest.raises(ValueError, match="fewer than 8 slices to train on"):
        split_validation(12, (4, 10))
    assert main(["train", "a.npy", "b.npy", "--out", "m", "--validation", "x"]) == ExitCode.USAGE_ERROR


def test_a_model_folder_is_replaced_only_with_overwrite_and_a_config_can_name_its_segmentor(tmp_path, monkeypatch, capsys):
    """Configs point to a model folder: train refuses to replace it silently, and a config
    names the trained segmentor by its file (relative to the config)."""
    from labelstitch.synthetic import em_volume

    monkeypatch.chdir(tmp_path)
    gray, truth = em_volume((48, 64, 64), n_neurites=20, seed=3)
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("a model other configs use")
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "4", "-q"]) == ExitCode.USAGE_ERROR
    assert "exists already" in capsys.readouterr().err and (tmp_path / "model" / "keep.txt").exists()
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "4", "--samples", "30",
                 "--overwrite"]) == ExitCode.USAGE_ERROR
    assert "a forest needs at least 1 tree and 100 samples" in capsys.readouterr().err
    assert main(["train", "gray.npy", "truth.npy", "--out", "model", "--trees", "4", "--samples", "30000",
                 "--overwrite"]) == ExitCode.OK
    out, err = capsys.readouterr()
    for step in ("train:   features: ", "train:   forest: 4 trees on 30,000 voxels", "train:   [1/4] ", "train:   [4/4] "):
        assert step in err, (step, err)  # progress inside the long steps
    assert not (tmp_path / "model" / "keep.txt").exists() and (tmp_path / "model" / "segmentor.json").exists()
    before = (tmp_path / "model" / "segmentor.json").read_text()
    np.save("flat.npy", np.full((16, 32, 32), 200, np.uint8))  # nothing to learn from: training fails
    np.save("one.npy", np.ones((16, 32, 32), np.uint32))
    assert main(["train", "flat.npy", "one.npy", "--out", "model", "--trees", "4", "-q", "--overwrite"]) == ExitCode.USAGE_ERROR
    capsys.readouterr()
    assert (tmp_path / "model" / "segmentor.json").read_text() == before  # a failed training leaves the model whole
    assert not list(tmp_path.glob(".partial-*"))
    assert '"segmentor": "' in out and not list(tmp_path.glob(".partial-*"))
    (tmp_path / "project").mkdir()
    config = {"input": "../gray.npy", "output": "seg.zarr",
              "options": {"chunk-size": 32, "overlap": 4, "segmentor": "../model/segmentor.json"}}
    (tmp_path / "project" / "run.json").write_text(json.dumps(config))
    result = run(tmp_path / "project" / "run.json")
    assert result.counts["bodies"] > 1
    stages = json.loads((tmp_path / "model" / "segmentor.json").read_text())
    loaded = ls.RunConfig.load(tmp_path / "project" / "run.json")
    assert loaded.stages[0].function == stages["predict-voxels"]["function"]
    with pytest.raises(ls.pipeline.ConfigError, match="options.segmentor: no segmentor file at .*missing.json"):
        ls.RunConfig.load({**config, "options": {"segmentor": "missing.json"}})


@settings(max_examples=200, deadline=None)
@given(m=st.floats(0.01, 0.99), flat=st.floats(0.0, 0.5))
def test_the_threshold_search_goes_on_until_the_curve_turns(m, flat):
    """A held-out curve with one minimum anywhere in (0, 1): the search finds it within half
    a grid step, wherever the starting grid stops, and never tries 0 or 1."""
    from labelstitch.plugins.training import search_threshold

    calls = []

    def curve(t):
        calls.append(t)
        return abs(t - m) + flat  # a V: no flat part to stop on early

    tried = search_threshold(curve, (0.2, 0.3, 0.4, 0.5, 0.6))
    best = min(tried, key=tried.get)
    assert abs(best - m) <= 0.05
    assert all(0 < t < 1 for t in tried) and len(calls) == len(set(calls)) == len(tried) <= 20
    ts = sorted(tried)
    assert ts[0] < best < ts[-1] or min(best, 1 - best) < 0.03  # the best is bracketed, or at a bound


def test_a_flat_curve_is_not_followed_to_an_extreme():
    from labelstitch.plugins.training import search_threshold

    tried = search_threshold(lambda t: 0.125, (0.2, 0.3, 0.4, 0.5, 0.6))
    assert min(tried) >= 0.15 and max(tried) <= 0.6  # the grid and at most the refinement around the best
    falling_then_flat = search_threshold(lambda t: max(0.2, 1 - t), (0.2, 0.3, 0.4, 0.5, 0.6))
    assert max(falling_then_flat) <= 0.9  # followed while it fell, stopped one step into the flat part
