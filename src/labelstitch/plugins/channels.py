"""Picking channels out of a predictor's answer, for the stages that read them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["boundary_of"]


def boundary_of(predictions: NDArray[np.floating], channel: int) -> NDArray[np.float32]:
    """The boundary probability: channel ``channel`` of (Z, Y, X, C) predictions, or the
    (Z, Y, X) predictions themselves; one line when there is no such channel.

    >>> boundary_of(np.zeros((1, 1, 2, 3)), 2).shape
    (1, 1, 2)
    """
    if predictions.ndim == 4:
        if not 0 <= channel < predictions.shape[-1]:
            raise ValueError(f"`boundary_channel` {channel} is not a channel of predictions with shape {predictions.shape}")
        return np.ascontiguousarray(predictions[..., channel], dtype=np.float32)
    return np.ascontiguousarray(predictions, dtype=np.float32)
