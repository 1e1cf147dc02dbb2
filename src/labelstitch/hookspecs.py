"""Hook specifications: how plugins extend labelstitch.

A plugin is a module or object with functions marked ``@labelstitch.hookimpl``. The
built-in stage functions and executors are registered as a plugin like any other;
third-party packages register theirs through the entry-point group ``labelstitch.plugins``::

    [project.entry-points."labelstitch.plugins"]
    myplugin = "myplugin"

One plugin can implement any of the hooks below. Hooks are called with keyword arguments
only, so an implementation may accept fewer arguments than the spec, and specs can gain
arguments later without breaking old plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .executors import Executor

hookspec = pluggy.HookspecMarker("labelstitch")
#: the marker plugins put on their hook implementations (exported as ``labelstitch.hookimpl``)
hookimpl = pluggy.HookimplMarker("labelstitch")

#: the three segmentation stages, in pipeline order
STAGES = ("predict-voxels", "create-supervoxels", "agglomerate-supervoxels")


@dataclass(frozen=True)
class Range:
    """The values a numeric stage parameter accepts, for ``Annotated[float, Range(0, 1)]``
    in a stage function's signature: the config is refused before any work when a value
    lies outside (``None``: no bound on that side)."""

    low: float | None = None
    high: float | None = None

    def __contains__(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in [{self.low:g}, {self.high:g}]"


# ----------------------------------------------------------------------------- segmentation


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

    An ``agglomerate-supervoxels`` function may also carry an attribute
    ``agglomerate_graph(stats, **parameters)``: the same agglomeration on a whole volume's
    region graph (an :class:`~labelstitch.agglomeration.EdgeStats` of nodes 1..K, whose
    boundary statistics come from channel ``boundary_channel`` if the function takes that
    parameter, else channel 0; ``stats.inside`` holds every channel's sum per node, that
    channel first and the others after it in order), returning the root of every node
    0..K. :func:`~labelstitch.agglomeration.context_aware` wraps such a function with
    NeuroProof's mitochondria-last merging. Runs with
    ``options.agglomerate-across-blocks`` call it once, on the driver, instead of calling
    the function per subvolume. Setting ``agglomerate_graph.histograms = False`` says it
    never reads ``stats.hist`` (a mean-boundary agglomeration), so the boundary histograms
    never reach the driver (40 bytes per edge instead of 120).

    ``grayscale`` arrives as uint8 (0 black, 255 white) when the run's intensity range is
    [0, 255], else as float32 in [0, 1] (``options.intensity-range``). Parameters annotated
    ``int``, ``float``, ``bool`` or ``str`` (optionally ``Annotated[..., Range(low, high)]``)
    are checked against the config before any work.
    """


# ----------------------------------------------------------------------------- stitching


@hookspec
def labelstitch_stitch_rules() -> dict[str, Callable[..., Any]]:
    """Stitching rules this plugin provides, by name.

    :return: ``{name: rule}``; ``rule(candidates, **params)`` returns one
        :class:`~labelstitch.Reason` code per candidate pair, as for
        :func:`labelstitch.register_rule`. Its keyword-only parameters, with their
        defaults, become the rule's parameters (``options.stitch-parameters``).
    """


# ----------------------------------------------------------------------------- execution


@hookspec
def labelstitch_executors() -> dict[str, Callable[..., Executor]]:
    """Executors this plugin provides, by name (the value of ``--executor``).

    :return: ``{name: factory}``; ``factory(**options)`` returns an
        :class:`~labelstitch.executors.Executor`. Options are passed as keywords, and only
        those the user set: ``workers`` (``--workers``) and ``master`` (``--spark-master``)
        today. A factory that does not take an option the user set is refused with a
        message naming it.
    """
