"""The file formats of meshes and skeletons: Neuroglancer's legacy and multi-resolution
meshes, its precomputed skeletons, SWC; and reading ground-truth skeletons back."""

from __future__ import annotations

import json
import os
import struct
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from numpy.typing import NDArray

from ..meshing import Mesh, merge_points, split_mesh, stack, without_degenerate
from ..skeletons import Skeleton
from ._base import StoreError

__all__ = ["QUANTIZATION_BITS", "SKELETON_INFO", "decode_draco", "decode_legacy_mesh", "decode_multilod", "decode_skeleton",
           "encode_draco", "encode_legacy_mesh", "encode_multilod", "multilod_nodes", "encode_shard", "encode_skeleton", "encode_swc", "read_shard_chunk",
           "read_shard_chunks", "read_skeletons", "shard_location", "sharding_spec"]

#: bits per vertex coordinate in the multi-resolution format (Neuroglancer allows 10 or 16)
QUANTIZATION_BITS = 16

#: the ``info`` of a precomputed skeleton folder: one float32 radius per vertex
SKELETON_INFO = {"@type": "neuroglancer_skeletons", "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                 "vertex_attributes": [{"id": "radius", "data_type": "float32", "num_components": 1}]}


def encode_legacy_mesh(mesh: Mesh) -> bytes:
    """A mesh in Neuroglancer's legacy single-resolution fragment format.

    >>> m = Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.uint32))
    >>> len(encode_legacy_mesh(m)), decode_legacy_mesh(encode_legacy_mesh(m)).faces.tolist()
    (52, [[0, 1, 2]])
    """
    return (struct.pack("<I", len(mesh.vertices)) + mesh.vertices.astype("<f4").tobytes()
            + mesh.faces.astype("<u4").tobytes())


def decode_legacy_mesh(data: bytes) -> Mesh:
    """The inverse of :func:`encode_legacy_mesh`."""
    (n,) = struct.unpack_from("<I", data)
    vertices = np.frombuffer(data, "<f4", 3 * n, 4).reshape(n, 3)
    faces = np.frombuffer(data, "<u4", offset=4 + 12 * n).reshape(-1, 3)
    return Mesh(vertices.astype(np.float32), faces.astype(np.uint32))


def encode_draco(mesh: Mesh) -> bytes:
    """A mesh as one Draco file (``.drc``, FlyEM's supervoxel meshes), its positions kept
    to 16 bits of its bounding box.

    >>> tri = Mesh(np.array([[0, 0, 0], [8, 0, 0], [0, 8, 4]], np.float32), np.array([[0, 1, 2]], np.uint32))
    >>> back = decode_draco(encode_draco(tri))
    >>> np.allclose(back.vertices[back.faces[0]], tri.vertices[tri.faces[0]], atol=0.01)
    True
    """
    import DracoPy

    if not len(mesh.faces):
        return b""
    return bytes(DracoPy.encode(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32),
                                quantization_bits=QUANTIZATION_BITS, compression_level=7))


def decode_draco(data: bytes) -> Mesh:
    """The inverse of :func:`encode_draco` (an empty file is an empty mesh)."""
    import DracoPy

    if not data:
        return Mesh.empty()
    found = DracoPy.decode(data)
    return Mesh(np.asarray(found.points, np.float32).reshape(-1, 3), np.asarray(found.faces, np.uint32).reshape(-1, 3))


def _zorder(positions: NDArray[np.int64]) -> NDArray[np.int64]:
    """Morton codes of octree positions (x, y, z), z the most significant bit of each
    level: the order Neuroglancer expects a level's nodes in."""
    code = np.zeros(len(positions), np.int64)
    for bit in range(20):
        for axis in range(3):
            code |= ((positions[:, axis] >> bit) & 1) << (3 * bit + axis)
    return code


