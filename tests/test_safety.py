"""What labelstitch guarantees when the user or the machine does something wrong
(docs/guarantees.md): inputs are never touched, runs never collide, nothing half-written
is left behind, and finished work survives a kill."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import labelstitch as ls
from labelstitch.stores import StoreError, open_volume
from labelstitch.synthetic import em_volume

OPTIONS = {"chunk-size": 32, "overlap": 4}


@pytest.fixture(scope="module")
def gray():
    return em_volume((32, 48, 48), n_neurites=10, seed=8)[0]


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "input_name, output_name",
    [
        ("gray.npy", "gray.npy"),          # the output is the input
        ("in.zarr", "in.zarr/c"),          # a path inside the input
        ("in.zarr/raw", "in.zarr"),        # the group that holds the input array
        ("in.h5:raw", "in.h5:seg"),        # the HDF5 file that holds the input
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_touches_the_input_is_refused_whatever_the_flags(gray, tmp_path, input_name, output_name, overwrite):
    from labelstitch.stores import create_volume

    store = create_volume(str(tmp_path / input_name), gray.shape, gray.dtype)
    store.write(store.box, gray)
    store.commit()
    store.close()
    before = snapshot(tmp_path)
    config = {"input": str(tmp_path / input_name), "output": str(tmp_path / output_name), "options": OPTIONS}
    with pytest.raises(StoreError, match=f"output .* would overwrite input {tmp_path / input_name}"):
        ls.run(config, overwrite=overwrite)
    assert snapshot(tmp_path) == before
    with open_volume(str(tmp_path / input_name)) as again:
        np.testing.assert_array_equal(again.read(), gray)


def test_ground_truth_preserved_bodies_and_checkpoints_are_never_outputs(gray, tmp_path):
    np.save(tmp_path / "gray.npy", gray)
    labels = np.arange(gray.size, dtype=np.uint32).reshape(gray.shape) % 7
    np.save(tmp_path / "gt.npy", labels)
    base = {"input": str(tmp_path / "gray.npy"), "options": dict(OPTIONS)}
    before = snapshot(tmp_path)
    cases = [
        ({"ground-truth": str(tmp_path / "gt.npy"), "output": str(tmp_path / "gt.npy")}, "ground-truth"),
        ({"preserve-bodies": {"segmentation": str(tmp_path / "gt.npy"), "bodies": [3]}, "output": str(tmp_path / "gt.npy")},
         "preserve-bodies.segmentation"),
        ({"output": str(tmp_path / "ckpt" / "seg.zarr"), "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}},
         "options.checkpoint-dir"),
        ({"output": str(tmp_path / "out.zarr"), "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "out.zarr" / "ckpt")}},
         "options.checkpoint-dir"),
    ]
    for extra, key in cases:
        with pytest.raises(StoreError, match=f"would overwrite {key}"):
            ls.run({**base, **extra}, overwrite=True)
    with pytest.raises(StoreError, match="options.checkpoint-dir .* overlaps input"):
        ls.run({**base, "output": str(tmp_path / "o.zarr"), "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "gray.npy")}})
    assert snapshot(tmp_path) == before


SLOW = '''
import time
from labelstitch.plugins.builtin import naive_membrane_predictions

def slow_predictions(grayscale, mask, delay=0.0):
    time.sleep(delay)
    return naive_membrane_predictions(grayscale, mask, sigma=1.0)
'''


def slow_config(folder, output="out.zarr", delay=0.2, **options):
    return {
        "input": str(folder / "gray.npy"),
        "output": str(folder / output),
        "options": {
            **OPTIONS, "chunk-size": 16,
            "segmentor": {"configuration": {
                "predict-voxels": {"function": "slowstages.slow_predictions", "parameters": {"delay": delay}}}},
            **options,
        },
    }


def cli(folder, *args, wait=True):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(folder) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "labelstitch._cli.main", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def wait_for(condition, what, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.serial  # a signal timed against a running process: `make test` runs it alone, after the parallel run
def test_a_second_run_on_the_same_output_or_checkpoints_is_refused_naming_the_first(gray, tmp_path, monkeypatch):
    import signal

    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "slowstages.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = tmp_path / "ckpt"
    (tmp_path / "a.json").write_text(json.dumps(slow_config(tmp_path, delay=0.6, **{"checkpoint-dir": str(ckpt)})))
    (tmp_path / "b.json").write_text(json.dumps(slow_config(tmp_path, "other.zarr", **{"checkpoint-dir": str(ckpt)})))
    (tmp_path / "c.json").write_text(json.dumps(slow_config(tmp_path, delay=0.0)))
    first = cli(tmp_path, "run", str(tmp_path / "a.json"), "-q", wait=False)
    try:
        wait_for(lambda: (tmp_path / "out.zarr.lock").exists() and (tmp_path / "ckpt.lock").exists(), "the first run's locks")
        same_output = cli(tmp_path, "run", str(tmp_path / "c.json"), "-q")
        assert same_output.returncode == 1
        assert f"output {tmp_path / 'out.zarr'} is in use by labelstitch pid {first.pid}" in same_output.stderr
        same_checkpoints = cli(tmp_path, "run", str(tmp_path / "b.json"), "--resume", "-q")
        assert same_checkpoints.returncode == 1
        assert f"checkpoint folder {ckpt} is in use by labelstitch pid {first.pid}" in same_checkpoints.stderr
        assert not (tmp_path / "other.zarr").exists()
        wait_for(lambda: len(list(ckpt.glob("sv-*.blk"))) >= 3, "some finished subvolumes")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert (tmp_path / "out.zarr.lock").exists()  # the killed run could not remove its lock file ...
    resumed = cli(tmp_path, "run", str(tmp_path / "a.json"), "--resume", "-q", "--json")
    assert resumed.returncode == 0, resumed.stderr  # ... but its lock died with it
    assert f"taking over a stale lock left by labelstitch pid {first.pid}" in resumed.stderr
    assert not (tmp_path / "out.zarr.lock").exists() and not (tmp_path / "ckpt.lock").exists()
    reference = ls.run(slow_config(tmp_path, "reference.zarr", delay=0.0))
    with open_volume(str(tmp_path / "out.zarr")) as out, open_volume(reference.output) as ref:
        np.testing.assert_array_equal(out.read(), ref.read())


def test_checkpoints_verify_themselves_without_the_drivers_record(gray, tmp_path):
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "a.zarr"),
              "options": {**OPTIONS, "chunk-size": 16, "checkpoint-dir": str(tmp_path / "ckpt")}}
    first = ls.run(config)
    (tmp_path / "ckpt" / "checksums.jsonl").unlink()  # as if the driver died before recording any block
    (tmp_path / "ckpt" / "sv-1.blk.partial").write_bytes(b"cut short")  # and a worker mid-write
    again = ls.run({**config, "output": str(tmp_path / "b.zarr")}, resume=True)
    assert again.counts["restored from checkpoints"] == first.counts["subvolumes"]
    assert not list((tmp_path / "ckpt").glob("*.partial"))
    with open_volume(str(tmp_path / "a.zarr")) as a, open_volume(str(tmp_path / "b.zarr")) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def whole_blocks(folder):
    """Block files that reached the disk whole (a rename makes them appear whole or not at all)."""
    return {p.name for p in folder.glob("sv-*.blk")}


@pytest.fixture(scope="module")
def killable(tmp_path_factory, gray):
    """A volume, a slow plugin, and the uninterrupted run's output to compare with."""
    folder = tmp_path_factory.mktemp("killed")
    np.save(folder / "gray.npy", gray)
    (folder / "slowstages.py").write_text(SLOW)
    import sys

    sys.path.insert(0, str(folder))
    try:
        reference = ls.run(slow_config(folder, "reference.zarr", delay=0.0))
        with open_volume(reference.output) as ref:
            yield folder, ref.read()
    finally:
        sys.path.remove(str(folder))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.serial  # a signal timed against a running process: `make test` runs it alone, after the parallel run
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after=st.integers(min_value=1, max_value=17), extra=st.floats(min_value=0.0, max_value=0.2))
def test_a_kill_at_any_moment_loses_no_finished_subvolume(killable, after, extra):
    """SIGKILL once ``after`` subvolumes are on disk (plus a little): every block file that
    is there is reused by --resume, and the output equals the uninterrupted run's."""
    import shutil
    import signal
    import sys
    import time

    folder, reference = killable
    ckpt = folder / "ckpt"
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.rmtree(folder / "out.zarr", ignore_errors=True)
    (folder / "run.json").write_text(json.dumps(slow_config(folder, delay=0.05, **{"checkpoint-dir": str(ckpt)})))
    child = cli(folder, "run", str(folder / "run.json"), "-q", wait=False)
    wait_for(lambda: len(whole_blocks(ckpt)) >= after or child.poll() is not None, "finished subvolumes")
    time.sleep(extra)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    on_disk = whole_blocks(ckpt)
    sys.path.insert(0, str(folder))
    try:
        resumed = ls.run(json.loads((folder / "run.json").read_text()), resume=True, overwrite=True)
    finally:
        sys.path.remove(str(folder))
    assert resumed.counts["restored from checkpoints"] == len(on_disk)
    with open_volume(str(folder / "out.zarr")) as out:
        np.testing.assert_array_equal(out.read(), reference)


