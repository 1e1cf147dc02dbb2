"""Real signals to real runs: SIGTERM (a cluster scheduler's stop) to the driver and Ctrl-C to
the whole process group, while subvolumes are segmented and while faces are stitched, on
every executor. Each run must stop with the conventional exit code and one line on how to
resume, leave no process behind, no staging, no lock, and checkpoints that resume to the
uninterrupted output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from labelstitch.stores import open_volume
from labelstitch.testing import executor_params
from labelstitch.synthetic import em_volume

# real processes timed against signals and kills: `make test` runs these alone, after the parallel run
pytestmark = pytest.mark.serial

STAGES = '''
import os, signal, time
from labelstitch.plugins.builtin import naive_membrane_predictions

class _SignalInFinalizer:
    """SIGTERM to this process from inside a ``__del__``: the handler runs there, where Python
    drops the exception it raises (as it does in a garbage-collector callback)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000):  # the handler runs at one of these iterations, inside __del__
            pass


def slow(grayscale, mask):
    time.sleep(float(os.environ.get("SLOW_STAGE", "0")))  # set for the run to stop, not for its resume
    if os.environ.get("SIGNAL_IN_FINALIZER") and not os.path.exists("finalized"):
        open("finalized", "w").close()
        _SignalInFinalizer()  # collected at once
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)
'''

SLOW_RULE = '''
import os, time
import labelstitch
from labelstitch.rules import rule_medium

def slow_medium(c):
    time.sleep(float(os.environ.get("SLOW_RULE", "0")))  # set for the run to stop, not for its resume
    return rule_medium(c)

@labelstitch.hookimpl
def labelstitch_stitch_rules():
    return {"slow-medium": slow_medium}
