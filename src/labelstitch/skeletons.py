"""Skeletons of label volumes, made block by block and joined into one tree per body, and
the expected run length (ERL) of a segmentation along ground-truth skeletons.

Each block is skeletonised with kimimaro's TEASAR over its interior and a ``context`` of
voxels around it, and keeps the edges that touch its interior: TEASAR's paths follow the
body's centre line, so with enough context a block's paths inside its interior are those of
the whole volume, and the few artefacts of cutting the body (short branches to the cut,
paths bent towards it) stay in the context, which is thrown away. An edge that leaves the
interior ends at a vertex that lies in a neighbour's interior; :func:`join_skeletons` snaps it
to the neighbour's nearest vertex (almost always the very same point), so the pieces join
without gaps, and breaks any loop left (kimimaro's postprocess). Measured on tubes of known
shape (tests/test_skeletons.py): the joined skeleton's cable length is within 2 % of
skeletonising the unblocked body; the fix_borders way (one voxel of overlap) was 5-20 %
longer, from branches to the cut faces.

Vertices are in physical units, XYZ (as Neuroglancer and cloud-volume expect), with voxel
``i``'s centre at ``(i + 0.5) * resolution``, the convention of :mod:`labelstitch.meshing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .meshing import geometric_order, merge_points, stack

__all__ = ["ErlScore", "Skeleton", "cable_length", "components", "expected_run_length", "join_skeletons",
           "skeletonize_labels"]

#: vertices closer than this (physical units) are the same vertex when pieces are joined
JOIN_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Skeleton:
    """A skeleton: ``vertices`` (n, 3) float32 physical XYZ, ``edges`` (m, 2) uint32 and the
    ``radii`` (n,) float32 (distance to the body's boundary) at each vertex."""

    vertices: NDArray[np.float32]
    edges: NDArray[np.uint32]
    radii: NDArray[np.float32]

    @classmethod
    def empty(cls) -> Skeleton:
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 2), np.uint32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.vertices)


def _osteoid(skeleton: Skeleton) -> Any:
    from osteoid import Skeleton as Osteoid

    return Osteoid(skeleton.vertices.astype(np.float32), skeleton.edges.astype(np.uint32),
                   radii=skeleton.radii.astype(np.float32), space="physical")


def _ours(found: Any) -> Skeleton:
    radii = getattr(found, "radii", None)
    n = len(found.vertices)
    return Skeleton(np.asarray(found.vertices, np.float32).reshape(n, 3), np.asarray(found.edges, np.uint32).reshape(-1, 2),
                    np.zeros(n, np.float32) if radii is None else np.asarray(radii, np.float32).reshape(n))


def skeletonize_labels(
    labels: NDArray[Any],
    origin: tuple[int, ...],
    resolution: tuple[float, ...],
    *,
    interior: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    bodies: NDArray[np.uint64] | None = None,
    scale: float = 1.5,
    const: float | None = None,
) -> dict[int, tuple[Skeleton, NDArray[np.bool_]]]:
    """The TEASAR skeleton of every non-zero label of ``labels`` (a block whose first voxel
    is ``origin``), or of ``bodies``, with a mask of the vertices inside ``interior`` (start,
    stop in global voxels; default the whole block). Only edges that touch the interior are
    kept. ``scale`` and ``const`` (physical units; default 10 voxels) set how far around
    each path no branch starts: ``scale * radius + const``.

    >>> tube = np.zeros((40, 12, 12), np.uint64); tube[:, 3:9, 3:9] = 4
    >>> skeleton, inside = skeletonize_labels(tube, (0, 0, 0), (1.0, 1.0, 1.0))[4]
    >>> round(cable_length(skeleton)), components(skeleton), bool(inside.all())
    (43, 1, True)
    """
    import kimimaro

    data = np.asarray(labels)
    if bodies is not None:
        data = np.where(np.isin(data, bodies), data, 0)
    res = np.asarray(resolution, np.float64)
    params = {"scale": float(scale), "const": float(10 * res.min() if const is None else const),
              "pdrf_scale": 100000, "pdrf_exponent": 4,  # kimimaro's defaults from here on (somata: nm)
              "soma_acceptance_threshold": 3500, "soma_detection_threshold": 750, "soma_invalidation_const": 300,
              "soma_invalidation_scale": 2}
    found = kimimaro.skeletonize(np.ascontiguousarray(data), teasar_params=params, anisotropy=tuple(res),
                                 dust_threshold=0, fix_borders=False, progress=False, parallel=1, fix_branching=True)
    start, stop = interior if interior is not None else (tuple(origin), tuple(o + n for o, n in zip(origin, data.shape)))
    out = {}
    for label, skel in found.items():
        voxels = np.rint(np.asarray(skel.vertices, np.float64) / res).astype(np.int64) + np.asarray(origin)
        edges = np.asarray(skel.edges, np.int64).reshape(-1, 2)
        inside = np.all((voxels >= start) & (voxels < np.asarray(stop)), axis=1)
        used = np.zeros(len(voxels), bool)
        used[edges[inside[edges[:, 0]] | inside[edges[:, 1]]].ravel()] = True
        used |= inside  # a lone vertex (a body of one voxel's width) is kept too
        if not used.any():
            continue
        index = np.cumsum(used) - 1
        kept = edges[used[edges[:, 0]] & used[edges[:, 1]] & (inside[edges[:, 0]] | inside[edges[:, 1]])]
        vertices = ((voxels[used] + 0.5) * res)[:, ::-1]  # ZYX -> XYZ
        # an order that depends only on the geometry (not on the block's other labels)
        order, rank = geometric_order(vertices)
        edges_out = np.sort(rank[index[kept]], axis=1)
        edges_out = edges_out[np.lexsort((edges_out[:, 1], edges_out[:, 0]))]
        out[int(label)] = (Skeleton(vertices[order].astype(np.float32), edges_out.astype(np.uint32),
                                    np.asarray(skel.radii, np.float32)[used][order]), inside[used][order])
    return out


