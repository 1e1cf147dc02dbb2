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
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from .parameters import Range  # noqa: F401  (plugins annotate their parameters with it: labelstitch.hookspecs.Range)


if TYPE_CHECKING:
    from .executors import Executor

hookspec = pluggy.HookspecMarker("labelstitch")
#: the marker plugins put on their hook implementations (exported as ``labelstitch.hookimpl``)
hookimpl = pluggy.HookimplMarker("labelstitch")

#: the three segmentation stages, in pipeline order
STAGES = ("predict-voxels", "create-supervoxels", "agglomerate-supervoxels")


# ----------------------------------------------------------------------------- stage descriptors

@dataclass(frozen=True)
class Channel:
    """One channel of the voxel predictions that a stage writes or reads, and what it means
    (``boundary``, ``affinity``, ``mitochondria``, ``lsd``, or a plugin's own word).

    ``index`` is the channel's position, or the name of the stage parameter that holds it
    (``"boundary_channel"``: the configured value, else the function's default; a negative
    value means the stage reads no such channel). ``offset`` is an affinity's neighbour
    offset (z, y, x). ``optional``: a channel a predictor writes only with some models
    (a classifier trained with mitochondria).
    """

    meaning: str
    index: int | str = 0
    offset: tuple[int, int, int] | None = None
    optional: bool = False


@dataclass(frozen=True)
class StageInfo:
    """What a stage function needs and gives beyond its signature: its descriptor.

    ``reads``/``writes``: the prediction channels it reads (create-supervoxels,
    agglomerate-supervoxels) or writes (predict-voxels; empty: not declared), checked
    against each other before any work. ``bytes_per_voxel``: its working memory per voxel
    of the box it segments, beyond the pipeline's own (the chunk-size check adds it).
    ``context``: voxels it must see beyond a subvolume's outer box for a valid answer
    there (the pipeline reads and segments that much more, then crops). ``graph``: for an
    agglomeration, the same agglomeration on a whole volume's region graph,
    ``graph(stats, **parameters)`` returning the root of every node 0..K, which
    ``options.agglomerate-across-blocks`` runs once on the driver; ``graph_histograms``
    False says it never reads the boundary histograms (a mean-boundary agglomeration), so
    they never reach the driver; ``graph_contacts(channels, **parameters)`` says which
    further values (a :class:`labelstitch.contacts.Contacts`, or None) its graph's
    contacts carry beside the boundary, for predictions of ``channels`` channels with the
    boundary first. ``declare``: for what only the configured parameters
    tell (a network's channels and margin, from the file it loads),
    ``declare(**parameters)`` returning the fields above that differ, as a dict.
    """

    reads: tuple[Channel, ...] = ()
    writes: tuple[Channel, ...] = ()
    bytes_per_voxel: int = 0
    context: int = 0
    graph: Callable[..., Any] | None = None
    graph_histograms: bool = True
    declare: Callable[..., dict[str, Any]] | None = None
    graph_contacts: Callable[..., Any] | None = None


_F = TypeVar("_F", bound=Callable[..., Any])


def stage_function(
    *,
    reads: tuple[Channel, ...] = (),
    writes: tuple[Channel, ...] = (),
    bytes_per_voxel: int = 0,
    context: int = 0,
    graph: Callable[..., Any] | None = None,
    graph_histograms: bool = True,
    declare: Callable[..., dict[str, Any]] | None = None,
    graph_contacts: Callable[..., Any] | None = None,
) -> Callable[[_F], _F]:
    """Declare what a stage function needs (its :class:`StageInfo`); the function is
    returned as it is, so it still runs on plain arrays.

    >>> @stage_function(reads=(Channel("boundary", "boundary_channel"),), bytes_per_voxel=16)
    ... def my_supervoxels(predictions, mask, boundary_channel=0):
    ...     ...
    >>> describe_stage(my_supervoxels).bytes_per_voxel
    16
    """
    info = StageInfo(tuple(reads), tuple(writes), int(bytes_per_voxel), int(context), graph, graph_histograms, declare,
                     graph_contacts)

    def mark(fn: _F) -> _F:
        fn.__labelstitch_stage__ = info  # type: ignore[attr-defined]
        return fn

    return mark


def describe_stage(fn: Callable[..., Any]) -> StageInfo:
    """The descriptor a stage function declared with :func:`stage_function` (one that declared
    none declares no channels: the pipeline then takes the boundary as channel 0)."""
    info = getattr(fn, "__labelstitch_stage__", None)
    return info if isinstance(info, StageInfo) else StageInfo()


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

    A function declares what it needs with :func:`stage_function` (its
    :class:`StageInfo`): the channels it reads or writes and what each means (the
    pipeline refuses, before any work, a stage that reads a channel the predictor does
    not write), its memory per voxel, the context it needs beyond its box, and, for an
    agglomeration, ``graph(stats, **parameters)``: the same agglomeration on a whole
    volume's region graph (an :class:`~labelstitch.agglomeration.EdgeStats` of nodes
    1..K, whose boundary statistics come from its ``boundary`` channel; ``stats.inside``
    holds every channel's sum per node, that channel first and the others after it in
    order), returning the root of every node 0..K, which runs with
    ``options.agglomerate-across-blocks`` once, on the driver, instead of the function per
    subvolume. :func:`~labelstitch.agglomeration.context_aware` wraps such a graph
    function with NeuroProof's mitochondria-last merging; ``graph_histograms=False`` says
    it never reads ``stats.hist`` (40 bytes per edge reach the driver instead of 120).

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
