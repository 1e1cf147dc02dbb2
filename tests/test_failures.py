"""One block fails, the run goes on: retries, the failure table, allow-missing-blocks, resume
of the failed ones and the run status, with stages that raise or kill their worker process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labelstitch.checkpoints import finished_blocks
from labelstitch.pipeline import BlocksFailed, run
from labelstitch.runstatus import read_status
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume

STAGES = '''
import os, signal
from labelstitch.plugins.builtin import naive_membrane_predictions

MARK = 1   # a grayscale value the synthetic EM never has: one voxel of it marks the bad region

def bad_region(grayscale, mask, flag=""):
    """Raise on the subvolume holding the mark while the flag file exists."""
    if (grayscale == MARK).any() and os.path.exists(flag):
        raise RuntimeError("bad region: the stage cannot handle this block\\nsecond line")
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)

def killer(grayscale, mask, flag=""):
    """Kill the worker process on the subvolume holding the mark while the flag file exists."""
    if (grayscale == MARK).any() and os.path.exists(flag):
        os.kill(os.getpid(), signal.SIGKILL)
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)

def flaky(grayscale, mask, flag=""):
    """Fail once on the marked subvolume: the first try removes the flag file."""
    if (grayscale == MARK).any() and os.path.exists(flag):
        os.unlink(flag)
        raise OSError("a node's disk went away")
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)

def hog(grayscale, mask, flag=""):
    """Ask for far more memory than the run's cgroup allows on the marked subvolume."""
    if (grayscale == MARK).any() and os.path.exists(flag):
        import numpy as np
        waste = np.ones(6 * 2**30 // 8)
        return waste[:1]
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)

