"""Multiscale outputs: the label pyramid kernel, OME-Zarr metadata read by an independent
reader, and pyramids that do not depend on the executor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import labelstitch as ls
from labelstitch.pyramid import downsample_image, downsample_labels, level_shapes
from labelstitch.stores import open_volume
from labelstitch.synthetic import em_volume


def reference_mode(labels):
    """DVID's rule, the slow way: most frequent non-zero label per 2x2x2 cell, ties to the smaller id."""
    out = np.zeros([-(-n // 2) for n in labels.shape], np.uint64)
    for index in np.ndindex(*out.shape):
        cell = labels[tuple(slice(2 * i, 2 * i + 2) for i in index)].ravel()
        cell = cell[cell != 0]
        if cell.size:
            ids, counts = np.unique(cell, return_counts=True)
            out[index] = ids[counts == counts.max()].min()
    return out


@given(arrays(np.uint64, st.tuples(*[st.integers(1, 7)] * 3), elements=st.sampled_from([0, 1, 2, 3, 2**64 - 1])))
def test_label_downsampling_follows_dvids_rule(labels):
    np.testing.assert_array_equal(downsample_labels(labels), reference_mode(labels))


def test_downsampling_never_invents_a_label_and_keeps_thin_neurites():
    labels = np.zeros((8, 8, 8), np.uint64)
    labels[:, 3, 3] = 7  # a neurite one voxel thin
    half = downsample_labels(labels)
    assert set(np.unique(half)) == {0, 7} and (half[:, 1, 1] == 7).all()
    image = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    assert downsample_image(image).item() == 4  # the mean 3.5, rounded half up


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyramid")
    gray, _ = em_volume((40, 96, 80), n_neurites=20, seed=3)
    np.save(folder / "gray.npy", gray)
    options = {"chunk-size": 24, "overlap": 4, "resolution": [30, 8, 8], "write-grayscale": True}
    ls.run({"input": str(folder / "gray.npy"), "output": str(folder / "serial.zarr"), "options": options})
    ls.run({"input": str(folder / "gray.npy"), "output": str(folder / "processes.zarr"), "options": options},
           executor="processes", workers=2)
    return folder, gray


def test_outputs_are_ome_zarr_multiscale_label_images(segmented):
    import zarr
    from ome_zarr_models.v05 import Image, ImageLabel

    folder, gray = segmented
    group = zarr.open_group(str(folder / "serial.zarr"), mode="r")
    model = ImageLabel.from_zarr(group)  # an independent reader checks the metadata
    datasets = model.attributes.ome.multiscales[0].datasets
    assert [d.path for d in datasets] == ["0", "1", "2"]
    assert len(level_shapes((40, 96, 80), (24, 24, 24))) == 3
    assert [t.scale for t in (d.coordinateTransformations[0] for d in datasets)] == [[30, 8, 8], [60, 16, 16], [120, 32, 32]]
    assert [a.unit for a in model.attributes.ome.multiscales[0].axes] == ["nanometer"] * 3
    with open_volume(str(folder / "serial.zarr")) as seg, open_volume(str(folder / "serial.zarr/1")) as half:
        labels = seg.read()
        assert seg.voxel_size == (30.0, 8.0, 8.0) and seg.metadata["image"] == str(folder / "serial-grayscale.zarr")
        np.testing.assert_array_equal(half.read(), downsample_labels(labels))
    image = Image.from_zarr(zarr.open_group(str(folder / "serial-grayscale.zarr"), mode="r"))
    assert len(image.attributes.ome.multiscales[0].datasets) == 3
    with open_volume(str(folder / "serial-grayscale.zarr")) as copy:
        np.testing.assert_array_equal(copy.read(), gray)


def test_the_pyramid_does_not_depend_on_the_executor(segmented):
    folder, _ = segmented
    for level in ("0", "1", "2"):
        with open_volume(str(folder / f"serial.zarr/{level}")) as a, open_volume(str(folder / f"processes.zarr/{level}")) as b:
            np.testing.assert_array_equal(a.read(), b.read())
