"""Compressed label blocks: how segmented subvolumes are held in memory (and, later,
checkpointed). lz4 as in the paper: label volumes compress very well and decompress at
memory speed."""

from __future__ import annotations

import struct
import zlib

import lz4.frame
import numpy as np
from numpy.typing import NDArray

__all__ = ["encode_labels", "decode_labels"]

_MAGIC = b"LSB1"
_HEADER = struct.Struct("<4s8sIIII")  # magic, dtype str, z, y, x, crc32 of the raw bytes


def encode_labels(labels: NDArray[np.integer]) -> bytes:
    """A self-describing lz4 frame of a 3-D integer array (with a checksum)."""
    arr = np.ascontiguousarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"`labels` must be 3-D, got shape {arr.shape}")
    raw = arr.tobytes()
    header = _HEADER.pack(_MAGIC, arr.dtype.str.encode().ljust(8), *arr.shape, zlib.crc32(raw))
    return header + lz4.frame.compress(raw, compression_level=0)


def decode_labels(data: bytes) -> NDArray[np.integer]:
    """The array saved by :func:`encode_labels`; raises ValueError if it is damaged."""
    if len(data) < _HEADER.size:
        raise ValueError("label block is truncated")
    magic, dtype, z, y, x, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("not a labelstitch label block")
    try:
        raw = lz4.frame.decompress(data[_HEADER.size :])
    except RuntimeError as exc:
        raise ValueError(f"label block is corrupt: {exc}") from None
    if zlib.crc32(raw) != crc:
        raise ValueError("label block fails its checksum")
    return np.frombuffer(raw, dtype=np.dtype(dtype.strip().decode())).reshape(z, y, x).copy()