def encode_multilod(levels: list[Mesh]) -> tuple[bytes, bytes]:
    """A body's levels of detail (finest first) in Neuroglancer's unsharded multi-resolution
    format: the manifest (``ID.index``) and the fragment data (``ID``).

    The levels form an octree: the coarsest level is one node whose cell holds the whole
    body, and each finer level has cells of half the side, so the finest of ``n`` levels cuts
    the body into up to ``2**(n-1)`` cells per axis and a viewer loads the detail of only the
    part it looks at closely. Each level's mesh is cut along its cells' faces
    (:func:`~labelstitch.meshing.split_mesh`), each node's piece has its vertices quantized to
    16 bits of its cell and is Draco-encoded, nodes are in Z-curve order, and every node's
    parent is listed (empty if the coarser mesh has nothing there), as Neuroglancer walks it.

    >>> cube = Mesh(np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]], np.float32),
    ...             np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.uint32))
    >>> from labelstitch.meshing import surface_area
    >>> index, data = encode_multilod([cube, cube])
    >>> decoded = decode_multilod(index, data, 0)
    >>> np.allclose(np.sort(decoded.vertices, axis=0)[[0, -1]], [[0, 0, 0], [8, 8, 8]], atol=0.01)
    True
    >>> round(surface_area(decoded), 2) == round(surface_area(cube), 2), len(multilod_nodes(index)[0]) > 1
    (True, True)
    """
    import DracoPy

    n = len(levels)
    everything = np.concatenate([m.vertices for m in levels if len(m.vertices)] or [np.zeros((1, 3), np.float32)])
    origin = everything.min(axis=0).astype(np.float64)
    extent = float(max((everything.max(axis=0) - origin).max(), 1e-3)) * 1.001
    chunk = np.full(3, extent / 2 ** (n - 1), np.float64)  # the finest cell; level k's is 2**k times it
    quantum = float((1 << QUANTIZATION_BITS) - 1)
    nodes: list[dict[tuple[int, int, int], bytes]] = []
    for lod, mesh in enumerate(levels):
        size = chunk * 2**lod
        found = {}
        for cell, piece in split_mesh(mesh, origin, size).items():
            stored = np.clip(np.round((piece.vertices - origin - np.asarray(cell) * size) / size * quantum), 0, quantum)
            found[cell] = DracoPy.encode(stored.astype(np.float32), piece.faces, quantization_bits=QUANTIZATION_BITS,
                                         compression_level=7, quantization_range=quantum, quantization_origin=np.zeros(3))
        if lod:  # every finer node's parent is here (parents added here get theirs at the next level)
            for cell in nodes[-1]:
                found.setdefault((cell[0] >> 1, cell[1] >> 1, cell[2] >> 1), b"")
        nodes.append(found)
    header = (chunk.astype("<f4").tobytes() + origin.astype("<f4").tobytes() + struct.pack("<I", n)
              + np.array([2.0**lod for lod in range(n)], "<f4").tobytes() + np.zeros(3 * n, "<f4").tobytes()
              + np.array([len(found) for found in nodes], "<u4").tobytes())
    parts = []
    for found in nodes:
        cells = np.array(list(found), np.int64).reshape(-1, 3)
        cells = cells[np.argsort(_zorder(cells), kind="stable")]
        header += cells.T.astype("<u4").tobytes()  # all x, then all y, then all z
        header += np.array([len(found[tuple(c)]) for c in cells.tolist()], "<u4").tobytes()
        parts += [found[tuple(c)] for c in cells.tolist()]
    return header, b"".join(parts)


def multilod_nodes(index: bytes) -> list[list[tuple[tuple[int, int, int], int]]]:
    """Per level of detail of a multi-resolution manifest: its nodes' positions and sizes."""
    (n,) = struct.unpack_from("<I", index, 24)
    counts = np.frombuffer(index, "<u4", n, 28 + 16 * n)
    at = 28 + 20 * n
    out = []
    for count in counts.tolist():
        cells = np.frombuffer(index, "<u4", 3 * count, at).reshape(3, count).T
        sizes = np.frombuffer(index, "<u4", count, at + 12 * count)
        out.append([((int(c[0]), int(c[1]), int(c[2])), int(k)) for c, k in zip(cells, sizes)])
        at += 16 * count
    return out


