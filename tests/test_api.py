"""The Python API and the shape of a run: nothing left behind, each check once, executors
made with their options."""

from __future__ import annotations

import numpy as np
import pytest

import labelstitch as ls
from labelstitch._cli.main import ExitCode, main
from labelstitch.executors import ProcessesExecutor, SerialExecutor
from labelstitch.plugins import PluginError, get_executor
from labelstitch.stores import memory_volumes
from labelstitch.synthetic import em_volume

OPTIONS = {"chunk-size": 32, "overlap": 4}


@pytest.fixture(scope="module")
def gray():
    return em_volume((32, 48, 48), n_neurites=10, seed=6)[0]


def test_segment_leaves_no_volume_behind(gray):
    before = memory_volumes()
    results = [ls.segment(gray, block=32, overlap=4) for _ in range(3)]
    assert memory_volumes() == before
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    mask = np.zeros(gray.shape, bool)
    mask[:, :, :8] = True
    masked = ls.segment(gray, block=32, overlap=4, mask=mask, preserve=(results[0], [int(results[0][20, 20, 20])]))
    assert memory_volumes() == before
    assert (masked[:, :, :8] == 0).all()


def test_a_run_checks_its_stitching_rule_and_output_once(gray, tmp_path, monkeypatch):
    import labelstitch.pipeline.planning as prepare
    from labelstitch.stores import VolumeRef

    calls = {"check_stitch": 0, "check_output": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(prepare, "check_stitch", counting("check_stitch", prepare.check_stitch))
    monkeypatch.setattr(VolumeRef, "check_output", counting("check_output", VolumeRef.check_output))
    np.save(tmp_path / "gray.npy", gray)
    ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
            "options": {"chunk-size": 32, "overlap": 4}})
    assert calls == {"check_stitch": 1, "check_output": 1}


def test_executors_are_made_with_their_options_and_declare_capabilities():
    serial = get_executor("serial")
    assert isinstance(serial, SerialExecutor) and serial.in_process
    with get_executor("processes", workers=1) as pool:
        assert isinstance(pool, ProcessesExecutor) and pool.workers == 1 and not pool.in_process
    with pytest.raises(PluginError, match="executor 'serial' .* takes no option 'master'"):
        get_executor("serial", master="spark://127.0.0.1:7077")
    with pytest.raises(PluginError, match="unknown executor 'ray'"):
        get_executor("ray")


BUGGY = '''
def divides_by_zero(grayscale, mask):
    return 1 / 0
'''


def test_a_bug_exits_3_with_a_report_request_and_debug_shows_the_traceback(gray, tmp_path, monkeypatch, capsys):
    import labelstitch.pipeline.driver as driver

    np.save(tmp_path / "gray.npy", gray)
    config = tmp_path / "run.yaml"
    config.write_text("input: gray.npy\noutput: seg.zarr\noptions:\n  chunk-size: 32\n  overlap: 4\n")

    def buggy(*args, **kwargs):  # a bug in labelstitch itself, on the driver
        return 1 / 0

    monkeypatch.setattr(driver, "stitch_and_write", buggy)
    assert main(["run", str(config), "-q"]) == ExitCode.INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero" in err and "please report it" in err
    assert not (tmp_path / "seg.zarr").exists()
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "run", str(config), "-q"])


def test_a_stage_that_raises_fails_its_blocks_with_exit_1_and_a_table(gray, tmp_path, monkeypatch, capsys):
    """A plugin's bug is not labelstitch's: its blocks are retried, then listed, exit 1."""
    (tmp_path / "buggystages.py").write_text(BUGGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "gray.npy", gray)
    config = tmp_path / "run.yaml"
    config.write_text(
        "input: gray.npy\noutput: seg.zarr\noptions:\n  chunk-size: 32\n  overlap: 4\n  retries: 1\n"
        "  segmentor:\n    configuration:\n      predict-voxels: {function: buggystages.divides_by_zero}\n"
    )
    assert main(["run", str(config), "-q"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "4 of 4 subvolumes failed after 1 retries, so no output was written" in err
    assert "predict-voxels  2      " in err and "ZeroDivisionError: division by zero" in err
    assert not (tmp_path / "seg.zarr").exists()


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_without_checkpoints_segmented_subvolumes_wait_on_disk_not_in_the_driver(gray, tmp_path, monkeypatch, executor):
    import labelstitch.pipeline.driver as driver

    seen = {}
    original = driver.stitch_and_write

    def spying(prepared, segmented, pool, **kwargs):
        seen.update(segmented)
        seen["files"] = sorted(p.name for p in tmp_path.iterdir())
        return original(prepared, segmented, pool, **kwargs)

    monkeypatch.setattr(driver, "stitch_and_write", spying)
    np.save(tmp_path / "gray.npy", gray)
    result = ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"), "options": OPTIONS},
                    executor=executor, workers=2 if executor == "processes" else None)
    files = seen.pop("files")
    assert len(seen) == result.counts["subvolumes"] and all(s.data is None and s.path for s in seen.values())
    assert any(name.endswith("-seg.zarr.run") for name in files)  # the run folder, beside the output ...
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")) == []  # ... removed at the end
