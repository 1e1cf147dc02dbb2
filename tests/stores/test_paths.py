"""Volume strings are parsed once, by their store: an output lands exactly where its string
says, never inside an input, whatever the names look like (regression tests for a zarr
output named ``proj.zarrs/seg.zarr`` that was written into ``proj.zarr/s/seg.zarr``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import labelstitch as ls
from labelstitch.stores import (
    DvidStore,
    HDF5Store,
    NpyStore,
    StoreError,
    TiffStore,
    VolumeRef,
    ZarrStore,
    create_volume,
    open_volume,
    parse_volume,
)
from labelstitch.synthetic import em_volume

OPTIONS = {"chunk-size": 32, "overlap": 4}


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return em_volume((32, 48, 48), n_neurites=8, seed=2)[0]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


#: volume string | store | the file or folder it occupies | what lies inside it (- : nothing)
PARSED = """
proj.zarrs/seg.zarr | zarr | proj.zarrs/seg.zarr | -
data.zarr/raw       | zarr | data.zarr           | raw
data.zarr/raw/      | zarr | data.zarr           | raw
data.zarr/          | zarr | data.zarr           | -
a.zarr/b/c          | zarr | a.zarr              | b/c
x.zarr.bak/seg.npy  | npy  | x.zarr.bak/seg.npy  | -
m.zarr/seg.npy      | npy  | m.zarr/seg.npy      | -
a.h5data/x.zarr     | zarr | a.h5data/x.zarr     | -
stack.tiff          | tif  | stack.tiff          | -
f.h5:/group/labels  | h5   | f.h5                | group/labels
f.hdf5:raw          | h5   | f.hdf5              | raw
sub/../d.zarr/s     | zarr | d.zarr              | s
"""
STORES = {"zarr": ZarrStore, "npy": NpyStore, "tif": TiffStore, "h5": HDF5Store}


@pytest.mark.parametrize("row", [line for line in PARSED.strip().splitlines()])
def test_each_volume_string_is_parsed_once_into_where_it_lives(row, tmp_path):
    text, scheme, path, inner = (cell.strip() for cell in row.split("|"))
    cls, inner = STORES[scheme], "" if inner == "-" else inner
    ref = parse_volume(text, tmp_path)
    assert ref.store is cls and ref.path == tmp_path / path and ref.inner == inner
    assert ref.path.is_absolute() and not ref.text.endswith("/")
    assert parse_volume(ref) is ref  # a reference is never parsed again
    assert parse_volume(ref.text) == ref  # its text names the same volume


@pytest.mark.parametrize("text", ["seg.zarrx", "proj.zarrs/seg", "x.h5data", "y.npy.d"])
def test_names_that_merely_start_like_a_stores_are_refused(text, tmp_path):
    with pytest.raises(StoreError, match="cannot tell the format"):
        parse_volume(text, tmp_path)


def test_hdf5_needs_its_dataset_named(tmp_path):
    with pytest.raises(StoreError, match="PATH.h5:DATASET"):
        parse_volume("f.h5", tmp_path)
    with pytest.raises(StoreError, match="PATH.h5:DATASET"):
        parse_volume("f.h5:/", tmp_path)


def test_dvid_strings_are_parsed_by_the_dvid_store_only():
    ref = parse_volume("dvid://h:1/abc/seg?write=bodies&roi=r")
    assert ref.store is DvidStore and ref.path is None and ref.inner == "seg"
    assert ref.text == "dvid://h:1/abc/seg?roi=r&write=bodies"  # options in name order
    assert not ref.capabilities.local and ref.side_file_base() is None
    assert parse_volume("dvid://h:1/abc/seg").with_write_mode("bodies").text == "dvid://h:1/abc/seg?write=bodies"
    assert ref.with_write_mode("supervoxels") is ref  # the string's own choice wins
    roi = ls.stores.roi_ref("cells", beside=ref)
    assert roi.text == "dvid://h:1/abc/cells"
    # one instance at one node (a unique UUID prefix names the node too), whatever the options
    assert ref.overlaps(parse_volume("dvid://h:1/abcdef/seg?supervoxels=true"))
    assert not ref.overlaps(parse_volume("dvid://h:1/abd/seg")) and not ref.overlaps(parse_volume("dvid://h:2/abc/seg"))
    for bad, message in [("dvid://h:1/abc", "write dvid://HOST:PORT/UUID/INSTANCE"),
                         ("dvid://h:1/abc/seg/more", "write dvid://HOST:PORT/UUID/INSTANCE"),
                         ("dvid://h:1/abc/seg?colour=red", "unknown option"),
                         ("dvid://h:1/abc/seg?write=all", "use supervoxels or bodies")]:
        with pytest.raises(StoreError, match=message):
            parse_volume(bad)
    with pytest.raises(StoreError, match="not a DVID volume"):
        parse_volume("seg.zarr").with_write_mode("bodies")
    with pytest.raises(StoreError, match="names a DVID roi, but the input .* is not on DVID"):
        ls.stores.roi_ref("cells", beside=parse_volume("gray.zarr"))


def test_a_reference_travels_to_workers_as_it_is(tmp_path):
    import pickle

    ref = parse_volume("data.zarr/raw", tmp_path)
    again = pickle.loads(pickle.dumps(ref))
    assert again == ref and again.store is ZarrStore and str(again) == ref.text


@pytest.mark.parametrize("name", ["proj.zarrs/seg.zarr", "seg.zarr/", "a.zarr.d/seg.zarr", "deep/er/seg.zarr", "g.zarr/labels"])
def test_the_output_lands_exactly_where_its_string_says(name, gray, tmp_path):
    np.save(tmp_path / "gray.npy", gray)
    result = ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / name), "options": OPTIONS})
    where = tmp_path / name.rstrip("/")
    assert result.output == str(where)
    assert (where / "zarr.json").exists()
    assert (where.parent / f"{where.name}.stitch.json").exists()  # the report beside the volume, not elsewhere
    own = name.rstrip("/")
    inside = {p for p in files_under(tmp_path) if p == own or p.startswith(own + "/")}
    folders = {Path(own).parents[k].as_posix() for k in range(len(Path(own).parents) - 1)}
    assert files_under(tmp_path) - inside - folders == {"gray.npy", f"{own}.stitch.json", f"{own}.stitch.md", f"{own}.stitch.npz"}
    with open_volume(str(where)) as out:
        assert out.shape == gray.shape and out.read().any()


def test_an_output_beside_an_input_group_stays_out_of_it(gray, tmp_path):
    """The bug: input data.zarr/raw, output data.zarrs/seg.zarr was written to data.zarr/s/seg.zarr."""
    with create_volume(str(tmp_path / "data.zarr/raw"), gray.shape, gray.dtype, staged=False) as store:
        store.write(store.box, gray)
    before = files_under(tmp_path / "data.zarr")
    ls.run({"input": str(tmp_path / "data.zarr/raw"), "output": str(tmp_path / "data.zarrs/seg.zarr"), "options": OPTIONS})
    assert files_under(tmp_path / "data.zarr") == before
    assert (tmp_path / "data.zarrs/seg.zarr/zarr.json").exists()


def refused_before_any_work(config: dict, tmp_path: Path, message: str) -> None:
    before = files_under(tmp_path)
    with pytest.raises(StoreError, match=message):
        ls.run(config)
    assert files_under(tmp_path) == before


def test_an_output_inside_an_input_is_refused_through_dotdot_symlinks_and_shared_files(gray, tmp_path):
    with create_volume(str(tmp_path / "gray.zarr"), gray.shape, gray.dtype, staged=False) as store:
        store.write(store.box, gray)
    gray_zarr = str(tmp_path / "gray.zarr")
    overlap = "would overwrite input"
    refused_before_any_work({"input": gray_zarr, "output": f"{gray_zarr}/seg", "options": OPTIONS}, tmp_path, overlap)
    refused_before_any_work({"input": gray_zarr, "output": str(tmp_path / "sub/../gray.zarr/seg"), "options": OPTIONS},
                            tmp_path, overlap)
    os.symlink(tmp_path / "gray.zarr", tmp_path / "alias.zarr")
    os.symlink(tmp_path / "gray.zarr", tmp_path / "linked")
    refused_before_any_work({"input": gray_zarr, "output": str(tmp_path / "alias.zarr"), "options": OPTIONS},
                            tmp_path, overlap)
    refused_before_any_work({"input": gray_zarr, "output": str(tmp_path / "linked/seg.zarr"), "options": OPTIONS},
                            tmp_path, overlap)
    refused_before_any_work({"input": gray_zarr, "output": str(tmp_path / "ok.zarr"),
                             "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "linked/ckpt")}},
                            tmp_path, "overlaps input")
    import h5py

    with h5py.File(tmp_path / "both.h5", "w") as f:
        f["raw"] = gray
    refused_before_any_work({"input": f"{tmp_path}/both.h5:/raw", "output": f"{tmp_path}/both.h5:/seg", "options": OPTIONS},
                            tmp_path, overlap)


def test_a_relative_config_path_means_the_same_file_for_every_reader(gray, tmp_path):
    import json

    (tmp_path / "project").mkdir()
    np.save(tmp_path / "gray.npy", gray)
    config = {"input": "../gray.npy", "output": "out/seg.zarr/", "options": OPTIONS}
    (tmp_path / "project" / "run.json").write_text(json.dumps(config))
    loaded = ls.RunConfig.load(tmp_path / "project" / "run.json")
    assert isinstance(loaded.input, VolumeRef) and loaded.input.path == tmp_path / "gray.npy"
    assert loaded.output.text == str(tmp_path / "project" / "out" / "seg.zarr")
    assert loaded.to_dict()["input"] == str(tmp_path / "gray.npy")