def decode_multilod(index: bytes, data: bytes, lod: int = 0) -> Mesh:
    """One level of detail of :func:`encode_multilod`'s body: its nodes' pieces joined, the
    vertices on the cells' faces (the same 16-bit position in both neighbours) made one, and
    the slivers that 16 bits collapse (two corners at one position) left out."""
    import DracoPy

    chunk = np.frombuffer(index, "<f4", 3, 0).astype(np.float64)
    origin = np.frombuffer(index, "<f4", 3, 12).astype(np.float64)
    (n,) = struct.unpack_from("<I", index, 24)
    offsets = np.frombuffer(index, "<f4", 3 * n, 28 + 4 * n).reshape(n, 3).astype(np.float64)
    levels = multilod_nodes(index)
    start = sum(size for level in levels[:lod] for _, size in level)
    quantum = (1 << QUANTIZATION_BITS) - 1
    points, faces = [], []
    for cell, size in levels[lod]:
        if size:
            found = DracoPy.decode(data[start:start + size])
            stored = np.rint(np.asarray(found.points, np.float64).reshape(-1, 3)).astype(np.int64)
            points.append(stored + np.asarray(cell, np.int64) * quantum)  # in 1/quantum of a cell from the origin
            faces.append(np.asarray(found.faces, np.int64).reshape(-1, 3))
        start += size
    if not points:
        return Mesh.empty()
    keys, triangles = stack(points, faces)
    first, group = merge_points(keys, 1.0)  # integer positions: equal ones are one vertex
    vertices = origin + offsets[lod] + chunk * 2**lod * (keys[first] / quantum)
    return Mesh(vertices.astype(np.float32), without_degenerate(group[triangles]).astype(np.uint32))


def encode_skeleton(skeleton: Skeleton) -> bytes:
    """A skeleton in Neuroglancer's precomputed skeleton format, with a radius per vertex.

    >>> s = Skeleton(np.zeros((2, 3), np.float32), np.array([[0, 1]], np.uint32), np.ones(2, np.float32))
    >>> decode_skeleton(encode_skeleton(s)).edges.tolist()
    [[0, 1]]
    """
    return (struct.pack("<II", len(skeleton.vertices), len(skeleton.edges)) + skeleton.vertices.astype("<f4").tobytes()
            + skeleton.edges.astype("<u4").tobytes() + skeleton.radii.astype("<f4").tobytes())


def decode_skeleton(data: bytes) -> Skeleton:
    """The inverse of :func:`encode_skeleton`."""
    nv, ne = struct.unpack_from("<II", data)
    vertices = np.frombuffer(data, "<f4", 3 * nv, 8).reshape(nv, 3)
    edges = np.frombuffer(data, "<u4", 2 * ne, 8 + 12 * nv).reshape(ne, 2)
    radii = np.frombuffer(data, "<f4", nv, 8 + 12 * nv + 8 * ne)
    return Skeleton(vertices.astype(np.float32), edges.astype(np.uint32), radii.astype(np.float32))


def encode_swc(skeleton: Skeleton, body: int) -> str:
    """A skeleton as an SWC file (``n type x y z radius parent``, physical units), each
    connected piece rooted at its first vertex.

    >>> s = Skeleton(np.array([[0, 0, 0], [1, 0, 0]], np.float32), np.array([[1, 0]], np.uint32), np.ones(2, np.float32))
    >>> print(encode_swc(s, 7).splitlines()[-1])
    2 0 1 0 0 1 1
    """
    n = len(skeleton.vertices)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in skeleton.edges.tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    number = np.zeros(n, np.int64)  # SWC numbers from 1, in visiting order
    parent = np.full(n, -1, np.int64)
    order: list[int] = []
    for root in range(n):
        if number[root]:
            continue
        number[root] = len(order) + 1
        order.append(root)
        queue = deque([root])
        while queue:
            v = queue.popleft()
            for w in neighbours[v]:
                if not number[w]:
                    number[w] = len(order) + 1
                    parent[w] = v
                    order.append(w)
                    queue.append(w)
    lines = [f"# body {body}, made by labelstitch skeletonize; physical units"]
    for v in order:
        x, y, z = (float(c) for c in skeleton.vertices[v])
        up = int(number[parent[v]]) if parent[v] >= 0 else -1
        lines.append(f"{number[v]} 0 {x:g} {y:g} {z:g} {float(skeleton.radii[v]):g} {up}")
    return "\n".join(lines) + "\n"