'''

LABELSTITCH = str(Path(sys.executable).parent / "labelstitch")


EXECUTORS = executor_params("serial", "processes", "spark", "dask")


@pytest.fixture()
def project(tmp_path):
    gray, _ = em_volume((32, 48, 48), n_neurites=15, seed=3)
    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "slowstages.py").write_text(STAGES)
    site = tmp_path / "site"
    site.mkdir()
    (site / "slowrule.py").write_text(SLOW_RULE)
    dist = site / "slowrule-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slowrule\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[labelstitch.plugins]\nslowrule = slowrule\n")
    return tmp_path


def _config(project: Path, name: str, *, slow_rule: bool) -> Path:
    stage = {"function": "slowstages.slow"}
    config = {
        "input": str(project / "gray.npy"), "output": str(project / f"{name}.zarr"),
        "options": {"chunk-size": 16, "overlap": 3, "checkpoint-dir": str(project / f"{name}.ckpt"),
                    "stitch-algorithm": "slow-medium" if slow_rule else "medium",
                    "segmentor": {"configuration": {"predict-voxels": stage}}},
    }
    path = project / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def _env(project: Path, tag: str, **slow: str) -> dict[str, str]:
    paths = [str(project), str(project / "site"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "LABELSTITCH_TEST_TAG": tag, **slow}


def _tagged(tag: str) -> list[int]:
    """Processes whose environment carries ``tag``: the run's driver and everything it started."""
    found = []
    needle = f"LABELSTITCH_TEST_TAG={tag}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _status(project: Path, name: str) -> dict:
    try:
        return json.loads((project / f"{name}.ckpt" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _stop_and_check(project: Path, executor: str, name: str, *, when, send, code: int) -> None:
    """Start a run, wait for ``when(status)``, ``send`` the signal, and check the aftermath."""
    config = _config(project, name, slow_rule=name.startswith("stitch"))
    slow = {"SLOW_STAGE": "0.4"} if name.startswith("segment") else {"SLOW_RULE": "0.3"}
    tag = uuid.uuid4().hex
    args = [LABELSTITCH, "run", str(config), "--executor", executor, "-q"]
    if executor != "serial":
        args += ["--workers", "2"]
    process = subprocess.Popen(args, env=_env(project, tag, **slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _wait_for(lambda: when(_status(project, name)) or process.poll() is not None, 240, "the run to get there")
        assert process.poll() is None, process.communicate()[1]
        if name == "segment-term":  # from another shell, while the run goes
            seen = subprocess.run([LABELSTITCH, "status", str(project / f"{name}.ckpt")], capture_output=True, text=True,
                                  timeout=60, env=_env(project, "status"))
            assert seen.returncode == 0 and seen.stdout.startswith("state       running ("), seen.stdout + seen.stderr
            assert f"pid {process.pid} on" in seen.stdout and "of 18 finished" in seen.stdout
        send(process)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _check_stopped_and_resume(project, name, config, tag, process.returncode, stderr, code)


def _check_stopped_and_resume(project: Path, name: str, config: Path, tag: str, returncode: int, stderr: str,
                              code: int) -> None:
    """The aftermath of a stop: exit code, one line, nothing left behind, and a resume that
    gives the uninterrupted output."""
    assert returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("labelstitch: stopped by SIGTERM" if code == 143 else "labelstitch: interrupted"), stderr
    assert f"labelstitch run {config} --resume" in last
    ours = [line for line in stderr.splitlines() if line.startswith("labelstitch") or "Traceback" in line]
    assert ours == [last], stderr  # one line of ours, no traceback (Spark's JVM says hello on its own)
    _wait_for(lambda: not _tagged(tag), 30, "every process of the run to end")  # nothing left behind
    assert not list(project.rglob("*.partial*")) and not list(project.rglob(".partial-*"))  # no staging
    assert not (project / f"{name}.zarr").exists()
    assert _status(project, name)["state"] == "interrupted"

    resumed = subprocess.run([LABELSTITCH, "run", str(config), "--resume", "--json", "-q"], env=_env(project, tag),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "stale" not in resumed.stderr  # the locks were released, not left for the next run to take over
    reference = _config(project, "reference", slow_rule=False)
    if not (project / "reference.zarr").exists():
        subprocess.run([LABELSTITCH, "run", str(reference), "-q"], env=_env(project, tag), check=True, timeout=300)
    with open_volume(str(project / f"{name}.zarr")) as a, open_volume(str(project / "reference.zarr")) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def _sigterm(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # to the driver alone, as `kill PID` or a scheduler does


def _ctrl_c(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)  # to the whole process group, as a terminal does


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sigterm_while_segmenting_stops_cleanly_and_resumes(project, executor):
    _stop_and_check(project, executor, "segment-term", when=lambda s: s.get("done", 0) >= 2, send=_sigterm, code=143)


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_ctrl_c_to_the_process_group_while_segmenting_stops_cleanly(project, executor):
    _stop_and_check(project, executor, "segment-int", when=lambda s: s.get("done", 0) >= 1, send=_ctrl_c, code=130)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sigterm_while_stitching_stops_cleanly_and_resumes(project, executor):
    _stop_and_check(project, executor, "stitch-term", when=lambda s: s.get("step") == "stitch and write",
                    send=_sigterm, code=143)


def test_a_signal_whose_exception_python_drops_still_stops_the_run(project):
    """A handler that runs inside a finalizer (or a garbage-collector callback, as Dask's
    has) raises where Python prints and drops the exception; the run must stop all the same
    at the next subvolume, as stopped, not run on or fail with an internal error."""
    name, tag = "finalizer-term", uuid.uuid4().hex
    config = _config(project, name, slow_rule=False)
    run = subprocess.run([LABELSTITCH, "run", str(config), "-q"], env=_env(project, tag, SIGNAL_IN_FINALIZER="1"),
                         capture_output=True, text=True, timeout=300, cwd=project)
    assert (project / "finalized").exists()
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
    _check_stopped_and_resume(project, name, config, tag, run.returncode, run.stderr, 143)


def _by_parity(number):
    return [(number % 2, number)]


def _group_sum(group):
    return sum(group[1])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_stop_whose_exception_was_dropped_ends_the_next_map_before_it_starts(executor, monkeypatch):
    """A signal's handler that runs inside a finalizer between two maps (py4j's run all the
    time) stops the workers that are running, maybe none, and its exception is dropped: the
    next ``map`` or ``map_grouped`` must raise it instead of running to the end, on every
    executor (Spark let a stitch run on to exit 0 this way, now and then)."""
    from labelstitch.executors import _base
    from labelstitch.plugins import get_executor

    with get_executor(executor, workers=2) as pool:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]  # a map before the signal runs
        stop = KeyboardInterrupt("SIGTERM")
        monkeypatch.setattr(_base, "_REQUESTED", [stop])  # remembered; its raise dropped
        with pytest.raises(KeyboardInterrupt) as caught:
            list(pool.map(abs, [-1, -2]))
        assert caught.value is stop
        with pytest.raises(KeyboardInterrupt):
            list(pool.map_grouped(_by_parity, [1, 2, 3], _group_sum))
