"""Every store backend against the same expectations (real files on disk)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelstitch import Box
from labelstitch.stores import (
    StoreError,
    StoreReadOnlyError,
    create_volume,
    open_volume,
    register_memory_volume,
    volume_exists,
)

BACKENDS = ["zarr", "zarr-group", "npy", "h5", "tif", "memory"]


def uri_for(kind: str, tmp_path, name: str = "vol") -> str:
    return {
        "zarr": f"{tmp_path}/{name}.zarr",
        "zarr-group": f"{tmp_path}/{name}.zarr/labels",
        "npy": f"{tmp_path}/{name}.npy",
        "h5": f"{tmp_path}/{name}.h5:group/labels",
        "tif": f"{tmp_path}/{name}.tif",
        "memory": f"memory://{tmp_path.name}-{name}",
    }[kind]


@pytest.mark.parametrize("kind", BACKENDS)
def test_round_trip_of_boxes_and_metadata(kind, tmp_path):
    uri = uri_for(kind, tmp_path)
    data = np.random.default_rng(0).integers(0, 2**40, (20, 30, 40), dtype=np.uint64)
    store = create_volume(uri, data.shape, np.uint64, chunks=(10, 15, 20))
    for z in (0, 10):
        for y in (0, 15):
            box = Box((z, y, 0), (z + 10, y + 15, 40))
            store.write(box, data[box.slices()])
    if kind != "tif":
        store.set_metadata({"plan": [1, 2], "name": "x"})
    store.commit()
    store.close()
    assert volume_exists(uri)
    with open_volume(uri) as again:
        assert again.shape == data.shape and again.dtype == np.uint64
        np.testing.assert_array_equal(again.read(), data)
        box = Box((3, 4, 5), (17, 29, 33))
        np.testing.assert_array_equal(again.read(box), data[box.slices()])
        if kind != "tif":
            assert again.metadata == {"plan": [1, 2], "name": "x"}
        with pytest.raises(StoreReadOnlyError, match="opened read-only"):
            again.write(box, data[box.slices()])
        with pytest.raises(StoreError, match=r"box \[0:21, 0:30, 0:40\] is outside the volume"):
            again.read(Box((0, 0, 0), (21, 30, 40)))


@pytest.mark.parametrize("kind", [k for k in BACKENDS if k != "memory"])
def test_staged_output_appears_only_on_commit_and_discard_leaves_nothing(kind, tmp_path):
    uri = uri_for(kind, tmp_path)
    store = create_volume(uri, (4, 5, 6), np.uint32)
    store.write(store.box, np.ones((4, 5, 6), np.uint32))
    assert not volume_exists(uri)  # still staged
    store.discard()
    store.close()
    assert not volume_exists(uri)
    leftovers = [p.name for p in tmp_path.rglob("*") if "partial" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("kind", [k for k in BACKENDS if k != "memory"])
def test_existing_output_is_refused_unless_overwrite_and_replaced_only_on_commit(kind, tmp_path):
    uri = uri_for(kind, tmp_path)
    first = create_volume(uri, (4, 5, 6), np.uint16)
    first.write(first.box, np.full((4, 5, 6), 7, np.uint16))
    first.commit()
    first.close()
    with pytest.raises(StoreError, match="exists already; pass overwrite=True"):
        create_volume(uri, (4, 5, 6), np.uint16)
    second = create_volume(uri, (4, 5, 6), np.uint16, overwrite=True)
    second.write(second.box, np.full((4, 5, 6), 9, np.uint16))
    with open_volume(uri) as during:  # the old volume is intact until commit
        assert (during.read() == 7).all()
    second.commit()
    second.close()
    with open_volume(uri) as after:
        assert (after.read() == 9).all()


def test_writes_check_shape_and_lossless_dtype(tmp_path):
    store = create_volume(f"{tmp_path}/v.zarr", (4, 4, 4), np.uint8, staged=False)
    with pytest.raises(StoreError, match=r"cannot write data of shape \(2, 2, 2\) to box"):
        store.write(Box((0, 0, 0), (4, 4, 4)), np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(StoreError, match="cannot write float64 data into the uint8 volume"):
        store.write(Box((0, 0, 0), (1, 1, 1)), np.zeros((1, 1, 1)))
    with pytest.raises(StoreError, match="without loss"):
        store.write(Box((0, 0, 0), (1, 1, 1)), np.full((1, 1, 1), 300, np.int64))
    store.write(Box((0, 0, 0), (1, 1, 1)), np.full((1, 1, 1), 200, np.int64))  # fits: fine
    assert store.read(Box((0, 0, 0), (1, 1, 1)))[0, 0, 0] == 200


def test_open_errors_say_what_is_wrong(tmp_path):
    import h5py

    with pytest.raises(StoreError, match="no .npy file at"):
        open_volume(f"{tmp_path}/missing.npy")
    with pytest.raises(StoreError, match="no zarr volume at"):
        open_volume(f"{tmp_path}/missing.zarr")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(StoreError, match=r"has 2 dimensions \(shape .*\); volumes must be 3-D"):
        open_volume(f"{tmp_path}/flat.npy")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["raw"] = np.zeros((2, 2, 2))
    with pytest.raises(StoreError, match="has no dataset 'gt'; it has: raw"):
        open_volume(f"{tmp_path}/f.h5:gt")
    with pytest.raises(StoreError, match="PATH.h5:DATASET"):
        open_volume(f"{tmp_path}/f.h5")
    with pytest.raises(StoreError, match="cannot tell the format"):
        open_volume(f"{tmp_path}/volume.raw")
    with pytest.raises(StoreError, match="write dvid://HOST:PORT/UUID/INSTANCE"):
        open_volume("dvid://127.0.0.1:8000/labels")


def test_reads_are_lazy_for_memory_mapped_files(tmp_path):
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(256, 256, 256))
    big[100, 100, 100] = 5
    big.flush()
    del big
    with open_volume(f"{tmp_path}/big.npy") as store:
        part = store.read(Box((99, 99, 99), (101, 101, 101)))
    assert part.shape == (2, 2, 2) and part[1, 1, 1] == 5


def test_memory_volumes_and_npy_sidecar(tmp_path):
    uri = register_memory_volume("example", np.arange(24).reshape(2, 3, 4))
    with open_volume(uri) as store:
        assert store.read(Box((1, 2, 3), (2, 3, 4)))[0, 0, 0] == 23
    store = create_volume(f"{tmp_path}/m.npy", (2, 2, 2), np.uint8)
    store.set_metadata({"a": 1})
    store.commit()
    assert json.loads((tmp_path / "m.npy.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("shape", [(64, 64, 3), (4, 32, 32, 3)])
def test_a_colour_tiff_is_refused_in_one_line_that_says_how_to_convert_it(shape, tmp_path, capsys):
    import tifffile

    from labelstitch._cli.main import main

    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros(shape, np.uint8), photometric="rgb")
    config = {"input": str(tmp_path / "rgb.tif"), "output": str(tmp_path / "seg.zarr")}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["config", "--check", str(tmp_path / "run.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a colour image" in err and "mean(axis=-1)" in err
    assert main(["run", str(tmp_path / "run.json"), "-q"]) == 2
    assert not (tmp_path / "seg.zarr").exists()
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((4, 32, 3), np.uint8), photometric="minisblack")
    assert open_volume(f"{tmp_path}/grey.tif").shape == (4, 32, 3)  # a grey stack 3 voxels wide is a volume
