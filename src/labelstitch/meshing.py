"""Surface meshes of label volumes, made block by block so that the pieces weld into the mesh
of the whole body.

Marching cubes puts a body's surface inside the *cells* between voxel centres. A block that
owns the cells whose lower corner lies in its interior, and reads one voxel more on its high
sides to have them, makes exactly the fragment of the whole-volume mesh that lies in those
cells: fragments of neighbouring blocks share the vertices on the plane between them. At the
volume's own border a row of background is added, so bodies that touch it are closed there.
zmesh's simplifier keeps the vertices of a mesh's open boundary, so fragments simplified on
their own still meet vertex for vertex, and :func:`weld` joins them into one closed surface.

Vertices are in physical units (``resolution`` per voxel, ZYX in, XYZ out, as Neuroglancer
and cloud-volume expect), with voxel ``i`` spanning ``[i, i + 1) * resolution``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .geometry import Box

__all__ = ["Mesh", "canonical", "enclosed_volume", "geometric_order", "merge_points", "stack", "mesh_labels", "mesh_read_box", "open_edges", "simplify", "split_mesh", "surface_area", "weld", "without_degenerate"]

#: vertices closer than this (in physical units) are the same vertex when fragments are welded
WELD_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: ``vertices`` (n, 3) float32 in physical XYZ, ``faces`` (m, 3) uint32."""

    vertices: NDArray[np.float32]
    faces: NDArray[np.uint32]

    @classmethod
    def empty(cls) -> Mesh:
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32))

    def __len__(self) -> int:
        return len(self.faces)


