"""The ``labelmap`` half of the DVID test server: supervoxels, mappings, label indices and
scales, after ``shared/docs/dvid-labelmap.md``.

Written from the reference, apart from the client's code in ``labelstitch.stores``, so
that the client is checked against the reference and not against itself: compressed
blocks are decoded (and encoded for ``GET /blocks?compression=blocks``) with numpy by the
recipe of section 4, and the protobuf messages of sections 6 and 7 are read with a
generic wire-format parser.

State per instance, as section 9 lays it out: blocks per scale and node, and per node the
mapping ``{sv: body}``, the label indices ``{body: {block key: {sv: voxels}}}`` (``None``
is a deleted index) and the recorded max label. A node sees its ancestors' entries unless
it has its own (copy-on-write along the version DAG, like the blocks).
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LabelmapData",
    "Refusal",
    "decode_block",
    "downsample",
    "encode_block",
    "label_index_message",
    "parse_label_index",
    "parse_label_indices",
    "parse_mapping_ops",
    "unpack_key",
]


class Refusal(Exception):
    """An error reply of the labelmap endpoints: DVID's status and message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- blocks (section 4)


def decode_block(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """A compressed block (already gunzipped) as a uint64 (Z, Y, X) array of ``shape``."""
    if len(data) < 16:
        raise Refusal(f"block of {len(data)} bytes is shorter than its 16-byte header")
    gx, gy, gz, n = struct.unpack_from("<4I", data)
    if (gz * 8, gy * 8, gx * 8) != tuple(shape):
        raise Refusal(f"block has {gx}x{gy}x{gz} sub-blocks; this instance's blocks need {shape[2] // 8}x{shape[1] // 8}x{shape[0] // 8}")
    if n == 0:
        raise Refusal("block has 0 labels")
    if len(data) < 16 + 8 * n:
        raise Refusal("block is shorter than its label list")
    labels = np.frombuffer(data, "<u8", n, 16)
    if n == 1:
        return np.full(shape, labels[0], np.uint64)
    nsub = gx * gy * gz
    pos = 16 + 8 * n
    ns = np.frombuffer(data, "<u2", nsub, pos).astype(np.int64)
    pos += 2 * nsub
    total = int(ns.sum())
    indices = np.frombuffer(data, "<u4", total, pos).astype(np.int64)
    pos += 4 * total
    if indices.size and indices.max() >= n:
        raise Refusal("block has a sub-block index past its label list")
    cells = np.zeros((nsub, 512), np.uint64)
    raw = np.frombuffer(data, np.uint8)
    first = np.r_[0, np.cumsum(ns)]
    for s in range(nsub):
        k = int(ns[s])
        mine = indices[first[s] : first[s] + k]
        if k == 1:
            cells[s] = labels[mine[0]]
        elif k > 1:
            b = int(np.ceil(np.log2(k)))
            if pos + 64 * b > len(raw):
                raise Refusal("block ends inside its packed codes")
            bits = np.unpackbits(raw[pos : pos + 64 * b]).reshape(512, b)
            pos += 64 * b
            codes = bits @ (1 << np.arange(b - 1, -1, -1))
            if codes.max() >= k:
                raise Refusal("block has a code past its sub-block's labels")
            cells[s] = labels[mine[codes]]
    out = cells.reshape(gz, gy, gx, 8, 8, 8).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(out.reshape(shape))


def encode_block(block: np.ndarray) -> bytes:
    """A block in the compressed format, by the numpy recipe of the reference (not gzipped)."""
    nz, ny, nx = block.shape
    gz, gy, gx = nz // 8, ny // 8, nx // 8
    labels = np.unique(block)
    head = struct.pack("<4I", gx, gy, gz, labels.size) + labels.astype("<u8").tobytes()
    if labels.size == 1:
        return head
    subs = block.reshape(gz, 8, gy, 8, gx, 8).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 512)
    counts, indices, codes = [], [], []
    for sb in subs:
        u = np.unique(sb)
        counts.append(u.size)
        indices.append(np.searchsorted(labels, u))
        if u.size > 1:
            b = int(np.ceil(np.log2(u.size)))
            c = np.searchsorted(u, sb)
            codes.append(np.packbits(((c[:, None] >> np.arange(b - 1, -1, -1)) & 1).astype(np.uint8)).tobytes())
    return head + np.asarray(counts, "<u2").tobytes() + np.concatenate(indices).astype("<u4").tobytes() + b"".join(codes)