def _parse_swc(text: str, where: str) -> Skeleton:
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        table = np.array([[float(v) for v in row[:7]] for row in rows], np.float64).reshape(-1, 7)
    except ValueError:
        raise StoreError(f"{where} is not an SWC file (rows of: n type x y z radius parent)") from None
    number = {int(n): i for i, n in enumerate(table[:, 0])}
    edges = [(i, number[int(p)]) for i, p in enumerate(table[:, 6]) if p >= 0 and int(p) in number]
    return Skeleton(table[:, 2:5].astype(np.float32), np.array(edges, np.uint32).reshape(-1, 2), table[:, 5].astype(np.float32))


def read_skeletons(path: str | os.PathLike[str]) -> dict[int, Skeleton]:
    """Skeletons by body id from an SWC file (``ID.swc``), a folder of them, or a precomputed
    skeleton folder (``labelstitch skeletonize``'s, or any with an ``info`` of
    ``neuroglancer_skeletons`` type, or a precomputed root naming one). Physical units."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".swc":
        return {int(path.stem) if path.stem.isdigit() else 1: _parse_swc(path.read_text(), str(path))}
    if not path.is_dir():
        raise StoreError(f"no skeletons at {path}: give an SWC file, a folder of ID.swc files, or a precomputed skeleton folder")
    info_path = path / "info"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("@type") != "neuroglancer_skeletons" and isinstance(info.get("skeletons"), str):
            return read_skeletons(path / info["skeletons"])
        if info.get("@type") == "neuroglancer_skeletons" and info.get("sharding"):
            chunks: dict[int, bytes] = {}
            for shard in sorted(path.glob("*.shard")):
                chunks.update(read_shard_chunks(shard.read_bytes(), info["sharding"]))
            return {key: decode_skeleton(data) for key, data in chunks.items()}
        if info.get("@type") == "neuroglancer_skeletons":
            if info.get("vertex_attributes", [{}])[:1] != SKELETON_INFO["vertex_attributes"] and info.get("vertex_attributes"):
                raise StoreError(f"{path}: skeletons with vertex attributes {info['vertex_attributes']} are not read here "
                                 "(only a float32 radius, or none)")
            found = {}
            for file in path.iterdir():
                if file.name.isdigit():
                    data = file.read_bytes()
                    if not info.get("vertex_attributes"):  # no radii: add zeros
                        nv, _ = struct.unpack_from("<II", data)
                        data = data + bytes(4 * nv)
                    found[int(file.name)] = decode_skeleton(data)
            return found
    files = sorted(path.glob("*.swc"))
    if not files:
        raise StoreError(f"no skeletons in {path}: it has neither ID.swc files nor a precomputed skeleton info")
    return {int(f.stem) if f.stem.isdigit() else k + 1: _parse_swc(f.read_text(), str(f)) for k, f in enumerate(files)}


# ----------------------------------------------------------------------------- sharding


def sharding_spec(n_keys: int) -> dict[str, Any]:
    """Neuroglancer's ``neuroglancer_uint64_sharded_v1`` parameters for about ``n_keys`` bodies:
    the identity hash (body ids are spread already), about 64 bodies per minishard and a few
    thousand per shard file.

    >>> sharding_spec(100_000)["shard_bits"], sharding_spec(100_000)["minishard_bits"]
    (5, 6)
    """
    minishard_bits = int(min(6, max(0, np.ceil(np.log2(max(n_keys, 1) / 64)))))
    shard_bits = int(max(0, np.ceil(np.log2(max(n_keys, 1) / 4096))))
    return {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "identity",
            "minishard_bits": minishard_bits, "shard_bits": shard_bits,
            "minishard_index_encoding": "raw", "data_encoding": "raw"}


def shard_location(key: int, spec: dict[str, Any]) -> tuple[str, int]:
    """The shard file name and the minishard of ``key`` under ``spec`` (identity hash)."""
    if spec.get("hash") != "identity" or spec.get("preshift_bits", 0) != 0:
        raise StoreError(f"only identity-hashed shards without preshift are written and read here, not {spec}")
    minishard = key & ((1 << spec["minishard_bits"]) - 1)
    shard = (key >> spec["minishard_bits"]) & ((1 << spec["shard_bits"]) - 1)
    return format(shard, "x").zfill(int(np.ceil(spec["shard_bits"] / 4))) + ".shard", minishard


def encode_shard(chunks: dict[int, tuple[bytes, bytes]], spec: dict[str, Any]) -> bytes:
    """One shard file holding ``chunks`` (key: (bytes written just before the chunk, the
    chunk)): the shard index, the data by minishard and key, then the minishard indices.
    The leading bytes are how the multi-resolution mesh format keeps a body's fragments
    right before its manifest, which is the chunk.

    >>> spec = sharding_spec(10)
    >>> shard = encode_shard({3: (b"frag", b"manifest"), 9: (b"", b"skeleton")}, spec)
    >>> read_shard_chunk(shard, 3, spec), read_shard_chunk(shard, 9, spec), read_shard_chunk(shard, 4, spec)
    (b'manifest', b'skeleton', None)
    """
    n_minishards = 1 << spec["minishard_bits"]
    by_minishard: dict[int, list[int]] = {}
    for key in sorted(chunks):
        by_minishard.setdefault(shard_location(key, spec)[1], []).append(key)
    data = bytearray()
    indices: dict[int, bytes] = {}
    for minishard in range(n_minishards):
        keys = by_minishard.get(minishard, [])
        starts, sizes = [], []
        for key in keys:
            before, chunk = chunks[key]
            data += before
            starts.append(len(data))
            sizes.append(len(chunk))
            data += chunk
        if keys:
            ends = [s + n for s, n in zip(starts, sizes)]
            offsets = [starts[0]] + [s - e for s, e in zip(starts[1:], ends[:-1])]
            table = np.array([np.diff(keys, prepend=0), offsets, sizes], np.uint64)
            indices[minishard] = table.astype("<u8").tobytes()
    index = np.zeros((n_minishards, 2), "<u8")
    position = len(data)
    for minishard in range(n_minishards):
        if minishard in indices:
            index[minishard] = (position, position + len(indices[minishard]))
            data += indices[minishard]
            position = len(data)
        else:
            index[minishard] = (position, position)
    return index.tobytes() + bytes(data)


def read_shard_chunks(shard: bytes, spec: dict[str, Any], minishards: list[int] | None = None) -> dict[int, bytes]:
    """Every chunk of a shard file's bytes (or of some of its minishards), by key."""
    base = 16 << spec["minishard_bits"]
    found = {}
    for minishard in range(1 << spec["minishard_bits"]) if minishards is None else minishards:
        start, end = np.frombuffer(shard, "<u8", 2, 16 * minishard)
        if start == end:
            continue
        table = np.frombuffer(shard, "<u8", (int(end) - int(start)) // 8, base + int(start)).reshape(3, -1)
        ends = 0
        for key, offset, size in zip(np.cumsum(table[0]).tolist(), table[1].tolist(), table[2].tolist()):
            begin = ends + offset
            found[int(key)] = bytes(shard[base + begin:base + begin + size])
            ends = begin + size
    return found


def read_shard_chunk(shard: bytes, key: int, spec: dict[str, Any]) -> bytes | None:
    """The chunk of ``key`` in a shard file's bytes (None if it is not there)."""
    return read_shard_chunks(shard, spec, [shard_location(key, spec)[1]]).get(key)
