"""The ``multicut_agglomeration`` stage: the supervoxels' region graph partitioned by a
multicut (:mod:`labelstitch.multicut`), per subvolume or, with
``options.agglomerate-across-blocks``, once over the whole volume's summed graph."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray

from ..hookspecs import Channel, Range, stage_function

__all__ = ["multicut_agglomeration"]


def _cut_probability(stats: Any, classifier_path: str) -> NDArray[np.float64]:
    """Per edge, the probability that its two regions are two neurons: the mean boundary
    along the contact, or one minus a learned agglomeration classifier's merge probability."""
    if not classifier_path:
        return np.asarray(stats.total / np.maximum(stats.count, 1), np.float64)
    from ..agglomeration import edge_features
    from .builtin import _classifier

    u, v = stats.u, stats.v
    features = edge_features(stats.count, stats.total, stats.hist, stats.size[u], stats.size[v],
                             stats.inside[u], stats.inside[v])
    merge = _classifier(classifier_path, int(stats.inside.shape[1])).predict(features)
    return 1.0 - np.asarray(merge, np.float64)


def _multicut_graph(stats: Any, beta: float = 0.5, boundary_channel: int = 0, classifier_path: str = "",
                    size_weighted: bool = True) -> NDArray[np.int64]:
    """The multicut of a region graph's statistics: the root of every node."""
    from ..multicut import multicut, multicut_weights

    weights = multicut_weights(_cut_probability(stats, classifier_path), stats.count if size_weighted else None, beta=beta)
    return multicut(stats.u, stats.v, weights, stats.size.size - 1)


@stage_function(reads=(Channel("boundary", "boundary_channel"),), graph=_multicut_graph, bytes_per_voxel=16)
def multicut_agglomeration(
    predictions: NDArray[np.floating],
    supervoxels: NDArray[np.integer],
    beta: Annotated[float, Range(0, 1)] = 0.5,
    boundary_channel: Annotated[int, Range(0, None)] = 0,
    classifier_path: str = "",
    size_weighted: bool = True,
) -> NDArray[np.uint32]:
    """Partition the supervoxels by a multicut of their region graph: every contact weighs
    ``log((1 - p) / p) + log((1 - beta) / beta)`` (times its size over the mean, with
    ``size_weighted``), where ``p`` is its mean boundary probability, or with a
    ``classifier_path`` (from ``labelstitch train``) one minus the learned merge probability;
    the partition that cuts the least weight is found by greedy additive edge contraction
    refined by greedy node moves (elf's and cluster_tools' solvers). ``beta`` is the prior
    probability of a cut: higher, more bodies."""
    from ..agglomeration import edge_stats
    from ..rag import numbered_roots, renumber
    from .builtin import _boundary

    labels, _ = renumber(supervoxels)
    if classifier_path:
        stats = edge_stats(labels, predictions)  # every channel, boundary first: the classifier's features
    else:
        stats = edge_stats(labels, _boundary(predictions, boundary_channel))
    roots = _multicut_graph(stats, beta, boundary_channel, classifier_path, size_weighted)
    return numbered_roots(roots, np.uint32)[labels]
