"""Provenance on every output: what made it (versions, commit, config, input fingerprints,
model checksums, executor, hosts, times, counts), kept in the OME-Zarr attributes, in DVID
and in the stitch report, appended to by resumes and re-stitches, read by `labelstitch
info`, and a run that would make it differently refused without --overwrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import zarr

import labelstitch
from labelstitch.checkpoints import CheckpointError
from labelstitch.pipeline import restitch, run
from labelstitch.stores import StoreError
from labelstitch.synthetic import em_volume

MODEL_STAGE = '''
import json
from labelstitch.plugins.builtin import naive_membrane_predictions

def from_model(grayscale, mask, model=""):
    """A predictor whose one setting lives in a model file, as a classifier's does."""
    with open(model) as f:
        sigma = json.load(f)["sigma"]
    return naive_membrane_predictions(grayscale, mask, sigma=sigma)
'''

LABELSTITCH = str(Path(sys.executable).parent / "labelstitch")


@pytest.fixture()
def project(tmp_path, monkeypatch):
    gray, _ = em_volume((32, 48, 48), n_neurites=12, seed=5)
    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "modelstage.py").write_text(MODEL_STAGE)
    (tmp_path / "model.json").write_text(json.dumps({"sigma": 1.0}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path


def config(folder: Path, output: str = "seg.zarr", **options) -> dict:
    return {
        "input": str(folder / "gray.npy"), "output": str(folder / output),
        "options": {"chunk-size": 16, "overlap": 3, "resolution": [8, 8, 8], "checkpoint-dir": str(folder / "ckpt"),
                    "segmentor": {"configuration": {"predict-voxels": {
                        "function": "modelstage.from_model", "parameters": {"model": str(folder / "model.json")}}}},
                    **options},
    }


def test_a_run_records_how_it_was_made_in_the_ome_zarr_attributes_and_the_report(project):
    result = run(config(project), executor="processes", workers=2)
    [entry] = labelstitch.info(str(project / "seg.zarr"))["provenance"]
    attributes = zarr.open_group(str(project / "seg.zarr"), mode="r").attrs["labelstitch"]
    assert attributes["provenance"] == [entry]  # under the group's `labelstitch` key
    assert entry["command"] == "run" and entry["labelstitch"] == labelstitch.__version__
    assert entry["packages"]["numpy"] == np.__version__ and "scikit-image" in entry["packages"]
    assert entry["commit"] is None or len(entry["commit"].removesuffix("+dirty")) == 40
    assert entry["config"] == labelstitch.RunConfig.load(config(project)).to_dict()
    assert entry["inputs"]["input"]["shape"] == [32, 48, 48]
    digest = __import__("hashlib").sha256((project / "model.json").read_bytes()).hexdigest()
    assert entry["models"] == {"predict-voxels.model": digest}
    assert entry["executor"] == "processes" and entry["hosts"] == [os.uname().nodename]
    assert entry["started"] <= entry["ended"]
    assert entry["counts"]["subvolumes"] == 18 and entry["counts"]["bodies"] == result.counts["bodies"]
    assert set(entry["stage seconds"]) == {"read", "predict-voxels", "create-supervoxels", "agglomerate-supervoxels"}
    assert {"check and plan", "segment", "stitch", "write"} <= set(entry["seconds"])
    report = json.loads((project / "seg.zarr.stitch.json").read_text())
    assert report["provenance"] == [entry]
    assert "## Provenance" in (project / "seg.zarr.stitch.md").read_text()


def test_restitching_and_resuming_append_to_the_history_and_info_prints_it(project):
    run(config(project))
    restitch(config(project), rule="conservative", overwrite=True)
    run(config(project), resume=True)  # everything restored: the output is written again
    history = labelstitch.info(str(project / "seg.zarr"))["provenance"]
    assert [e["command"] for e in history] == ["run", "stitch", "resume"]
    assert history[1]["stitch"]["rule"] == "conservative" and history[2]["counts"]["restored"] == 18
    shown = subprocess.run([LABELSTITCH, "info", str(project / "seg.zarr")], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "1. run " in shown.stdout and "2. stitch " in shown.stdout and "3. resume " in shown.stdout
    assert "stitched with conservative" in shown.stdout and f"labelstitch {labelstitch.__version__}" in shown.stdout
    as_json = json.loads(subprocess.run([LABELSTITCH, "info", str(project / "seg.zarr"), "--json"],
                                        capture_output=True, text=True, timeout=60).stdout)
    assert len(as_json["provenance"]) == 3 and as_json["complete"] is True
    # a new segmentation replacing it starts a new history
    other = config(project, **{"overlap": 4})
    other["options"]["checkpoint-dir"] = str(project / "ckpt2")
    run(other, overwrite=True)
    assert [e["command"] for e in labelstitch.info(str(project / "seg.zarr"))["provenance"]] == ["run"]


def test_another_input_model_or_config_is_refused_naming_the_difference(project):
    run(config(project))
    fresh = config(project)
    fresh["options"]["checkpoint-dir"] = str(project / "other-ckpt")
    (project / "model.json").write_text(json.dumps({"sigma": 1.5}))  # retrained in place
    with pytest.raises(StoreError, match=r"exists and was made differently: model file predict-voxels.model changed; "
                                         r"--overwrite replaces it"):
        run(fresh)
    with pytest.raises(CheckpointError, match="model predict-voxels.model changed since its checkpoints were made"):
        run(config(project), resume=True)  # old blocks would be stitched next to new ones
    (project / "model.json").write_text(json.dumps({"sigma": 1.0}))
    changed = config(project, **{"stitch-algorithm": "aggressive"})
    changed["options"]["checkpoint-dir"] = str(project / "other-ckpt")
    gray = np.load(project / "gray.npy")
    gray[0, 0, 0] ^= 1
    np.save(project / "gray.npy", gray)
    with pytest.raises(StoreError, match=r"input changed \(.*sampled-sha256.*\); config changed \(options.stitch-algorithm\)"):
        run(changed)
    assert not (project / "other-ckpt").exists()  # refused before any work
    run(changed, overwrite=True)  # --overwrite replaces it


def test_a_dvid_output_keeps_its_provenance_in_a_keyvalue_instance(project, dvid_server):
    root = requests.post(f"{dvid_server.url}/repos", json={"alias": "p"}).json()["root"]
    target = f"dvid://{dvid_server.address}/{root}/seg"
    cfg = config(project)
    cfg["output"] = target
    cfg["options"]["chunk-size"] = 32
    cfg["options"].pop("resolution")
    gray = np.zeros((32, 64, 64), np.uint8)
    gray[:, :48, :48] = np.load(project / "gray.npy")
    np.save(project / "gray.npy", gray)
    run(cfg, create_output=True)
    stored = requests.get(f"{dvid_server.url}/node/{root}/labelstitch/key/seg").json()
    assert [e["command"] for e in stored["provenance"]] == ["run"]
    assert stored["provenance"][0]["models"]["predict-voxels.model"]
    shown = subprocess.run([LABELSTITCH, "info", target], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "1. run " in shown.stdout, shown.stderr