FULL_DISK = r'''
import json, os, shutil, subprocess, sys
disk, work = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk], check=True)

def fill(leave):
    """Leave only ``leave`` bytes free on the small disk."""
    free = shutil.disk_usage(disk).free
    with open(os.path.join(disk, "filler"), "ab") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size + max(0, free - leave))

def cli(config, *flags):
    path = os.path.join(work, "run.json")
    with open(path, "w") as f:
        json.dump(config, f)
    done = subprocess.run([sys.executable, "-m", "labelstitch._cli.main", "run", path, "-q", *flags],
                          capture_output=True, text=True)
    return {"rc": done.returncode, "err": done.stderr.strip().splitlines()[-1:] , "files": sorted(
        os.path.relpath(os.path.join(r, n), disk) for r, ds, fs in os.walk(disk) for n in fs + ds if n != "filler")}

options = {"chunk-size": 16, "overlap": 4}
gray = os.path.join(work, "gray.npy")
found = {}
fill(64 * 1024)
found["npy"] = cli({"input": gray, "output": os.path.join(disk, "seg.npy"), "options": options})
fill(8 * 1024)
found["zarr"] = cli({"input": gray, "output": os.path.join(disk, "seg.zarr"), "options": options})
found["checkpoints"] = cli({"input": gray, "output": os.path.join(work, "seg.zarr"),
                            "options": {**options, "checkpoint-dir": os.path.join(disk, "ckpt")}})
os.remove(os.path.join(disk, "filler"))
import h5py, numpy as np
with h5py.File(os.path.join(disk, "seg.h5"), "w") as f:
    f["old"] = np.arange(1000)
fill(8 * 1024)
found["h5"] = cli({"input": gray, "output": os.path.join(disk, "seg.h5:seg"), "options": options})
with h5py.File(os.path.join(disk, "seg.h5"), "r") as f:
    found["h5"]["kept"] = list(f.keys()) == ["old"] and int(f["old"][999]) == 999
print(json.dumps(found))
'''


