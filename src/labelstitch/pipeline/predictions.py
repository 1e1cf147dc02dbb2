"""Predictions made elsewhere: a config's ``predictions`` volumes in place of the
predict-voxels stage.

Labs predict on GPUs with their own networks and bring the results. With ``predictions``
(one volume per channel, any store, float in [0, 1] or uint8 scaled by 1/255) and
``options.prediction-channels`` (what each channel means: ``boundary``, ``affinity`` with
its offset, ``mitochondria``, ...), each subvolume reads its box of them, with the same
halo and context as the grayscale, and hands them to the supervoxel and agglomeration
stages as a predictor would. The channels are declared like a predictor's, so a stage that
reads a channel the volumes do not hold is refused before any work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..geometry import Box
from ..hookspecs import Channel, stage_function
from ..plugins import Stage
from ..stores import StoreError, VolumeRef

__all__ = ["NAME", "check_predictions", "read_predictions", "stored_predictions_stage"]

#: the predict-voxels stage's name in reports when predictions come from volumes
NAME = "predictions volumes"


def _channels(channels: list[dict[str, Any]]) -> tuple[Channel, ...]:
    return tuple(Channel(c["meaning"], i, tuple(c["offset"]) if c.get("offset") else None) for i, c in enumerate(channels))


def _declared(channels: list[dict[str, Any]]) -> dict[str, Any]:
    return {"writes": _channels(channels), "bytes_per_voxel": 4 * len(channels) + 4}


@stage_function(declare=_declared)
def _from_volumes(grayscale: Any, mask: Any, channels: list[dict[str, Any]] | None = None) -> Any:
    """Stands for the predict-voxels stage when the predictions are read from volumes: the
    pipeline reads them for each subvolume's box itself (a stage is never told its box)."""
    raise RuntimeError("predictions from volumes are read by the pipeline, not computed")


def stored_predictions_stage(channels: tuple[dict[str, Any], ...]) -> Stage:
    """The predict-voxels stage of a run whose predictions are volumes: it declares their
    channels and memory, so the other stages are checked against them."""
    return Stage("predict-voxels", NAME, _from_volumes, {"channels": [dict(c) for c in channels]})


def default_channels(n: int) -> tuple[dict[str, Any], ...]:
    """What one volume means when ``options.prediction-channels`` is not given: the boundary."""
    return ({"meaning": "boundary"},) if n == 1 else ()


def check_predictions(volumes: tuple[VolumeRef, ...], channels: tuple[dict[str, Any], ...], shape: tuple[int, ...]) -> None:
    """Refuse, before any work, prediction volumes that cannot stand for a predictor's output."""
    if len(channels) != len(volumes):
        raise ValueError(
            f"predictions gives {len(volumes)} volume(s) but options.prediction-channels describes {len(channels)}: "
            "give one entry per volume, in order, e.g. [{\"meaning\": \"boundary\"}, {\"meaning\": \"affinity\", "
            "\"offset\": [-1, 0, 0]}]"
        )
    for k, ref in enumerate(volumes):
        with ref.open() as volume:
            if volume.shape != tuple(shape):
                raise StoreError(f"predictions[{k}] {ref} has shape {volume.shape}; input has {tuple(shape)}: "
                                 "predictions must cover the input voxel for voxel")
            if not (volume.dtype == np.uint8 or np.issubdtype(volume.dtype, np.floating)):
                raise StoreError(f"predictions[{k}] {ref} has dtype {volume.dtype}; expected float probabilities in "
                                 "[0, 1] or uint8 (read as value / 255)")


def read_predictions(volumes: tuple[VolumeRef, ...], box: Box) -> NDArray[np.float32]:
    """The predictions of ``box`` as a predictor returns them: (Z, Y, X) for one channel,
    (Z, Y, X, C) for several; uint8 volumes scaled by 1/255."""
    parts = []
    for k, ref in enumerate(volumes):
        with ref.open() as volume:
            values = volume.read(box)
        if values.dtype != np.uint8 and values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"predictions[{k}] {ref} holds values from {values.min():g} to {values.max():g} in {box}; "
                             "float predictions must be probabilities in [0, 1] (or give uint8, read as value / 255)")
        parts.append(values.astype(np.float32) / np.float32(255) if values.dtype == np.uint8 else values.astype(np.float32, copy=False))
    return parts[0] if len(parts) == 1 else np.stack(parts, axis=-1)
