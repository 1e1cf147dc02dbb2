from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labelstitch.plugins import PluginError, get_plugin_manager, resolve_stage, stage_functions
from labelstitch.plugins.builtin import naive_membrane_predictions, seeded_watershed

ROOT = Path(__file__).resolve().parents[1]


def test_builtins_are_registered_as_a_plugin():
    found = stage_functions()
    assert {"naive_membrane_predictions", "threshold_predictions", "pixel_classifier"} <= set(found["predict-voxels"])
    assert set(found["create-supervoxels"]) >= {"seeded_watershed"}
    assert set(found["agglomerate-supervoxels"]) >= {"rag_agglomeration", "no_agglomeration"}
    assert found["create-supervoxels"]["seeded_watershed"][1] == "labelstitch.builtin"
    get_plugin_manager().check_pending()


def test_resolve_by_name_dotted_path_and_callable(tmp_path, monkeypatch):
    stage = resolve_stage("create-supervoxels", "seeded_watershed", {"seed_threshold": 0.3})
    assert stage.function is seeded_watershed and stage.parameters == {"seed_threshold": 0.3}
    (tmp_path / "mystages.py").write_text(
        "import numpy as np\n"
        "def predict_via_threshold(grayscale_vol, mask_vol, threshold):\n"
        "    return (grayscale_vol < threshold).astype(np.float32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    dotted = resolve_stage("predict-voxels", "mystages.predict_via_threshold", {"threshold": 30})
    out = dotted(np.array([[[10, 50]]], np.uint8), np.zeros((1, 1, 2), bool))
    assert out.tolist() == [[[1.0, 0.0]]]
    direct = resolve_stage("predict-voxels", naive_membrane_predictions)
    assert direct.name == "naive_membrane_predictions"


@pytest.mark.parametrize(
    ("stage", "function", "params", "message"),
    [
        ("predict-voxels", "nope", {}, "unknown function 'nope'; registered: .*naive_membrane_predictions"),
        ("predict-voxels", "nomodule.fn", {}, "cannot import module 'nomodule'"),
        ("create-supervoxels", "seeded_watershed", {"seed_thresh": 1}, "has no parameter 'seed_thresh'; its parameters are: boundary_channel=0"),
        ("predict-voxels", "math.sqrt", {}, "must accept \\(grayscale, mask"),
        ("segment", "x", {}, "unknown stage 'segment'"),
    ],
)
def test_bad_stage_configs_are_refused(stage, function, params, message):
    with pytest.raises(PluginError, match=message):
        resolve_stage(stage, function, params)


def test_missing_required_parameter(tmp_path, monkeypatch):
    (tmp_path / "needy.py").write_text("def predict(grayscale, mask, level):\n    return grayscale\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="needs parameter 'level'"):
        resolve_stage("predict-voxels", "needy.predict")


def test_seeded_watershed_respects_the_mask_and_merges_small_segments():
    pred = np.ones((6, 20, 20), np.float32)
    pred[:, 2:9, 2:9] = 0.0
    pred[:, 11:18, 2:18] = 0.0
    pred[:, 3:5, 12:14] = 0.0  # a 24-voxel basin
    mask = np.zeros(pred.shape, bool)
    mask[:, :, 19] = True
    labels = seeded_watershed(pred, mask, seed_threshold=0.5, seed_size=5)
    assert (labels[mask] == 0).all() and (labels[~mask] > 0).all()
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    assert ids.size == 3  # 3 basins
    smallest, second = np.sort(sizes)[:2]
    merged = seeded_watershed(pred, mask, seed_threshold=0.5, seed_size=5, min_segment_size=int(smallest) + 1)
    assert np.unique(merged[merged > 0]).size == 2
    assert np.sort(np.unique(merged[merged > 0], return_counts=True)[1])[0] >= second
    no_seeds = seeded_watershed(pred, mask, seed_threshold=0.5, seed_size=10_000)
    assert (no_seeds == 0).all()


def test_an_installed_plugin_package_is_found_and_used(tmp_path):
    plugin = tmp_path / "plugin-source"  # a copy: building in the source tree would leave an .egg-info there
    shutil.copytree(ROOT / "docs" / "examples" / "labelstitch-example-plugin", plugin)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(plugin)]
    subprocess.run(pip, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}  # installed for the subprocesses only
    listing = subprocess.run(
        [sys.executable, "-m", "labelstitch._cli.main", "plugins", "--json"], check=True, capture_output=True, text=True, env=env
    )
    found = json.loads(listing.stdout)["predict-voxels"]
    assert found["dark_is_membrane"] == {"plugin": "example", "across_blocks": False, "parameters": {"cutoff": 100},
                                         "reads": [], "writes": [["boundary", 0]], "bytes_per_voxel": 0}
    from labelstitch.synthetic import em_volume

    gray, truth = em_volume((32, 48, 48), n_neurites=10, seed=3)
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "truth.npy", truth)
    config = {
        "input": "gray.npy",
        "output": "seg.zarr",
        "ground-truth": "truth.npy",
        "options": {
            "chunk-size": 32,
            "overlap": 4,
            "segmentor": {
                "configuration": {
                    "predict-voxels": {"function": "dark_is_membrane", "parameters": {"cutoff": 120}},
                    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.5}},
                }
            },
        },
    }

    def run_cli(name: str) -> dict:
        (tmp_path / name).write_text(json.dumps(config))
        command = [sys.executable, "-m", "labelstitch._cli.main", "run", str(tmp_path / name), "--json", "-q"]
        return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)

    first = run_cli("run.json")
    config["output"] = "seg-mutual.zarr"
    config["options"]["stitch-algorithm"] = "mutual-any"
    (tmp_path / "mutual.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "labelstitch._cli.main", "run", str(tmp_path / "mutual.json"), "--json", "-q",
               "--executor", "processes", "--workers", "2"]  # the plugin's rule is known in the workers too
    mutual = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)
    assert mutual["stitch"]["rule"] == "mutual-any"
    assert mutual["counts"]["matches"] >= first["counts"]["matches"]  # medium's matches, and the small ones
    del config["options"]["stitch-algorithm"]
    config["output"] = "seg-darker.zarr"
    config["options"]["segmentor"]["configuration"]["predict-voxels"]["parameters"]["cutoff"] = 60
    second = run_cli("darker.json")
    assert first["counts"]["subvolumes"] == 4 and first["counts"]["matches"] > 0
    assert first["counts"]["supervoxels"] != second["counts"]["supervoxels"]  # the plugin's parameter is used
    from labelstitch.stores import open_volume

    with open_volume(str(tmp_path / "seg.zarr")) as out:
        stage = out.metadata["config"]["options"]["segmentor"]["configuration"]["predict-voxels"]
    assert stage == {"function": "dark_is_membrane", "parameters": {"cutoff": 120}}


