"""The Dask executor on real clusters: a LocalCluster of worker processes, and a scheduler and
two workers started as separate ``dask`` commands on 127.0.0.1."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the dask executor needs the labelstitch[dask] extra")

from labelstitch.executors import ExecutorError  # noqa: E402
from labelstitch.pipeline import run  # noqa: E402
from labelstitch.plugins import available_executors, get_executor, get_plugin_manager  # noqa: E402
from labelstitch.stores import open_volume  # noqa: E402
from labelstitch.synthetic import em_volume  # noqa: E402
from labelstitch.testing.dask_cluster import scheduler_and_workers  # noqa: E402

TRACKED = '''
import os

def _restore(payload, folder):
    with open(os.path.join(folder, "unpickled"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return Tracked(payload, folder)

class Tracked:
    """A value that notes every process it is unpickled in."""
    def __init__(self, payload, folder):
        self.payload, self.folder = payload, folder
    def __reduce__(self):
        return _restore, (self.payload, self.folder)

def emit(item):
    folder, k = item
    return [(k % 2, Tracked(k, folder)), ("all", Tracked(k, folder))]

def reduce(group):
    key, values = group
    return key, [v.payload for v in values]

def dies(x):
    if x == 2:
        os._exit(9)
    return x
'''


def read(uri: str) -> np.ndarray:
    with open_volume(uri) as store:
        return store.read()


@pytest.fixture()
def project(tmp_path, monkeypatch):
    gray, truth = em_volume((48, 64, 64), n_neurites=25, seed=4)
    np.save(tmp_path / "gray.npy", gray)
    (tmp_path / "tracked.py").write_text(TRACKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path


def config(folder: Path, output: str, **options) -> dict:
    return {"input": str(folder / "gray.npy"), "output": str(folder / output),
            "options": {"chunk-size": 24, "overlap": 4, **options}}


def test_dask_is_a_plugin_registered_through_the_entry_point_group():
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="labelstitch.plugins")}
    assert found.get("dask") == "labelstitch.executors.dask"
    assert "dask" in available_executors()
    from labelstitch.plugins import builtin

    assert "dask" not in builtin.labelstitch_executors()  # not a built-in: found like a third party's
    assert "dask" in dict(get_plugin_manager().list_name_plugin())  # the entry point's name


def test_a_local_cluster_gives_bitwise_the_serial_output_also_across_blocks(project):
    serial = run(config(project, "serial.zarr"))
    dask = run(config(project, "dask.zarr"), executor="dask", workers=2)
    np.testing.assert_array_equal(read(str(project / "dask.zarr")), read(str(project / "serial.zarr")))
    assert dask.counts["matches"] == serial.counts["matches"]
    across = {"agglomerate-across-blocks": True}
    a = run(config(project, "across-serial.zarr", **across))
    b = run(config(project, "across-dask.zarr", **across), executor="dask", workers=2)
    np.testing.assert_array_equal(read(str(project / "across-dask.zarr")), read(str(project / "across-serial.zarr")))
    assert a.stitch["agglomeration"] == b.stitch["agglomeration"]


def test_grouped_values_move_between_workers_never_through_the_client(project):
    import tracked

    items = [(str(project), k) for k in range(6)]
    with get_executor("serial") as serial:
        expected = list(serial.map_grouped(tracked.emit, items, tracked.reduce))
    (project / "unpickled").unlink(missing_ok=True)
    with get_executor("dask", workers=2) as pool:
        assert pool.items_at_once == 2 and pool.shares_files
        got = list(pool.map_grouped(tracked.emit, items, tracked.reduce))
    assert got == expected == [(0, [0, 2, 4]), ("all", [0, 1, 2, 3, 4, 5]), (1, [1, 3, 5])]
    readers = {int(pid) for pid in (project / "unpickled").read_text().split()}
    assert readers and os.getpid() not in readers  # every value was unpickled on a worker only


def test_a_task_that_kills_its_worker_is_reported_with_its_item(project):
    import tracked

    with get_executor("dask", workers=2) as pool:
        with pytest.raises(ExecutorError, match="died.*item 2") as caught:
            list(pool.map(tracked.dies, [0, 1, 2, 3], describe=lambda x: f"item {x}"))
        assert caught.value.lost == (2,)
        assert caught.value.done == {0: 0, 1: 1, 3: 3}
        assert list(pool.map(abs, [-1, -2])) == [1, 2]  # the cluster goes on with a new worker


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_a_scheduler_and_two_worker_processes_run_the_cli_bitwise_like_serial(project):
    (project / "config.json").write_text(json.dumps(config(project, "cluster.zarr")))
    run(config(project, "serial.zarr"))
    before = _descendants(os.getpid())  # e.g. multiprocessing's resource tracker, from earlier tests
    with scheduler_and_workers(workers=2) as address:
        assert address.startswith("tcp://127.0.0.1:")
        done = subprocess.run(
            [str(Path(sys.executable).parent / "labelstitch"), "run", str(project / "config.json"), "--executor", "dask",
             "--dask-scheduler", address, "--json", "-q"],
            capture_output=True, text=True, timeout=300, cwd=project,
        )
        assert done.returncode == 0, done.stderr
        refused = subprocess.run(
            [str(Path(sys.executable).parent / "labelstitch"), "run", str(project / "config.json"), "--executor", "dask",
             "--dask-scheduler", address, "--workers", "3", "--overwrite", "-q"],
            capture_output=True, text=True, timeout=300, cwd=project,
        )
        assert refused.returncode == 2 and "--workers does not apply to --dask-scheduler" in refused.stderr
    report = json.loads(done.stdout)
    np.testing.assert_array_equal(read(str(project / "cluster.zarr")), read(str(project / "serial.zarr")))
    assert report["counts"]["blocks via driver"] == 0
    assert not _descendants(os.getpid()) - before  # the scheduler, workers and CLI are all gone
