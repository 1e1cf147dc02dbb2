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
        ({"output": str(tmp_path / "ckpt"), "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "ckpt" / "inner")}},
         "options.checkpoint-dir"),
    ]
    for extra, key in cases:
        with pytest.raises(StoreError, match=f"would overwrite {key}"):
            ls.run({**base, **extra}, overwrite=True)
    with pytest.raises(StoreError, match="options.checkpoint-dir .* overlaps input"):
        ls.run({**base, "output": str(tmp_path / "o.zarr"), "options": {**OPTIONS, "checkpoint-dir": str(tmp_path / "gray.npy")}})
    assert snapshot(tmp_path) == before
