"""Agglomeration across blocks, the policy in one place: which contacts cross a face,
which refusals keep theirs out, and the agglomeration of the whole volume's summed graph.

With ``options.agglomerate-across-blocks`` the stitched labels are supervoxels, and the
agglomeration runs once, on the driver, over the region graph summed from every
interior's statistics and every face's contacts (:func:`face_contacts`). A pair of
segments the stitching rule refused across a face must not merge through that face
either, or a bad block's merge would spread exactly as the rules prevent; but only where
one side separates, inside its own interior, what the other side joins
(:func:`protective_refusals`), so that a branch whose join lies beyond the face keeps
its only contact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .agglomeration import EdgeStats
from .graphparts import GraphPart, pair_statistics, sum_graph
from .contacts import across
from .matching import FaceCandidates, reasons
from .rag import numbered_roots
from .resolve import LabelMapping
from .rules import Reason, StitchRule, check_rule_params
from .stitching import StitchResult, to_bodies

__all__ = ["agglomerate_across", "face_contacts", "protective_refusals", "refused_pairs", "touching_pairs"]


def face_contacts(
    labels_a: NDArray[np.integer], boundary_a: NDArray[np.floating],
    labels_b: NDArray[np.integer], boundary_b: NDArray[np.floating],
    further_a: NDArray[np.floating] | None = None, further_b: NDArray[np.floating] | None = None,
    kinds: tuple[int, ...] = (),
) -> GraphPart:
    """The contacts across one face: ``labels_a`` / ``boundary_a`` are the lower
    subvolume's last interior plane (labels, boundary probability), ``labels_b`` /
    ``boundary_b`` the upper one's first, voxel for voxel; each pair of non-zero labels is
    valued by the mean of its two voxels' boundary probability, as inside a volume, and
    with ``kinds`` carries the further values of the two planes ``further_a`` /
    ``further_b`` (:meth:`labelstitch.contacts.Contacts.planes`)."""
    la, lb = np.asarray(labels_a).reshape(-1), np.asarray(labels_b).reshape(-1)
    ba = np.asarray(boundary_a, np.float32).reshape(-1)
    bb = np.asarray(boundary_b, np.float32).reshape(-1)
    both = (la != 0) & (lb != 0)
    values = (ba[both] + bb[both]) * np.float32(0.5)  # as the region-graph kernel rounds it
    further = None
    if kinds:
        assert further_a is not None and further_b is not None
        rows = [np.asarray(f, np.float32).reshape(-1, len(kinds))[both] for f in (further_a, further_b)]
        further = across(kinds, *rows)
    return pair_statistics(la[both], lb[both], values, further)


def refused_pairs(found: FaceCandidates | None, rule: StitchRule, **params: object) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """The segment pairs ``(a, b)`` of a face that were candidates and that the rule refused
    (a pair of which some connected piece matched is not refused). Agglomeration across
    blocks keeps these pairs from merging through the face, as stitching does."""
    none = np.zeros(0, np.uint64)
    if found is None:
        return none, none
    check_rule_params(rule, params)
    reason = reasons(found, rule, params)
    cand = found.cand
    refused = (reason != Reason.ACCEPTED) & (reason != Reason.NOT_CANDIDATE)
    a, b, ma, mb = cand.a[refused], cand.b[refused], cand.a[reason == Reason.ACCEPTED], cand.b[reason == Reason.ACCEPTED]
    if found.pieces is not None:
        label_of_a, label_of_b = found.pieces[:2]
        a, b, ma, mb = label_of_a[a], label_of_b[b], label_of_a[ma], label_of_b[mb]
    if a.size == 0:
        return none, none
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    if ma.size:  # a pair of which some piece matched is joined, not refused
        matched = {(int(x), int(y)) for x, y in zip(ma, mb)}
        pairs = pairs[[(int(x), int(y)) not in matched for x, y in pairs]]
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


def touching_pairs(labels: NDArray[Any]) -> set[tuple[int, int]]:
    """The pairs ``(low, high)`` of different non-zero labels that touch (6-neighbours) in
    ``labels``: the edges of its region graph (the numba kernel of :mod:`labelstitch.rag`).

    >>> sorted(touching_pairs(np.array([[[1, 1, 2, 0, 3]]])))
    [(1, 2)]
    """
    from .rag import region_graph, renumber

    dense, old = renumber(labels)
    graph = region_graph(dense, np.zeros(dense.shape, np.float32))
    return set(zip(old[graph.u.astype(np.int64) - 1].tolist(), old[graph.v.astype(np.int64) - 1].tolist()))


def protective_refusals(
    found: FaceCandidates | None, refused: tuple[NDArray[np.uint64], NDArray[np.uint64]],
    touch_a: set[tuple[int, int]], touch_b: set[tuple[int, int]],
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Of a face's refused pairs ``(a, b)``, those a refusal should keep apart when
    agglomerating across blocks: where one side separates, inside its own interior, what
    the other side joins (``b`` touches another segment of B's interior that ``a`` also
    overlaps, or the other way round). There the agglomeration can weigh the two pieces on
    that side's own contact, and dropping ``a``-``b`` keeps a bad block's merge from
    spreading. A refused piece that touches none of its partner's other partners (a branch
    whose link lies beyond the face) keeps its contact: without it, it would lose its only
    way to its neurite. ``touch_a`` / ``touch_b`` are the :func:`touching_pairs` of each
    side's labels in the slab's part inside its own interior."""
    a, b = refused
    if found is None or a.size == 0:
        return a, b
    cand = found.cand
    ca, cb = cand.a, cand.b
    if found.pieces is not None:
        ca, cb = found.pieces[0][ca], found.pieces[1][cb]
    partners_a: dict[int, set[int]] = {}
    partners_b: dict[int, set[int]] = {}
    for x, y in zip(ca.tolist(), cb.tolist()):
        partners_a.setdefault(x, set()).add(y)
        partners_b.setdefault(y, set()).add(x)
    keep = []
    for x, y in zip(a.tolist(), b.tolist()):
        others_b = partners_a.get(x, set()) - {y}
        others_a = partners_b.get(y, set()) - {x}
        split_in_b = any((min(y, o), max(y, o)) in touch_b for o in others_b)
        split_in_a = any((min(x, o), max(x, o)) in touch_a for o in others_a)
        keep.append(split_in_a or split_in_b)
    mask = np.array(keep, bool)
    return a[mask], b[mask]


