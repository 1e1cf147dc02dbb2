"""Block geometry: boxes, subvolumes, the faces between them, and the plan that tiles a volume.

Everything is in ZYX order and in global voxel coordinates. A :class:`Plan` is pure
bookkeeping: it never touches voxel data, so it can be built, saved (:meth:`Plan.to_dict`)
and compared cheaply on a driver.

Edges and corners
-----------------
:meth:`Plan.faces` lists the 6-connected neighbour pairs only. Blocks that touch at an edge
or a corner also share voxels (where their halos cross), but they never need a face of their
own, for two reasons:

* every output voxel is written by exactly one subvolume, the one whose *interior* holds
  it, so no voxel can receive two different labels;
* each face's overlap box spans the whole outer extent of the pair in the two directions
  along the face, halos included. A segment that passes diagonally from block A to block D
  through an edge is therefore seen, on its middle plane, by the faces A|B and B|D (and A|C,
  C|D); the matches on those faces join A's and D's labels through B's or C's label, even
  when B and C hold none of that segment's interior voxels.

``tests/test_stitch.py`` checks both points on segments that cross only through an edge
or a corner.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Box", "Face", "Plan", "Subvolume", "misaligned_axis", "roi_chunks", "roi_mask", "roi_runs_near"]

Triple = tuple[int, int, int]


def _triple(value: int | Sequence[int], name: str) -> Triple:
    """Expand an int to three equal entries, or check a 3-sequence of ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 3
    items = tuple(value)
    if len(items) != 3 or not all(isinstance(v, (int, np.integer)) for v in items):
        raise ValueError(f"`{name}` must be an int or 3 ints (Z, Y, X), got {value!r}")
    return (int(items[0]), int(items[1]), int(items[2]))


@dataclass(frozen=True, order=True)
class Box:
    """A half-open box ``[start, stop)`` of voxels, in ZYX order.

    Examples
    --------
    >>> box = Box((0, 0, 0), (4, 8, 8))
    >>> box.shape, box.size
    ((4, 8, 8), 256)
    >>> box.grow(2).clip(Box((0, 0, 0), (10, 10, 10)))
    Box(start=(0, 0, 0), stop=(6, 10, 10))
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != len(stop):
            raise ValueError(f"`start` {start} and `stop` {stop} must have the same length")
        if any(b < a for a, b in zip(start, stop)):
            raise ValueError(f"`stop` {stop} must not be below `start` {start}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @classmethod
    def from_shape(cls, shape: Sequence[int]) -> Box:
        """The box ``[0, shape)``."""
        return cls((0,) * len(shape), tuple(shape))

    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def empty(self) -> bool:
        return self.size == 0

    def grow(self, by: int | Sequence[int]) -> Box:
        """The box widened by ``by`` voxels on every side (per axis if a sequence)."""
        by_ = (by,) * self.ndim if isinstance(by, (int, np.integer)) else tuple(by)
        return Box(
            tuple(a - g for a, g in zip(self.start, by_)),
            tuple(b + g for b, g in zip(self.stop, by_)),
        )

    def intersect(self, other: Box) -> Box:
        """The common part of two boxes; an empty box (``size == 0``) when they are apart."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start))
        stop = tuple(min(a, b) for a, b in zip(self.stop, other.stop))
        return Box(start, tuple(max(a, b) for a, b in zip(start, stop)))

    clip = intersect

    def contains(self, other: Box) -> bool:
        """True when ``other`` lies entirely inside this box."""
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    def relative_to(self, origin: Box | Sequence[int]) -> Box:
        """This box in the coordinates of a box (or point) taken as the origin."""
        o = origin.start if isinstance(origin, Box) else tuple(origin)
        return Box(tuple(a - b for a, b in zip(self.start, o)), tuple(a - b for a, b in zip(self.stop, o)))

    def slices(self, origin: Box | Sequence[int] | None = None) -> tuple[slice, ...]:
        """Slices that cut this box out of an array whose first voxel is at ``origin``."""
        box = self if origin is None else self.relative_to(origin)
        if any(a < 0 for a in box.start):
            raise ValueError(f"box {self} starts before the origin {origin}")
        return tuple(slice(a, b) for a, b in zip(box.start, box.stop))

    def to_list(self) -> list[list[int]]:
        return [list(self.start), list(self.stop)]

    def __str__(self) -> str:
        return "[" + ", ".join(f"{a}:{b}" for a, b in zip(self.start, self.stop)) + "]"


