"""Re-stitching from checkpoints, rule comparison, stitch reports and explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelstitch._cli.main import main
from labelstitch.checkpoints import CheckpointError
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume
from labelstitch.pipeline import compare, restitch, run


@pytest.fixture()
def finished_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gray, truth = em_volume((48, 64, 64), n_neurites=25, seed=4)
    np.save("gray.npy", gray)
    np.save("truth.npy", truth)
    config = {
        "input": "gray.npy",
        "output": "seg.zarr",
        "options": {
            "chunk-size": 32,
            "overlap": 4,
            "checkpoint-dir": "ckpt",
            "segmentor": {
                "configuration": {
                    "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}},
                }
            },
        },
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    result = run(tmp_path / "run.json")
    return tmp_path, result


def read(path):
    with open_volume(str(path)) as store:
        return store.read(), store.metadata


def test_restitch_matches_a_full_run_and_records_the_rule(finished_run):
    folder, first = finished_run
    again, _ = restitch(folder / "run.json", output=str(folder / "again.zarr"))
    a, _ = read(folder / "seg.zarr")
    b, _ = read(folder / "again.zarr")
    np.testing.assert_array_equal(a, b)  # same rule from checkpoints: the same volume
    aggressive, _ = restitch(folder / "run.json", rule="aggressive", rule_params={"min_one_sided": 100}, output=str(folder / "agg.zarr"))
    _, meta = read(folder / "agg.zarr")
    assert meta["stitch"]["rule"] == "aggressive" and meta["stitch"]["params"] == {"min_one_sided": 100}
    assert aggressive.n_bodies <= again.n_bodies
    (folder / "ckpt" / "sv-2.blk").unlink()
    with pytest.raises(CheckpointError, match="1 subvolumes have no usable checkpoint .*2 \\(missing\\)"):
        restitch(folder / "run.json", output=str(folder / "x.zarr"))


def test_compare_prints_table_2_and_writes_figure_9(finished_run, capsys):
    folder, _ = finished_run
    code = main(["compare", "run.json", "--ground-truth", "truth.npy", "--variant", "loose:medium,min_overlap=5",
                 "--figures", "figs", "--region", "16", "--json"])
    assert code == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"none", "conservative", "medium", "aggressive", "loose"}
    assert rows["loose"]["params"] == {"min_overlap": 5}
    for rule in ("conservative", "medium", "aggressive"):
        assert rows[rule]["total"] < rows["none"]["total"]
        assert rows[rule]["bodies"] < rows["none"]["bodies"]
    import imageio.v3 as iio

    merge = iio.imread(folder / "figs" / "vi-merge.png")
    assert merge.ndim == 3 and merge.shape[0] > 5 * 2  # one row per variant
    slices = iio.imread(folder / "figs" / "slices.png")  # grayscale, truth and one titled panel per variant
    assert slices.shape[1] >= 7 * 64 and slices.shape[0] > 64
    rows_api = compare(folder / "run.json", str(folder / "truth.npy"), folder=str(folder / "cmp"))
    assert [r.name for r in rows_api][:4] == ["none", "conservative", "medium", "aggressive"]
    assert rows_api[0].regional.merge.shape == (2, 2, 2)


def test_stitch_report_and_explain(finished_run, capsys):
    folder, result = finished_run
    report = json.loads((folder / "seg.zarr.stitch.json").read_text())
    assert report["summary"]["matches"] == result.counts["matches"]
    assert len(report["faces"]) == 12
    total_refused = sum(sum(f["refused"].values()) for f in report["faces"])
    assert total_refused == sum(report["summary"]["refused"].values())
    assert "# Stitch report" in (folder / "seg.zarr.stitch.md").read_text()
    largest = report["largest_bodies"][0]
    assert main(["explain", str(largest["body"]), "--output", "seg.zarr", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["segments"]) == largest["segments"]
    seg, _ = read(folder / "seg.zarr")
    assert (seg == largest["body"]).any()
    for m in info["matches"]:
        assert m["overlap"] <= min(m["size_a"], m["size_b"])
    assert main(["explain", "999999", "--output", "seg.zarr"]) == 2
    assert "is not a stitched body" in capsys.readouterr().err
