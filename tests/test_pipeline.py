"""The pipeline from config to evaluation, on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label as connected

import labelstitch as ls
from labelstitch.pipeline.config import ConfigError, load_config
from labelstitch.plugins import PluginError
from labelstitch.stores import StoreError, open_volume, volume_exists
from labelstitch.synthetic import em_volume, neurite_labels
from labelstitch.testing import assert_same_partition
from labelstitch.pipeline import PipelineError, run


PASS_THROUGH = '''
import numpy as np

def ids_as_predictions(grayscale, mask):
    """The input holds label ids; hand them on unchanged (exact as float32 below 2**24)."""
    return grayscale.astype(np.float32)

def predictions_as_supervoxels(predictions, mask):
    out = predictions.astype(np.uint32)
    out[mask] = 0
    return out

def wrong_shape(grayscale, mask):
    return grayscale[:-1].astype(np.float32)

def wrong_dtype(predictions, mask):
    return predictions.astype(np.float64)
'''


@pytest.fixture()
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "teststages.py").write_text(PASS_THROUGH)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "teststages"


def pass_through_config(tmp_path, truth, *, block, halo, rule="medium", output="out.zarr"):
    np.save(tmp_path / "ids.npy", truth)
    return {
        "input": str(tmp_path / "ids.npy"),
        "output": str(tmp_path / output),
        "options": {
            "chunk-size": block,
            "overlap": halo,
            "stitch-algorithm": rule,
            "background-value": None,
            "segmentor": {
                "configuration": {
                    "predict-voxels": {"function": "teststages.ids_as_predictions"},
                    "create-supervoxels": {"function": "teststages.predictions_as_supervoxels"},
                    "agglomerate-supervoxels": {"function": "no_agglomeration"},
                }
            },
        },
    }


@pytest.mark.parametrize(("block", "halo", "rule"), [(16, 2, "medium"), ([20, 12, 17], [3, 1, 4], "conservative"), (30, 5, "aggressive")])
def test_pipeline_reconstructs_a_consistent_segmentation_exactly_for_any_blocking(plugin_module, tmp_path, block, halo, rule):
    truth = connected(neurite_labels((40, 44, 48), n_neurites=25, seed=7), connectivity=3).astype(np.uint32)
    result = run(pass_through_config(tmp_path, truth, block=block, halo=halo, rule=rule))
    with open_volume(result.output) as out:
        stitched = out.read()
        meta = out.metadata
    assert_same_partition(stitched, truth)
    assert result.counts["bodies"] == np.unique(truth).size
    assert meta["plan"]["block"] == list(ls.Plan.grid(truth.shape, block, halo).block)
    assert meta["stitch"]["rule"] == rule and meta["labelstitch"] == ls.__version__


def test_preserved_bodies_keep_their_voxels_and_ids(tmp_path):
    gray, truth = em_volume((48, 64, 64), n_neurites=30, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "proofread.npy", truth)
    keep = [int(b) for b in np.unique(truth)[1:6]]
    config = {
        "input": "gray.npy",
        "output": "seg.zarr",
        "preserve-bodies": {"segmentation": "proofread.npy", "bodies": keep},
        "options": {"chunk-size": 32, "overlap": 4, "stitch-algorithm": "aggressive"},
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    result = run(tmp_path / "run.json")
    with open_volume(str(tmp_path / "seg.zarr")) as out:
        seg = out.read()
    preserved = np.isin(truth, keep)
    np.testing.assert_array_equal(seg[preserved], truth[preserved])  # voxel-identical, same ids
    assert not np.isin(seg[~preserved], keep).any()  # never merged into, ids never reused
    assert seg[~preserved & (seg > 0)].min() > max(keep)
    assert result.counts["bodies"] >= len(keep)


def test_gala_volume_end_to_end_and_blockwise_scoring_equals_in_memory(tmp_path, shared_data):
    data = np.load(shared_data / "gala_test.npz")
    np.save(tmp_path / "raw.npy", data["raw"])
    np.save(tmp_path / "gt.npy", data["gt"])
    config = {
        "input": "raw.npy",
        "output": "seg.zarr",
        "ground-truth": "gt.npy",
        "options": {
            "chunk-size": [50, 50, 64],
            "overlap": 8,
            "segmentor": {
                "configuration": {
                    "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.4}},
                }
            },
        },
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config))  # JSON is valid YAML
    result = run(tmp_path / "run.yaml")
    with open_volume(str(tmp_path / "seg.zarr")) as out:
        seg = out.read()
    assert seg.shape == data["raw"].shape and result.counts["subvolumes"] == 8
    expected = ls.vi(seg, data["gt"])
    assert result.vi.merge == pytest.approx(expected.merge, abs=1e-9)
    assert result.vi.split == pytest.approx(expected.split, abs=1e-9)
    assert set(result.seconds) >= {"segment", "stitch", "write", "evaluate", "total"}


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_before_anything_is_written(plugin_module, tmp_path):
    truth = neurite_labels((24, 24, 24), n_neurites=5, seed=1)
    base = pass_through_config(tmp_path, truth, block=12, halo=2)
    out = tmp_path / "out.zarr"

    def refused(change, error, message):
        config = json.loads(json.dumps(base))
        change(config)
        with pytest.raises(error, match=message):
            run(config)
        assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))

    refused(lambda c: c.update(input=str(tmp_path / "missing.npy")), StoreError, "no .npy file at")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.uint8))
    refused(lambda c: c.update(input=str(tmp_path / "flat.npy")), StoreError, r"has 2 dimensions \(shape .*\); volumes must be 3-D")
    np.save(tmp_path / "complex.npy", np.zeros((4, 4, 4), np.complex64))
    refused(lambda c: c.update(input=str(tmp_path / "complex.npy")), StoreError, "expected integer or float grayscale")

    def stage(c, name, value):
        c["options"]["segmentor"]["configuration"][name] = value

    refused(lambda c: stage(c, "agglomerate-supervoxels", {"function": "agglomerate_magic"}), PluginError,
            "options.segmentor.configuration.agglomerate-supervoxels: unknown function 'agglomerate_magic'")
    refused(lambda c: stage(c, "agglomerate-supervoxels", {"function": "rag_agglomeration", "parameters": {"treshold": 1}}),
            PluginError, "has no parameter 'treshold'")
    refused(lambda c: c["options"].update({"stitch-algorithm": "greedy"}), ValueError, "unknown stitching rule 'greedy'")
    refused(lambda c: c["options"].update({"chunk-size": 11, "overlap": 3}), ValueError, "leaves a 2-voxel sliver at the end of axis Z")
    refused(lambda c: c["options"].update({"chunk-size": 8, "overlap": 9}), ValueError, "`halo` \\(9\\) must not exceed")
    refused(lambda c: c["options"].update({"overlap": 0}), ValueError, "`halo` is 0 along axis Z, Y, X")
    refused(lambda c: stage(c, "predict-voxels", {"function": "teststages.wrong_shape"}), PipelineError,
            r"returned shape \(13, 14, 14\) for subvolume 0; expected \(14, 14, 14\)")
    refused(lambda c: stage(c, "create-supervoxels", {"function": "teststages.wrong_dtype"}), PipelineError,
            "returned dtype float64 for subvolume 0; expected integer labels")
    refused(lambda c: c.update(output=str(out), ground_truth=1), ConfigError, "Additional properties are not allowed")


def test_existing_output_needs_overwrite_and_is_replaced_atomically(plugin_module, tmp_path):
    truth = neurite_labels((16, 16, 16), n_neurites=4, seed=1)
    config = pass_through_config(tmp_path, truth, block=8, halo=2)
    run(config)
    before = sorted(p.name for p in (tmp_path / "out.zarr").rglob("*"))
    with pytest.raises(StoreError, match="exists already; pass overwrite=True"):
        run(config)
    assert sorted(p.name for p in (tmp_path / "out.zarr").rglob("*")) == before
    config["options"]["stitch-algorithm"] = "none"
    run(config, overwrite=True)
    with open_volume(str(tmp_path / "out.zarr")) as out:
        assert out.metadata["stitch"]["rule"] == "none"


def test_a_failing_plugin_leaves_no_partial_output_and_keeps_the_old_one(plugin_module, tmp_path):
    truth = neurite_labels((16, 16, 16), n_neurites=4, seed=1)
    config = pass_through_config(tmp_path, truth, block=8, halo=2)
    run(config)
    config["options"]["segmentor"]["configuration"]["create-supervoxels"] = {"function": "teststages.wrong_dtype"}
    with pytest.raises(PipelineError):
        run(config, overwrite=True)
    assert volume_exists(str(tmp_path / "out.zarr"))
    assert not list(tmp_path.glob(".out.zarr*"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input": "a.npy"}, "'output' is a required property"),
        ({"input": "a.npy", "output": "b.zarr", "optoins": {}}, "allowed keys: dvid-info, ground-truth, input, options"),
        ({"input": "a.npy", "output": "b.zarr", "options": {"chunk-size": [64, 64]}}, "options.chunk-size: expected"),
        ({"input": "a.npy", "output": "b.zarr", "options": {"overlap": "20"}}, "options.overlap: expected"),
        ({"input": "a.npy", "output": "b.zarr", "options": {"segmentor": {"configuration": {"predict-voxels": {}}}}},
         "options.segmentor.configuration.predict-voxels: 'function' is a required property"),
        ({"input": "a.npy", "output": "b.zarr", "preserve-bodies": {"segmentation": "s.npy", "bodies": [0]}},
         "preserve-bodies.bodies.0: 0 is less than the minimum of 1"),
    ],
)
def test_config_errors_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config)


@settings(max_examples=60, deadline=None)
@given(
    empty=arrays(np.bool_, st.tuples(*[st.integers(1, 12)] * 3), elements=st.booleans()),
    width=st.integers(1, 6),
)
def test_background_mask_is_an_opening_that_lets_padding_continue_past_the_box(empty, width):
    """Runs of ``value`` at least ``width`` wide along every axis are background; a run that
    reaches the box's edge may continue outside it (erosion border 1), but nothing outside
    spreads in (dilation border 0): a lone dark voxel never masks the box's faces."""
    from scipy.ndimage import binary_dilation, binary_erosion

    from labelstitch.pipeline.segment import background_mask

    cube = np.ones((width,) * 3, bool)
    expected = binary_dilation(binary_erosion(empty, cube, border_value=1), cube, border_value=0)
    grayscale = np.where(empty, 0, 77).astype(np.uint8)
    np.testing.assert_array_equal(background_mask(grayscale, 0, width), expected)


