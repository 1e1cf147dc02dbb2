"""Hook specifications: how plugins extend labelstitch.

A plugin is a module or object with functions marked ``@labelstitch.hookimpl``. Built-in
stage functions are registered as a plugin like any other; third-party packages register
theirs through the entry-point group ``labelstitch.plugins``::

    [project.entry-points."labelstitch.plugins"]
    myplugin = "myplugin"

Hooks are called with keyword arguments only, so an implementation may accept fewer
arguments than the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("labelstitch")
hookimpl = pluggy.HookimplMarker("labelstitch")

#: the three segmentation stages, in pipeline order
STAGES = ("predict-voxels", "create-supervoxels", "agglomerate-supervoxels")


# ----------------------------------------------------------------------------- discovery


@hookspec
def labelstitch_stage_functions() -> dict[str, dict[str, Callable[..., Any]]]:
    """Stage functions this plugin provides, by stage and name.

    :return: ``{stage: {name: function}}`` with ``stage`` one of :data:`STAGES`. Names
        must be unique across plugins; the config refers to them as ``"function": name``.

    The functions follow these contracts (the library loads data, adds halos, builds the
    mask and checks shapes and dtypes; plugins only see numpy arrays):

    ``predict-voxels``: ``f(grayscale, mask, **parameters)``
        ``grayscale`` is a (Z, Y, X) array; ``mask`` a bool array of the same shape, True
        where no prediction is needed (background, preserved bodies). Returns float32
        membrane probabilities in [0, 1], shape (Z, Y, X), or (Z, Y, X, C) with extra
        channels after the first.
    ``create-supervoxels``: ``f(predictions, mask, **parameters)``
        Returns an integer (Z, Y, X) over-segmentation; masked voxels must be 0.
    ``agglomerate-supervoxels``: ``f(predictions, supervoxels, **parameters)``
        Returns an integer (Z, Y, X) segmentation (0 stays 0).
    """
