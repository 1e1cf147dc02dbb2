"""A real Spark standalone cluster: a master and two workers in their own JVMs on 127.0.0.1,
started from pyspark's scripts; the CLI runs a config on it from another working folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labelstitch.pipeline import run
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume
from labelstitch.testing.spark_cluster import standalone_cluster

pytestmark = pytest.mark.skipif(shutil.which("java") is None and "JAVA_HOME" not in os.environ, reason="needs Java for Spark")


def read(uri: str) -> np.ndarray:
    with open_volume(uri) as store:
        return store.read()


def test_a_standalone_cluster_run_is_bitwise_identical_to_serial_and_keeps_blocks_off_the_driver(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    gray, truth = em_volume((48, 64, 64), n_neurites=25, seed=4)
    np.save(project / "gray.npy", gray)
    options = {"chunk-size": 24, "overlap": 4, "resolution": [8, 8, 8]}
    # relative paths: they name files beside the config, whatever folder the driver runs in
    (project / "config.json").write_text(json.dumps({"input": "gray.npy", "output": "cluster.zarr", "options": options}))
    reference = run({"input": str(project / "gray.npy"), "output": str(project / "serial.zarr"), "options": options})

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with standalone_cluster(workers=2, cores=1, memory="1g") as master:
        assert master.startswith("spark://127.0.0.1:")
        done = subprocess.run(
            [str(Path(sys.executable).parent / "labelstitch"), "run", str(project / "config.json"), "--executor", "spark",
             "--spark-master", master, "--json", "--quiet"],
            cwd=elsewhere, capture_output=True, text=True, timeout=600,
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    np.testing.assert_array_equal(read(str(project / "cluster.zarr")), read(str(project / "serial.zarr")))
    assert report["counts"]["matches"] == reference.counts["matches"]
    assert report["counts"]["subvolumes"] == 18
    # segmented subvolumes went to the run folder beside the output, never to the driver
    assert report["counts"]["blocks via driver"] == 0
    assert not [p for p in project.iterdir() if p.name.endswith(".run")]
    assert not list(elsewhere.iterdir())
