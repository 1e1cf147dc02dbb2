"""Label block codecs: exact round trips on adversarial labels, and damage always refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from labelstitch.codec import CODECS, DEFAULT_CODEC, decode_labels, encode_labels

EXTREMES = np.array([0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1], np.uint64)


def adversarial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    distinct = rng.permutation(np.arange(32**3, dtype=np.uint64)) * np.uint64(2**40 + 7)
    return {
        "all zero": np.zeros((9, 10, 11), np.uint64),
        "all 2**64-1": np.full((5, 6, 7), 2**64 - 1, np.uint64),
        "one voxel": np.array([[[2**64 - 2]]], np.uint64),
        "every voxel distinct": distinct.reshape(32, 32, 32),
        "extremes mixed": rng.choice(EXTREMES, size=(17, 1, 33)),
        "empty": np.zeros((0, 4, 4), np.uint64),
        "uint8": rng.integers(0, 255, (8, 8, 8), dtype=np.uint8),
        "int32 negative": rng.integers(-(2**31), 2**31 - 1, (4, 5, 6), dtype=np.int32),
    }


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", list(adversarial()))
def test_adversarial_labels_round_trip_exactly(codec, name):
    labels = adversarial()[name]
    back = decode_labels(encode_labels(labels, codec))
    assert back.dtype == labels.dtype and back.shape == labels.shape
    assert back.flags.c_contiguous and back.flags.writeable
    np.testing.assert_array_equal(back, labels)


@settings(max_examples=80, deadline=None)
@given(
    labels=arrays(
        st.sampled_from([np.uint16, np.uint32, np.uint64, np.int64]),
        st.tuples(*[st.integers(1, 9)] * 3),
        elements=st.integers(0, 2**15),
    ),
    codec=st.sampled_from(CODECS),
)
def test_any_label_block_round_trips(labels, codec):
    np.testing.assert_array_equal(decode_labels(encode_labels(labels, codec)), labels)


def test_non_contiguous_input_is_encoded_by_value():
    labels = np.arange(4 * 5 * 6, dtype=np.uint64).reshape(4, 5, 6)
    view = labels.transpose(2, 1, 0)[::2]
    np.testing.assert_array_equal(decode_labels(encode_labels(view)), view)


@pytest.mark.parametrize("codec", CODECS)
def test_damaged_blocks_are_refused_never_decoded_wrong(codec):
    """Truncation, bit flips and overwritten bytes, anywhere in the block: each either raises
    ValueError or (a flip in header padding) decodes to exactly the original. Crackle's
    decoder crashes the process on damaged bytes, so this also shows the body checksum is
    checked before it runs."""
    rng = np.random.default_rng(3)
    labels = (rng.integers(0, 5, (20, 30, 40)) * 2**40).astype(np.uint64)
    block = encode_labels(labels, codec)
    refused = 0
    for _ in range(600):
        damaged = bytearray(block)
        kind = rng.integers(3)
        if kind == 0:
            damaged = damaged[: rng.integers(len(damaged))]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                damaged[rng.integers(len(damaged))] ^= 1 << int(rng.integers(8))
        else:
            at = rng.integers(len(damaged))
            damaged[at : at + 8] = rng.bytes(8)
        try:
            back = decode_labels(bytes(damaged))
        except ValueError:
            refused += 1
        else:
            np.testing.assert_array_equal(back, labels)
    assert refused > 500


def test_the_default_codec_is_much_denser_than_lz4_on_real_labels():
    """Segmentation-like labels (a few hundred smooth regions): crackle is the default
    because it beats lz4 by a wide margin; the measured ratios are in docs/benchmarks.md."""
    from labelstitch.synthetic import neurite_labels

    labels = neurite_labels((64, 96, 96), n_neurites=60, seed=2).astype(np.uint64) * np.uint64(2**33 + 1)
    sizes = {codec: len(encode_labels(labels, codec)) for codec in CODECS}
    assert DEFAULT_CODEC == "crackle"
    assert sizes["crackle"] * 3 < sizes["lz4"], sizes


def test_unknown_codec_and_non_integer_labels_are_refused():
    with pytest.raises(ValueError, match="unknown codec"):
        encode_labels(np.zeros((2, 2, 2), np.uint64), "zstd")
    with pytest.raises(ValueError, match="integers"):
        encode_labels(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="not a labelstitch"):
        decode_labels(b"X" * 64)


@pytest.mark.parametrize("codec", ["lz4", "zlib"])
def test_blocks_of_earlier_versions_still_decode_and_check_the_raw_crc(codec):
    """Checkpoints written before the crackle codec (magic LSB1/LSZ1, CRC of the raw
    labels) are read by --resume after an upgrade."""
    import struct
    import zlib

    import lz4.frame

    labels = np.random.default_rng(5).integers(0, 9, (6, 7, 8)).astype(np.uint64)
    raw = labels.tobytes()
    body = lz4.frame.compress(raw, compression_level=0) if codec == "lz4" else zlib.compress(raw, 6)
    magic = b"LSB1" if codec == "lz4" else b"LSZ1"
    header = struct.pack("<4s8sIIII", magic, labels.dtype.str.encode().ljust(8), *labels.shape, zlib.crc32(raw))
    back = decode_labels(header + body)
    np.testing.assert_array_equal(back, labels)
    assert back.flags.writeable
    wrong = struct.pack("<4s8sIIII", magic, labels.dtype.str.encode().ljust(8), *labels.shape, zlib.crc32(raw) ^ 1)
    with pytest.raises(ValueError, match="checksum"):
        decode_labels(wrong + body)