def downsample(data: np.ndarray) -> np.ndarray:
    """Halve a label array (even sides): each voxel the most frequent non-zero label of its
    2x2x2 cell, ties to the smaller id, 0 if all are 0 (section 8)."""
    nz, ny, nx = data.shape
    cells = np.sort(data.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8), axis=1)
    count = (cells[:, :, None] == cells[:, None, :]).sum(axis=2)
    count[cells == 0] = 0
    best = np.argmax(count, axis=1)  # the first maximum: the smallest id among the ties
    return cells[np.arange(cells.shape[0]), best].reshape(nz // 2, ny // 2, nx // 2)


# ----------------------------------------------------------------------------- protobuf (sections 6, 7)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise Refusal("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """The (field number, wire type, value) of a message: ints for varints, bytes for
    length-delimited fields; fixed-width fields are skipped."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise Refusal("truncated protobuf field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        else:
            raise Refusal(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _map_entry(buf: bytes) -> tuple[int, Any]:
    key, value = 0, b""
    for number, _, v in _fields(buf):
        if number == 1:
            key = v
        elif number == 2:
            value = v
    return key, value


def parse_label_index(buf: bytes) -> tuple[int, dict[int, dict[int, int]], int]:
    """A ``LabelIndex``: (label, {block key: {sv: voxels}}, last_mutid)."""
    label, mutid, blocks = 0, 0, {}
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            key, svcount = _map_entry(value)
            counts = blocks.setdefault(key, {})
            for n2, w2, v2 in _fields(svcount if isinstance(svcount, bytes) else b""):
                if n2 == 1 and w2 == 2:
                    sv, voxels = _map_entry(v2)
                    counts[sv] = int(voxels or 0)
        elif number == 2:
            label = value
        elif number == 3:
            mutid = value
    return label, blocks, mutid


def parse_label_indices(buf: bytes) -> list[tuple[int, dict[int, dict[int, int]], int]]:
    return [parse_label_index(v) for n, w, v in _fields(buf) if n == 1 and w == 2]


def parse_mapping_ops(buf: bytes) -> list[tuple[int, int, list[int]]]:
    """``MappingOps``: (mutid, mapped, originals) per op; ``original`` packed or not."""
    ops = []
    for n, w, value in _fields(buf):
        if n != 1 or w != 2:
            continue
        mutid, mapped, originals = 0, 0, []
        for n2, w2, v2 in _fields(value):
            if n2 == 1:
                mutid = v2
            elif n2 == 2:
                mapped = v2
            elif n2 == 3 and w2 == 0:
                originals.append(v2)
            elif n2 == 3:
                pos = 0
                while pos < len(v2):
                    sv, pos = _varint(v2, pos)
                    originals.append(sv)
        ops.append((mutid, mapped, originals))
    return ops


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _put_varint(number << 3 | 2) + _put_varint(len(payload)) + payload


def label_index_message(label: int, blocks: dict[int, dict[int, int]], mutid: int = 0) -> bytes:
    """A ``LabelIndex`` as DVID sends it from ``GET /index``."""
    out = b""
    for key in sorted(blocks):
        counts = b"".join(
            _len_field(1, _put_varint(1 << 3) + _put_varint(sv) + _put_varint(2 << 3) + _put_varint(n))
            for sv, n in sorted(blocks[key].items())
        )
        out += _len_field(1, _put_varint(1 << 3) + _put_varint(key) + _len_field(2, counts))
    out += _put_varint(2 << 3) + _put_varint(label)
    if mutid:
        out += _put_varint(3 << 3) + _put_varint(mutid)
    return out


def unpack_key(key: int) -> tuple[int, int, int]:
    """A label index's block key as a (z, y, x) block coordinate (sign flag 0x100000)."""

    def field(v: int) -> int:
        return -(v & 0xFFFFF) if v & 0x100000 else v

    return field((key >> 42) & 0x1FFFFF), field((key >> 21) & 0x1FFFFF), field(key & 0x1FFFFF)


def pack_key(z: int, y: int, x: int) -> int:
    def field(v: int) -> int:
        return (0x100000 | -v) if v < 0 else v

    return field(z) << 42 | field(y) << 21 | field(x)


# ----------------------------------------------------------------------------- state (section 9)


@dataclass
class LabelmapData:
    """What a labelmap instance keeps beyond its scale-0 blocks."""

    indexed: bool = True
    max_level: int = 0
    lowres: dict[tuple[str, int], dict[tuple[int, int, int], np.ndarray]] = field(default_factory=dict)
    mapping: dict[str, dict[int, int]] = field(default_factory=dict)
    index: dict[str, dict[int, dict[int, dict[int, int]] | None]] = field(default_factory=dict)
    maxlabel: dict[str, int] = field(default_factory=dict)
    nextlabel: dict[str, int] = field(default_factory=dict)
    mutid: int = 0

    # ---------------------------------------------------------------- lookups along the versions

    def mapping_of(self, versions: list[str]) -> dict[int, int]:
        """The sv → body entries a node sees (nearer versions win)."""
        merged: dict[int, int] = {}
        for version in reversed(versions):
            merged.update(self.mapping.get(version, {}))
        return merged

    def mapped(self, versions: list[str], values: np.ndarray) -> np.ndarray:
        """``values`` with every supervoxel replaced by its body."""
        mapping = self.mapping_of(versions)
        if not mapping or values.size == 0:
            return values
        uniq, inverse = np.unique(values, return_inverse=True)
        bodies = np.array([mapping.get(int(v), int(v)) for v in uniq.tolist()], np.uint64)
        return bodies[inverse].reshape(values.shape)

    def index_of(self, versions: list[str], label: int) -> dict[int, dict[int, int]] | None:
        for version in versions:
            held = self.index.get(version, {})
            if label in held:
                return held[label]
        return None

    def own_index(self, versions: list[str], label: int) -> dict[int, dict[int, int]] | None:
        """The index of ``label`` as the node's own copy (copied from an ancestor first), to modify."""
        node = versions[0]
        held = self.index.setdefault(node, {})
        if label not in held:
            found = self.index_of(versions, label)
            held[label] = copy.deepcopy(found) if found is not None else None
        return held[label]

    def max_of(self, versions: list[str]) -> int | None:
        found = [self.maxlabel[v] for v in versions if v in self.maxlabel]
        return max(found) if found else None

    def raise_max(self, versions: list[str], value: int) -> None:
        current = self.max_of(versions)
        if current is None or value > current:
            self.maxlabel[versions[0]] = int(value)

    def body_of(self, versions: list[str], sv: int) -> int:
        """``GET /mapping``'s answer for one supervoxel (section 7)."""
        mapping = self.mapping_of(versions)
        if sv in mapping:
            return mapping[sv]
        index = self.index_of(versions, sv)
        if index is not None and any(sv in counts for counts in index.values()):
            return sv
        return 0

    def sizes_of(self, versions: list[str], label: int, supervoxels: bool) -> int:
        """Voxels of a body, or of one supervoxel (its count in its body's index)."""
        if not supervoxels:
            index = self.index_of(versions, label)
            return sum(n for counts in (index or {}).values() for n in counts.values())
        body = self.mapping_of(versions).get(label, label)
        index = self.index_of(versions, body)
        return sum(counts.get(label, 0) for counts in (index or {}).values())

    # ---------------------------------------------------------------- indexing of voxel writes (section 3)

    def index_block(self, versions: list[str], key: int, old: np.ndarray | None, new: np.ndarray, mutate: bool) -> None:
        """Add a written block's supervoxel counts to the index of each one's body; with
        ``mutate`` the old block's counts are taken away first (without, rewrites add
        blindly, as DVID does). An index accepts only supervoxels it holds, or its own id
        when it is new; other voxels go unindexed."""
        mapping = self.mapping_of(versions)
        changes: dict[int, int] = {}
        if mutate and old is not None:
            labels, counts = np.unique(old, return_counts=True)
            for sv, n in zip(labels.tolist(), counts.tolist()):
                changes[sv] = changes.get(sv, 0) - n
        labels, counts = np.unique(new, return_counts=True)
        for sv, n in zip(labels.tolist(), counts.tolist()):
            changes[sv] = changes.get(sv, 0) + n
        for sv, delta in changes.items():
            if sv == 0 or delta == 0:
                continue
            body = mapping.get(sv, sv)
            index = self.index_of(versions, body)
            holds = index is not None and any(sv in c for c in index.values())
            if not holds and not (index is None and body == sv):
                continue  # DVID's ModifyBlocks: an index takes only the supervoxels it holds
            mine = self.own_index(versions, body)
            if mine is None:
                mine = self.index.setdefault(versions[0], {})[body] = {}
            counts_here = mine.setdefault(key, {})
            counts_here[sv] = counts_here.get(sv, 0) + delta
            if counts_here[sv] <= 0:
                del counts_here[sv]
            if not counts_here:
                del mine[key]
