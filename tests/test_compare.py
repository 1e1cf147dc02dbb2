"""Re-stitching from checkpoints, rule comparison, stitch reports and explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelstitch._cli.main import main
from labelstitch.checkpoints import CheckpointError
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume
from labelstitch import audit, format_scores
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
                 "--figures", "figs", "--region", "16", "--write", "--json"])
    assert code == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"none", "conservative", "medium", "aggressive", "loose"}
    assert rows["loose"]["params"] == {"min_overlap": 5}
    for rule in ("conservative", "medium", "aggressive"):
        assert rows[rule]["total"] < rows["none"]["total"]
        assert rows[rule]["bodies"] < rows["none"]["bodies"]

    from PIL import Image

    def read_back(name):
        with Image.open(folder / "figs" / name) as picture:
            return dict(picture.info), picture.size

    merge, size = read_back("vi-merge.png")
    assert merge["Title"] == "False merge VI per 16x16x16-voxel region"
    assert merge["Description"] == "rows: none, conservative, medium, aggressive, loose"
    assert min(merge["dpi"]) >= 149 and size[1] > 5 * 150  # one row per variant, print quality
    slices, size = read_back("slices.png")  # grayscale, truth and one titled panel per variant
    assert slices["Title"].startswith("Segmentations at z = ") and min(slices["dpi"]) >= 149
    assert "panels: none, conservative, medium, aggressive, loose" in slices["Description"]
    assert size[0] >= 4 * 300 and size[1] >= 2 * 300
    rows_api = compare(folder / "run.json", str(folder / "truth.npy"), folder=str(folder / "cmp"))
    assert [r.name for r in rows_api][:4] == ["none", "conservative", "medium", "aggressive"]
    assert rows_api[0].regional.merge.shape == (2, 2, 2)
    assert not (folder / "cmp").exists()  # scored without writing anything


@pytest.mark.parametrize("preserve", [False, True])
def test_scoring_without_writing_equals_scoring_the_written_volumes(finished_run, preserve):
    """The tables pushed through each rule's mapping give the VI (whole and per region) that
    the written volume has, to rounding; preserved bodies and background included."""
    folder, _ = finished_run
    config = json.loads((folder / "run.json").read_text())
    if preserve:
        truth = np.load(folder / "truth.npy")
        ids, counts = np.unique(truth[truth > 0], return_counts=True)
        config["preserve-bodies"] = {"segmentation": "truth.npy", "bodies": [int(i) for i in ids[np.argsort(counts)[-2:]]]}
        config["options"]["checkpoint-dir"] = "ckpt-preserve"
        config["output"] = "preserved.zarr"
        run(config)
    variants = [("loose", "medium", {"min_overlap": 5}), ("strict", "conservative", {"min_fraction": 0.99})]
    fast = compare(config, "truth.npy", variants=variants, region=16)
    written = compare(config, "truth.npy", variants=variants, region=16, write=True, folder=str(folder / "w"))
    assert [r.name for r in fast] == [r.name for r in written]
    for a, b in zip(fast, written):
        assert abs(a.merge - b.merge) < 1e-9 and abs(a.split - b.split) < 1e-9, a.name
        assert a.bodies == b.bodies and a.matches == b.matches
        np.testing.assert_allclose(a.regional.merge, b.regional.merge, atol=1e-9)
        np.testing.assert_allclose(a.regional.split, b.regional.split, atol=1e-9)
    assert len({round(r.total, 6) for r in fast}) > 2  # the rules differ, so the test can tell them apart
    # written variants carry the seam audit of their own volume; the unwritten ones cannot
    assert all(r.seams is None for r in fast) and "VI at faces" not in format_scores(fast)
    for row in written:
        bands = audit(row.output, ground_truth=str(folder / "truth.npy"))
        assert row.seams == (bands.ground_truth.faces.total, bands.ground_truth.interiors.total)
    text = format_scores(written)
    assert "VI at faces" in text and "in middles" in text and f"{written[0].seams[0]:.3f}" in text


def test_tune_prints_a_pareto_front_of_settings_that_are_real(finished_run, capsys):
    from labelstitch.pipeline import tune

    folder, _ = finished_run
    scores, front = tune(folder / "run.json", str(folder / "truth.npy"))
    assert len(scores) > 40 and front
    for f in front:  # nothing tried beats a front setting on both parts
        assert not any(s.merge < f.merge - 1e-12 and s.split < f.split - 1e-12 for s in scores)
    assert [f.merge for f in front] == sorted(f.merge for f in front)
    pick = front[len(front) // 2]  # one of them, stitched and written for real, scores the same
    cc = "+cc" in pick.name
    config = json.loads((folder / "run.json").read_text())
    config["options"]["stitch-connected-components"] = cc
    (folder / "cc.json").write_text(json.dumps(config))
    restitch(folder / "cc.json", rule=pick.rule, rule_params=pick.params, output=str(folder / "pick.zarr"))
    from labelstitch.metrics import vi

    seg, _ = read(folder / "pick.zarr")
    score = vi(seg, np.load(folder / "truth.npy"))
    assert abs(score.merge - pick.merge) < 1e-9 and abs(score.split - pick.split) < 1e-9
    assert main(["tune", "run.json", "--ground-truth", "truth.npy"]) == 0
    out = capsys.readouterr().out
    assert "settings scored; the Pareto front" in out and front[0].name in out


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