def test_distance_transform_watershed_straddles_fewer_bodies_than_threshold_seeds():
    """On synthetic EM with the naive predictions, supervoxels grown from distance-transform
    maxima merge far fewer neurites than the threshold-seeded ones: their perfect-agglomeration
    floor's false merges are lower on every volume (measured 1.3-2.0 bits vs 0.03-0.56)."""
    import labelstitch as ls
    from labelstitch.synthetic import em_volume

    assert ls.api.describe_plugins()["create-supervoxels"]["distance_transform_watershed"]["plugin"] == "labelstitch.builtin"
    for seed in range(3):
        gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=seed)
        mask = np.zeros(gray.shape, bool)
        mask[:, :, :4] = True
        pred = naive_membrane_predictions(gray, mask, sigma=1.0)
        grown = resolve_stage("create-supervoxels", "distance_transform_watershed")(pred, mask)
        seeded = seeded_watershed(pred, mask)
        assert grown.dtype == np.uint32 and not grown[mask].any() and grown[~mask].all()
        keep = ~mask
        ours = ls.agglomeration_floor(np.where(keep, grown, 0), np.where(keep, truth, 0))
        theirs = ls.agglomeration_floor(np.where(keep, seeded, 0), np.where(keep, truth, 0))
        assert ours.merge < theirs.merge / 2, (seed, ours, theirs)
    blocked = ls.segment(gray, supervoxels="distance_transform_watershed", block=(16, 32, 32), overlap=4)
    assert blocked.shape == gray.shape and np.unique(blocked).size > 5


