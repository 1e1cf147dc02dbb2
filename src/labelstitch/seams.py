"""The seam audit: does cutting the volume into subvolumes cost anything?

A blockwise segmentation can only go wrong at a subvolume face in ways an unblocked one
cannot: a body cut in two by a failed match (a false split at the face), two bodies joined
by a wrong one (a false merge across it). Whole-volume VI mixes those errors with every
other, so the audit compares like with like: a band of ``2 * width`` voxels straddling each
face between two neighbour subvolumes, against a control band of the same shape straddling
the middle plane of each subvolume (where nothing was cut). Each band is scored on its own,
and across its centre plane the audit counts the crossings that go wrong: pairs of segments
that meet there inside one true body (splits), and pairs of true bodies that one segment
spans (merges). Equal numbers at the faces and in the middles say the blocking is free.

:func:`agreement_blockwise` is the other half of trusting a blocked result: two runs of the
same config with different subvolume sizes should give the same bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validation import as_labels
from .geometry import Box, Plan
from .metrics import Score, _entropies_from_pairs, _table_blockwise, vi

__all__ = ["Agreement", "BandScore", "SeamAudit", "agreement_blockwise", "audit_bands", "seam_bands"]


@dataclass(frozen=True)
class BandScore:
    """The errors found in one kind of band (at faces, or in subvolume middles).

    Attributes
    ----------
    merge, split : float
        VI in bits of each band scored on its own, averaged over bands by their voxels.
    bands, voxels : int
        How many bands, and their voxels.
    plane_voxels : int
        Voxel pairs across the bands' centre planes.
    split_crossings, merge_crossings : int
        Across a centre plane, the distinct pairs of segments that meet inside one true body
        (splits) and the distinct pairs of true bodies one segment spans (merges), with at
        least ``min_contact`` voxel pairs each, summed over bands.
    split_voxels, merge_voxels : int
        The voxel pairs of those crossings.
    """

    merge: float
    split: float
    bands: int
    voxels: int
    plane_voxels: int
    split_crossings: int
    merge_crossings: int
    split_voxels: int
    merge_voxels: int

    @property
    def total(self) -> float:
        return self.merge + self.split

    def per_million(self, count: int) -> float:
        """``count`` per million voxel pairs across the centre planes."""
        return 1e6 * count / self.plane_voxels if self.plane_voxels else 0.0


@dataclass(frozen=True)
class SeamAudit:
    """Bands at subvolume faces against control bands in subvolume middles.

    >>> gt = np.ones((1, 1, 8), int)
    >>> seg = np.array([[[1, 1, 1, 1, 2, 2, 2, 2]]])   # one body cut at the face x = 4
    >>> plan = Plan.grid(gt.shape, (1, 1, 4), (0, 0, 1))
    >>> audit = audit_bands(plan, lambda box: (seg[box.slices()], gt[box.slices()]), width=1, min_contact=1)
    >>> audit.faces.split_crossings, audit.interiors.split_crossings
    (1, 0)
    >>> round(audit.faces.split, 3), audit.interiors.split
    (1.0, 0.0)
    """

    faces: BandScore
    interiors: BandScore
    width: int
    min_contact: int

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "min-contact": self.min_contact,
                "faces": asdict(self.faces), "interiors": asdict(self.interiors)}

    def __str__(self) -> str:
        head = (f"{'bands':<18}{'VI merge':>9}{'VI split':>9}{'VI total':>9}{'split crossings':>17}{'merge crossings':>17}"
                f"{'bands':>7}{'voxels':>12}")
        rows = [head]
        for name, b in (("at faces", self.faces), ("subvolume middles", self.interiors)):
            rows.append(f"{name:<18}{b.merge:9.4f}{b.split:9.4f}{b.total:9.4f}"
                        f"{b.split_crossings:>8} {b.per_million(b.split_voxels):6.0f}/M{b.merge_crossings:>8} "
                        f"{b.per_million(b.merge_voxels):6.0f}/M{b.bands:>7}{b.voxels:>12}")
        rows.append(f"bands are {2 * self.width} voxels across a centre plane; a crossing joins two segments inside one "
                    f"true body (split) or two true bodies inside one segment (merge), with at least {self.min_contact} "
                    f"voxel pairs; /M: its voxel pairs per million across the planes")
        return "\n".join(rows)

    @property
    def verdict(self) -> str:
        """One line: do the faces carry more error than the middles?"""
        f, i = self.faces, self.interiors
        extra = f.total - i.total
        if f.bands == 0:
            return "no faces: the volume was one subvolume"
        if extra <= 0.01 and f.per_million(f.split_voxels + f.merge_voxels) <= 1.5 * i.per_million(i.split_voxels + i.merge_voxels) + 50:
            return f"the faces carry no more error than the subvolume middles ({f.total:.3f} against {i.total:.3f} bits)"
        return (f"the faces carry more error than the subvolume middles ({f.total:.3f} against {i.total:.3f} bits, "
                f"{f.split_crossings} split and {f.merge_crossings} merge crossings against {i.split_crossings} and "
                f"{i.merge_crossings}): the blocking costs something; try a wider overlap or another stitching rule")


def seam_bands(plan: Plan, width: int) -> tuple[list[tuple[Box, int]], list[tuple[Box, int]]]:
    """The face bands and the middle bands of ``plan``, each as ``(box, axis)``: a face band
    spans the two neighbours' interiors, ``width`` voxels each side of the face; a middle band
    is the same shape around the middle plane of each subvolume, on the axes that have faces."""
    by_id = {sv.id: sv for sv in plan.subvolumes}
    faces: list[tuple[Box, int]] = []
    for face in plan.faces():
        a, b = by_id[face.a].interior, by_id[face.b].interior
        w = min(width, a.shape[face.axis], b.shape[face.axis])
        start, stop = list(a.start), list(a.stop)
        start[face.axis], stop[face.axis] = face.plane - w, face.plane + w
        faces.append((Box(tuple(start), tuple(stop)), face.axis))
    axes = {axis for _, axis in faces}
    middles: list[tuple[Box, int]] = []
    for sv in plan.subvolumes:
        for axis in sorted(axes):
            extent = sv.interior.shape[axis]
            w = min(width, extent // 2)
            if w == 0:
                continue
            mid = sv.interior.start[axis] + extent // 2
            start, stop = list(sv.interior.start), list(sv.interior.stop)
            start[axis], stop[axis] = mid - w, mid + w
            middles.append((Box(tuple(start), tuple(stop)), axis))
    return faces, middles


def _distinct(a: NDArray[np.uint64], b: NDArray[np.uint64], min_contact: int) -> tuple[int, int]:
    """Distinct unordered pairs ``(a, b)`` with at least ``min_contact`` rows, and their rows."""
    if a.size == 0:
        return 0, 0
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, counts = np.unique(np.stack([lo, hi], axis=1), axis=0, return_counts=True)
    kept = counts[counts >= min_contact]
    return int(kept.size), int(kept.sum())


def _crossings(seg: NDArray[Any], gt: NDArray[Any], axis: int, at: int, min_contact: int,
               ignore_gt_zero: bool) -> tuple[int, int, int, int, int]:
    """Splits and merges across the plane before index ``at`` of a band along ``axis``."""
    s0 = np.take(seg, at - 1, axis=axis).ravel().astype(np.uint64)
    s1 = np.take(seg, at, axis=axis).ravel().astype(np.uint64)
    g0 = np.take(gt, at - 1, axis=axis).ravel().astype(np.uint64)
    g1 = np.take(gt, at, axis=axis).ravel().astype(np.uint64)
    labelled = (g0 != 0) & (g1 != 0) if ignore_gt_zero else np.ones(g0.shape, bool)
    split = labelled & (g0 == g1) & (s0 != s1) & (s0 != 0) & (s1 != 0)
    merge = labelled & (g0 != g1) & (s0 == s1) & (s0 != 0)
    sc, sv = _distinct(s0[split], s1[split], min_contact)
    mc, mv = _distinct(g0[merge], g1[merge], min_contact)
    return s0.size, sc, mc, sv, mv


def _score(bands: list[tuple[Box, int]], read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
           min_contact: int, ignore_gt_zero: bool, tick: Callable[[], None]) -> BandScore:
    merge = split = 0.0
    voxels = plane = sc = mc = sv = mv = 0
    for box, axis in bands:
        seg, gt = read(box)
        seg, gt = as_labels(seg, "seg"), as_labels(gt, "gt")
        n = int(np.count_nonzero(gt)) if ignore_gt_zero else gt.size
        score = vi(seg, gt, ignore_gt_zero=ignore_gt_zero)
        merge += score.merge * n
        split += score.split * n
        voxels += n
        p, a, b, c, d = _crossings(seg, gt, axis, box.shape[axis] // 2, min_contact, ignore_gt_zero)
        plane, sc, mc, sv, mv = plane + p, sc + a, mc + b, sv + c, mv + d
        tick()
    weight = voxels or 1
    return BandScore(merge / weight, split / weight, len(bands), voxels, plane, sc, mc, sv, mv)


def audit_bands(
    plan: Plan,
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    width: int = 8,
    min_contact: int = 10,
    ignore_gt_zero: bool = True,
    tick: Callable[[], None] = lambda: None,
) -> SeamAudit:
    """Score the face bands of ``plan`` against its middle bands, where ``read(box)`` returns
    the segmentation and the reference (ground truth, or another run) of one band. Only the
    bands are read: about ``6 * width / block`` of the volume. ``tick`` is called per band."""
    if width < 1:
        raise ValueError(f"`width` must be at least 1 voxel, got {width}")
    if min_contact < 1:
        raise ValueError(f"`min_contact` must be at least 1 voxel pair, got {min_contact}")
    faces, middles = seam_bands(plan, width)
    return SeamAudit(_score(faces, read, min_contact, ignore_gt_zero, tick),
                     _score(middles, read, min_contact, ignore_gt_zero, tick), width, min_contact)


@dataclass(frozen=True)
class Agreement:
    """How far two segmentations of one volume agree (chunking invariance).

    Attributes
    ----------
    vi : Score
        VI of the first against the second as reference, every voxel counted: ``merge`` is
        where the first joins what the second keeps apart, ``split`` the reverse.
    bodies, same_bodies : int
        Non-zero bodies of the first, and how many of them are exactly a body of the second.
    voxels, changed_voxels : int
        Voxels, and voxels whose body is not exactly one of the other's.
    """

    vi: Score
    bodies: int
    same_bodies: int
    voxels: int
    changed_voxels: int

    def to_dict(self) -> dict[str, Any]:
        return {"vi": self.vi.to_dict(), "bodies": self.bodies, "same-bodies": self.same_bodies,
                "voxels": self.voxels, "changed-voxels": self.changed_voxels}

    def __str__(self) -> str:
        share = 100 * self.changed_voxels / self.voxels if self.voxels else 0.0
        return (f"VI between them {self.vi.total:.4f} bits (merge {self.vi.merge:.4f}, split {self.vi.split:.4f}); "
                f"{self.same_bodies} of {self.bodies} bodies identical; {self.changed_voxels} voxels "
                f"({share:.3f}%) in bodies that differ")


def _groups(keys: NDArray[np.uint64], weights: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.uint64]]:
    """Per row of a table: its key's number of rows and total weight; and the distinct keys."""
    uniq, inverse, rows = np.unique(keys, return_inverse=True, return_counts=True)
    totals = np.bincount(inverse, weights=weights.astype(np.float64)).astype(np.uint64)
    return uniq, rows[inverse], totals[inverse]


def agreement_blockwise(
    shape: tuple[int, ...],
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    region: int = 256,
) -> Agreement:
    """Compare two segmentations read box by box: VI and the bodies that are identical.

    >>> a = np.array([[[1, 1, 2, 2, 3, 3]]]); b = np.array([[[7, 7, 8, 8, 8, 8]]])
    >>> agreement_blockwise(a.shape, lambda box: (a[box.slices()], b[box.slices()]), region=4).same_bodies
    1
    """
    ks, ko, cnt = _table_blockwise(shape, read, region)
    score = _entropies_from_pairs(ks, ko, cnt, False)
    mine, rows_s, total_s = _groups(ks, cnt)
    _, rows_o, total_o = _groups(ko, cnt)
    same = (rows_s == 1) & (rows_o == 1) & (ks != 0)
    changed = int(cnt[(~same) & (ks != 0)].sum())
    return Agreement(score, int(np.count_nonzero(mine)), int(np.count_nonzero(same)), int(cnt.sum()), changed)