def geometric_order(vertices: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The order that sorts ``vertices`` by position (X, then Y, then Z) and each vertex's
    rank in it: index arrays remapped through the rank follow the sorted vertices."""
    order = np.lexsort((vertices[:, 2], vertices[:, 1], vertices[:, 0]))
    rank = np.empty(len(vertices), np.int64)
    rank[order] = np.arange(len(vertices))
    return order, rank


def stack(vertices: list[NDArray[Any]], indices: list[NDArray[Any]]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Pieces' vertices one after the other, and their faces or edges (rows of vertex
    indices) shifted to point into the stack."""
    starts = np.cumsum([0] + [len(v) for v in vertices[:-1]])
    width = indices[0].shape[1] if indices and indices[0].ndim == 2 else 3
    return (np.concatenate(vertices).astype(np.float64),
            np.concatenate([i.astype(np.int64).reshape(-1, width) + s for i, s in zip(indices, starts)]))


def merge_points(vertices: NDArray[np.float64], tolerance: float | NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Vertices that agree within ``tolerance`` (per axis) as one: the first of each group,
    and each vertex's group (an index into those firsts)."""
    keys = _pack(np.round(vertices / np.asarray(tolerance, np.float64)).astype(np.int64))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def canonical(mesh: Mesh) -> Mesh:
    """The same mesh in an order that depends only on its geometry: vertices sorted by
    position, each face turned to start at its smallest vertex (its orientation kept), faces
    sorted. zmesh's order also depends on the other labels of the block, so a body renumbered
    by a re-stitch would otherwise look changed.

    >>> m = Mesh(np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]], np.uint32))
    >>> c = canonical(m)
    >>> c.vertices.tolist(), c.faces.tolist()
    ([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[0, 1, 2]])
    """
    order, rank = geometric_order(mesh.vertices)
    faces = rank[mesh.faces.astype(np.int64)]
    turn = faces.argmin(axis=1)
    faces = np.stack([faces[np.arange(len(faces)), (turn + k) % 3] for k in range(3)], axis=1)
    faces = faces[np.lexsort((faces[:, 2], faces[:, 1], faces[:, 0]))]
    return Mesh(mesh.vertices[order], faces.astype(np.uint32))


def mesh_read_box(interior: Box, shape: tuple[int, ...]) -> tuple[Box, tuple[int, ...], tuple[int, ...]]:
    """What a block meshing ``interior`` reads: the interior and one voxel more on each high
    side inside the volume, and how many background voxels to add on each side (1 where the
    interior touches the volume's border, so bodies close there).

    >>> mesh_read_box(Box((0, 0, 0), (4, 4, 4)), (8, 4, 8))
    (Box(start=(0, 0, 0), stop=(5, 4, 5)), (1, 1, 1), (0, 1, 0))
    """
    stop = tuple(min(e + 1, n) for e, n in zip(interior.stop, shape))
    low = tuple(int(s == 0) for s in interior.start)
    high = tuple(int(e == n) for e, n in zip(interior.stop, shape))
    return Box(interior.start, stop), low, high


def mesh_labels(
    labels: NDArray[Any],
    origin: tuple[int, ...],
    resolution: tuple[float, ...],
    *,
    pad_low: tuple[int, ...] = (1, 1, 1),
    pad_high: tuple[int, ...] = (1, 1, 1),
    bodies: NDArray[np.uint64] | None = None,
) -> dict[int, Mesh]:
    """Mesh every non-zero label of ``labels`` (a block whose first voxel is ``origin``),
    padding ``pad_low``/``pad_high`` background voxels first, as marching cubes makes them
    (:func:`simplify` them after welding). Only ``bodies`` if given.

    >>> ball = np.zeros((6, 6, 6), np.uint64); ball[1:5, 1:5, 1:5] = 7
    >>> meshes = mesh_labels(ball, (0, 0, 0), (1.0, 1.0, 1.0))
    >>> list(meshes), round(float(enclosed_volume(meshes[7])), 1) > 40, open_edges(meshes[7])
    ([7], True, 0)
    """
    import zmesh

    data = np.asarray(labels)
    if bodies is not None:
        data = np.where(np.isin(data, bodies), data, 0)
    if any(pad_low) or any(pad_high):
        data = np.pad(data, list(zip(pad_low, pad_high)))
    res = np.asarray(resolution, np.float64)
    mesher = zmesh.Mesher(tuple(float(r) for r in res))
    mesher.mesh(np.asfortranarray(data), close=False)
    # a vertex at zmesh's coordinate c (voxel centres at integers, times the resolution) lies
    # at (c + 0.5) voxels from the padded block's corner
    shift = (np.asarray(origin, np.float64) - np.asarray(pad_low, np.float64) + 0.5) * res
    out = {}
    for label in mesher.ids():
        found = mesher.get(label, normals=False, reduction_factor=0, max_error=0)
        if len(found.faces) == 0:
            continue
        vertices = (found.vertices.astype(np.float64) + shift)[:, ::-1]  # ZYX -> XYZ
        out[int(label)] = canonical(Mesh(vertices.astype(np.float32), found.faces.astype(np.uint32)[:, ::-1].copy()))
    mesher.clear()
    return out


def _pack(keys: NDArray[np.int64]) -> NDArray[np.int64]:
    """Rows of three small non-negative ints as one int64 each (21 bits per axis), so that
    finding equal rows is a 1-D sort; rows too wide for that are ranked per axis first."""
    keys = keys - keys.min(axis=0)
    if keys.max(initial=0) >= 1 << 21:
        keys = np.stack([np.unique(k, return_inverse=True)[1].reshape(-1) for k in keys.T], axis=1)
        if keys.max(initial=0) >= 1 << 21:  # more than two million distinct values on an axis
            return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return keys[:, 0] | (keys[:, 1] << 21) | (keys[:, 2] << 42)


def weld(pieces: list[Mesh], tolerance: float | NDArray[np.float64] = WELD_TOLERANCE) -> Mesh:
    """One mesh from fragments: vertices within ``tolerance`` merged (per axis: pass half a
    voxel for marching-cubes pieces, whose vertices lie on that lattice), faces that became
    degenerate dropped. (The pieces of a partition of cells never hold the same face twice;
    a simplified mesh may hold a face and its reverse, both kept.)

    >>> a = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]], np.uint32))
    >>> b = Mesh(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32), np.array([[0, 2, 1]], np.uint32))
    >>> welded = weld([a, b])
    >>> len(welded.vertices), len(welded.faces)
    (4, 2)
    """
    pieces = [p for p in pieces if len(p.faces)]
    if not pieces:
        return Mesh.empty()
    vertices, faces = stack([p.vertices for p in pieces], [p.faces for p in pieces])
    first, group = merge_points(vertices, tolerance)
    return Mesh(vertices[first].astype(np.float32), without_degenerate(group[faces]).astype(np.uint32))


def without_degenerate(faces: NDArray[np.int64]) -> NDArray[np.int64]:
    """The faces whose three corners are three vertices (merging points collapses the others)."""
    return faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]


def simplify(mesh: Mesh, max_error: float) -> Mesh:
    """``mesh`` with fewer triangles, no vertex moved more than ``max_error`` physical units
    (zmesh's quadric edge collapse; a closed mesh stays closed). The collapse leaves small
    pieces as flat two-triangle pillows (both sides of one triangle: about 6 % of the faces
    and 1 % of the area of a blob measured): they are removed."""
    if max_error <= 0 or len(mesh.faces) == 0:
        return mesh
    import zmesh

    # the simplifier works on coordinates below 2**20: move the mesh to its own corner first
    corner = mesh.vertices.astype(np.float64).min(axis=0)
    local = zmesh.Mesh((mesh.vertices - corner).astype(np.float32), mesh.faces, None)
    found = zmesh.Mesher((1.0, 1.0, 1.0)).simplify(local, reduction_factor=1000, max_error=float(max_error),
                                                   compute_normals=False)
    faces = found.faces.astype(np.int64)
    _, group, count = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    faces = faces[count[group.reshape(-1)] == 1]
    used, faces = np.unique(faces, return_inverse=True)
    vertices = found.vertices[used].astype(np.float64) + corner
    return Mesh(vertices.astype(np.float32), faces.reshape(-1, 3).astype(np.uint32))


def _triangles(mesh: Mesh) -> NDArray[np.float64]:
    return mesh.vertices.astype(np.float64)[mesh.faces.astype(np.int64)]


def surface_area(mesh: Mesh) -> float:
    """The total area of the triangles."""
    t = _triangles(mesh)
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def enclosed_volume(mesh: Mesh) -> float:
    """The volume a closed, consistently oriented mesh encloses (divergence theorem)."""
    t = _triangles(mesh)
    return float(abs(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum()) / 6.0)


def open_edges(mesh: Mesh) -> int:
    """Edges not shared by exactly two faces: 0 for a closed (watertight) surface."""
    if len(mesh.faces) == 0:
        return 0
    f = mesh.faces.astype(np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges[:, 0] * len(mesh.vertices) + edges[:, 1], return_counts=True)
    return int(np.count_nonzero(counts != 2))


def _cut(vertices: NDArray[np.float64], faces: NDArray[np.int64], axis: int, origin: float, size: float
         ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Cut every triangle that crosses a plane ``origin + k * size`` (across ``axis``) into
    triangles on either side, one plane per round. A new vertex is computed from the edge's
    endpoints in index order, so the two triangles beside an edge put it at the same place."""
    eps = size / 2**17  # half a step of 16-bit positions in the cell: a vertex this near is on the face
    while True:
        coords = vertices[faces, axis]  # (n, 3)
        plane = origin + (np.floor((coords.min(axis=1) - origin + eps) / size) + 1) * size
        cross = np.flatnonzero(plane < coords.max(axis=1) - eps)
        if not len(cross):
            return vertices, faces
        tri, d = faces[cross], coords[cross] - plane[cross, None]
        side = np.where(np.abs(d) <= eps, 0, np.sign(d)).astype(np.int64)
        on = side == 0
        # the lone vertex: the one on the plane, else the one alone on its side; turned to be first
        lone = np.where(on.any(axis=1), on.argmax(axis=1),
                        np.where(side[:, 0] == side[:, 1], 2, np.where(side[:, 0] == side[:, 2], 1, 0)))
        rows = np.arange(len(tri))
        tri = np.stack([tri[rows, (lone + k) % 3] for k in range(3)], axis=1)
        p = plane[cross]
        new: list[NDArray[np.float64]] = []

        def point(a: NDArray[np.int64], b: NDArray[np.int64], at: NDArray[np.float64]) -> NDArray[np.int64]:
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            va, vb = vertices[lo], vertices[hi]
            t = (at - va[:, axis]) / (vb[:, axis] - va[:, axis])
            found = va + t[:, None] * (vb - va)
            found[:, axis] = at
            start = len(vertices) + sum(len(x) for x in new)
            new.append(found)
            return np.arange(start, start + len(found))

        one = on.any(axis=1)
        a0, a1, a2 = tri[one].T
        m = point(a1, a2, p[one])
        b0, b1, b2 = tri[~one].T
        q1, q2 = point(b0, b1, p[~one]), point(b0, b2, p[~one])
        pieces = [np.stack(t, axis=1) for t in ((a0, a1, m), (a0, m, a2), (b0, q1, q2), (q1, b1, b2), (q1, b2, q2))]
        vertices = np.concatenate([vertices, *new]) if new else vertices
        keep = np.ones(len(faces), bool)
        keep[cross] = False
        faces = np.concatenate([faces[keep], *pieces])


def split_mesh(mesh: Mesh, origin: NDArray[Any], size: NDArray[Any]) -> dict[tuple[int, int, int], Mesh]:
    """The mesh cut into the cells of a grid (``origin`` and cell ``size`` per axis, in the
    vertices' units): triangles that cross a cell's face are cut along it, so every piece lies
    in its cell (what Neuroglancer's multi-resolution format asks of an octree node), and the
    pieces together have the mesh's area and enclosed volume. The pieces' vertices stay float64,
    so that those made by a cut lie on the face exactly.

    >>> square = Mesh(np.array([[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]], np.float32),
    ...               np.array([[0, 1, 2], [0, 2, 3]], np.uint32))
    >>> cells = split_mesh(square, np.zeros(3), np.full(3, 2.0))
    >>> sorted(cells), round(sum(surface_area(c) for c in cells.values()), 6)
    ([(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)], 16.0)
    """
    if not len(mesh.faces):
        return {}
    origin, size = np.asarray(origin, np.float64), np.asarray(size, np.float64)
    vertices, faces = mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64)
    for axis in range(3):
        vertices, faces = _cut(vertices, faces, axis, float(origin[axis]), float(size[axis]))
    centre = vertices[faces].mean(axis=1)
    cells = np.maximum(np.floor((centre - origin) / size), 0).astype(np.int64)
    keys, group = np.unique(cells, axis=0, return_inverse=True)
    out = {}
    for k, key in enumerate(keys):
        mine = faces[group.reshape(-1) == k]
        used, local = np.unique(mine, return_inverse=True)
        out[(int(key[0]), int(key[1]), int(key[2]))] = Mesh(vertices[used], local.reshape(-1, 3).astype(np.uint32))
    return out
