"""Segmentation quality: variation of information split into false merges and false splits.

One record, :class:`Score`, holds every score labelstitch reports (an array's VI, an
evaluated volume, a row of the paper's Table 2), and :func:`format_scores` prints any list
of them as that table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.hashing import pair_sum
from .contingency import count_pairs
from ._validation import as_labels, as_uint64_1d, check_same_shape, flat
from .geometry import Box, Plan, _triple

__all__ = [
    "RegionalVI", "Score", "floor_blockwise", "format_scores", "regional_vi", "score_table", "vi", "vi_blockwise", "vi_by_region",
]


@dataclass(frozen=True)
class Score:
    """Variation of information in bits, with what is known about the scored segmentation.

    Attributes
    ----------
    merge : float
        H(gt | seg): false merges (one segment covering several true bodies).
    split : float
        H(seg | gt): false splits (one true body cut into several segments).
    bodies : int, optional
        Distinct non-zero labels of the segmentation.
    name, rule, params, matches, seconds, output : optional
        For a row of a comparison: the variant's name, its stitching rule and parameters,
        the matches it accepted, the seconds it took and where it was written.
    regional : RegionalVI, optional
        VI per region (the paper's Figure 9), where it was computed.
    seams : (float, float), optional
        VI in bands around the subvolume faces and around the subvolume middles
        (:func:`labelstitch.seams.audit_bands`): the seam audit of a written comparison.
    """

    merge: float
    split: float
    bodies: int | None = None
    name: str | None = None
    rule: str | None = None
    params: dict[str, Any] | None = None
    matches: int | None = None
    seconds: float | None = None
    output: str | None = None
    regional: RegionalVI | None = field(default=None, compare=False)
    seams: tuple[float, float] | None = field(default=None, compare=False)

    @property
    def total(self) -> float:
        return self.merge + self.split

    def to_dict(self) -> dict[str, Any]:
        """The known fields and ``total`` as plain JSON values (``regional`` left out)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("name", "rule", "params") if getattr(self, k) is not None}
        out.update(merge=self.merge, split=self.split, total=self.total)
        out.update({k: getattr(self, k) for k in ("bodies", "matches") if getattr(self, k) is not None})
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.output is not None:
            out["output"] = self.output
        if self.seams is not None:
            out["VI at faces"], out["VI in middles"] = self.seams
        return out

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name in ("merge", "split") or (f.name not in ("regional", "seams") and getattr(self, f.name) is not None)]
        return f"Score({', '.join(shown)})"

    def __str__(self) -> str:
        lines = [f"false merge VI  {self.merge:.4f} bits", f"false split VI  {self.split:.4f} bits",
                 f"total VI        {self.total:.4f} bits"]
        if self.bodies is not None:
            lines.append(f"bodies          {self.bodies}")
        return "\n".join(lines)