def join_skeletons(pieces: list[tuple[Skeleton, NDArray[np.bool_]]], voxel: float = 1.0, tolerance: float = JOIN_TOLERANCE) -> Skeleton:
    """One skeleton from a body's pieces (each with its mask of vertices inside its own
    block): a vertex outside its block is snapped to the nearest inside vertex of another
    piece within the body's radius there plus ``voxel`` (a voxel's diagonal), the same points merged,
    and loops broken (kimimaro's postprocess, no dust or tick removed)."""
    pieces = [(p, m) for p, m in pieces if len(p.vertices)]
    if not pieces:
        return Skeleton.empty()
    vertices, edges = stack([p.vertices for p, _ in pieces], [p.edges.reshape(-1, 2) for p, _ in pieces])
    inside = np.concatenate([m for _, m in pieces])
    owner = np.concatenate([np.full(len(p.vertices), k) for k, (p, _) in enumerate(pieces)])
    radii = np.concatenate([p.radii for p, _ in pieces]).astype(np.float64)
    target = np.arange(len(vertices))
    outside = np.nonzero(~inside)[0]
    if len(outside) and inside.any():
        from scipy.spatial import cKDTree

        anchors = np.nonzero(inside)[0]
        tree = cKDTree(vertices[anchors])
        k = min(8, len(anchors))
        distance, found = tree.query(vertices[outside], k=k)
        distance, found = distance.reshape(len(outside), k), found.reshape(len(outside), k)
        for row, i in enumerate(outside):
            for d, j in zip(distance[row], found[row]):
                candidate = anchors[j]
                if owner[candidate] != owner[i] and d <= 2 * radii[i] + voxel:
                    target[i] = candidate
                    break
    edges = target[edges]
    first, group = merge_points(vertices[target], tolerance)
    edges = group[edges]
    edges = np.unique(np.sort(edges[edges[:, 0] != edges[:, 1]], axis=1), axis=0).reshape(-1, 2)
    used = np.zeros(len(first), bool)
    used[edges.ravel()] = True
    used |= inside[first]
    index = np.cumsum(used) - 1
    merged = Skeleton(vertices[first][used].astype(np.float32), index[edges].astype(np.uint32),
                      radii[first][used].astype(np.float32))
    pieces_left = components(merged)
    if pieces_left == 1 and len(merged.edges) == len(merged.vertices) - 1:
        return merged  # one tree already: nothing to mend
    import kimimaro

    mended = kimimaro.postprocess(_osteoid(merged), dust_threshold=0, tick_threshold=0)
    if len(mended.vertices) and components(_ours(mended)) > 1:
        # a short branch one block made towards a bulge, whose path to the body's centre line
        # lies in a block that made no branch there, ends within a few radii of that line
        reach = 4 * float(np.median(mended.radii)) + voxel
        mended = kimimaro.join_close_components([mended], radius=reach)
    return _ours(mended)


