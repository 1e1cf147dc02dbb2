"""The stitch's pieces and its result: cut a block's face slabs and interior labels, check a
stitch before any block is read, assemble every face's matches into global body ids
(:class:`StitchResult`), and relabel an interior with them.

The steps that run them over a plan, on any executor, are
:mod:`labelstitch.pipeline.stitch` (``labelstitch.stitch`` is those steps on in-memory
blocks, run serially); the matching of one face is :mod:`labelstitch.matching`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._validation import as_labels
from .geometry import Face, Plan, Subvolume
from .contingency import label_counts
from .matching import FaceMatches, FaceReport
from .relabel import remap
from .resolve import LabelMapping, resolve
from .rules import StitchRule, check_rule_params

__all__ = ["BlockSource", "Match", "MatchTable", "StitchResult", "assemble", "block_loader", "check_stitch", "face_slabs",
           "faces_by_subvolume", "interior_labels", "relabel_interior", "to_bodies"]

BlockSource = Union[Mapping[int, ArrayLike], Callable[[Subvolume], ArrayLike]]


@dataclass(frozen=True)
class Match:
    """One accepted match across a face.

    Attributes
    ----------
    face : Face
    a, b : int
        The matched labels, local to subvolumes ``face.a`` and ``face.b``.
    count : int
        Voxels the two segments share in the face's overlap box.
    size_a, size_b : int
        Each segment's voxels in the overlap box.
    """

    face: Face
    a: int
    b: int
    count: int
    size_a: int
    size_b: int


@dataclass(frozen=True)
class MatchTable:
    """All matches of a stitch as columns; iterating yields :class:`Match` objects.

    ``face`` indexes into :attr:`faces`; ``sv_a``/``sv_b`` repeat the face's subvolume ids.
    """

    faces: tuple[Face, ...]
    face: NDArray[np.int64]
    sv_a: NDArray[np.uint64]
    a: NDArray[np.uint64]
    sv_b: NDArray[np.uint64]
    b: NDArray[np.uint64]
    count: NDArray[np.int64]
    size_a: NDArray[np.int64]
    size_b: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.face.size)

    def __iter__(self) -> Iterator[Match]:
        for i in range(len(self)):
            yield Match(
                self.faces[int(self.face[i])],
                int(self.a[i]),
                int(self.b[i]),
                int(self.count[i]),
                int(self.size_a[i]),
                int(self.size_b[i]),
            )

    @classmethod
    def from_faces(cls, faces: tuple[Face, ...], per_face: list[FaceMatches]) -> MatchTable:
        """Concatenate the matches of each face (``per_face[i]`` belongs to ``faces[i]``)."""
        lengths = [len(m) for m in per_face]
        face = np.repeat(np.arange(len(faces), dtype=np.int64), lengths)
        sv_a = np.repeat(np.array([f.a for f in faces], dtype=np.uint64), lengths)
        sv_b = np.repeat(np.array([f.b for f in faces], dtype=np.uint64), lengths)

        def cat(name: str, dtype: DTypeLike) -> NDArray[Any]:
            parts = [getattr(m, name) for m in per_face]
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        return cls(
            faces,
            face,
            sv_a,
            cat("a", np.uint64),
            sv_b,
            cat("b", np.uint64),
            cat("count", np.int64),
            cat("size_a", np.int64),
            cat("size_b", np.int64),
        )


@dataclass(frozen=True)
class StitchResult:
    """What :func:`stitch` produced.

    Attributes
    ----------
    plan : Plan
    rule : str
    params : dict
        The rule parameters as given (defaults are not repeated).
    matches : MatchTable
    mapping : LabelMapping
        Global body id of every ``(subvolume, label)`` seen in an interior or a match.
    reports : tuple of FaceReport
        One per face of ``plan.faces()``, in the same order.
    """

    plan: Plan
    rule: str
    params: dict[str, Any]
    connected_components: bool
    matches: MatchTable
    mapping: LabelMapping
    reports: tuple[FaceReport, ...]
    _load: Callable[[Subvolume], NDArray[np.unsignedinteger]]
    #: with agglomeration across blocks: the graph's size and what the agglomeration did
    agglomeration: dict[str, Any] | None = None
    #: per subvolume, its interior labels and the voxels of each
    label_voxels: Mapping[int, tuple[NDArray[np.uint64], NDArray[np.int64]]] | None = None

    @property
    def n_bodies(self) -> int:
        return self.mapping.n_bodies

    def body_voxels(self) -> NDArray[np.int64]:
        """Voxels of every body (index: body id; 0: none), from the interiors' label
        counts, without reading a voxel (empty when the counts were not kept)."""
        sizes = np.zeros(self.n_bodies + 1, np.int64)
        if self.label_voxels is None:
            return sizes[:0]
        for sv in self.plan:
            counted, voxels = self.label_voxels[sv.id]
            np.add.at(sizes, to_bodies(counted, *self.mapping.for_subvolume(sv.id)).astype(np.int64), voxels)
        return sizes

    def relabel(self, sv_id: int, block: ArrayLike | None = None) -> NDArray[np.uint64]:
        """The interior of subvolume ``sv_id`` in global body ids (uint64).

        ``block`` is the subvolume's labels over its outer box; by default it is loaded
        from the block source given to :func:`stitch`.
        """
        sv = self.plan[sv_id]
        data = self._load(sv) if block is None else _checked_block(sv, block)
        return relabel_interior(sv, data, *self.mapping.for_subvolume(sv_id))

    def to_array(self, dtype: DTypeLike = np.uint64) -> NDArray[np.integer]:
        """The stitched volume of the plan's shape; voxels outside every interior are 0.

        Holds the whole volume in memory: for volumes that do not fit, write each
        :meth:`relabel` result to a store instead.
        """
        if not np.issubdtype(np.dtype(dtype), np.integer):
            raise ValueError(f"`dtype` must be an integer dtype, got {np.dtype(dtype)}")
        out = np.zeros(self.plan.shape, dtype=dtype)
        if self.n_bodies > np.iinfo(out.dtype).max:
            raise ValueError(f"{self.n_bodies} bodies do not fit `dtype` {out.dtype}")
        for sv in self.plan:
            out[sv.interior.slices()] = self.relabel(sv.id)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts over all faces: matches, refusals by reason, bodies."""
        refused: dict[str, int] = {}
        for r in self.reports:
            for reason, n in r.refused.items():
                refused[reason] = refused.get(reason, 0) + n
        return {
            "rule": self.rule,
            "params": dict(self.params),
            "connected_components": self.connected_components,
            "subvolumes": len(self.plan),
            "faces": len(self.reports),
            "segments": len(self.mapping),
            "candidates": sum(r.candidates for r in self.reports),
            "matches": len(self.matches),
            "refused": dict(sorted(refused.items())),
            "bodies": self.n_bodies,
            **({"agglomeration": dict(self.agglomeration)} if self.agglomeration is not None else {}),
        }