def format_scores(scores: Iterable[Score]) -> str:
    """Scores as a plain-text table like the paper's Table 2 (unknown values show as ``-``),
    with the seam audit's two columns where a score has them.

    >>> print(format_scores([Score(0.5, 1.25, bodies=3, name="medium", matches=7, seconds=0.1)]))
    stitching rule    bodies  matches  f.merge VI  f.split VI      VI  time s
    medium                 3        7       0.500       1.250   1.750    0.10
    """

    def cell(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    scores = list(scores)
    width = max([16] + [len(s.name or s.rule or "") + 2 for s in scores])  # long setting names keep the columns aligned
    seams = any(s.seams is not None for s in scores)
    lines = [f"{'stitching rule':<{width}}{'bodies':>8}{'matches':>9}{'f.merge VI':>12}{'f.split VI':>12}{'VI':>8}{'time s':>8}"
             + (f"{'VI at faces':>13}{'in middles':>12}" if seams else "")]
    for s in scores:
        at, away = s.seams if s.seams is not None else (None, None)
        lines.append(
            f"{s.name or s.rule or '':<{width}}{cell(s.bodies, 'd'):>8}{cell(s.matches, 'd'):>9}{s.merge:>12.3f}"
            f"{s.split:>12.3f}{s.total:>8.3f}{cell(s.seconds, '.2f'):>8}"
            + (f"{cell(at, '.3f'):>13}{cell(away, '.3f'):>12}" if seams else "")
        )
    return "\n".join(lines)


def _conditional_entropies(seg: NDArray, gt: NDArray, ignore_gt_zero: bool) -> Score:
    ks, kg, cnt, _ = count_pairs(flat(seg), flat(gt))
    return _entropies_from_pairs(ks, kg, cnt, ignore_gt_zero)


def _entropies_from_pairs(ks: NDArray, kg: NDArray, cnt: NDArray, ignore_gt_zero: bool) -> Score:
    """VI from a contingency table given as (seg label, gt label, count) triples."""
    if ignore_gt_zero:
        keep = kg != 0
        ks, kg, cnt = ks[keep], kg[keep], cnt[keep]
    total = cnt.sum()
    if total == 0:
        return Score(0.0, 0.0)
    p = cnt / total
    _, inv_s = np.unique(ks, return_inverse=True)
    _, inv_g = np.unique(kg, return_inverse=True)
    ps = np.bincount(inv_s, weights=p)[inv_s]
    pg = np.bincount(inv_g, weights=p)[inv_g]
    merge = float(-np.sum(p * np.log2(p / ps)))
    split = float(-np.sum(p * np.log2(p / pg)))
    return Score(max(0.0, merge), max(0.0, split))


def vi(seg: ArrayLike, gt: ArrayLike, *, ignore_gt_zero: bool = True) -> Score:
    """Variation of information between a segmentation and ground truth, in bits.

    One pass over the voxels builds the contingency table in a hash table, so time is
    linear in the volume and independent of how large the label ids are.

    Parameters
    ----------
    seg, gt : ndarray of int
        Same shape, any integer dtypes. Label 0 of ``seg`` is a segment like any other.
    ignore_gt_zero : bool
        Skip voxels where ``gt`` is 0 (unlabelled), as is usual (default).

    Returns
    -------
    Score
        ``merge`` = H(gt|seg), ``split`` = H(seg|gt), ``total``.

    Examples
    --------
    >>> gt = np.array([1, 1, 2, 2])
    >>> vi(np.array([5, 5, 5, 5]), gt)   # one false merge of two equal bodies
    Score(merge=1.0, split=0.0)
    >>> vi(np.array([1, 2, 3, 3]), gt).split
    0.5
    """
    s = as_labels(seg, "seg")
    g = as_labels(gt, "gt")
    check_same_shape(s, g, "seg", "gt")
    return _conditional_entropies(s, g, ignore_gt_zero)


@dataclass(frozen=True)
class RegionalVI:
    """VI per region of a regular grid (the paper's Figure 9 heatmap).

    Attributes
    ----------
    merge, split : (GZ, GY, GX) ndarray of float64
        VI parts per region, in bits.
    block : tuple of int
        Region size.
    boxes : list of Box
        The regions in raster order.
    """

    merge: NDArray[np.float64]
    split: NDArray[np.float64]
    block: tuple[int, int, int]
    boxes: tuple[Box, ...]

    @property
    def total(self) -> NDArray[np.float64]:
        return self.merge + self.split


def vi_by_region(
    seg: ArrayLike, gt: ArrayLike, block: int | tuple[int, int, int], *, ignore_gt_zero: bool = True
) -> RegionalVI:
    """VI of every ``block``-sized region of a 3-D volume (edge regions are clipped).

    Each region is scored on its own, so a false merge that joins two bodies elsewhere in
    the volume does not count inside a region where only one of them is present.

    Examples
    --------
    >>> gt = np.zeros((2, 2, 4), int); gt[..., 2:] = 1; gt += 1
    >>> seg = gt.copy(); seg[:, :, 2:] = 1     # the right half merged into the left body
    >>> r = vi_by_region(seg, gt, (2, 2, 2))
    >>> r.merge.shape, r.merge.ravel().tolist()
    ((1, 1, 2), [0.0, 0.0])
    >>> vi(seg, gt).merge
    1.0
    """
    s = as_labels(seg, "seg")
    g = as_labels(gt, "gt")
    check_same_shape(s, g, "seg", "gt")
    if s.ndim != 3:
        raise ValueError(f"`seg` must be 3-D (Z, Y, X), got {s.ndim}-D")
    return regional_vi(s.shape, block, lambda box: (s[box.slices()], g[box.slices()]), ignore_gt_zero=ignore_gt_zero)


def regional_vi(
    shape: tuple[int, ...],
    block: int | tuple[int, int, int],
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    ignore_gt_zero: bool = True,
) -> RegionalVI:
    """VI of every ``block``-sized region of a volume of ``shape``, where ``read(box)`` returns
    the segmentation and ground truth of one region (from arrays, or from stored volumes so
    that nothing larger than a region is ever loaded)."""
    block_ = _triple(block, "block")
    if any(b <= 0 for b in block_):
        raise ValueError(f"`block` must be positive on every axis, got {block_}")
    plan = Plan.grid(shape, block_, 0)
    merge = np.zeros(plan.grid_shape)
    split = np.zeros(plan.grid_shape)
    for sv in plan:
        seg, gt = read(sv.interior)
        r = _conditional_entropies(as_labels(seg, "seg"), as_labels(gt, "gt"), ignore_gt_zero)
        merge[sv.index], split[sv.index] = r.merge, r.split
    return RegionalVI(merge, split, block_, tuple(sv.interior for sv in plan))


def _table_blockwise(
    shape: tuple[int, ...], read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]], region: int
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[Any]]:
    """The contingency table ``(seg label, gt label, count)`` of two volumes read box by box."""
    parts: list[tuple[NDArray[Any], ...]] = []
    for sv in Plan.grid(shape, region, 0):
        seg, gt = read(sv.interior)
        s = np.ascontiguousarray(as_labels(seg, "seg")).reshape(-1)
        g = np.ascontiguousarray(as_labels(gt, "gt")).reshape(-1)
        ks, kg, cnt, first = count_pairs(s.astype(np.uint64, copy=False), g.astype(np.uint64, copy=False))
        parts.append((ks, kg, cnt, first))
        if len(parts) > 16:  # keep the partial tables small
            parts = [pair_sum(*(np.concatenate(c) for c in zip(*parts)))]
    ks, kg, cnt, _ = pair_sum(*(np.concatenate(c) for c in zip(*parts)))
    return ks, kg, cnt


