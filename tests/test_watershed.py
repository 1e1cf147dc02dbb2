from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.segmentation import watershed as skimage_watershed

from labelstitch import vi, watershed


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(1, 8))), st.data())
def test_labels_the_same_voxels_as_scikit_image_with_connected_regions_grown_from_seeds(image, data):
    """Every voxel that scikit-image's watershed can reach from a seed inside the mask is
    labelled, nothing else is, seeds keep their labels, and each label is a 6-connected
    region grown from its own seeds."""
    markers = data.draw(hnp.arrays(np.int64, image.shape, elements=st.sampled_from([0] * 6 + [1, 2, 3])))
    mask = data.draw(hnp.arrays(np.bool_, image.shape, elements=st.sampled_from([True] * 5 + [False])))
    ours = watershed(image.astype(float), markers, mask=mask, levels=max(int(image.max()) + 1, 2))
    theirs = skimage_watershed(image, markers * mask, mask=mask, connectivity=1)
    assert ((ours > 0) == (theirs > 0)).all()  # the same voxels get labelled
    assert (ours[markers * mask > 0] == markers[markers * mask > 0]).all()
    # Each label grows into a 6-connected region around its seeds
    from skimage.measure import label as cc

    for lab in np.unique(ours[ours > 0]):
        seeds = markers * mask == lab
        pieces = cc(ours == lab, connectivity=1)
        assert set(np.unique(pieces[seeds])) == set(np.unique(pieces[pieces > 0]))


def test_quality_equals_scikit_image_on_real_em(shared_data):
    data = np.load(shared_data / "gala_test.npz")
    from skimage.measure import label

    pred = data["pred"].astype(np.float32)
    seeds = label(pred < 0.1, connectivity=1)
    ours = vi(watershed(pred, seeds), data["gt"])
    theirs = vi(skimage_watershed(pred, seeds, connectivity=1), data["gt"])
    assert ours.total == pytest.approx(theirs.total, abs=0.02)


def test_bad_input():
    with pytest.raises(ValueError, match="must be 3-D"):
        watershed(np.zeros((3, 3)), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="must have the shape of `boundary`"):
        watershed(np.zeros((1, 3, 3)), np.zeros((1, 3, 4), int))
    with pytest.raises(ValueError, match="`levels` must be between"):
        watershed(np.zeros((1, 3, 3)), np.zeros((1, 3, 3), int), levels=1)


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 9)),
                  elements=st.integers(0, 3)), st.booleans())
def test_seed_components_are_scikit_images_to_the_label(labels, as_mask):
    """``seeded_watershed``'s seeds come from our connected components (scikit-image's label
    costs every worker half a second of imports), and the stitching rules' pieces of each
    label from the same kernel: scikit-image's pieces, with the same count, numbered in
    raster order of their first voxel (for a mask, scikit-image's own labels to the value;
    with several labels scikit-image numbers otherwise in some boxes one voxel wide)."""
    from skimage.measure import label

    from labelstitch._kernels.components import label_components
    from labelstitch.testing import assert_same_partition

    image = labels > 0 if as_mask else labels
    ours, k = label_components(np.ascontiguousarray(image))
    theirs = label(image, connectivity=1, background=0)
    assert ours.dtype == np.uint32 and k == theirs.max()
    assert_same_partition(ours, theirs)
    assert ((ours == 0) == (image == 0)).all()
    pieces, first = np.unique(ours.ravel(), return_index=True)
    assert (np.diff(first[pieces > 0]) > 0).all()  # raster order of each piece's first voxel
    if as_mask:
        np.testing.assert_array_equal(ours, theirs)
