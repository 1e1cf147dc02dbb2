"""What a DVID ``labelmap`` takes besides raw voxels: compressed label blocks, label
indices and mappings (``shared/docs/dvid-labelmap.md`` sections 4, 6 and 7).

A labelmap stores *supervoxel* ids in its voxels, and bodies as a supervoxel → body
mapping with one label index per body (per 64³ block, the voxel count of each of the
body's supervoxels). A batch writer posts the voxels as compressed blocks without indexing
(``POST /blocks?noindexing=true``), then the indices (``POST /indices``), then the
mapping (``POST /mappings``): the order of the reference's section 10.

The block encoder runs in numba (a worker encodes every block of its subvolume and counts
each block's supervoxels in the same pass); the two protobuf messages are written by hand
(three message types of a few varint fields do not justify a protobuf dependency).
:class:`LabelmapWriter` posts them from the workers, through the retrying client.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._kernels import jit
from ..geometry import Box, misaligned_axis
from ..relabel import remap
from ._base import StoreError
from ._dvid_client import RETRY_HINT, DvidAddress, DvidError, dvid_request

__all__ = [
    "LabelmapWriter",
    "aligned_box",
    "block_key",
    "encode_block",
    "encode_label_indices",
    "encode_mapping_ops",
    "gzip_bytes",
]


# ----------------------------------------------------------------------------- blocks


@jit
def _put(out, pos, value, nbytes):  # type: ignore[no-untyped-def]
    """Write ``value`` little-endian in ``nbytes`` bytes at ``out[pos]``; the next position."""
    v = np.uint64(value)
    for i in range(nbytes):
        out[pos + i] = np.uint8(v & np.uint64(0xFF))
        v = v >> np.uint64(8)
    return pos + nbytes


@jit
def _gather(block, s, gy, gx, sub):  # type: ignore[no-untyped-def]
    """The 512 voxels of 8³ sub-block ``s`` (sub-blocks in z, y, x order), z, y, x order."""
    z0 = (s // (gy * gx)) * 8
    y0 = ((s // gx) % gy) * 8
    x0 = (s % gx) * 8
    i = 0
    for z in range(8):
        for y in range(8):
            for x in range(8):
                sub[i] = block[z0 + z, y0 + y, x0 + x]
                i += 1


@jit
def _bits(k):  # type: ignore[no-untyped-def]
    """ceil(log2 k) for k >= 2."""
    b = 0
    while (1 << b) < k:
        b += 1
    return b


@jit
def _distinct(sub, u):  # type: ignore[no-untyped-def]
    """The sorted distinct values of ``sub`` in ``u[:k]``; returns k. Few labels per sub-block
    is the rule, so values go into a small sorted list (runs of equal values skipped), and a
    sub-block with many falls back to sorting."""
    k = 0
    last = sub[0]
    u[0] = last
    k = 1
    for i in range(1, sub.size):
        v = sub[i]
        if v == last:
            continue
        last = v
        lo = 0
        hi = k
        while lo < hi:  # binary search in u[:k]
            mid = (lo + hi) // 2
            if u[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        if lo < k and u[lo] == v:
            continue
        if k >= 64:  # many labels: sort once instead
            s = np.unique(sub)
            u[: s.size] = s
            return s.size
        for j in range(k, lo, -1):
            u[j] = u[j - 1]
        u[lo] = v
        k += 1
    return k


@jit
def _find(u, k, v):  # type: ignore[no-untyped-def]
    lo = 0
    hi = k
    while lo < hi:
        mid = (lo + hi) // 2
        if u[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def _encode_block(block, out, counts):  # type: ignore[no-untyped-def]
    """Encode ``block`` (uint64 (Z, Y, X), each a multiple of 8) into ``out`` (large enough)
    in DVID's compressed block format; fill ``counts[i]`` with the voxels of the i-th
    sorted label. Returns (bytes written, number of labels)."""
    gz, gy, gx = block.shape[0] // 8, block.shape[1] // 8, block.shape[2] // 8
    nsub = gx * gy * gz
    sub = np.empty(512, np.uint64)
    u = np.empty(512, np.uint64)
    ns = np.empty(nsub, np.int64)
    starts = np.empty(nsub + 1, np.int64)
    all_u = np.empty(nsub * 512, np.uint64)
    starts[0] = 0
    for s in range(nsub):  # the distinct labels of every sub-block
        _gather(block, s, gy, gx, sub)
        k = _distinct(sub, u)
        ns[s] = k
        all_u[starts[s] : starts[s] + k] = u[:k]
        starts[s + 1] = starts[s] + k
    labels = np.unique(all_u[: starts[nsub]])
    n = labels.size
    pos = _put(out, 0, gx, 4)
    pos = _put(out, pos, gy, 4)
    pos = _put(out, pos, gz, 4)
    pos = _put(out, pos, n, 4)
    for i in range(n):
        pos = _put(out, pos, labels[i], 8)
    if n == 1:
        counts[0] = block.size
        return pos, n
    for s in range(nsub):
        pos = _put(out, pos, ns[s], 2)
    where = np.searchsorted(labels, all_u[: starts[nsub]])
    for i in range(starts[nsub]):
        pos = _put(out, pos, where[i], 4)
    for s in range(nsub):  # the packed codes of the sub-blocks with more than one label
        k = ns[s]
        first = starts[s]
        if k == 1:
            counts[where[first]] += 512
            continue
        _gather(block, s, gy, gx, sub)
        mine = all_u[first : first + k]
        b = _bits(k)
        acc = 0
        filled = 0
        last = sub[0]
        c = _find(mine, k, last)
        for i in range(512):
            v = sub[i]
            if v != last:
                last = v
                c = _find(mine, k, v)
            counts[where[first + c]] += 1
            for bit in range(b - 1, -1, -1):  # most significant bit first (numpy's packbits)
                acc = (acc << 1) | ((c >> bit) & 1)
                filled += 1
                if filled == 8:
                    out[pos] = acc
                    pos += 1
                    acc = 0
                    filled = 0
    return pos, n


def encode_block(block: NDArray[Any]) -> tuple[bytes, NDArray[np.uint64], NDArray[np.uint32]]:
    """One label block in DVID's compressed format (not yet gzipped), its sorted labels and
    the voxel count of each.

    ``block`` is (Z, Y, X) with every side a multiple of 8 (DVID's sub-blocks).

    >>> data, labels, counts = encode_block(np.full((8, 8, 8), 7, np.uint64))
    >>> len(data), labels.tolist(), counts.tolist()       # a solid block: header and one label
    (24, [7], [512])
    """
    arr = np.ascontiguousarray(block, dtype=np.uint64)
    if arr.ndim != 3 or any(n % 8 or n == 0 for n in arr.shape):
        raise ValueError(f"a DVID label block has sides that are multiples of 8, not {arr.shape}")
    nsub = arr.size // 512
    # worst case: every voxel its own label (9 bits a code, 512 indices a sub-block)
    out = np.empty(16 + 8 * arr.size + 2 * nsub + 4 * arr.size + 64 * 9 * nsub, np.uint8)
    counts = np.zeros(arr.size, np.uint32)
    size, n = _encode_block(arr, out, counts)
    labels = np.frombuffer(out[16 : 16 + 8 * n].tobytes(), "<u8").astype(np.uint64)
    return out[:size].tobytes(), labels, counts[:n]


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    """``data`` with gzip framing, which DVID requires of posted blocks (level 1: the
    block format has done most of the work)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def block_key(bz: int, by: int, bx: int) -> int:
    """A scale-0 block coordinate packed as DVID's label indices key it: ``z<<42 | y<<21 | x``,
    each a 21-bit field with a sign flag (``0x100000``) and a 20-bit magnitude.

    >>> block_key(0, 0, 1), block_key(1, 2, 3) == (1 << 42) | (2 << 21) | 3
    (1, True)
    >>> hex(block_key(0, 0, -1))
    '0x100001'
    """

    def field(v: int) -> int:
        if abs(v) >= 1 << 20:
            raise ValueError(f"block coordinate {v} does not fit DVID's 20-bit index field")
        return (0x100000 | -v) if v < 0 else v

    return (field(bz) << 42) | (field(by) << 21) | field(bx)


# ----------------------------------------------------------------------------- protobuf


def _runs(keys: NDArray[Any]) -> list[tuple[int, int]]:
    """The (start, stop) of every run of equal values in sorted ``keys``."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.zeros(0, np.int64)
    return list(zip(starts.tolist(), np.r_[starts[1:], keys.size].astype(np.int64).tolist()))


def _varint(value: int) -> bytes:
    out = bytearray()
    value = int(value)
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:
    """A varint field (wire type 0); proto3 leaves zeros out."""
    return _varint(number << 3) + _varint(value) if value else b""


def _label_index(body: int, blocks: NDArray[np.uint64], svs: NDArray[np.uint64], counts: NDArray[np.uint32], mutid: int) -> bytes:
    """One ``LabelIndex`` from its rows, sorted by block (then supervoxel)."""
    out = bytearray()
    for a, b in _runs(blocks):
        svcount = b"".join(_field(1, _uint(1, sv) + _uint(2, n)) for sv, n in zip(svs[a:b].tolist(), counts[a:b].tolist()))
        out += _field(1, _uint(1, int(blocks[a])) + _field(2, svcount))
    out += _uint(2, body) + _uint(3, mutid)
    return bytes(out)


def encode_label_indices(
    bodies: NDArray[np.uint64],
    blocks: NDArray[np.uint64],
    svs: NDArray[np.uint64],
    counts: NDArray[np.uint32],
    *,
    mutid: int = 0,
    tombstones: NDArray[np.uint64] | None = None,
) -> bytes:
    """A ``LabelIndices`` message from rows (body, block key, supervoxel, voxels): one
    ``LabelIndex`` per body, in body order, and an empty one (a tombstone: DVID deletes that
    label's index) for each id in ``tombstones``.

    >>> msg = encode_label_indices(np.array([5], np.uint64), np.array([1], np.uint64), np.array([9], np.uint64),
    ...                            np.array([3], np.uint32))
    >>> msg.hex()      # indices { blocks { key: 1, value { counts { key: 9, value: 3 } } }, label: 5 }
    '0a0e0a0a080112060a04080910031005'
    """
    order = np.lexsort((svs, blocks, bodies))
    bodies, blocks, svs, counts = bodies[order], blocks[order], svs[order], counts[order]
    out = bytearray()
    for a, b in _runs(bodies):
        out += _field(1, _label_index(int(bodies[a]), blocks[a:b], svs[a:b], counts[a:b], mutid))
    for label in (tombstones if tombstones is not None else np.zeros(0, np.uint64)).tolist():
        out += _field(1, _uint(2, label))
    return bytes(out)


def encode_mapping_ops(bodies: NDArray[np.uint64], svs: NDArray[np.uint64], *, mutid: int = 0) -> bytes:
    """A ``MappingOps`` message: one ``MappingOp`` per body (``mapped``) listing its
    supervoxels (``original``, packed), as neuclease sends them."""
    order = np.lexsort((svs, bodies))
    bodies, svs = bodies[order], svs[order]
    out = bytearray()
    for a, b in _runs(bodies):
        packed = b"".join(_varint(v) for v in svs[a:b].tolist())
        out += _field(1, _uint(1, mutid) + _uint(2, int(bodies[a])) + _field(3, packed))
    return bytes(out)


# ----------------------------------------------------------------------------- the writer


def aligned_box(box: Box, block_size: tuple[int, ...], shape: tuple[int, ...], uri: str) -> Box:
    """The box DVID will take for a write of ``box``: ``box`` itself if its start is a
    multiple of the block size and its stop is one too or the volume's far edge (then
    padded up to the block). Raises :class:`StoreError` naming the alignment otherwise."""
    axis = misaligned_axis(box, block_size, shape)
    if axis is not None:
        n = block_size[axis]
        raise StoreError(
            f"{uri} takes writes of whole {n}-voxel DVID blocks, but box {box} is not aligned on axis "
            f"{'ZYX'[axis]} (start {box.start[axis]}, stop {box.stop[axis]}); chunk sizes, offsets and ROIs "
            f"must be multiples of {n}"
        )
    return Box(box.start, tuple(-(-b // n) * n for b, n in zip(box.stop, block_size)))


@dataclass(frozen=True)
class LabelmapWriter:
    """Writes a labelmap output as supervoxels from any process: compressed blocks, then
    each body's label index and mapping (``shared/docs/dvid-labelmap.md`` section 10)."""

    uri: str
    address: DvidAddress
    block_size: tuple[int, int, int]
    shape: tuple[int, ...]

    def _post_blocks(self, records: list[bytes], scale: int) -> None:
        params = {"noindexing": "true", **({"scale": str(scale)} if scale else {})}
        dvid_request(self.address.server, "POST", f"{self.address.node_path}/blocks", params=params,
                     data=b"".join(records), throttle=True)

    def write_blocks(self, start: tuple[int, ...], data: NDArray[np.uint64], scale: int = 0) -> list[NDArray[np.uint64]]:
        """Post ``data`` (block-aligned at ``start``, in ``scale``'s voxels) as compressed
        blocks, a few MB a request; the (key, labels, counts) of each block."""
        bs = self.block_size
        records: list[bytes] = []
        pending = 0
        tallies = []
        grid = [range(n // b) for n, b in zip(data.shape, bs)]
        for index in np.ndindex(*(len(r) for r in grid)):
            key = tuple(s // b + i for s, b, i in zip(start, bs, index))
            block = data[tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, bs))]
            encoded, labels, counts = encode_block(block)
            packed = gzip_bytes(encoded)
            records.append(np.array([key[2], key[1], key[0], len(packed)], "<i4").tobytes() + packed)
            pending += len(packed)
            if not scale:
                keep = labels != 0
                tallies.append(np.stack([labels[keep], np.full(int(keep.sum()), block_key(*key), np.uint64),
                                         counts[keep].astype(np.uint64)], axis=1))
            if pending > 8 << 20:
                self._post_blocks(records, scale)
                records, pending = [], 0
        if records:
            self._post_blocks(records, scale)
        return tallies

    def write_supervoxels(
        self, box: Box, supervoxels: NDArray[np.uint64], sv_ids: NDArray[np.uint64], body_ids: NDArray[np.uint64]
    ) -> NDArray[np.uint64]:
        """Post the supervoxels of ``box`` as compressed blocks (``POST /blocks?noindexing=true``,
        encoded in numba) and return each block's rows (body, supervoxel, block key, voxels)
        for the label indices."""
        if box.ndim != 3 or box.empty:
            raise StoreError(f"box {box} is not a non-empty 3-D box (writing {self.uri})")
        padded = aligned_box(box, self.block_size, self.shape, self.uri)
        data = np.zeros(padded.shape, np.uint64)
        data[tuple(slice(0, n) for n in box.shape)] = supervoxels
        tallies = self.write_blocks(padded.start, data)
        rows = np.concatenate(tallies) if tallies else np.zeros((0, 3), np.uint64)
        bodies = remap(rows[:, 0], (sv_ids, body_ids), dtype=np.uint64)  # unlisted: bodies of their own
        return np.column_stack([bodies, rows]).astype(np.uint64)

    def write_bodies(self, rows: NDArray[np.uint64]) -> dict[str, int]:
        """The label index of every body in ``rows`` (``POST /indices``), then the mapping of
        its supervoxels (``POST /mappings``), then a read-back check: ``/sizes`` of the bodies
        and ``/mapping`` of the supervoxels must agree with ``rows``."""
        rows = np.asarray(rows, np.uint64).reshape(-1, 4)
        path = self.address.node_path
        bodies = np.unique(rows[:, 0])
        for chunk in np.array_split(bodies, max(1, -(-rows.shape[0] // 200_000))):  # ~ a few MB a request
            mine = rows[np.isin(rows[:, 0], chunk)]
            message = encode_label_indices(mine[:, 0], mine[:, 2], mine[:, 1], mine[:, 3].astype(np.uint32))
            dvid_request(self.address.server, "POST", f"{path}/indices", data=message, throttle=True)
        pairs = np.unique(rows[:, :2], axis=0)  # (body, supervoxel)
        mapped = pairs[pairs[:, 0] != pairs[:, 1]]
        for chunk in np.array_split(mapped, max(1, -(-mapped.shape[0] // 500_000))):
            if chunk.size:
                message = encode_mapping_ops(chunk[:, 0], chunk[:, 1])
                dvid_request(self.address.server, "POST", f"{path}/mappings", data=message, throttle=True)
        sizes = np.zeros(bodies.size, np.uint64)
        np.add.at(sizes, np.searchsorted(bodies, rows[:, 0]), rows[:, 3])
        for start in range(0, bodies.size, 50_000):
            ids = bodies[start : start + 50_000]
            got = dvid_request(self.address.server, "GET", f"{path}/sizes", json_body=ids.tolist()).json()
            bad = np.flatnonzero(np.asarray(got, np.uint64) != sizes[start : start + 50_000])
            if bad.size:
                b = int(ids[bad[0]])
                raise DvidError(f"{self.uri}: DVID's label index of body {b} holds {got[bad[0]]} voxels, but labelstitch "
                                f"wrote {int(sizes[start + bad[0]])}; {RETRY_HINT}")
        for start in range(0, pairs.shape[0], 50_000):
            chunk = pairs[start : start + 50_000]
            got = dvid_request(self.address.server, "GET", f"{path}/mapping", json_body=chunk[:, 1].tolist()).json()
            bad = np.flatnonzero(np.asarray(got, np.uint64) != chunk[:, 0])
            if bad.size:
                sv = int(chunk[bad[0], 1])
                raise DvidError(f"{self.uri}: DVID maps supervoxel {sv} to {got[bad[0]]}, not to body "
                                f"{int(chunk[bad[0], 0])}; {RETRY_HINT}")
        return {"bodies": int(bodies.size), "supervoxels": int(pairs.shape[0]), "voxels": int(rows[:, 3].sum())}
