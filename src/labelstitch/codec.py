"""Compressed label blocks: how segmented subvolumes are held in memory (and, later,
checkpointed). lz4 as in the paper: label volumes compress very well and decompress at
memory speed."""

from __future__ import annotations

import struct
import zlib

import lz4.frame
import numpy as np
from numpy.typing import NDArray

__all__ = ["CODECS", "encode_labels", "decode_labels"]

_MAGIC = {"lz4": b"LSB1", "zlib": b"LSZ1"}
CODECS = tuple(_MAGIC)
_HEADER = struct.Struct("<4s8sIIII")  # magic, dtype str, z, y, x, crc32 of the raw bytes


def encode_labels(labels: NDArray[np.integer], codec: str = "lz4") -> bytes:
    """A self-describing compressed 3-D integer array with a checksum.

    ``codec`` is ``"lz4"`` (fast, the paper's choice) or ``"zlib"`` (denser, slower).
    """
    if codec not in _MAGIC:
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    arr = np.ascontiguousarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"`labels` must be 3-D, got shape {arr.shape}")
    raw = arr.tobytes()
    header = _HEADER.pack(_MAGIC[codec], arr.dtype.str.encode().ljust(8), *arr.shape, zlib.crc32(raw))
    body = lz4.frame.compress(raw, compression_level=0) if codec == "lz4" else zlib.compress(raw, 6)
    return header + body


def decode_labels(data: bytes) -> NDArray[np.integer]:
    """The array saved by :func:`encode_labels`; raises ValueError if it is damaged."""
    if len(data) < _HEADER.size:
        raise ValueError("label block is truncated")
    magic, dtype, z, y, x, crc = _HEADER.unpack_from(data)
    if magic not in _MAGIC.values():
        raise ValueError("not a labelstitch label block")
    try:
        if magic == _MAGIC["lz4"]:
            raw = lz4.frame.decompress(data[_HEADER.size :])
        else:
            raw = zlib.decompress(data[_HEADER.size :])
    except (RuntimeError, zlib.error) as exc:
        raise ValueError(f"label block is corrupt: {exc}") from None
    if zlib.crc32(raw) != crc:
        raise ValueError("label block fails its checksum")
    return np.frombuffer(raw, dtype=np.dtype(dtype.strip().decode())).reshape(z, y, x).copy()