def test_a_full_disk_is_one_clear_error_and_leaves_nothing_behind(gray, tmp_path):
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -rm` (util-linux, user namespaces) to mount a small tmpfs")
    np.save(tmp_path / "gray.npy", gray)
    before = (tmp_path / "gray.npy").read_bytes()
    (tmp_path / "disk").mkdir()
    (tmp_path / "full_disk.py").write_text(FULL_DISK)
    done = subprocess.run(["unshare", "-rm", sys.executable, str(tmp_path / "full_disk.py"), str(tmp_path / "disk"),
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    npy, zarr, ckpt, h5 = found["npy"], found["zarr"], found["checkpoints"], found["h5"]
    assert npy["rc"] == 1 and "not enough space for the output" in npy["err"][0] and npy["files"] == [], npy
    assert zarr["rc"] == 1 and "is full" in zarr["err"][0] and zarr["files"] == [], zarr
    assert ckpt["rc"] == 1 and "checkpoint folder" in ckpt["err"][0] and "is full" in ckpt["err"][0], ckpt
    assert not [f for f in ckpt["files"] if f.endswith(".partial")], ckpt
    assert h5["rc"] == 1 and "not enough space for the output" in h5["err"][0] and h5["kept"], h5
    assert h5["files"] == ["ckpt", "ckpt/manifest.json", "seg.h5"], h5  # the earlier case's checkpoint folder, and the old file
    assert (tmp_path / "gray.npy").read_bytes() == before


@pytest.mark.parametrize("output", ["seg.zarr", "seg.npy", "seg.tif", "seg.h5:labels"])
def test_staging_left_by_a_dead_process_is_removed_by_the_next_run(gray, tmp_path, output):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    name = output.split(":")[0]
    (tmp_path / f".partial-{pid}-{name}").mkdir() if name.endswith(".zarr") else (tmp_path / f".partial-{pid}-{name}").write_bytes(b"x")
    (tmp_path / f".partial-{pid}-{name}.json").write_text("{}")
    (tmp_path / f".partial-{os.getppid()}-{name}").write_bytes(b"x")  # a live process's: kept
    np.save(tmp_path / "gray.npy", gray)
    ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / output), "options": OPTIONS})
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".partial"))
    assert left == [f".partial-{os.getppid()}-{name}"]


def test_the_same_8_bit_data_in_any_dtype_segments_the_same(tmp_path):
    gray, truth = em_volume((32, 48, 48), n_neurites=10, seed=8)
    reference = None
    for dtype in (np.uint8, np.uint16, np.int64, np.float64):
        np.save(tmp_path / f"gray-{np.dtype(dtype).name}.npy", gray.astype(dtype))
        result = ls.run({"input": str(tmp_path / f"gray-{np.dtype(dtype).name}.npy"),
                         "output": str(tmp_path / f"seg-{np.dtype(dtype).name}.zarr"), "options": OPTIONS})
        assert result.intensity_range.startswith("[0, 255]") and not [w for w in result.warnings if "voxel size" not in w]
        with open_volume(result.output) as out:
            labels = out.read()
        if reference is None:
            reference = labels
            assert result.counts["bodies"] > 5
        np.testing.assert_array_equal(labels, reference)


def test_a_range_that_fits_the_data_badly_is_reported_not_silent(tmp_path, caplog):
    import logging

    gray, _ = em_volume((32, 48, 48), n_neurites=10, seed=8)
    np.save(tmp_path / "gray16.npy", gray.astype(np.uint16))
    with caplog.at_level(logging.WARNING, logger="labelstitch"):
        result = ls.run({"input": str(tmp_path / "gray16.npy"), "output": str(tmp_path / "dtype.zarr"),
                         "options": {**OPTIONS, "intensity-range": "dtype"}})
    assert result.intensity_range.startswith("[0, 65535]") and result.counts["bodies"] <= 1
    assert any("produced no segment" in w for w in result.warnings)
    assert any("the run produced" in w and "intensity-range" in w for w in result.warnings)
    assert "check options.intensity-range" in caplog.text
    twelve_bit = (gray.astype(np.uint16) * 16 + 100)  # 12-bit data with an offset, in uint16
    np.save(tmp_path / "gray12.npy", twelve_bit)
    measured = ls.run({"input": str(tmp_path / "gray12.npy"), "output": str(tmp_path / "auto.zarr"), "options": OPTIONS})
    assert "sampled minimum and maximum" in measured.intensity_range and not [w for w in measured.warnings if "voxel size" not in w]
    assert measured.counts["bodies"] > 5
    explicit = ls.run({"input": str(tmp_path / "gray12.npy"), "output": str(tmp_path / "explicit.zarr"),
                       "options": {**OPTIONS, "intensity-range": [100, 100 + 255 * 16]}})
    assert explicit.intensity_range.startswith("[100, 4180]: as configured") and explicit.counts["bodies"] > 5


def test_nan_from_a_stage_or_in_the_input_and_float_labels_are_refused(gray, tmp_path, monkeypatch):
    from labelstitch.pipeline import PipelineError

    (tmp_path / "nanstages.py").write_text("import numpy as np\ndef nan_predictions(grayscale, mask):\n"
                                            "    out = np.zeros(grayscale.shape, np.float32)\n    out[3, 4, 5] = np.nan\n    return out\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {**OPTIONS, "segmentor": {"configuration": {"predict-voxels": {"function": "nanstages.nan_predictions"}}}}}
    with pytest.raises(PipelineError, match=r"'nanstages.nan_predictions' returned 1 NaN or infinite values for subvolume 0 \(the first at \(3, 4, 5\)"):
        ls.run(config)
    floats = gray.astype(np.float32)
    floats[10, 20, 30] = np.nan
    np.save(tmp_path / "nan.npy", floats)
    with pytest.raises(PipelineError, match=r"input .*nan.npy holds NaN or infinite values .* at \(10, 20, 30\)"):
        ls.run({"input": str(tmp_path / "nan.npy"), "output": str(tmp_path / "nan.zarr"), "options": {**OPTIONS, "intensity-range": [0, 255]}})
    np.save(tmp_path / "gt.npy", gray.astype(np.float64))
    with pytest.raises(StoreError, match="ground-truth .*gt.npy has dtype float64; label volumes must hold integers"):
        ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "x.zarr"), "ground-truth": str(tmp_path / "gt.npy"), "options": OPTIONS})
    with pytest.raises(StoreError, match="ground truth .*gt.npy has dtype float64"):
        ls.evaluate(str(tmp_path / "gray.npy"), str(tmp_path / "gt.npy"))
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "seg.zarr").exists()


def zarr_input(folder, gray):
    from labelstitch.stores import create_volume

    store = create_volume(str(folder / "in.zarr"), gray.shape, gray.dtype, chunks=(16, 16, 16))
    store.write(store.box, gray)
    store.commit()
    store.close()
    return str(folder / "in.zarr")


def test_a_missing_or_damaged_input_chunk_is_an_error_naming_it(gray, tmp_path):
    uri = zarr_input(tmp_path, gray)
    (tmp_path / "in.zarr" / "0" / "c" / "1" / "2" / "0").unlink()
    config = {"input": uri, "output": str(tmp_path / "seg.zarr"), "options": OPTIONS}
    with pytest.raises(StoreError, match=r"input .*in.zarr has no chunk \(1, 2, 0\) under subvolume .*options.allow-missing-input"):
        ls.run(config)
    assert not (tmp_path / "seg.zarr").exists()
    allowed = ls.run({**config, "options": {**OPTIONS, "allow-missing-input": True}})
    assert allowed.counts["bodies"] > 1
    chunk = tmp_path / "in.zarr" / "0" / "c" / "0" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])  # truncated
    with pytest.raises(StoreError, match=r"cannot read .*in.zarr: its chunk c/0/0/1 is damaged"):
        ls.run({**config, "output": str(tmp_path / "seg2.zarr"), "options": {**OPTIONS, "allow-missing-input": True}})


def test_resume_refuses_an_input_whose_content_changed(gray, tmp_path):
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "a.zarr"),
              "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}}
    ls.run(config)
    ls.run({**config, "output": str(tmp_path / "b.zarr")}, resume=True)  # unchanged: fine
    changed = gray.copy()
    changed[0, 0, 0] ^= 1
    np.save(tmp_path / "gray.npy", changed)
    from labelstitch.checkpoints import CheckpointError

    with pytest.raises(CheckpointError,
                       match=r"input changed since its checkpoints were made \(.*modified.*differ\)"):
        ls.run({**config, "output": str(tmp_path / "c.zarr")}, resume=True)


def test_bad_parameters_and_sizes_are_refused_before_any_work(gray, tmp_path, capsys):
    from labelstitch._cli.main import ExitCode, main
    from labelstitch.plugins import PluginError

    np.save(tmp_path / "gray.npy", gray)
    base = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"), "options": dict(OPTIONS)}

    def with_stage(**parameters):
        return {**base, "options": {**OPTIONS, "segmentor": {"configuration": {
            "create-supervoxels": {"function": "seeded_watershed", "parameters": parameters}}}}}

    with pytest.raises(PluginError, match="parameter 'seed_threshold' of 'seeded_watershed' must be a number, got 'high'"):
        ls.run(with_stage(seed_threshold="high"))
    with pytest.raises(PluginError, match="parameter 'seed_size' of 'seeded_watershed' must be >= 1, got -5"):
        ls.run(with_stage(seed_size=-5))
    with pytest.raises(PluginError, match=r"parameter 'seed_threshold' of 'seeded_watershed' must be in \[0, 1\], got 2"):
        ls.run(with_stage(seed_threshold=2))
    with pytest.raises(PluginError, match="parameter 'seed_size' of 'seeded_watershed' must be a whole number, got True"):
        ls.run(with_stage(seed_size=True))
    with pytest.raises(ValueError, match="stitching rule 'medium': parameter 'min_overlap' must be a whole number, got 'abc'"):
        ls.run({**base, "options": {**OPTIONS, "stitch-parameters": {"min_overlap": "abc"}}})
    from labelstitch.stores import create_volume

    huge = create_volume(str(tmp_path / "huge.zarr"), (4096, 4096, 4096), np.uint8, chunks=(256, 256, 256))
    huge.commit()
    huge.close()  # nothing written: a vast, empty volume
    with pytest.raises(ValueError, match=r"options.chunk-size \[.*\] makes subvolumes of up to .* voxels; segmenting one needs about .* GiB"):
        ls.run({**base, "input": str(tmp_path / "huge.zarr"), "options": {**OPTIONS, "chunk-size": 10**12, "allow-missing-input": True}})
    assert not (tmp_path / "seg.zarr").exists()
    (tmp_path / "run.json").write_text(json.dumps(base))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.OK
    capsys.readouterr()
    assert main(["stitch", str(tmp_path / "run.json"), "--rule", "medium", "--param", "min_overlap=abc"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a whole number" in err and "Traceback" not in err


def test_compare_refuses_a_ground_truth_of_the_wrong_shape_before_writing(gray, tmp_path):
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "gt.npy", np.zeros((4, 4, 4), np.uint32))
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}}
    ls.run(config)
    with pytest.raises(StoreError, match=r"ground truth .*gt.npy has shape \(4, 4, 4\); the run's volume has \(32, 48, 48\)"):
        ls.compare(config, str(tmp_path / "gt.npy"))
    assert not (tmp_path / "ckpt-compare").exists()


def test_damaged_files_are_one_clear_line(gray, tmp_path, capsys):
    from labelstitch._cli.main import ExitCode, main

    (tmp_path / "fake.tif").write_bytes(b"this is not a TIFF file at all")
    np.save(tmp_path / "gt.npy", np.zeros(gray.shape, np.uint32))
    assert main(["evaluate", str(tmp_path / "fake.tif"), str(tmp_path / "gt.npy")]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("labelstitch: error: cannot read ") and "as a TIFF file" in err and err.count("\n") == 1
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.OK
    (tmp_path / "ckpt" / "manifest.json").write_text('{"format": "labelstitch-checkpoints/1", "pla')
    capsys.readouterr()
    assert main(["run", str(tmp_path / "run.json"), "-q", "--resume"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert "manifest.json is damaged" in err and "remove the folder" in err and err.count("\n") == 1


READ_ONLY = r'''
import json, subprocess, sys
disk, config = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", disk], check=True)
found = {}
for command in (["config", "--check", config], ["run", config, "-q"]):
    done = subprocess.run([sys.executable, "-m", "labelstitch._cli.main", *command], capture_output=True, text=True)
    found[command[0]] = [done.returncode, done.stderr]
print(json.dumps(found))
'''


def test_an_unwritable_output_is_refused_by_config_check_and_before_any_work(gray, tmp_path):
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -rm` (util-linux, user namespaces) to mount a read-only tmpfs")
    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "ro").mkdir()
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "ro" / "seg.zarr"),
              "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    (tmp_path / "ro.py").write_text(READ_ONLY)
    done = subprocess.run(["unshare", "-rm", sys.executable, str(tmp_path / "ro.py"), str(tmp_path / "ro"),
                           str(tmp_path / "run.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for command in ("config", "run"):
        code, err = found[command]
        assert code == 2 and f"cannot write output {tmp_path / 'ro' / 'seg.zarr'}" in err and "Read-only file system" in err, err
    assert not list((tmp_path / "ckpt").glob("sv-*"))  # refused before segmenting anything


def test_chunk_size_memory_check_counts_the_workers_and_the_stages_needs(tmp_path):
    """A chunk size that fits one worker but not two at once, or fits the naive stages but not
    the pixel classifier's filter features, is refused before any work, naming the fix; with
    workers on other machines (a Spark cluster) this machine checks nothing."""
    from labelstitch.geometry import Plan
    from labelstitch.pipeline.planning import BYTES_PER_VOXEL, check_subvolume_memory, subvolume_bytes_per_voxel
    from labelstitch.plugins import resolve_stage

    plan = Plan.grid((400, 400, 400), 180, 20)  # outer boxes of 220^3 = 10.6 M voxels
    naive = (resolve_stage("predict-voxels", "naive_membrane_predictions"), resolve_stage("create-supervoxels", "seeded_watershed"))
    classifier = (resolve_stage("predict-voxels", "pixel_classifier", {"classifier_path": "x.clf"}),)
    declared = classifier[0].info.bytes_per_voxel
    assert 0 < declared < BYTES_PER_VOXEL
    assert subvolume_bytes_per_voxel(naive) == BYTES_PER_VOXEL
    assert subvolume_bytes_per_voxel(classifier) == BYTES_PER_VOXEL + declared
    one = 220**3 * BYTES_PER_VOXEL
    memory = int(one / 0.8 * 1.2)  # room for 1.2 subvolumes of the naive stages
    check_subvolume_memory(plan, naive, at_once=1, memory=memory)
    with pytest.raises(ValueError, match=r"on each of 2 workers at once.*choose options.chunk-size of at most \d+ or fewer workers"):
        check_subvolume_memory(plan, naive, at_once=2, memory=memory)
    with pytest.raises(ValueError, match=rf"about {BYTES_PER_VOXEL + declared} bytes per voxel with these stages"):
        check_subvolume_memory(plan, classifier, at_once=1, memory=memory)
    check_subvolume_memory(plan, classifier, at_once=None, memory=memory)


def test_the_papers_subvolumes_with_the_pixel_classifier_fit_a_machine_of_the_papers_size():
    """512^3 subvolumes with 20 voxels of overlap (552^3 outer boxes) and the voxel
    classifier fit a 90 GB machine, three at once (the plain classifier's 700 bytes per
    voxel needed 120 GiB for one)."""
    from labelstitch.geometry import Plan
    from labelstitch.pipeline.planning import check_subvolume_memory, fitting_chunk_size
    from labelstitch.plugins import resolve_stage

    plan = Plan.grid((1104, 1104, 1104), 512, 20)
    stages = (resolve_stage("predict-voxels", "pixel_classifier", {"classifier_path": "x.clf"}),)
    memory = 90 * 10**9
    check_subvolume_memory(plan, stages, at_once=3, memory=memory)
    assert fitting_chunk_size(plan, stages, at_once=1, memory=memory) >= 512
    with pytest.raises(ValueError, match="choose options.chunk-size of at most"):
        check_subvolume_memory(plan, stages, at_once=16, memory=memory)


def test_a_chunk_size_too_large_for_the_workers_is_refused_before_the_checkpoint_folder_is_made(tmp_path):
    """One subvolume fits this machine's memory but two at once do not: the processes run is
    refused, naming the fix, and neither the checkpoint folder nor the output exists."""
    from labelstitch.pipeline.planning import BYTES_PER_VOXEL, _physical_memory
    from labelstitch.stores import create_volume

    memory = _physical_memory()
    outer = int((0.6 * memory / BYTES_PER_VOXEL) ** (1 / 3))  # 0.6 of memory: under 0.8 alone, over it twice
    side = outer + 100
    empty = create_volume(str(tmp_path / "big.zarr"), (side, side, side), np.uint8, chunks=(256, 256, 256))
    empty.commit()
    empty.close()  # nothing written: a large, empty volume
    config = {"input": str(tmp_path / "big.zarr"), "output": str(tmp_path / "seg.zarr"),
              "options": {"chunk-size": outer - 40, "overlap": 20, "allow-missing-input": True,
                          "checkpoint-dir": str(tmp_path / "ckpt")}}
    with pytest.raises(ValueError, match=r"on each of 2 workers at once.*or fewer workers"):
        ls.run(config, executor="processes", workers=2)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "seg.zarr").exists()
    from labelstitch._cli.main import main

    # config --check says the same, for the executor it is given (and passes it for one worker)
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["config", "--check", str(tmp_path / "run.json"), "--executor", "processes", "--workers", "2"]) == 2
    assert main(["config", "--check", str(tmp_path / "run.json"), "--workers", "1", "--executor", "processes"]) == 0


@pytest.mark.serial  # a signal timed against a running process: `make test` runs it alone, after the parallel run
def test_ctrl_c_says_what_is_kept_and_how_to_go_on(killable):
    """SIGINT (Ctrl-C): with a checkpoint folder, how many subvolumes are kept and the
    command that resumes; without one, that nothing is kept."""
    import shutil
    import signal

    folder, _ = killable
    ckpt = folder / "ckpt-int"
    shutil.rmtree(ckpt, ignore_errors=True)
    for name, options in (("with.json", {"checkpoint-dir": str(ckpt)}), ("without.json", {})):
        (folder / name).write_text(json.dumps(slow_config(folder, f"int-{name}.zarr", delay=0.1, **options)))
        child = cli(folder, "run", str(folder / name), "-q", wait=False)
        if options:
            wait_for(lambda: len(whole_blocks(ckpt)) >= 2 or child.poll() is not None, "finished subvolumes")
        else:
            wait_for(lambda: bool(list(folder.glob(f".partial-*int-{name}.zarr*"))) or child.poll() is not None,
                     "the run to start")
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 130, err[-2000:]
        last = err.strip().splitlines()[-1]
        if options:
            kept = len(whole_blocks(ckpt))
            assert f"interrupted; {kept} finished subvolumes kept in {ckpt}" in last
            assert f"labelstitch run {folder / name} --resume" in last
        else:
            assert "interrupted; nothing was kept: without options.checkpoint-dir" in last
        assert not (folder / f"int-{name}.zarr").exists()


def test_a_degenerate_segmentation_is_said_in_one_warning_with_what_to_try(tmp_path):
    """Far more bodies than neurons could fill, or one body holding almost every voxel: one
    warning line each, naming what to change; the defaults give neither on synthetic EM."""
    from labelstitch.synthetic import em_volume

    gray, _ = em_volume((64, 128, 128), n_neurites=60, seed=3)
    np.save(tmp_path / "gray.npy", gray)

    np.save(tmp_path / "truth.npy", em_volume((64, 128, 128), n_neurites=60, seed=3)[1])
    results = {}

    def warnings_of(name, stages):
        config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / f"{name}.npy"),
                  "ground-truth": str(tmp_path / "truth.npy"),
                  "options": {"chunk-size": 64, "overlap": 8, "segmentor": {"configuration": stages}}}
        results[name] = ls.run(config)
        return results[name].warnings

    split = warnings_of("split", {
        "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.2}},
        "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.2}}})
    assert len(split) == 1 and "the neurons look split apart" in split[0] and "labelstitch train" in split[0]
    merged = warnings_of("merged", {"agglomerate-supervoxels": {"function": "rag_agglomeration",
                                                                "parameters": {"threshold": 0.6}}})
    assert len(merged) == 1 and "of the labelled voxels: the neurons look merged together" in merged[0]
    assert warnings_of("defaults", {}) == []
    assert results["defaults"].vi.total < 0.5 * results["split"].vi.total  # the defaults segment EM well


# ----------------------------------------------------------------------------- bad input, second round


def test_aliases_of_the_input_are_refused_before_anything_is_written(gray, tmp_path):
    from labelstitch.stores import create_volume

    store = create_volume(str(tmp_path / "in.zarr"), gray.shape, gray.dtype)
    store.write(store.box, gray)
    store.commit()
    store.close()
    (tmp_path / "alias.zarr").symlink_to(tmp_path / "in.zarr")
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    for output in (tmp_path / "alias.zarr" / "seg", tmp_path / "sub" / ".." / "in.zarr" / "seg"):  # a link, a `..`
        config = {"input": str(tmp_path / "in.zarr"), "output": str(output), "options": OPTIONS}
        with pytest.raises(StoreError, match="would overwrite input"):
            ls.run(config, overwrite=True)
    # a name that only starts like the input's store is no volume of it, and no store at all
    with pytest.raises(StoreError, match="in.zarrx"):
        ls.run({"input": str(tmp_path / "in.zarr"), "output": str(tmp_path / "in.zarrx"), "options": OPTIONS})
    assert snapshot(tmp_path) == before


def test_truncated_and_colour_inputs_are_one_line_before_any_work(gray, tmp_path, capsys):
    import tifffile

    from labelstitch._cli.main import ExitCode, main

    np.save(tmp_path / "gray.npy", gray)
    whole = (tmp_path / "gray.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[: len(whole) // 2])
    np.save(tmp_path / "rgb.npy", np.stack([gray] * 3, axis=-1))
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([gray] * 3, axis=-1), photometric="rgb")
    expected = {"cut.npy": "is truncated: 36,", "rgb.npy": "a last axis of 3 looks like colour channels",
                "rgb.tif": "is a colour image"}
    for name, said in expected.items():
        config = {"input": str(tmp_path / name), "output": str(tmp_path / f"{name}.zarr"), "options": OPTIONS}
        (tmp_path / "run.json").write_text(json.dumps(config))
        assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.USAGE_ERROR
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
        assert not (tmp_path / f"{name}.zarr").exists()


def test_preserved_body_ids_beyond_2_to_the_53_are_kept_exact(gray, tmp_path):
    big = (2**53 + 1, 2**60 + 3)  # a float64 cannot tell 2**53 + 1 from 2**53
    preserved = np.zeros(gray.shape, np.uint64)
    preserved[:10, :20, :20] = big[0]
    preserved[20:, 30:, 30:] = big[1]
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "proofread.npy", preserved)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"), "options": OPTIONS,
              "preserve-bodies": {"segmentation": str(tmp_path / "proofread.npy"), "bodies": list(big)}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    ls.run(str(tmp_path / "run.json"))
    with open_volume(str(tmp_path / "seg.zarr")) as store:
        out = store.read()
    assert (out[:10, :20, :20] == big[0]).all() and (out[20:, 30:, 30:] == big[1]).all()
    assert not np.isin(out, [2**53, 2**60 + 2, 2**60 + 4 - 1 - 1]).any()
    stitched = out[(out != big[0]) & (out != big[1])]
    assert stitched.min() > big[1]  # stitched bodies are numbered after the largest preserved id, exactly
    recorded = ls.info(str(tmp_path / "seg.zarr"))["provenance"][0]["config"]["preserve-bodies"]["bodies"]
    assert recorded == list(big)


def test_resuming_against_a_changed_plan_is_one_line_and_keeps_the_checkpoints(gray, tmp_path, capsys):
    from labelstitch._cli.main import ExitCode, main

    np.save(tmp_path / "gray.npy", gray)
    config = {"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"),
              "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt")}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == ExitCode.OK
    kept = snapshot(tmp_path / "ckpt")
    config["options"]["chunk-size"] = 16
    (tmp_path / "run.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "run.json"), "-q", "--resume"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert "config changed (options.chunk-size)" in err and err.count("\n") == 1
    assert {p: b for p, b in snapshot(tmp_path / "ckpt").items() if p.name != "status.json"} == \
        {p: b for p, b in kept.items() if p.name != "status.json"}