def agglomerate_across(
    result: StitchResult,
    graphs: Mapping[int, GraphPart],
    contacts: list[GraphPart],
    agglomerate: Callable[[EdgeStats], NDArray[np.int64]],
) -> StitchResult:
    """Agglomerate stitched supervoxels once over the whole volume's region graph.

    ``result`` stitched supervoxels: its bodies are the volume's supervoxels. ``graphs[id]``
    is subvolume ``id``'s interior graph and ``contacts[i]`` the contacts across face ``i``
    of the plan (without those between pairs the rule refused, so a refusal keeps its
    protection), all in the subvolumes' own labels. They are mapped to supervoxel ids and
    summed (each voxel pair once: it lies in one interior or straddles one face), and
    ``agglomerate(stats)`` gives the root of every supervoxel. Returns ``result`` with the
    agglomerated bodies as its mapping; the driver holds only the graph, never voxels.
    """
    mapping = result.mapping
    parts = []
    channels = 1
    for sv in result.plan:
        labels, bodies = mapping.for_subvolume(sv.id)
        g = graphs[sv.id]
        channels = g.inside.shape[1]
        ids = [to_bodies(x, labels, bodies) for x in (g.nodes, g.u, g.v)]
        parts.append(replace(g, nodes=ids[0], u=ids[1], v=ids[2]))
    for face, c in zip(result.plan.faces(), contacts):
        u = to_bodies(c.u, *mapping.for_subvolume(face.a))
        v = to_bodies(c.v, *mapping.for_subvolume(face.b))
        parts.append(replace(c, u=u, v=v))
    stats = sum_graph(parts, mapping.n_bodies, channels)
    graph_bytes = sum(p.nbytes for p in parts)
    del parts
    roots = np.asarray(agglomerate(stats), np.int64)
    if roots.shape != (mapping.n_bodies + 1,):
        raise ValueError(f"the agglomeration returned {roots.shape[0]} roots for a graph of {mapping.n_bodies} supervoxels")
    table = numbered_roots(roots)
    n_bodies = int(table.max())
    agglomerated = LabelMapping(mapping.subvolume, mapping.label, table[mapping.body.astype(np.int64)], n_bodies)
    info = {"supervoxels": mapping.n_bodies, "edges": int(stats.u.size), "graph_bytes": int(graph_bytes), "bodies": n_bodies}
    return replace(result, mapping=agglomerated, agglomeration=info)
