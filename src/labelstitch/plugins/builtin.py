"""Built-in stage functions and executors, registered as a plugin like any other.

=========================  =======================================================
stage                      functions
=========================  =======================================================
predict-voxels             ``naive_membrane_predictions``, ``threshold_predictions``,
                           ``pixel_classifier``, ``two_stage_predictions``,
                           ``network_predictions``, ``affinity_classifier``
create-supervoxels         ``seeded_watershed``, ``distance_transform_watershed``,
                           ``mutex_watershed`` (needs ``mwatershed``)
agglomerate-supervoxels    ``rag_agglomeration``, ``learned_agglomeration``,
                           ``multicut_agglomeration``, ``no_agglomeration`` (each
                           also on a whole volume's graph), ``affinity_agglomeration``
=========================  =======================================================

Executors: ``serial``, ``processes`` and ``spark`` (see :mod:`labelstitch.executors`).
Stitching rules: the paper's four (defined in the core, :mod:`labelstitch.rules`). Each
stage function declares what it reads, writes and needs with
:func:`~labelstitch.hookspecs.stage_function`, as a third-party plugin's would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray

from ..contingency import label_counts
from ..executors import Executor, ProcessesExecutor, SerialExecutor, spark_executor
from ..hookspecs import Channel, Range, hookimpl, stage_function
from ..rag import agglomerate_mean_boundary, merge_small_segments
from ..relabel import remap
from ..rules import BUILTIN_RULES, Rule
from .affinities import affinity_agglomeration, learned_contacts, mutex_watershed, with_affinities
from .channels import boundary_of
from .network import declare_network

__all__ = [
    "naive_membrane_predictions",
    "threshold_predictions",
    "pixel_classifier",
    "network_predictions",
    "affinity_classifier",
    "seeded_watershed",
    "rag_agglomeration",
    "no_agglomeration",
    "multicut_agglomeration",
]


# ----------------------------------------------------------------------------- predict-voxels


#: what the predictors write: the membrane (boundary) probability as channel 0
_BOUNDARY_OUT = (Channel("boundary", 0),)
#: a classifier trained with mitochondria adds their probability as channel 1
_CLASSIFIER_OUT = (Channel("boundary", 0), Channel("mitochondria", 1, optional=True))
#: what the supervoxel stages read: the channel their ``boundary_channel`` names
_BOUNDARY_IN = (Channel("boundary", "boundary_channel"),)


@stage_function(writes=_BOUNDARY_OUT)
def naive_membrane_predictions(
    grayscale: NDArray[Any], mask: NDArray[np.bool_], sigma: Annotated[float, Range(0, None)] = 0.0
) -> NDArray[np.float32]:
    """Membrane probability as inverted grayscale: dark voxels are membranes.

    The pipeline hands it uint8 grayscale (scaled by 255) or float32 in [0, 1] (see
    ``options.intensity-range``); other integer grayscale is scaled by its dtype's range. ``sigma`` > 0 smooths with a Gaussian of that
    width first (noise otherwise breaks seeds apart). Masked voxels get probability 1.
    """
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        grayscale = gaussian_filter(grayscale.astype(np.float32), sigma).astype(grayscale.dtype)
    if np.issubdtype(grayscale.dtype, np.integer):
        info = np.iinfo(grayscale.dtype)
        scaled = (grayscale.astype(np.float32) - info.min) / float(info.max - info.min)
    else:
        scaled = np.clip(grayscale.astype(np.float32), 0.0, 1.0)
    out = 1.0 - scaled
    out[mask] = 1.0
    return out.astype(np.float32, copy=False)


@stage_function(writes=_BOUNDARY_OUT)
def threshold_predictions(grayscale: NDArray[Any], mask: NDArray[np.bool_], threshold: float = 128) -> NDArray[np.float32]:
    """1.0 where grayscale is below ``threshold`` (a membrane), else 0.0 (the paper's example)."""
    out = (grayscale < threshold).astype(np.float32)
    out[mask] = 1.0
    return out


# peak working memory per voxel, for chunk-size checks: the Gaussian smoothings of the box
# and the output, 26 bytes a voxel plus about 85 MB of slab arrays (measured by
# benchmarks/bench_stage_memory.py: 44 bytes a voxel of a 168^3 box, a whole worker 43)
@stage_function(writes=_CLASSIFIER_OUT, bytes_per_voxel=32)
def pixel_classifier(grayscale: NDArray[Any], mask: NDArray[np.bool_], classifier_path: str = "") -> NDArray[np.float32]:
    """Membrane probability from a random-forest voxel classifier on multi-scale filter
    features, trained with ``labelstitch train-pixel-classifier`` (ilastik-like)."""
    from .classifier import load_classifier

    if not classifier_path:
        raise ValueError("pixel_classifier needs `classifier_path`, a file written by `labelstitch train-pixel-classifier`")
    out = load_classifier(classifier_path).predict(grayscale)
    out[mask] = 1.0
    return out


# the first stage's answer and its six context volumes on top of the one-stage arrays:
# 60 bytes a voxel plus about 90 MB (measured: 79 bytes a voxel of a 168^3 box)
@stage_function(writes=_CLASSIFIER_OUT, bytes_per_voxel=64)
def two_stage_predictions(grayscale: NDArray[Any], mask: NDArray[np.bool_], classifier_path: str = "") -> NDArray[np.float32]:
    """Membrane probability from a two-stage (auto-context) voxel classifier: a second
    random forest on the image features plus the first forest's probability, smoothed and
    differentiated (the paper's ``two_stage_voxel_predictions``). Trained by
    ``labelstitch train --two-stage`` or ``train-pixel-classifier --two-stage``."""
    from .classifier import load_classifier

    if not classifier_path:
        raise ValueError("two_stage_predictions needs `classifier_path`, a file written with --two-stage")
    classifier = load_classifier(classifier_path)
    if not classifier.two_stage:
        raise ValueError(f"{classifier_path} holds a one-stage classifier; use pixel_classifier, or train with --two-stage")
    out = classifier.predict(grayscale)
    out[mask] = 1.0
    return out


_AFFINITIES_OUT = (Channel("boundary", 0), Channel("affinity", 1, (-1, 0, 0)), Channel("affinity", 2, (0, -1, 0)),
                   Channel("affinity", 3, (0, 0, -1)))


# the one-stage arrays, plus the pair rows of a slab (twice its features) and 16 bytes of output
@stage_function(writes=_AFFINITIES_OUT, bytes_per_voxel=48)
def affinity_classifier(grayscale: NDArray[Any], mask: NDArray[np.bool_], classifier_path: str = "") -> NDArray[np.float32]:
    """Membrane probability and nearest-neighbour affinities from random forests, no network
    needed: channel 0 is ``pixel_classifier``'s boundary, channels 1-3 the probability that
    a voxel and its neighbour before it along Z, Y, X are one body (offsets -1), from a
    forest of voxel pairs trained with ``labelstitch train-pixel-classifier --affinities``.
    For ``mutex_watershed`` and ``affinity_agglomeration`` (``affinity_channels`` "1,2,3",
    ``affinity_offsets`` "-1,0,0;0,-1,0;0,0,-1"). Masked voxels: boundary 1, affinities 0."""
    from .classifier import load_classifier

    if not classifier_path:
        raise ValueError("affinity_classifier needs `classifier_path`, a file written by "
                         "`labelstitch train-pixel-classifier --affinities`")
    out = load_classifier(classifier_path).predict_affinities(grayscale)
    out[mask] = (1.0, 0.0, 0.0, 0.0)
    return out


# channels, context (the model's margin) and memory come from the model's sidecar JSON
@stage_function(declare=declare_network)
def network_predictions(grayscale: NDArray[Any], mask: NDArray[np.bool_], model_path: str = "",
                        device: str = "auto", precision: str = "auto") -> NDArray[np.float32]:
    """The channels of a network trained elsewhere (boundaries, affinities, ...), exported
    to ONNX or PyTorch with a sidecar JSON that says its input scaling, margin and outputs;
    run tile by tile on the CPU, or the GPU with ``device`` auto or cuda. ``precision``
    auto runs a PyTorch model in float16 on a GPU where its first batch shows that safe
    (float32 on the CPU: deterministic); float32 or float16 say which. Masked voxels get 1
    in boundary channels and 0 in the others."""
    from .network import load_network, predict_network

    model = load_network(model_path)
    out = predict_network(model, grayscale, device, precision)
    for channel in model.outputs:
        out[..., channel.index][mask] = 1.0 if channel.meaning == "boundary" else 0.0
    return out[..., 0] if model.channels == 1 else out


# ----------------------------------------------------------------------------- create-supervoxels


@stage_function(reads=_BOUNDARY_IN)
def seeded_watershed(
    predictions: NDArray[np.floating],
    mask: NDArray[np.bool_],
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    seed_threshold: Annotated[float, Range(0, 1)] = 0.2,
    seed_size: Annotated[int, Range(1, None)] = 5,
    min_segment_size: Annotated[int, Range(0, None)] = 0,
) -> NDArray[np.uint32]:
    """Watershed of the boundary channel from seeds of low boundary probability.

    Seeds are the 6-connected components of ``boundary < seed_threshold`` with at least
    ``seed_size`` voxels. The watershed (:func:`labelstitch.watershed`, a bucket-queue
    flooding with 256 levels, about 4x faster than scikit-image's) floods the boundary
    channel from them; masked voxels stay 0. Segments smaller than ``min_segment_size``
    voxels are then merged into the neighbour they share the longest contact with.
    """
    from .._kernels.components import label_components  # scikit-image's label, without its imports in every worker
    from ..watershed import watershed

    boundary = boundary_of(predictions, boundary_channel)
    seeds, _ = label_components(np.ascontiguousarray((boundary < seed_threshold) & ~mask))
    if seed_size > 1 and seeds.any():
        ids, sizes = label_counts(seeds)
        small = ids[(sizes < seed_size) & (ids != 0)]
        if small.size:
            seeds = remap(seeds, (small, np.zeros(small.size, np.uint64)))
    labels = watershed(boundary, seeds, mask=~mask).astype(np.uint32)
    if min_segment_size > 1:
        labels = merge_small_segments(labels, min_segment_size, boundary).astype(np.uint32)
    labels[mask] = 0
    return labels


@stage_function(reads=_BOUNDARY_IN)
def distance_transform_watershed(
    predictions: NDArray[np.floating],
    mask: NDArray[np.bool_],
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    threshold: Annotated[float, Range(0, 1)] = 0.5,
    sigma: Annotated[float, Range(0, None)] = 2.0,
    min_seed_distance: Annotated[int, Range(1, None)] = 3,
    min_segment_size: Annotated[int, Range(0, None)] = 20,
) -> NDArray[np.uint32]:
    """Watershed of the boundary channel from the centres of the cells: seeds are the
    maxima of the (Gaussian-smoothed, ``sigma``) distance to the nearest voxel whose
    boundary probability is at least ``threshold``, at least ``min_seed_distance`` voxels
    apart. A neurite pinched by a faint membrane gets one seed per side, so its supervoxels
    straddle fewer bodies than those grown from thresholded seeds (the approach of elf,
    cluster_tools and plantseg). Masked voxels stay 0; segments smaller than
    ``min_segment_size`` voxels join their longest-contact neighbour."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    from ..watershed import watershed

    boundary = boundary_of(predictions, boundary_channel)
    inside = (boundary < threshold) & ~mask
    distance = ndimage.distance_transform_edt(inside).astype(np.float32)
    if sigma > 0:
        distance = ndimage.gaussian_filter(distance, sigma)
    seeds = np.zeros(boundary.shape, np.uint32)
    if inside.any():
        # plateaus of equal maxima count once: label the peaks' connected pieces
        peaks = peak_local_max(distance, min_distance=min_seed_distance, labels=inside.astype(np.int32), exclude_border=False)
        seeds[tuple(peaks.T)] = 1
        seeds = ndimage.label(seeds, structure=ndimage.generate_binary_structure(3, 3))[0].astype(np.uint32)
    labels = watershed(boundary, seeds, mask=~mask).astype(np.uint32)
    if min_segment_size > 1:
        labels = merge_small_segments(labels, min_segment_size, boundary).astype(np.uint32)
    labels[mask] = 0
    return labels


# ----------------------------------------------------------------------------- agglomerate-supervoxels


def _mitochondria_channel(predictions: NDArray[np.floating], channel: int, boundary_channel: int) -> None:
    """Refuse a ``mitochondria_channel`` the predictions do not have."""
    channels = 1 if predictions.ndim == 3 else int(predictions.shape[-1])
    if channel >= channels or channel == boundary_channel:
        raise ValueError(f"`mitochondria_channel` {channel} is not a channel of predictions with shape {predictions.shape} "
                         f"other than the boundary channel {boundary_channel}; train the voxel classifier with "
                         f"mitochondria (`labelstitch train --mitochondria`) or set it to -1")


def _graph_channel(channel: int, boundary_channel: int) -> int:
    """Where prediction channel ``channel`` lies in a region graph's inside sums, which hold
    the boundary channel first and the others after it in order."""
    return channel + 1 if channel < boundary_channel else channel


# A stage's declared ``graph(stats, **parameters)`` is its agglomeration over a whole
# volume's region graph (``options.agglomerate-across-blocks``; see StageInfo).


def _with_mitochondria(stats: Any, merge: Callable[[Any], NDArray[np.int64]], channel: int, threshold: float) -> NDArray[np.int64]:
    """``merge(stats)``, or with a mitochondria channel (-1: none; a column of the graph's
    inside sums) its context-aware form."""
    from ..agglomeration import context_aware, mitochondria_nodes

    if channel < 0:
        return merge(stats)
    return context_aware(stats, merge, mitochondria_nodes(stats, channel, threshold))


def _rag_graph(stats: Any, threshold: float = 0.2, boundary_channel: int = 0, mitochondria_channel: int = -1,
               mitochondria_threshold: float = 0.5) -> NDArray[np.int64]:
    from ..rag import merge_by_mean_boundary

    channel = _graph_channel(mitochondria_channel, boundary_channel) if mitochondria_channel >= 0 else -1
    return _with_mitochondria(
        stats, lambda g: merge_by_mean_boundary(g.u, g.v, g.count, g.total, g.size.size - 1, threshold), channel,
        mitochondria_threshold)


def _learned_graph(stats: Any, classifier_path: str = "", threshold: float = 0.5, mitochondria_channel: int = -1,
                   mitochondria_threshold: float = 0.5, affinity_channels: str = "", affinity_offsets: str = "") -> NDArray[np.int64]:
    from ..agglomeration import agglomerate_graph

    channels = int(stats.inside.shape[1])
    predict = _classifier(classifier_path, channels, learned_contacts(channels, affinity_channels, affinity_offsets)).predict
    return _with_mitochondria(stats, lambda g: agglomerate_graph(g, predict, threshold), mitochondria_channel,
                              mitochondria_threshold)


def _no_graph(stats: Any) -> NDArray[np.int64]:
    return np.arange(stats.size.size, dtype=np.int64)



@stage_function(reads=(Channel("boundary", "boundary_channel"), Channel("mitochondria", "mitochondria_channel")),
                graph=_rag_graph, graph_histograms=False)
def rag_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    threshold: Annotated[float, Range(0, 1)] = 0.2,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    mitochondria_channel: Annotated[int, Range(-1, None)] = -1,
    mitochondria_threshold: Annotated[float, Range(0, 1)] = 0.5,
) -> NDArray[np.uint32]:
    """Greedy merging of touching supervoxels whose contact has a mean boundary probability
    below ``threshold`` (NeuroProof's mean agglomeration without its classifier). With a
    ``mitochondria_channel`` (-1: none), supervoxels whose non-membrane content is at least
    ``mitochondria_threshold`` mitochondrion there are left out of the merging and then
    join the body they touch most (NeuroProof's context-aware mode)."""
    boundary = boundary_of(predictions, boundary_channel)
    if mitochondria_channel < 0:
        return agglomerate_mean_boundary(supervoxels, boundary, threshold)
    from ..agglomeration import edge_stats
    from ..rag import numbered_roots, renumber

    _mitochondria_channel(predictions, mitochondria_channel, boundary_channel)
    labels, _ = renumber(supervoxels)
    stats = edge_stats(labels, np.stack([boundary, predictions[..., mitochondria_channel]], axis=-1))
    roots = _rag_graph(stats, threshold, 0, 1, mitochondria_threshold)  # the mitochondria are channel 1 of this graph
    return numbered_roots(roots, np.uint32)[labels]


_LOADED: dict[str, tuple[Any, Any]] = {}  # classifier file -> (its version, classifier), once per worker process


def _classifier(path: str, channels: int, contacts: Any) -> Any:
    """The agglomeration classifier at ``path`` for predictions of ``channels`` channels whose
    contacts carry ``contacts``, loaded once per process, and again when the file was
    rewritten (``train`` rewrites it)."""
    import os

    from .agglomeration import load_agglomeration_classifier

    if not path:
        raise ValueError("learned_agglomeration needs `classifier_path`, a file written by `labelstitch train`")
    try:
        info = os.stat(path)
        version: Any = (info.st_mtime_ns, info.st_size, info.st_ino, channels, contacts)
    except OSError:
        version = None  # the loader says what is wrong
    key = os.path.abspath(path)
    if version is None or _LOADED.get(key, (None,))[0] != version:
        _LOADED[key] = (version, load_agglomeration_classifier(path, channels, contacts))
    return _LOADED[key][1]


_LEARNED_READS = (Channel("boundary", 0), Channel("mitochondria", "mitochondria_channel"))


@stage_function(reads=_LEARNED_READS, graph=_learned_graph, graph_contacts=learned_contacts,
                declare=with_affinities(_LEARNED_READS))
def learned_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    classifier_path: str = "",
    threshold: Annotated[float, Range(0, 1)] = 0.5,
    mitochondria_channel: Annotated[int, Range(-1, None)] = -1,
    mitochondria_threshold: Annotated[float, Range(0, 1)] = 0.5,
    affinity_channels: str = "",
    affinity_offsets: str = "",
) -> NDArray[np.uint32]:
    """Priority merging of touching supervoxels by a trained classifier's probability that
    they are one neuron, most probable first, while it is at least ``threshold``; each
    merge pools the two regions' contact and region statistics and scores the merged
    region's edges again (NeuroProof's and gala's agglomeration). The classifier comes from
    ``labelstitch train`` (or :func:`labelstitch.plugins.agglomeration.train_agglomeration`),
    on predictions with this run's channels. With a ``mitochondria_channel`` (-1: none),
    mitochondria supervoxels (non-membrane content at least ``mitochondria_threshold``
    mitochondrion there) are merged last, each into the body it touches most (NeuroProof's
    context-aware mode; train the classifier the same way). The features include the mean,
    quantiles and histogram of every channel along the contact; of ``affinity_channels``
    (offsets -1 along Z, Y and X, as ``affinity_classifier`` writes them), the pairs' own."""
    from ..rag import numbered_roots, renumber
    from .agglomeration import learned_graph

    if mitochondria_channel >= 0:
        _mitochondria_channel(predictions, mitochondria_channel, 0)
    labels, _ = renumber(supervoxels)
    stats, _ = learned_graph(labels, predictions, affinity_channels, affinity_offsets)
    roots = _learned_graph(stats, classifier_path, threshold, mitochondria_channel, mitochondria_threshold,
                           affinity_channels, affinity_offsets)
    return numbered_roots(roots, np.uint32)[labels]


@stage_function(graph=_no_graph, graph_histograms=False)
def no_agglomeration(predictions: NDArray[np.floating], supervoxels: NDArray[np.integer]) -> NDArray[np.integer]:
    """The supervoxels, unchanged."""
    return supervoxels


# ----------------------------------------------------------------------------- multicut


def _cut_probability(stats: Any, classifier_path: str, contacts: Any = None) -> NDArray[np.float64]:
    """Per edge, the probability that its two regions are two neurons: the mean boundary
    along the contact, or one minus a learned agglomeration classifier's merge probability."""
    if not classifier_path:
        return np.asarray(stats.total / np.maximum(stats.count, 1), np.float64)
    merge = _classifier(classifier_path, int(stats.inside.shape[1]), contacts).predict(stats.features())
    return 1.0 - np.asarray(merge, np.float64)


def _multicut_contacts(channels: int, classifier_path: str = "", **parameters: Any) -> Any:
    """A multicut's contacts carry a learned agglomeration's further values when its costs are learned."""
    return learned_contacts(channels, **parameters) if classifier_path else None


def _multicut_graph(stats: Any, beta: float = 0.5, boundary_channel: int = 0, classifier_path: str = "",
                    size_weighted: bool = True, affinity_channels: str = "", affinity_offsets: str = "") -> NDArray[np.int64]:
    """The multicut of a region graph's statistics: the root of every node."""
    from ..multicut import multicut, multicut_weights

    contacts = _multicut_contacts(int(stats.inside.shape[1]), classifier_path, affinity_channels=affinity_channels,
                                  affinity_offsets=affinity_offsets)
    weights = multicut_weights(_cut_probability(stats, classifier_path, contacts), stats.count if size_weighted else None,
                               beta=beta)
    return multicut(stats.u, stats.v, weights, stats.size.size - 1)


@stage_function(reads=(Channel("boundary", "boundary_channel"),), graph=_multicut_graph, bytes_per_voxel=16,
                graph_contacts=_multicut_contacts, declare=with_affinities((Channel("boundary", "boundary_channel"),)))
def multicut_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    beta: Annotated[float, Range(0, 1)] = 0.5,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    classifier_path: str = "",
    size_weighted: bool = True,
    affinity_channels: str = "",
    affinity_offsets: str = "",
) -> NDArray[np.uint32]:
    """Partition the supervoxels by a multicut of their region graph: every contact weighs
    ``log((1 - p) / p) + log((1 - beta) / beta)`` (times its size over the mean, with
    ``size_weighted``), where ``p`` is its mean boundary probability, or with a
    ``classifier_path`` (from ``labelstitch train``) one minus the learned merge probability;
    the partition that cuts the least weight is found by greedy additive edge contraction
    refined by greedy node moves (elf's and cluster_tools' solvers). ``beta`` is the prior
    probability of a cut: higher, more bodies. ``affinity_channels`` / ``affinity_offsets``
    as for :func:`learned_agglomeration`, whose classifier gives the learned costs."""
    from ..agglomeration import edge_stats
    from ..rag import numbered_roots, renumber

    labels, _ = renumber(supervoxels)
    if classifier_path:  # every channel, boundary first: the classifier's features
        from .agglomeration import learned_graph

        stats, _ = learned_graph(labels, predictions, affinity_channels, affinity_offsets)
    else:
        stats = edge_stats(labels, boundary_of(predictions, boundary_channel))
    roots = _multicut_graph(stats, beta, boundary_channel, classifier_path, size_weighted, affinity_channels,
                            affinity_offsets)
    return numbered_roots(roots, np.uint32)[labels]


@hookimpl
def labelstitch_stage_functions() -> dict[str, dict[str, Callable[..., Any]]]:
    return {
        "predict-voxels": {
            "naive_membrane_predictions": naive_membrane_predictions,
            "threshold_predictions": threshold_predictions,
            "pixel_classifier": pixel_classifier,
            "network_predictions": network_predictions,
            "affinity_classifier": affinity_classifier,
            "two_stage_predictions": two_stage_predictions,
        },
        "create-supervoxels": {"seeded_watershed": seeded_watershed, "distance_transform_watershed": distance_transform_watershed,
                               "mutex_watershed": mutex_watershed},
        "agglomerate-supervoxels": {
            "rag_agglomeration": rag_agglomeration,
            "learned_agglomeration": learned_agglomeration,
            "no_agglomeration": no_agglomeration,
            "multicut_agglomeration": multicut_agglomeration,
            "affinity_agglomeration": affinity_agglomeration,
        },
    }


@hookimpl
def labelstitch_stitch_rules() -> dict[str, Rule]:
    return dict(BUILTIN_RULES)


@hookimpl
def labelstitch_executors() -> dict[str, Callable[..., Executor]]:
    return {"serial": SerialExecutor, "processes": ProcessesExecutor, "spark": spark_executor}