def _runs(sorted_cols: list[NDArray[Any]]) -> NDArray[np.bool_]:
    """True where a row of lexsorted columns starts a new group."""
    n = sorted_cols[0].size
    change = np.zeros(n, bool)
    if n:
        change[0] = True
    for col in sorted_cols:
        change[1:] |= col[1:] != col[:-1]
    return change


def score_table(
    seg: ArrayLike,
    gt: ArrayLike,
    counts: ArrayLike,
    *,
    regions: ArrayLike | None = None,
    n_regions: int = 0,
    ignore_gt_zero: bool = True,
) -> tuple[Score, NDArray[np.float64], NDArray[np.float64]]:
    """VI of a contingency table given as rows ``(seg label, gt label, voxels)`` (a pair may
    come in several rows: they are summed), and, with ``regions`` (the region number of
    each row, < ``n_regions``), the VI of every region on its own (the paper's Figure 9).

    Returns the whole table's :class:`Score` (with its body count) and the per-region
    merge and split arrays (empty without ``regions``).

    >>> total, merge, split = score_table([5, 5, 5], [1, 2, 2], [2, 2, 2], regions=[0, 0, 1], n_regions=2)
    >>> round(total.merge, 3), total.bodies, merge.tolist(), split.tolist()   # body 5 merges gt 1 and 2
    (0.918, 1, [1.0, 0.0], [0.0, 0.0])
    """
    s = as_uint64_1d(seg, "seg")
    g = as_uint64_1d(gt, "gt")
    c = np.asarray(counts, dtype=np.float64).ravel()
    r = np.zeros(s.size, np.int64) if regions is None else np.asarray(regions, np.int64).ravel()
    if not (s.size == g.size == c.size == r.size):
        raise ValueError("`seg`, `gt`, `counts` and `regions` must have one entry per row")
    if ignore_gt_zero:
        keep = g != 0
        s, g, c, r = s[keep], g[keep], c[keep], r[keep]
    bodies = int(np.unique(s[s != 0]).size)

    def entropies(r: NDArray[np.int64], n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        order = np.lexsort((g, s, r))  # rows of one (region, seg, gt) together
        rs, ss, gs, cs = r[order], s[order], g[order], c[order]
        starts = np.flatnonzero(_runs([rs, ss, gs]))
        rs, ss, gs, cs = rs[starts], ss[starts], gs[starts], np.add.reduceat(cs, starts) if starts.size else cs[:0]
        total = np.bincount(rs, weights=cs, minlength=n)
        seg_group = np.cumsum(_runs([rs, ss])) - 1  # rows are sorted by (region, seg) too
        per_seg = np.bincount(seg_group, weights=cs)[seg_group]
        by_gt = np.lexsort((gs, rs))
        gt_group = np.empty(rs.size, np.int64)
        gt_group[by_gt] = np.cumsum(_runs([rs[by_gt], gs[by_gt]])) - 1
        per_gt = np.bincount(gt_group, weights=cs)[gt_group]
        p = cs / np.where(total[rs] > 0, total[rs], 1)
        merge = np.bincount(rs, weights=-p * np.log2(cs / per_seg), minlength=n)
        split = np.bincount(rs, weights=-p * np.log2(cs / per_gt), minlength=n)
        return np.maximum(merge, 0.0), np.maximum(split, 0.0)

    merge, split = entropies(np.zeros(s.size, np.int64), 1)
    score = Score(float(merge[0]), float(split[0]), bodies=bodies)
    if regions is None:
        return score, np.zeros(0), np.zeros(0)
    return (score, *entropies(r, n_regions))


def vi_blockwise(
    shape: tuple[int, ...],
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    region: int = 256,
    ignore_gt_zero: bool = True,
) -> Score:
    """VI and body count of a whole volume of ``shape``, where ``read(box)`` returns the
    segmentation and ground truth of one ``region``-sized box: the contingency table is
    accumulated box by box, so nothing larger than a box is ever loaded (for stored volumes
    far larger than memory). Equal to :func:`vi` on the whole arrays.

    >>> seg = np.array([[[5, 5, 5, 5]]]); gt = np.array([[[1, 1, 2, 2]]])
    >>> vi_blockwise(seg.shape, lambda box: (seg[box.slices()], gt[box.slices()]), region=2)
    Score(merge=1.0, split=0.0, bodies=1)
    """
    ks, kg, cnt = _table_blockwise(shape, read, region)
    score = _entropies_from_pairs(ks, kg, cnt, ignore_gt_zero)
    bodies = int(np.unique(ks[ks != 0]).size)
    return Score(score.merge, score.split, bodies=bodies)


def floor_blockwise(
    shape: tuple[int, ...],
    read: Callable[[Box], tuple[NDArray[Any], NDArray[Any]]],
    *,
    region: int = 256,
    ignore_gt_zero: bool = True,
) -> Score:
    """The perfect-agglomeration floor of a supervoxel volume: the VI of an oracle's
    agglomeration, which merges each supervoxel into the ground-truth body it overlaps most
    (ties: the smaller id; with ``ignore_gt_zero``, unlabelled voxels do not vote). Its false
    merges come from supervoxels that straddle bodies, which no agglomeration can undo.
    Read box by box like :func:`vi_blockwise`; ``bodies`` counts the floor's bodies.

    >>> gt = np.array([[[7, 7, 8, 8, 8, 8]]])
    >>> sv = np.array([[[1, 1, 2, 2, 3, 3]]])   # every supervoxel inside one body: floor 0
    >>> floor_blockwise(sv.shape, lambda box: (sv[box.slices()], gt[box.slices()]), region=4).total
    0.0
    >>> sv = np.array([[[1, 1, 1, 2, 2, 2]]])   # supervoxel 1 straddles bodies 7 and 8
    >>> f = floor_blockwise(sv.shape, lambda box: (sv[box.slices()], gt[box.slices()]), region=4)
    >>> round(f.merge, 3), round(f.split, 3), f.bodies
    (0.459, 0.541, 2)
    """
    ks, kg, cnt = _table_blockwise(shape, read, region)
    if ignore_gt_zero:
        keep = kg != 0
        ks, kg, cnt = ks[keep], kg[keep], cnt[keep]
    if ks.size == 0:
        return Score(0.0, 0.0, bodies=0)
    # per supervoxel, its largest overlap (then the smallest gt id): sort by sv, count desc, gt
    order = np.lexsort((kg, -cnt.astype(np.int64), ks))
    first = np.ones(order.size, bool)
    first[1:] = ks[order[1:]] != ks[order[:-1]]
    best_of = kg[order[first]]  # per distinct sv, in sorted sv order
    sv_ids = ks[order[first]]
    body = best_of[np.searchsorted(sv_ids, ks)]
    fb, fg, fc, _ = pair_sum(body, kg, cnt.astype(np.uint64), np.zeros(ks.size, np.uint64))
    score = _entropies_from_pairs(fb, fg, fc, False)
    return Score(score.merge, score.split, bodies=int(np.unique(fb).size))