@dataclass(frozen=True)
class Subvolume:
    """One block of a plan.

    Attributes
    ----------
    id : int
        Stable id: the block's raster index in the plan's block grid (a block mask
        used as ROI does not renumber blocks).
    index : tuple of int
        Grid coordinates of the block (Z, Y, X).
    interior : Box
        The voxels this subvolume owns and writes. Interiors tile the plan's ROI.
    outer : Box
        The interior grown by the halo and clipped to the volume: what is read and
        segmented.
    iteration : int
        The checkpoint iteration this subvolume belongs to (0-based).
    """

    id: int
    index: Triple
    interior: Box
    outer: Box
    iteration: int = 0


@dataclass(frozen=True)
class Face:
    """The shared overlap between two 6-connected neighbour subvolumes.

    Attributes
    ----------
    a, b : int
        Subvolume ids; ``a`` is the lower block along ``axis``.
    axis : int
        0, 1 or 2 (Z, Y, X): the axis the two blocks are neighbours along.
    box : Box
        The overlap box: the intersection of the two outer boxes.
    plane : int
        Global coordinate along ``axis`` of the first interior plane of ``b`` (equal to
        the stop of ``a``'s interior). Only segments present on this *middle plane* may
        match across the face.
    """

    a: int
    b: int
    axis: int
    box: Box
    plane: int

    @property
    def middle(self) -> Box:
        """The middle plane as a box one voxel thick, in global coordinates."""
        start = list(self.box.start)
        stop = list(self.box.stop)
        start[self.axis] = self.plane
        stop[self.axis] = self.plane + 1
        return Box(tuple(start), tuple(stop))

    @property
    def plane_offset(self) -> int:
        """Index of the middle plane inside :attr:`box` along :attr:`axis`."""
        return self.plane - self.box.start[self.axis]