def relabel_interior(
    sv: Subvolume, block: NDArray[Any], labels: NDArray[np.uint64], bodies: NDArray[np.uint64]
) -> NDArray[np.uint64]:
    """The interior of ``block`` (labels over ``sv``'s outer box) with ``labels[i]`` replaced
    by ``bodies[i]``; 0 stays 0 and any other label is an error (it would have no body)."""
    return to_bodies(block[sv.interior.slices(sv.outer)], labels, bodies)


def to_bodies(values: NDArray[Any], labels: NDArray[np.uint64], bodies: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """``values`` (labels of one subvolume) with ``labels[i]`` replaced by ``bodies[i]``; 0
    stays 0 and any other label is an error (it would have no body)."""
    zero = np.zeros(1, np.uint64)  # background stays 0; a plain [0] would promote uint64 to float64
    table = (np.concatenate([zero, labels]), np.concatenate([zero, bodies]))
    return remap(values, table, preserve_missing=False, dtype=np.uint64).astype(np.uint64, copy=False)


def _checked_block(sv: Subvolume, block: ArrayLike) -> NDArray[np.unsignedinteger]:
    arr = as_labels(block, "blocks", where=f"for subvolume {sv.id} (interior {sv.interior})")
    if arr.shape != sv.outer.shape:
        raise ValueError(
            f"block for subvolume {sv.id} has shape {arr.shape}, expected {sv.outer.shape}: "
            f"labels must cover the outer box {sv.outer} (interior {sv.interior} plus halo)"
        )
    return arr


def block_loader(plan: Plan, blocks: BlockSource) -> Callable[[Subvolume], NDArray[np.unsignedinteger]]:
    """``load(sv)``: subvolume ``sv``'s labels from ``blocks`` (a mapping by subvolume id, or a
    callable), checked as they are read; a mapping without every subvolume is refused here."""
    if isinstance(blocks, Mapping):
        missing = [sv for sv in plan if sv.id not in blocks]
        if missing:
            sv = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(
                f"`blocks` has no labels for subvolume {sv.id} (interior {sv.interior}){more}; "
                "every subvolume of the plan needs its labels over its outer box"
            )
        return lambda sv: _checked_block(sv, blocks[sv.id])
    if callable(blocks):
        return lambda sv: _checked_block(sv, blocks(sv))
    raise ValueError(f"`blocks` must be a mapping {{subvolume id: labels}} or a callable, got {type(blocks).__name__}")


def check_stitch(plan: Plan, rule: StitchRule, rule_params: dict[str, Any]) -> None:
    """Everything about a stitch that can be checked before reading a block.

    Raises
    ------
    ValueError
        Not a Plan, an unknown rule or parameter, or a halo of 0 with a rule that needs
        overlap (blocks would share no voxels to match on).
    """
    if not isinstance(plan, Plan):
        raise ValueError(f"`plan` must be a labelstitch.Plan, got {type(plan).__name__}")
    check_rule_params(rule, rule_params)
    if rule.name != "none":
        flat_axes = sorted({f.axis for f in plan.faces() if f.box.empty})
        if flat_axes:
            raise ValueError(
                f"`halo` is 0 along axis {', '.join('ZYX'[a] for a in flat_axes)}: neighbouring blocks share no "
                f"voxels there, so rule {rule.name!r} cannot match across them; use halo >= 1 or rule='none'"
            )


def faces_by_subvolume(plan: Plan) -> dict[int, list[tuple[int, Face]]]:
    """``{subvolume id: [(face index, face), ...]}`` for every face a subvolume takes part in."""
    found: dict[int, list[tuple[int, Face]]] = {sv.id: [] for sv in plan}
    for i, f in enumerate(plan.faces()):
        found[f.a].append((i, f))
        found[f.b].append((i, f))
    return found


def interior_labels(sv: Subvolume, block: NDArray[Any]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """The non-zero labels of a block's interior (the nodes this subvolume contributes) and
    the voxels of each."""
    labels, counts = label_counts(block[sv.interior.slices(sv.outer)])
    keep = labels != 0
    return labels[keep].astype(np.uint64), counts[keep].astype(np.int64)


def face_slabs(sv: Subvolume, block: NDArray[Any], faces: list[tuple[int, Face]]) -> list[tuple[int, NDArray[Any]]]:
    """This subvolume's side of each of its faces: its labels cut to the face's overlap box."""
    return [(i, block[face.box.slices(sv.outer)]) for i, face in faces]


def assemble(
    plan: Plan,
    rule: str,
    rule_params: dict[str, Any],
    connected_components: bool,
    per_face: list[FaceMatches],
    reports: list[FaceReport],
    nodes: dict[int, NDArray[np.uint64]],
    load: Callable[[Subvolume], NDArray[np.unsignedinteger]],
    voxels: dict[int, NDArray[np.int64]] | None = None,
) -> StitchResult:
    """Resolve the matches of every face (``per_face[i]`` for ``plan.faces()[i]``) together
    with every subvolume's interior labels (and, with ``voxels``, their voxel counts) into a
    :class:`StitchResult`."""
    matches = MatchTable.from_faces(plan.faces(), per_face)
    node_sv = [np.full(nodes[sv.id].size, sv.id, np.uint64) for sv in plan]
    node_label = [nodes[sv.id] for sv in plan]
    mapping = resolve(
        matches.sv_a,
        matches.a,
        matches.sv_b,
        matches.b,
        nodes=(np.concatenate(node_sv) if node_sv else [], np.concatenate(node_label) if node_label else []),
    )
    return StitchResult(
        plan, rule, dict(rule_params), connected_components, matches, mapping, tuple(reports), load,
        label_voxels=None if voxels is None else {sv.id: (nodes[sv.id], voxels[sv.id]) for sv in plan},
    )
