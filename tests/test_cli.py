"""The command line, called in-process through its entry function."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelstitch._cli.main import ExitCode, main
from labelstitch.hookspecs import describe_stage
from labelstitch.pipeline.config import load_config
from labelstitch.synthetic import em_volume



def test_config_schema_and_example(capsys):
    assert main(["config", "--schema"]) == ExitCode.OK
    schema = json.loads(capsys.readouterr().out)
    assert schema["anyOf"] == [{"required": ["input", "output"]}, {"required": ["dvid-info"]}]
    assert main(["config", "--example"]) == ExitCode.OK
    example = json.loads(capsys.readouterr().out)
    assert load_config(example)["options"]["overlap"] == 20


def test_plugins_lists_every_stage_function_with_defaults(capsys):
    assert main(["plugins"]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "seeded_watershed(boundary_channel=0, seed_threshold=0.2, seed_size=5, min_segment_size=0)" in text
    assert "rag_agglomeration(threshold=0.2, boundary_channel=0, mitochondria_channel=-1, mitochondria_threshold=0.5)" in text
    assert "pixel_classifier(classifier_path='')" in text
    from labelstitch.plugins.builtin import pixel_classifier
    needs = f"      needs {describe_stage(pixel_classifier).bytes_per_voxel} bytes a voxel beyond the pipeline's own"
    assert needs in text.split("pixel_classifier(classifier_path='')")[1].split("threshold_predictions")[0]
    executors = text.split("executors (--executor):\n")[1].splitlines()
    assert executors[:3] == ["  serial  [labelstitch.builtin]", "  processes  [labelstitch.builtin]",
                             "  spark  [labelstitch.builtin]"]
    assert "  dask  [dask]" in executors  # the entry point's name: installed like a third party's


def test_run_then_evaluate_with_json_and_heatmap(tmp_path, capsys):
    gray, truth = em_volume((32, 64, 64), n_neurites=20, seed=5)
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "truth.npy", truth)
    config = tmp_path / "run.yaml"
    config.write_text(
        "input: gray.npy\noutput: seg.zarr\nground-truth: truth.npy\n"
        "options:\n  chunk-size: 32\n  overlap: 4\n  stitch-algorithm: conservative\n"
    )
    assert main(["run", str(config), "--json", "-q"]) == ExitCode.OK
    run = json.loads(capsys.readouterr().out)
    assert run["counts"]["subvolumes"] == 4 and run["stitch"]["rule"] == "conservative"
    assert set(run["segment seconds"]["stages"]) == {"read", "predict-voxels", "create-supervoxels", "agglomerate-supervoxels"}
    assert not [key for key in run["seconds"] if key != key.strip()]  # nested, not indented
    heat = tmp_path / "vi.png"
    assert main(["evaluate", str(tmp_path / "seg.zarr"), str(tmp_path / "truth.npy"), "--json", "--heatmap", str(heat), "--region", "16"]) == 0
    score = json.loads(capsys.readouterr().out)
    assert set(score) == {"merge", "split", "total", "bodies", "heatmap"}
    assert score["total"] == pytest.approx(run["vi"]["total"]) and heat.stat().st_size > 0
    from PIL import Image

    with Image.open(heat) as merge, Image.open(tmp_path / "vi-split.png") as split:
        assert merge.info["Title"] == "False merge VI per 16x16x16-voxel region" and min(merge.info["dpi"]) >= 149
        assert split.info["Title"] == "False split VI per 16x16x16-voxel region"
    assert main(["run", str(config), "-q"]) == ExitCode.USAGE_ERROR
    assert "exists already; pass overwrite=True (--overwrite)" in capsys.readouterr().err


def test_bad_config_gives_exit_code_2_and_names_the_key(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"input": "a.npy", "output": "b.zarr", "options": {"chunk-size": 0}}))
    assert main(["run", str(config)]) == ExitCode.USAGE_ERROR
    assert "options.chunk-size" in capsys.readouterr().err
    assert main(["config", "--check", str(config)]) == ExitCode.USAGE_ERROR


def test_train_pixel_classifier_and_use_it(tmp_path, capsys, shared_data):
    train = np.load(shared_data / "gala_train.npz")
    test = np.load(shared_data / "gala_test.npz")
    np.save(tmp_path / "raw.npy", train["raw"][:20])
    np.save(tmp_path / "gt.npy", train["gt"][:20])
    clf_path = tmp_path / "membranes.clf"
    args = ["train-pixel-classifier", str(tmp_path / "raw.npy"), str(tmp_path / "gt.npy"), str(clf_path), "--trees", "20", "--samples", "20000"]
    assert main(args) == ExitCode.OK
    assert "wrote" in capsys.readouterr().out
    from labelstitch.plugins.builtin import pixel_classifier

    raw = test["raw"][:10, :50, :100]
    prob = pixel_classifier(raw, np.zeros(raw.shape, bool), classifier_path=str(clf_path))
    assert prob.shape == raw.shape and prob.dtype == np.float32
    from labelstitch.plugins.classifier import membrane_annotations

    marks = membrane_annotations(test["gt"][:10, :50, :100])
    assert prob[marks == 1].mean() > prob[marks == 2].mean() + 0.2  # it learned something real


def test_demo_runs_the_whole_pipeline_and_stitching_beats_none(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo"), "--json"]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    rows = {r["rule"]: r for r in report["rows"]}
    assert set(rows) >= {"none", "conservative", "medium", "aggressive"}
    for rule in ("conservative", "medium", "aggressive"):
        assert rows[rule]["total"] < rows["none"]["total"]
    assert rows["conservative"]["merge"] <= rows["aggressive"]["merge"]
    assert (tmp_path / "demo" / "slices.png").exists() and (tmp_path / "demo" / "compare" / "medium.zarr").exists()


def test_evaluate_floor_separates_supervoxel_errors_from_agglomeration_errors(tmp_path, capsys):
    """Supervoxels that over-segment the truth score badly but have a floor of 0 (the fault is
    the agglomeration's); supervoxels that merge two bodies keep a false-merge floor."""
    from labelstitch.synthetic import neurite_labels

    truth = neurite_labels((24, 40, 40), n_neurites=12, seed=3).astype(np.uint32)
    over = truth * 4 + (np.indices(truth.shape)[2] // 10).astype(np.uint32)  # each body cut in four
    merged = np.where(truth == truth.flat[0], truth.flat[-1], truth)  # first body merged into the last one's id
    for name, labels in (("truth", truth), ("over", over), ("merged", merged)):
        np.save(tmp_path / f"{name}.npy", labels)
    assert main(["evaluate", str(tmp_path / "over.npy"), str(tmp_path / "truth.npy"), "--json", "--floor"]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert report["split"] > 0.5 and report["floor"]["total"] == pytest.approx(0.0, abs=1e-12)
    assert report["floor"]["bodies"] == np.unique(truth[truth != 0]).size
    assert main(["evaluate", str(tmp_path / "merged.npy"), str(tmp_path / "truth.npy"), "--floor"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "perfect agglomeration" in out and "no agglomeration can undo them" in out
    floor = float(out.split("perfect agglomeration")[1].split("false merge VI")[1].split()[0])
    assert floor > 0.05


def test_every_command_that_runs_work_takes_the_same_executor_options():
    from labelstitch._cli.main import build_parser

    parser = build_parser()
    where = ["--executor", "spark", "--workers", "3", "--spark-master", "spark://127.0.0.1:7077"]
    for argv in (["run", "c.json"], ["stitch", "c.json"], ["compare", "c.json", "--ground-truth", "g.npy"],
                 ["tune", "c.json", "--ground-truth", "g.npy"]):
        args = parser.parse_args(argv + where)
        assert (args.executor, args.workers, args.spark_master) == ("spark", 3, "spark://127.0.0.1:7077"), argv[0]


def test_config_keys_prints_the_option_table(capsys):
    from labelstitch.pipeline.options import OPTIONS

    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| `") == len(OPTIONS) and "| `options.chunk-size` |" in out


def test_an_unknown_voxel_size_is_said_once_and_only_where_an_output_records_it(tmp_path, capsys, caplog):
    import labelstitch as ls

    gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"), "options": {"chunk-size": 32, "overlap": 4}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert err.count("the voxel size is unknown") == 1 and "voxel size" not in out
    assert "labelstitch: warning: the voxel size is unknown" in err
    (tmp_path / "run.json").write_text(json.dumps({**config, "output": str(tmp_path / "seg.npy")}))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.OK  # an npy output records no voxel size
    assert "voxel size" not in capsys.readouterr().err
    caplog.clear()
    ls.segment(gray, block=32, overlap=4)  # nothing is written anywhere
    assert not [r for r in caplog.records if "voxel size" in r.getMessage()]
    example = dict(ls.pipeline.EXAMPLE)
    assert example["options"]["resolution"] == [8.0, 8.0, 8.0] and "write-grayscale" in example["options"]


def test_progress_in_a_log_file_is_plain_lines_and_every_step_ends(tmp_path):
    """stderr redirected to a file (a cluster job's log): no carriage-return bars, each step
    says that it started and that it is done."""
    import subprocess
    import sys

    gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {"chunk-size": 16, "overlap": 4, "resolution": [8, 8, 8]}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    with open(tmp_path / "job.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "labelstitch._cli.main", "run", str(tmp_path / "run.json")],
                              stdout=subprocess.DEVNULL, stderr=log, timeout=300)
    assert done.returncode == 0
    text = (tmp_path / "job.log").read_text()
    assert "\r" not in text
    for step in ("segment", "match (subvolumes, then faces)", "write", "pyramid"):
        assert f"{step}: started" in text and f"{step}: done" in text, (step, text)
    assert "segment: done 18/18 in" in text


def test_every_command_takes_the_same_output_flags():
    from labelstitch._cli.main import build_parser

    parser = build_parser()
    needs = {"run": ["c.json"], "stitch": ["c.json"], "compare": ["c.json", "--ground-truth", "g.npy"],
             "tune": ["c.json", "--ground-truth", "g.npy"], "explain": ["3", "--output", "o.zarr"], "view": ["o.zarr"],
             "evaluate": ["s.npy", "g.npy"], "plugins": [], "config": ["--example"],
             "train-pixel-classifier": ["g.npy", "l.npy", "c.pkl"], "train": ["g.npy", "t.npy", "--out", "m"], "demo": [],
             "status": ["ckpt"], "info": ["o.zarr"], "audit": ["o.zarr", "--ground-truth", "g.npy"],
             "mesh": ["o.zarr"], "skeletonize": ["o.zarr"]}
    commands = set(parser._subparsers._group_actions[0].choices)  # every command there is
    assert commands == set(needs)
    for command, rest in needs.items():
        args = parser.parse_args([command, *rest, "-q", "--json"])
        assert args.quiet and args.json, command


def test_plugins_gives_each_function_its_whole_first_sentence(capsys):
    assert main(["plugins", "--json"]) == 0
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "distance to the nearest voxel whose boundary probability is at least" in " ".join(text.split())
    from labelstitch import api

    for functions in api.describe_plugins().values():
        for name, info in functions.items():
            assert info["doc"].endswith("."), (name, info["doc"])


def test_help_lists_every_executor_and_what_it_needs(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for executor in ("serial", "processes", "spark"):
        assert executor in text
    assert "needs Java 17 or 21" in text


def test_tables_keep_their_columns_with_long_names_and_say_what_is_summed(tmp_path):
    import labelstitch as ls
    from labelstitch.metrics import Score, format_scores

    table = format_scores([Score(0.5, 1.0, bodies=3, name="aggressive+cc:min_fraction=0.95,min_one_sided=2000"),
                           Score(0.1, 0.2, bodies=12, name="none")]).splitlines()
    assert len({len(line) for line in table}) == 1  # every row as wide as the header: the columns line up
    gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.npy"), "options": {"chunk-size": 32, "overlap": 4}}
    assert "stages, summed over workers (may exceed the wall time):" in ls.run(config).table()