def test_two_stage_predictions_err_less_than_one_stage_on_an_unseen_volume(tmp_path):
    """Auto-context: the second forest, trained on out-of-fold first-stage answers, makes
    fewer membrane errors on another volume than the first stage alone."""
    from labelstitch.plugins.builtin import two_stage_predictions
    from labelstitch.plugins.classifier import load_classifier, membrane_annotations, train_pixel_classifier
    from labelstitch.synthetic import em_volume

    gray_a, truth_a = em_volume((40, 80, 80), n_neurites=24, noise=20, seed=5)
    gray_b, truth_b = em_volume((40, 80, 80), n_neurites=24, noise=20, seed=6)
    membrane_b = membrane_annotations(truth_b) == 1
    errors = {}
    for two in (False, True):
        clf = train_pixel_classifier(gray_a, membrane_annotations(truth_a), n_estimators=12, two_stage=two)
        path = tmp_path / f"{two}.clf"
        clf.save(path)
        assert load_classifier(path).two_stage == two
        errors[two] = float(np.mean((clf.predict(gray_b) > 0.5) != membrane_b))
    assert errors[True] < errors[False], errors
    mask = np.zeros(gray_b.shape, bool)
    mask[:2] = True
    out = two_stage_predictions(gray_b, mask, str(tmp_path / "True.clf"))
    assert out.dtype == np.float32 and out.shape == gray_b.shape and np.all(out[:2] == 1.0)
    with pytest.raises(ValueError, match="one-stage classifier; use pixel_classifier"):
        two_stage_predictions(gray_b, mask, str(tmp_path / "False.clf"))


DECLARED = '''
import numpy as np
import labelstitch

SEEN = []

@labelstitch.stage_function(writes=(labelstitch.Channel("boundary", 0), labelstitch.Channel("affinity", 1, offset=(0, 0, 1))))
def two_channels(grayscale, mask):
    boundary = 1.0 - grayscale.astype(np.float32) / 255
    return np.stack([boundary, boundary], axis=-1)

@labelstitch.stage_function(reads=(labelstitch.Channel("boundary", "channel"),), context=6, bytes_per_voxel=5)
def wide_watershed(predictions, mask, channel=0):
    from labelstitch.plugins.builtin import seeded_watershed
    SEEN.append(predictions.shape[:3])
    return seeded_watershed(predictions[..., channel], mask, seed_threshold=0.3)
'''


def test_a_stage_declares_what_it_needs_and_the_pipeline_keeps_to_it(tmp_path, monkeypatch):
    """The descriptor of a third-party stage: the channels it reads are checked against
    what the predictor writes before any work, and the context it declares is read and
    segmented around every subvolume (and cropped away again)."""
    import labelstitch as ls
    from labelstitch.pipeline import prepare, RunConfig
    from labelstitch.pipeline.planning import subvolume_bytes_per_voxel, BYTES_PER_VOXEL
    from labelstitch.synthetic import em_volume

    (tmp_path / "declared.py").write_text(DECLARED)
    monkeypatch.syspath_prepend(str(tmp_path))
    import declared

    gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)

    def config(channel, name):
        return {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / name), "options": {
            "chunk-size": 32, "overlap": 4, "segmentor": {"configuration": {
                "predict-voxels": {"function": "declared.two_channels"},
                "create-supervoxels": {"function": "declared.wide_watershed", "parameters": {"channel": channel}}}}}}

    prepared = prepare(RunConfig.load(config(0, "a.zarr")))
    assert prepared.task.context == 6  # the stage's, though options.context is 0
    assert subvolume_bytes_per_voxel(prepared.task.stages) == BYTES_PER_VOXEL + 5
    supervoxels = prepared.task.stages[1]
    assert supervoxels.channel("boundary") == 0 and supervoxels.channels() == [(declared.wide_watershed.__labelstitch_stage__.reads[0], 0)]
    with pytest.raises(PluginError, match=r"'declared.wide_watershed' reads boundary from channel 1 \(its `channel`\), but "
                                          r"predict-voxels 'declared.two_channels' writes boundary \(channel 0\), affinity \(channel 1\)"):
        ls.run(config(1, "refused.zarr"))
    assert not (tmp_path / "refused.zarr").exists() and declared.SEEN == []
    ls.run(config(0, "a.zarr"))
    # every subvolume was segmented with 6 more voxels on each side (where the volume has them)
    grown = sorted(sv.outer.grow(6).intersect(ls.Box.from_shape(gray.shape)).shape for sv in prepared.plan)
    assert sorted(declared.SEEN) == grown and grown != sorted(sv.outer.shape for sv in prepared.plan)
    with ls.stores.open_volume(str(tmp_path / "a.zarr")) as out:
        assert out.shape == gray.shape and out.read().any()