def good(grayscale, mask, flag=""):
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)
'''

EXECUTORS = ["serial", "processes", "spark"]


def _needs(executor: str) -> None:
    if executor == "spark" and shutil.which("java") is None and "JAVA_HOME" not in os.environ:
        pytest.skip("Spark needs Java")


@pytest.fixture()
def project(tmp_path, monkeypatch):
    gray, _ = em_volume((32, 48, 48), n_neurites=15, seed=3)
    gray[6, 6, 6] = 1  # inside subvolume 0's interior, outside every other outer box
    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "failing.py").write_text(STAGES)
    (tmp_path / "flag").write_text("on")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path


def config(folder: Path, function: str, output: str, **options) -> dict:
    return {
        "input": str(folder / "gray.npy"), "output": str(folder / output),
        "options": {
            "chunk-size": 16, "overlap": 3, "checkpoint-dir": str(folder / f"{output}.ckpt"),
            "segmentor": {"configuration": {"predict-voxels": {"function": f"failing.{function}",
                                                               "parameters": {"flag": str(folder / "flag")}}}},
            **options,
        },
    }


def read(uri: str) -> np.ndarray:
    with open_volume(uri) as store:
        return store.read()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_block_that_raises_is_retried_then_listed_and_resume_segments_only_it(project, executor):
    _needs(executor)
    run(config(project, "good", "reference.zarr"))
    bad = config(project, "bad_region", "out.zarr")
    with pytest.raises(BlocksFailed) as caught:
        run(bad, executor=executor, workers=2)
    message = str(caught.value)
    assert "1 of 18 subvolumes failed after 2 retries, so no output was written" in message
    assert "labelstitch run CONFIG --resume` segments only the failed ones" in message
    [failure] = caught.value.failures
    assert (failure.sv_id, failure.stage, failure.attempts) == (0, "predict-voxels", 3)
    assert failure.error == "RuntimeError: bad region: the stage cannot handle this block"
    assert failure.box in message.splitlines()[-1] and "predict-voxels" in message.splitlines()[-1]
    assert not (project / "out.zarr").exists()  # no output it cannot complete
    assert finished_blocks(project / "out.zarr.ckpt") == 17  # every other subvolume is kept
    status = read_status(project / "out.zarr.ckpt")
    assert status["state"] == "failed" and status["done"] == 17 and status["retried"] == 2
    assert [f["subvolume"] for f in status["failed"]] == [0]

    (project / "flag").unlink()  # the fix
    resumed = run(bad, executor=executor, workers=2, resume=True)
    assert resumed.counts["segmented now"] == 1 and resumed.counts["restored from checkpoints"] == 17
    np.testing.assert_array_equal(read(str(project / "out.zarr")), read(str(project / "reference.zarr")))
    assert read_status(project / "out.zarr.ckpt")["state"] == "finished"


@pytest.mark.parametrize("executor", ["processes", "spark"])
def test_a_block_that_kills_its_worker_costs_only_that_block(project, executor):
    _needs(executor)
    run(config(project, "good", "reference.zarr"))
    bad = config(project, "killer", "out.zarr", retries=1)
    with pytest.raises(BlocksFailed) as caught:
        run(bad, executor=executor, workers=2)
    [failure] = caught.value.failures
    assert (failure.sv_id, failure.stage, failure.attempts) == (0, "worker", 2)
    if executor == "processes":  # Spark reports a lost Python worker without its signal
        assert "killed by SIGKILL" in failure.error
        assert "most often ran out of memory: options.chunk-size [16, 16, 16] -> at most" in str(caught.value)
    assert finished_blocks(project / "out.zarr.ckpt") == 17
    (project / "flag").unlink()
    resumed = run(bad, executor=executor, workers=2, resume=True)
    assert resumed.counts["segmented now"] == 1
    np.testing.assert_array_equal(read(str(project / "out.zarr")), read(str(project / "reference.zarr")))


def test_a_block_that_fails_once_is_retried_and_the_output_is_whole(project):
    run(config(project, "good", "reference.zarr"))
    result = run(config(project, "flaky", "out.zarr"), executor="processes", workers=2)
    assert not (project / "flag").exists()  # it did fail once
    assert result.counts["retried"] == 1 and result.counts["failed"] == 0 and not result.failures
    np.testing.assert_array_equal(read(str(project / "out.zarr")), read(str(project / "reference.zarr")))


def test_allow_missing_blocks_writes_the_rest_and_exits_1_naming_the_empty_boxes(project):
    bad = config(project, "bad_region", "out.zarr", retries=0, **{"allow-missing-blocks": True})
    (project / "run.json").write_text(json.dumps(bad))
    done = subprocess.run([str(Path(sys.executable).parent / "labelstitch"), "run", str(project / "run.json"), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "1 subvolumes failed after 0 retries and are left empty" in done.stderr
    assert "subvolumes failed and were left empty" in done.stdout and "RuntimeError: bad region" in done.stdout
    labels = read(str(project / "out.zarr"))
    assert not labels[:16, :16, :16].any() and labels[16:].all()
    status = subprocess.run([str(Path(sys.executable).parent / "labelstitch"), "status", str(project / "out.zarr.ckpt")],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0
    assert "finished with missing blocks" in status.stdout and "17 of 18 finished" in status.stdout
    assert "bad region" in status.stdout
    as_json = json.loads(subprocess.run([str(Path(sys.executable).parent / "labelstitch"), "status",
                                         str(project / "out.zarr.ckpt"), "--json"], capture_output=True, text=True).stdout)
    assert as_json["failed"][0]["subvolume"] == 0

    (project / "flag").unlink()
    resumed = run(bad, resume=True)
    assert resumed.counts["segmented now"] == 1 and read(str(project / "out.zarr"))[:16, :16, :16].all()


def test_status_of_a_run_whose_process_is_gone_says_stopped(project):
    run(config(project, "good", "out.zarr"))
    path = project / "out.zarr.ckpt" / "status.json"
    status = json.loads(path.read_text())
    status.update(state="running", pid=2**22 + 12345)  # no such process
    path.write_text(json.dumps(status))
    assert read_status(project / "out.zarr.ckpt")["state"] == "stopped"
    with pytest.raises(ValueError, match="has no status.json"):
        read_status(project)


def _memory_cgroup(limit: int) -> Path | None:
    """A new cgroup v1 memory group limited to ``limit`` bytes (None where this machine
    does not let us make one: not root, cgroup v2 only, read-only)."""
    base = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not (base / "cgroup.procs").exists():
        return None
    group = base / f"labelstitch-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():  # no swapping out of it either
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
    except OSError:
        if group.exists():
            group.rmdir()
        return None
    return group


def test_a_worker_killed_by_the_out_of_memory_killer_is_named_with_a_chunk_size_that_fits(project):
    group = _memory_cgroup(1536 * 2**20)
    if group is None:
        pytest.skip("needs root and a cgroup v1 memory controller to run a real out-of-memory kill")
    try:
        cfg = config(project, "hog", "out.zarr", retries=0)
        (project / "run.json").write_text(json.dumps(cfg))
        labelstitch = str(Path(sys.executable).parent / "labelstitch")
        done = subprocess.run(
            ["bash", "-c", f'echo $$ > {group}/cgroup.procs && exec {labelstitch} run {project / "run.json"} '
                           "--executor processes --workers 2 -q"],
            capture_output=True, text=True, timeout=300, env={**os.environ})
    finally:
        for _ in range(50):  # the group can go once its processes have
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.2)
    assert done.returncode == 1, done.stderr
    assert "subvolume 0 (killed by the out-of-memory killer (SIGKILL))" in done.stderr, done.stderr
    assert "most often ran out of memory: options.chunk-size [16, 16, 16] -> at most" in done.stderr
    assert finished_blocks(project / "out.zarr.ckpt") == 17


def test_a_failure_after_a_dropped_stop_ends_the_run_as_interrupted(tmp_path, monkeypatch):
    """Dask's garbage-collector callback can swallow a signal's exception; the closed client's
    error that follows must end the run as interrupted (and raise the stop), not as failed."""
    from labelstitch.executors import _base
    from labelstitch.pipeline.failures import RunEnding
    from labelstitch.runstatus import RunStatus

    stop = KeyboardInterrupt("SIGTERM")
    monkeypatch.setattr(_base, "_REQUESTED", [stop])
    with pytest.raises(KeyboardInterrupt) as raised:
        with RunEnding() as ending:
            ending.status = RunStatus(tmp_path, 4, "dask")
            raise RuntimeError("Client is closed. Can't send update-graph message.")
    assert raised.value is stop and isinstance(raised.value.__cause__, RuntimeError)
    assert read_status(tmp_path)["state"] == "interrupted"

    monkeypatch.setattr(_base, "_REQUESTED", [])  # without a stop, the same error is a failure
    with pytest.raises(RuntimeError):
        with RunEnding() as ending:
            ending.status = RunStatus(tmp_path, 4, "dask")
            raise RuntimeError("Client is closed.")
    assert read_status(tmp_path)["state"] == "failed"