def cable_length(skeleton: Skeleton) -> float:
    """The summed length of the edges (physical units)."""
    if len(skeleton.edges) == 0:
        return 0.0
    v = skeleton.vertices.astype(np.float64)
    e = skeleton.edges.astype(np.int64)
    return float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).sum())


def _component_labels(n: int, edges: NDArray[Any]) -> tuple[int, NDArray[np.int32]]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = edges.astype(np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels


def components(skeleton: Skeleton) -> int:
    """The number of connected pieces (1 for one tree)."""
    return _component_labels(len(skeleton.vertices), skeleton.edges)[0] if len(skeleton.vertices) else 0


@dataclass(frozen=True)
class ErlScore:
    """Expected run length of a segmentation along ground-truth skeletons.

    ``erl``: the expected length of the error-free run from a random point of the skeletons
    (physical units); ``max_erl``: the same for a perfect segmentation (every skeleton one
    run), so ``erl / max_erl`` is 1 at best; ``merges``: segments on more than one skeleton;
    ``splits``: extra segments along skeletons (distinct segments per skeleton minus one);
    ``omitted``: skeleton nodes on background."""

    erl: float
    max_erl: float
    skeletons: int
    total_length: float
    merges: int
    splits: int
    omitted: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        share = self.erl / self.max_erl if self.max_erl else 0.0
        return (f"ERL {self.erl:.1f} of {self.max_erl:.1f} ({share:.1%}) along {self.skeletons} skeletons "
                f"({self.total_length:.1f} long): {self.merges} merging segments, {self.splits} splits, "
                f"{self.omitted} nodes on background")


def expected_run_length(skeletons: dict[int, Skeleton], node_labels: dict[int, NDArray[np.uint64]]) -> ErlScore:
    """ERL of a segmentation whose label at each skeleton node is ``node_labels[id]``.

    An edge is correct when both its nodes lie in the same non-zero segment and that segment
    lies on no other skeleton (else it is a merge, and all its edges count as errors, as in
    funlib.evaluate). Runs are the connected pieces of correct edges;
    ERL = sum(run length²) / total length.

    >>> line = Skeleton(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], np.float32),
    ...                 np.array([[0, 1], [1, 2], [2, 3]], np.uint32), np.ones(4, np.float32))
    >>> expected_run_length({1: line}, {1: np.array([5, 5, 5, 5], np.uint64)}).erl
    3.0
    >>> expected_run_length({1: line}, {1: np.array([5, 5, 6, 6], np.uint64)}).erl   # split in the middle: 1² + 1²
    0.6666666666666666
    """
    owners: dict[int, set[int]] = {}
    for sid, labels in node_labels.items():
        for label in np.unique(labels[labels != 0]).tolist():
            owners.setdefault(label, set()).add(sid)
    merging = {label for label, ids in owners.items() if len(ids) > 1}
    total = best = squares = 0.0
    splits = omitted = 0
    for sid, skel in skeletons.items():
        labels = np.asarray(node_labels[sid], np.uint64)
        e = skel.edges.astype(np.int64).reshape(-1, 2)
        v = skel.vertices.astype(np.float64)
        lengths = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1) if len(e) else np.zeros(0)
        length = float(lengths.sum())
        total += length
        _, pieces = _component_labels(len(v), e)  # a skeleton in pieces is several perfect runs
        best += float(np.square(np.bincount(pieces[e[:, 0]], lengths, minlength=pieces.max() + 1 if len(v) else 0)).sum()) if len(e) else 0.0
        a, b = labels[e[:, 0]], labels[e[:, 1]]
        bad = np.isin(a, np.fromiter(merging, np.uint64, len(merging))) if merging else np.zeros(len(e), bool)
        good = (a == b) & (a != 0) & ~bad
        if good.any():
            _, runs = _component_labels(len(v), e[good])
            squares += float(np.square(np.bincount(runs[e[good, 0]], lengths[good])).sum())
        present = np.unique(labels[labels != 0])
        splits += max(0, len(present) - 1)
        omitted += int(np.count_nonzero(labels == 0))
    return ErlScore(squares / total if total else 0.0, best / total if total else 0.0, len(skeletons), total,
                    len(merging), splits, omitted)