def test_a_lone_dark_voxel_masks_nothing():
    """Regression: scipy's binary_opening(border_value=1) also dilated from outside the box,
    so one voxel equal to the background value masked a band along all six faces."""
    from labelstitch.pipeline.segment import background_mask

    grayscale = np.full((20, 20, 20), 120, np.uint8)
    grayscale[10, 10, 10] = 0
    assert not background_mask(grayscale, 0, 5).any()


def test_context_wide_enough_makes_blocked_equal_unblocked(tmp_path):
    """With options.context covering the whole volume every subvolume segments all of it and
    keeps its own box, so the stitched result is the unblocked segmentation exactly; with a
    smaller context the blocks are segmented from more of their neighbourhood than the halo."""
    from labelstitch.stores import open_volume
    from labelstitch.synthetic import em_volume
    from labelstitch.testing import assert_same_partition

    gray, _ = em_volume((32, 64, 64), n_neurites=15, seed=2)
    np.save(tmp_path / "g.npy", gray)
    seg = {"predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 0.0}},
           "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.2}},
           "agglomerate-supervoxels": {"function": "no_agglomeration", "parameters": {}}}

    def segment(name, **options):
        run({"input": str(tmp_path / "g.npy"), "output": str(tmp_path / f"{name}.zarr"),
             "options": {"segmentor": {"configuration": seg}, **options}})
        with open_volume(str(tmp_path / f"{name}.zarr")) as store:
            return store.read()

    whole = segment("whole", **{"chunk-size": [32, 64, 64], "overlap": 0})
    blocked = segment("blocked", **{"chunk-size": 16, "overlap": 2})
    wide = segment("wide", **{"chunk-size": 16, "overlap": 2, "context": 64})
    assert_same_partition(wide, whole)
    with pytest.raises(AssertionError):  # without context the blocks do differ (so the test can tell)
        assert_same_partition(blocked, whole)
