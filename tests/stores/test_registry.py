"""The scheme → class registry: one place that reads volume strings, open to new backends."""

from __future__ import annotations

import numpy as np
import pytest

import labelstitch as ls
from labelstitch.stores import (
    DvidStore,
    HDF5Store,
    MemoryStore,
    NpyStore,
    StoreError,
    TiffStore,
    VolumeStore,
    ZarrStore,
    create_volume,
    memory_volume,
    memory_volumes,
    open_volume,
    register_store,
    side_file_base,
    store_class,
)


@pytest.mark.parametrize(
    "uri, cls",
    [
        ("a/b.zarr", ZarrStore), ("a/b.zarr/labels", ZarrStore), ("b.npy", NpyStore), ("b.h5:x/y", HDF5Store),
        ("b.hdf5:x", HDF5Store), ("b.tif", TiffStore), ("b.tiff", TiffStore), ("memory://x", MemoryStore),
        ("dvid://127.0.0.1:8000/abc/seg", DvidStore),
    ],
)
def test_every_volume_string_finds_its_class(uri, cls):
    assert store_class(uri) is cls


def test_unknown_volume_strings_are_refused_with_the_forms():
    with pytest.raises(StoreError, match="unknown volume scheme 's3'.*known: memory://, dvid://"):
        store_class("s3://bucket/x")
    with pytest.raises(StoreError, match="cannot tell the format of 'x.png'; name volumes as path.zarr"):
        store_class("x.png")
    with pytest.raises(StoreError, match="a volume is named by a string"):
        store_class(42)  # type: ignore[arg-type]


def test_side_files_go_beside_files_or_into_a_folder(tmp_path):
    assert side_file_base(f"{tmp_path}/seg.zarr/") == tmp_path / "seg.zarr"
    assert side_file_base(f"{tmp_path}/seg.h5:a/b") == tmp_path / "seg.h5"
    assert side_file_base("dvid://h:1/abc/seg?roi=r") is None
    assert side_file_base("dvid://h:1/abc/seg?roi=r", tmp_path) == tmp_path / "seg"


class ListStore(VolumeStore):
    """A third-party backend: a volume kept as a dict of Z slices (``slices://name``)."""

    scheme = "slices"
    volumes: dict[str, dict] = {}

    @classmethod
    def open(cls, ref, *, read_only=True):
        if ref.text not in cls.volumes:
            raise StoreError(f"no volume {ref}")
        entry = cls.volumes[ref.text]
        return cls(ref, entry["shape"], entry["dtype"], read_only=read_only)

    @classmethod
    def exists(cls, ref):
        return ref.text in cls.volumes and entry_complete(cls.volumes[ref.text])

    @classmethod
    def _create(cls, ref, shape, dtype, *, chunks, staged):
        cls.volumes[ref.text] = {"shape": shape, "dtype": dtype, "slices": {}, "complete": False}
        return cls(ref, shape, dtype, read_only=False)

    def _read(self, box):
        entry = self.volumes[self.uri]
        z = [entry["slices"].get(i, np.zeros(self.shape[1:], self.dtype)) for i in range(box.start[0], box.stop[0])]
        return np.stack(z)[(slice(None), *box.slices()[1:])]

    def _write(self, box, data):
        slices = self.volumes[self.uri]["slices"]
        for i, z in enumerate(range(box.start[0], box.stop[0])):
            plane = slices.setdefault(z, np.zeros(self.shape[1:], self.dtype))
            plane[box.slices()[1:]] = data[i]

    def commit(self):
        self.volumes[self.uri]["complete"] = True

    def discard(self):
        self.volumes.pop(self.uri, None)


def entry_complete(entry):
    return entry["complete"]


def test_a_registered_store_serves_as_a_pipeline_output(tmp_path):
    register_store(ListStore)
    with pytest.raises(ValueError, match="scheme 'zarr' is taken by ZarrStore"):
        register_store(type("Other", (ListStore,), {"scheme": "zarr"}))
    with pytest.raises(ValueError, match="VolumeStore subclass with a `scheme`"):
        register_store(dict)  # type: ignore[arg-type]
    from labelstitch.synthetic import em_volume

    gray, _ = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    options = {"chunk-size": 32, "overlap": 4}
    ls.run({"input": str(tmp_path / "gray.npy"), "output": "slices://seg", "options": options})
    ls.run({"input": str(tmp_path / "gray.npy"), "output": str(tmp_path / "seg.zarr"), "options": options})
    with open_volume("slices://seg") as ours, open_volume(str(tmp_path / "seg.zarr")) as zarr:
        np.testing.assert_array_equal(ours.read(), zarr.read())
    with pytest.raises(StoreError, match="output slices://seg exists already"):
        ls.run({"input": str(tmp_path / "gray.npy"), "output": "slices://seg", "options": options})


def test_memory_volumes_are_removed_again():
    before = memory_volumes()
    with memory_volume(np.zeros((2, 3, 4), np.uint8)) as uri:
        assert uri in memory_volumes()
        assert open_volume(uri).shape == (2, 3, 4)
        with memory_volume(name="out") as out:
            create_volume(out, (2, 3, 4), np.uint64).close()
            assert out in memory_volumes()
    assert memory_volumes() == before
