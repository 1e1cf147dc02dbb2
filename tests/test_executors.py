"""Executors, checkpoints and resume, on real processes and files."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labelstitch.checkpoints import CheckpointError
from labelstitch.executors import ProcessesExecutor
from labelstitch.plugins import available_executors, get_executor, get_plugin_manager
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume
from labelstitch.pipeline import BlocksFailed, run

SLOW = '''
import os, time
from labelstitch.plugins.builtin import naive_membrane_predictions

def slow_predictions(grayscale, mask, delay=0.0):
    time.sleep(delay)
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)

def dies_on_dark_blocks(grayscale, mask):
    if grayscale.mean() < 1000:   # always: the worker process dies at once
        os._exit(3)
'''


@pytest.fixture()
def volume(tmp_path, monkeypatch):
    gray, truth = em_volume((48, 64, 64), n_neurites=25, seed=4)
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "truth.npy", truth)
    (tmp_path / "slowstages.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path


def config(folder: Path, output: str, **options) -> dict:
    return {
        "input": str(folder / "gray.npy"),
        "output": str(folder / output),
        "ground-truth": str(folder / "truth.npy"),
        "options": {
            "chunk-size": 16,
            "overlap": 4,
            "segmentor": {
                "configuration": {
                    "predict-voxels": {"function": "slowstages.slow_predictions"},
                    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}},
                }
            },
            **options,
        },
    }


def read(uri: str) -> np.ndarray:
    with open_volume(uri) as store:
        return store.read()


def test_every_executor_and_worker_count_gives_bitwise_identical_output(volume):
    reference = run(config(volume, "serial.zarr"))
    for name, workers, output in (("processes", 2, "p2.zarr"), ("processes", 1, "p1.zarr")):
        other = run(config(volume, output), executor=name, workers=workers)
        np.testing.assert_array_equal(read(str(volume / output)), read(str(volume / "serial.zarr")))
        assert other.counts["matches"] == reference.counts["matches"]
    npy = run(config(volume, "p2.npy"), executor="processes", workers=2)  # workers write the staged npy directly
    np.testing.assert_array_equal(read(str(volume / "p2.npy")), read(str(volume / "serial.zarr")))
    assert npy.vi.total == pytest.approx(reference.vi.total)


def test_spark_gives_bitwise_identical_output(volume):
    run(config(volume, "serial.zarr"))
    result = run(config(volume, "spark.zarr"), executor="spark", workers=2)
    np.testing.assert_array_equal(read(str(volume / "spark.zarr")), read(str(volume / "serial.zarr")))
    assert result.counts["subvolumes"] == 48
    # agglomeration across blocks too: the interior graphs and face contacts travel through Spark's shuffle
    across = {"agglomerate-across-blocks": True}
    serial = run(config(volume, "across-serial.zarr", **across))
    spark = run(config(volume, "across-spark.zarr", **across), executor="spark", workers=2)
    np.testing.assert_array_equal(read(str(volume / "across-spark.zarr")), read(str(volume / "across-serial.zarr")))
    assert spark.stitch["agglomeration"] == serial.stitch["agglomeration"]


def test_checkpoints_restore_and_verify(volume, caplog):
    ckpt = volume / "ckpt"
    first = run(config(volume, "a.zarr", **{"checkpoint-dir": str(ckpt), "iteration-size": 10}))
    assert first.counts["segmented now"] == first.counts["subvolumes"] == 48
    assert 0 < first.counts["checkpoint bytes"] < first.counts["uncompressed label bytes"] / 5
    assert json.loads((ckpt / "manifest.json").read_text())["plan"]["iterations"] == 5
    with pytest.raises(CheckpointError, match="holds checkpoints of an earlier run; pass --resume"):
        run(config(volume, "b.zarr", **{"checkpoint-dir": str(ckpt), "iteration-size": 10}))
    again = run(config(volume, "b.zarr", **{"checkpoint-dir": str(ckpt), "iteration-size": 10}), resume=True)
    assert again.counts["restored from checkpoints"] == 48 and again.counts["segmented now"] == 0
    assert again.counts["compression ratio"] > 5 and again.counts["restore MB/s"] > 0
    assert "iteration 4" in first.segment_seconds and "verify checkpoints" in again.segment_seconds
    np.testing.assert_array_equal(read(str(volume / "b.zarr")), read(str(volume / "a.zarr")))

    (ckpt / "sv-3.blk").unlink()  # missing
    os.replace(ckpt / "sv-5.blk", ckpt / "sv-5.blk.partial")  # half-written
    data = bytearray((ckpt / "sv-9.blk").read_bytes())
    data[-10] ^= 0xFF
    (ckpt / "sv-9.blk").write_bytes(bytes(data))  # corrupt
    with caplog.at_level(logging.WARNING, logger="labelstitch"):
        fixed = run(config(volume, "c.zarr", **{"checkpoint-dir": str(ckpt), "iteration-size": 10}), resume=True)
    assert fixed.counts["segmented now"] == 3 and fixed.counts["restored from checkpoints"] == 45
    assert "subvolume 5: its checkpoint is half-written" in caplog.text
    assert "subvolume 9: its checkpoint is corrupt" in caplog.text
    np.testing.assert_array_equal(read(str(volume / "c.zarr")), read(str(volume / "a.zarr")))


def test_resume_refuses_another_config_or_plan(volume):
    ckpt = volume / "ckpt"
    run(config(volume, "a.zarr", **{"checkpoint-dir": str(ckpt)}))
    changed = config(volume, "b.zarr", **{"checkpoint-dir": str(ckpt)})
    changed["options"]["segmentor"]["configuration"]["create-supervoxels"]["parameters"]["seed_threshold"] = 0.2
    with pytest.raises(CheckpointError, match="the config changed .*options.segmentor.configuration.create-supervoxels"):
        run(changed, resume=True)
    with pytest.raises(CheckpointError, match="different plan"):
        run(config(volume, "b.zarr", **{"checkpoint-dir": str(ckpt), "chunk-size": 32}), resume=True)
    with pytest.raises(ValueError, match="resume needs options.checkpoint-dir"):
        run(config(volume, "b.zarr"), resume=True)


@pytest.mark.serial  # a signal timed against a running process: `make test` runs it alone, after the parallel run
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_output(volume):
    run(config(volume, "reference.zarr"))
    ckpt = volume / "ckpt"
    slow = config(volume, "killed.zarr", **{"checkpoint-dir": str(ckpt)})
    slow["options"]["segmentor"]["configuration"]["predict-voxels"]["parameters"] = {"delay": 0.15}
    (volume / "slow.json").write_text(json.dumps(slow))
    child = subprocess.Popen([sys.executable, "-m", "labelstitch._cli.main", "run", str(volume / "slow.json"), "-q"])
    deadline = time.monotonic() + 120
    while len(list(ckpt.glob("sv-*.blk"))) < 12 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    done = len(list(ckpt.glob("sv-*.blk")))
    assert 12 <= done < 48 and not (volume / "killed.zarr").exists()
    slow["options"]["segmentor"]["configuration"]["predict-voxels"]["parameters"] = {"delay": 0.15}
    resumed = run(slow, resume=True)
    assert resumed.counts["restored from checkpoints"] >= 11  # the block being written when killed may be lost
    np.testing.assert_array_equal(read(str(volume / "killed.zarr")), read(str(volume / "reference.zarr")))


def test_a_dying_worker_is_reported_with_the_subvolume_it_held(volume):
    broken = config(volume, "broken.zarr")
    broken["options"]["segmentor"]["configuration"]["predict-voxels"] = {"function": "slowstages.dies_on_dark_blocks"}
    broken["options"]["retries"] = 0
    with pytest.raises(BlocksFailed) as caught:
        run(broken, executor="processes", workers=2)
    assert not (volume / "broken.zarr").exists()
    failures = caught.value.failures
    assert len(failures) == 48 and all(f.stage == "worker" for f in failures)
    # each names its own subvolume among those the dead workers held, and how they ended
    assert not [f.error for f in failures if not (f"subvolume {f.sv_id} (" in f.error and "(exited with code 3)" in f.error)]


def test_executor_names_and_workers_are_checked():
    with pytest.raises(ValueError, match="unknown executor 'ray'; available: serial, processes, spark, dask"):
        get_executor("ray")
    with pytest.raises(ValueError, match="`workers` must be at least 1"):
        ProcessesExecutor(workers=0)
    with get_executor("processes", workers=2) as pool:
        assert list(pool.map(abs, [-3, 2, -1])) == [3, 2, 1]


def test_an_executor_plugin_registered_by_entry_point_runs_the_pipeline(volume, monkeypatch):
    """An executor comes from a pip-installed plugin through the `labelstitch_executors` hook
    (the same entry-point group and manager as stage functions), with its options."""
    package = volume / "plugin_site"
    (package / "myexecutors").mkdir(parents=True)
    (package / "myexecutors" / "__init__.py").write_text(
        "import labelstitch\n"
        "from labelstitch.executors import SerialExecutor\n"
        "class ReversedSerial(SerialExecutor):\n"
        "    name = 'reversed'\n"
        "    calls = 0\n"
        "    def __init__(self, *, workers=None):\n"
        "        self.workers = workers\n"
        "    def map(self, fn, items, *, describe=repr):\n"
        "        ReversedSerial.calls += 1\n"
        "        items = list(items)\n"
        "        results = [fn(item) for item in reversed(items)]  # work in another order\n"
        "        return iter(results[::-1])\n"
        "@labelstitch.hookimpl\n"
        "def labelstitch_executors():\n"
        "    return {'reversed': ReversedSerial}\n"
    )
    dist = package / "myexecutors-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myexecutors\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[labelstitch.plugins]\nmyexecutors = myexecutors\n")
    monkeypatch.syspath_prepend(str(package))
    get_plugin_manager.cache_clear()
    try:
        assert available_executors()[:3] == ("serial", "processes", "spark") and "reversed" in available_executors()
        assert get_executor("reversed", workers=3).workers == 3
        with pytest.raises(ValueError, match="executor 'reversed' .* takes no option 'master'"):
            get_executor("reversed", master="spark://x:7077")
        run(config(volume, "serial.zarr"))
        run(config(volume, "plugin.zarr"), executor="reversed")
        import myexecutors

        assert myexecutors.ReversedSerial.calls >= 3
        np.testing.assert_array_equal(read(str(volume / "plugin.zarr")), read(str(volume / "serial.zarr")))
    finally:
        get_plugin_manager.cache_clear()


GROUPING = '''
def emit(item):
    return [(item % 3, item * 10), ("all", item)]

def reduce(group):
    key, values = group
    return key, values
'''


def test_processes_group_through_files_like_the_serial_reference(tmp_path, monkeypatch):
    import importlib

    (tmp_path / "grouping.py").write_text(GROUPING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    grouping = importlib.import_module("grouping")
    items = list(range(11))
    reference = sorted(get_executor("serial").map_grouped(grouping.emit, items, grouping.reduce), key=repr)
    pool = get_executor("processes", workers=2)
    folder = pool._ledger_parent
    try:
        found = sorted(pool.map_grouped(grouping.emit, items, grouping.reduce), key=repr)
        assert found == reference and dict(found)["all"] == items  # values in item order
        assert [p.name for p in Path(folder).iterdir()] == ["ledger"]  # the value files are gone
    finally:
        pool.close()
    assert not Path(folder).exists()


def test_executors_say_how_many_items_run_at_once_on_this_machine():
    """What the chunk-size memory check multiplies by: a pool's workers, a local Spark's
    cores; nothing for a cluster whose workers are elsewhere (not started here)."""
    from labelstitch.executors.spark import _local_cores

    assert get_executor("serial").items_at_once == 1
    pool = get_executor("processes", workers=3)
    try:
        assert pool.items_at_once == 3
    finally:
        pool.close()
    assert _local_cores("local[2]") == 2 and _local_cores("local") == 1 and _local_cores("local[*]") == os.cpu_count()
    assert _local_cores("local[4,3]") == 4 and _local_cores("spark://10.0.0.1:7077") is None


def test_spark_without_java_is_refused_in_one_line_before_any_work(volume, monkeypatch, tmp_path, capsys):
    from labelstitch._cli.main import main

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    cfg = config(volume, "nojava.zarr")
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    assert main(["run", str(tmp_path / "run.json"), "--executor", "spark", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Java 17 or 21" in err and "apt-get install openjdk-17-jre-headless" in err
    assert not (volume / "nojava.zarr").exists()


UNGUARDED = """
import sys
import numpy as np
import labelstitch as ls

gray = np.load(sys.argv[1])
config = {"input": sys.argv[1], "output": sys.argv[2], "options": {"chunk-size": 32, "overlap": 4}}
ls.run(config, executor="processes", workers=2)
print("ran once")
"""


def test_a_script_without_a_main_guard_runs_on_worker_processes(volume, tmp_path):
    """A plain script (no ``if __name__ == "__main__":``) on the processes executor: the
    workers do not import it again, so it runs once and gives the serial output."""
    script = tmp_path / "plain.py"
    script.write_text(UNGUARDED)
    gray = str(volume / "gray.npy")
    done = subprocess.run([sys.executable, str(script), gray, str(tmp_path / "plain.zarr")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("ran once") == 1 and "Traceback" not in done.stderr
    run({"input": gray, "output": str(tmp_path / "serial.zarr"), "options": {"chunk-size": 32, "overlap": 4}})
    np.testing.assert_array_equal(read(str(tmp_path / "plain.zarr")), read(str(tmp_path / "serial.zarr")))
