"""A labelstitch plugin in a few lines: it adds the predict-voxels function
``dark_is_membrane`` (``"function": "dark_is_membrane"`` in a config) and the stitching rule
``mutual-any`` (``"stitch-algorithm": "mutual-any"``)."""

import numpy as np

import labelstitch
from labelstitch import Reason


@labelstitch.stage_function(writes=(labelstitch.Channel("boundary", 0),))  # what the later stages may read
def dark_is_membrane(grayscale, mask, cutoff=100):
    """Membrane probability 1 where grayscale is below ``cutoff``, else 0."""
    out = (grayscale < cutoff).astype(np.float32)
    out[mask] = 1.0
    return out


def mutual_any(candidates, *, min_overlap=0):
    """Every pair of mutual best partners sharing more than ``min_overlap`` voxels."""
    ok = candidates.mutual & (candidates.count > min_overlap)
    return np.where(ok, Reason.ACCEPTED, np.where(candidates.mutual, Reason.BELOW_SIZE, Reason.NOT_MUTUAL)).astype(np.int8)


@labelstitch.hookimpl
def labelstitch_stage_functions():
    return {"predict-voxels": {"dark_is_membrane": dark_is_membrane}}


@labelstitch.hookimpl
def labelstitch_stitch_rules():
    return {"mutual-any": mutual_any}