@dataclass(frozen=True)
class Plan:
    """A tiling of a volume (or of a region of interest) into overlapping subvolumes.

    Build one with :meth:`Plan.grid`. A plan is immutable and serialisable
    (:meth:`to_dict` / :meth:`from_dict`).

    Examples
    --------
    >>> plan = Plan.grid((100, 64, 64), block=32, halo=4)
    >>> plan.grid_shape, len(plan.subvolumes), len(plan.faces())
    ((4, 2, 2), 16, 28)
    >>> sv = plan.subvolumes[3]
    >>> sv.id, sv.interior, sv.outer
    (3, Box(start=(0, 32, 32), stop=(32, 64, 64)), Box(start=(0, 28, 28), stop=(36, 64, 64)))
    >>> plan.subvolumes[-1].interior  # edge blocks are clipped
    Box(start=(96, 32, 32), stop=(100, 64, 64))
    """

    shape: Triple
    block: Triple
    halo: Triple
    origin: Triple
    grid_shape: Triple
    subvolumes: tuple[Subvolume, ...]
    iterations: int = 1

    # ------------------------------------------------------------------ construction

    @classmethod
    def grid(
        cls,
        shape: Sequence[int],
        block: int | Sequence[int],
        halo: int | Sequence[int] = 0,
        *,
        roi: Box | NDArray[np.bool_] | Sequence[Sequence[int]] | None = None,
        iterations: int = 1,
    ) -> Plan:
        """Tile ``shape`` (or the ``roi`` inside it) with blocks of ``block`` voxels.

        Parameters
        ----------
        shape : 3 ints
            Shape of the whole volume (Z, Y, X).
        block : int or 3 ints
            Interior size of each subvolume. Blocks at the far edges are clipped.
        halo : int or 3 ints
            Voxels added on each side of an interior to form the outer box (clipped to
            the volume). Stitching needs ``halo >= 1``; the paper uses 20.
        roi : Box, ``[[z0, y0, x0], [z1, y1, x1]]`` or (GZ, GY, GX) bool array, optional
            A box: the grid starts at the box's start and interiors tile exactly the box.
            A boolean array over the block grid of the whole volume: only blocks marked
            True are kept (ids stay those of the full grid).
        iterations : int
            Number of groups the subvolumes are split into, in id order, for
            checkpointing; groups differ in size by at most one.

        Raises
        ------
        ValueError
            On a shape, block or halo that is not 3 positive ints (halo non-negative), a
            halo larger than the block, an ROI outside the volume or a mask of the wrong
            shape, or ``iterations < 1``.
        """
        shape_ = _triple(shape, "shape")
        block_ = _triple(block, "block")
        halo_ = _triple(halo, "halo")
        if any(s <= 0 for s in shape_):
            raise ValueError(f"`shape` must be positive on every axis, got {shape_}")
        if any(b <= 0 for b in block_):
            raise ValueError(f"`block` must be positive on every axis, got {block_}")
        if any(h < 0 for h in halo_):
            raise ValueError(f"`halo` must not be negative, got {halo_}")
        for axis, (h, b) in enumerate(zip(halo_, block_)):
            if h > b:
                raise ValueError(
                    f"`halo` ({h}) must not exceed `block` ({b}) on axis {'ZYX'[axis]}: "
                    "a halo wider than a block would overlap blocks that are not neighbours"
                )
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"`iterations` must be a positive int, got {iterations!r}")

        volume = Box.from_shape(shape_)
        mask: NDArray[np.bool_] | None = None
        if roi is None:
            area = volume
        elif isinstance(roi, np.ndarray) and roi.dtype == np.bool_:
            area = volume
            mask = roi
        else:
            area = roi if isinstance(roi, Box) else Box(tuple(roi[0]), tuple(roi[1]))
            if area.ndim != 3 or not volume.contains(area) or area.empty:
                raise ValueError(f"`roi` {area} must be a non-empty box inside the volume {volume}")

        grid_shape = tuple(-(-n // b) for n, b in zip(area.shape, block_))
        if mask is not None and mask.shape != grid_shape:
            raise ValueError(
                f"`roi` mask has shape {mask.shape}, expected the block grid shape {grid_shape} "
                f"(volume {shape_} in blocks of {block_})"
            )
        subvolumes = []
        for index in itertools.product(*(range(g) for g in grid_shape)):
            if mask is not None and not mask[index]:
                continue
            start = tuple(o + i * b for o, i, b in zip(area.start, index, block_))
            interior = Box(start, tuple(min(s + b, e) for s, b, e in zip(start, block_, area.stop)))
            sv_id = int(np.ravel_multi_index(index, grid_shape))
            subvolumes.append(
                Subvolume(sv_id, index, interior, interior.grow(halo_).clip(volume))  # type: ignore[arg-type]
            )
        if not subvolumes:
            raise ValueError("`roi` selects no block: the plan would be empty")
        n = len(subvolumes)
        k = min(int(iterations), n)
        subvolumes = [
            Subvolume(sv.id, sv.index, sv.interior, sv.outer, (i * k) // n) for i, sv in enumerate(subvolumes)
        ]
        return cls(shape_, block_, halo_, area.start, grid_shape, tuple(subvolumes), k)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ queries

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {sv.id: sv for sv in self.subvolumes})
        object.__setattr__(self, "_by_index", {sv.index: sv for sv in self.subvolumes})
        object.__setattr__(self, "_faces", self._find_faces())

    def __len__(self) -> int:
        return len(self.subvolumes)

    def __iter__(self) -> Iterator[Subvolume]:
        return iter(self.subvolumes)

    def __getitem__(self, sv_id: int) -> Subvolume:
        try:
            return self._by_id[sv_id]  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            raise KeyError(f"plan has no subvolume with id {sv_id}") from None

    def __contains__(self, sv_id: object) -> bool:
        return sv_id in self._by_id  # type: ignore[attr-defined]

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sv.id for sv in self.subvolumes)

    @property
    def roi(self) -> Box:
        """Bounding box of all interiors."""
        starts = np.min([sv.interior.start for sv in self.subvolumes], axis=0)
        stops = np.max([sv.interior.stop for sv in self.subvolumes], axis=0)
        return Box(tuple(starts), tuple(stops))

    def iteration(self, k: int) -> tuple[Subvolume, ...]:
        """The subvolumes of iteration ``k``."""
        return tuple(sv for sv in self.subvolumes if sv.iteration == k)

    def faces(self) -> tuple[Face, ...]:
        """Every pair of 6-connected neighbours once, ordered by ``(a, axis)``.

        Faces between blocks whose halos do not overlap (``halo == 0`` on the face's axis)
        have an empty :attr:`Face.box` and are still listed.
        """
        return self._faces  # type: ignore[attr-defined,no-any-return]

    def _find_faces(self) -> tuple[Face, ...]:
        faces = []
        for sv in self.subvolumes:
            for axis in range(3):
                index = list(sv.index)
                index[axis] += 1
                other = self._by_index.get(tuple(index))  # type: ignore[attr-defined]
                if other is None:
                    continue
                faces.append(Face(sv.id, other.id, axis, sv.outer.intersect(other.outer), other.interior.start[axis]))
        return tuple(faces)

    def neighbours(self, sv_id: int) -> tuple[Face, ...]:
        """The faces that subvolume ``sv_id`` takes part in."""
        return tuple(f for f in self.faces() if sv_id in (f.a, f.b))

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description from which :meth:`from_dict` rebuilds an equal plan."""
        return {
            "shape": list(self.shape),
            "block": list(self.block),
            "halo": list(self.halo),
            "origin": list(self.origin),
            "grid_shape": list(self.grid_shape),
            "iterations": self.iterations,
            "subvolumes": [[sv.id, sv.iteration] for sv in self.subvolumes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Rebuild a plan saved with :meth:`to_dict`."""
        shape, block, grid_shape = data["shape"], data["block"], tuple(data["grid_shape"])
        stop = [min(o + g * b, s) for o, g, b, s in zip(data["origin"], grid_shape, block, shape)]
        full = cls.grid(shape, block, data["halo"], roi=Box(tuple(data["origin"]), tuple(stop)))
        by_id = {sv.id: sv for sv in full.subvolumes}
        subvolumes = []
        for sv_id, iteration in data["subvolumes"]:
            sv = by_id[sv_id]
            subvolumes.append(Subvolume(sv.id, sv.index, sv.interior, sv.outer, iteration))
        return cls(
            full.shape, full.block, full.halo, full.origin, full.grid_shape, tuple(subvolumes), data["iterations"]
        )


# ----------------------------------------------------------------------------- block grids and ROIs


def misaligned_axis(box: Box, block: Sequence[int], shape: Sequence[int]) -> int | None:
    """The first axis on which ``box`` does not cover whole blocks of a block-stored volume
    of ``shape`` (its start must be a multiple of the block, its stop too unless it is the
    volume's far edge), or None if it does.

    >>> misaligned_axis(Box((0, 32, 64), (32, 64, 70)), (32, 32, 32), (64, 64, 70)) is None
    True
    >>> misaligned_axis(Box((0, 16, 0), (32, 48, 32)), (32, 32, 32), (64, 64, 64))
    1
    """
    for axis, (a, b, n, edge) in enumerate(zip(box.start, box.stop, block, shape)):
        if a % n or (b % n and b != edge):
            return axis
    return None



def _runs(runs: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(runs, dtype=np.int64).reshape(-1, 4)
    if arr.size and np.any(arr[:, 3] < arr[:, 2]):
        bad = arr[np.argmax(arr[:, 3] < arr[:, 2])].tolist()
        raise ValueError(f"ROI run {bad} ends before it starts (runs are [z, y, x0, x1] with x1 inclusive)")
    return arr


def _block_range(box: Box, block: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The first block and one past the last block (per axis) that ``box`` meets."""
    return np.floor_divide(box.start, block), -np.floor_divide(-np.asarray(box.stop), block)


def roi_runs_near(runs: ArrayLike, block: int, box: Box) -> NDArray[np.int64]:
    """The ``[z, y, x0, x1]`` runs of ``block``-voxel blocks that meet ``box``: what one
    subvolume needs of a large ROI.

    >>> roi_runs_near([[0, 0, 0, 9], [5, 0, 0, 1]], 32, Box((0, 0, 40), (32, 32, 64))).tolist()
    [[0, 0, 0, 9]]
    """
    arr = _runs(runs)
    lo, hi = _block_range(box, block)
    inside = (
        (arr[:, 0] >= lo[0]) & (arr[:, 0] < hi[0]) & (arr[:, 1] >= lo[1]) & (arr[:, 1] < hi[1])
        & (arr[:, 3] >= lo[2]) & (arr[:, 2] < hi[2])
    )
    return arr[inside]


def roi_mask(runs: ArrayLike, block: int, box: Box) -> NDArray[np.bool_]:
    """True on the voxels of ``box`` that lie inside an ROI given as ``[z, y, x0, x1]`` runs
    of ``block``-voxel blocks, ``x1`` inclusive (DVID's ROI format).

    >>> roi_mask([[0, 0, 1, 1]], 2, Box((0, 0, 0), (1, 1, 6))).astype(int)
    array([[[0, 0, 1, 1, 0, 0]]])
    """
    lo, hi = _block_range(box, block)
    grid = np.zeros(tuple(int(n) for n in hi - lo), bool)
    for z, y, x0, x1 in roi_runs_near(runs, block, box).tolist():
        grid[z - lo[0], y - lo[1], max(x0, lo[2]) - lo[2] : min(x1 + 1, hi[2]) - lo[2]] = True
    voxels = grid.repeat(block, 0).repeat(block, 1).repeat(block, 2)
    first = np.asarray(box.start) - lo * block
    return voxels[tuple(slice(int(f), int(f) + n) for f, n in zip(first, box.shape))]


def roi_chunks(runs: ArrayLike, block: int, shape: Sequence[int], chunk: int | Sequence[int]) -> NDArray[np.bool_]:
    """The block mask for :meth:`Plan.grid`: True for every ``chunk``-sized subvolume of a
    volume of ``shape`` that an ROI (``[z, y, x0, x1]`` runs of ``block``-voxel blocks)
    touches. ROI blocks outside the volume are ignored.

    >>> roi_chunks([[0, 0, 3, 4]], 32, (64, 64, 256), 128).astype(int)
    array([[[1, 1]]])
    """
    arr = _runs(runs)
    shape_ = np.asarray(_triple(shape, "shape"))
    chunk_ = np.asarray(_triple(chunk, "chunk"))
    grid = -(-shape_ // chunk_)
    mask = np.zeros(tuple(int(g) for g in grid), bool)
    start = arr[:, [0, 1, 2]] * block
    stop = np.stack([(arr[:, 0] + 1) * block, (arr[:, 1] + 1) * block, (arr[:, 3] + 1) * block], axis=1)
    start = np.clip(start, 0, shape_)
    stop = np.clip(stop, 0, shape_)
    keep = np.all(stop > start, axis=1)
    first = start[keep] // chunk_
    last = (stop[keep] - 1) // chunk_
    for (z0, y0, x0), (z1, y1, x1) in zip(first.tolist(), last.tolist()):
        mask[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1] = True
    return mask
