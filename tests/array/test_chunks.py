"""Chunk objects, codecs and the all-fill test."""

import pickle

import numpy as np
import pytest

from neoarray.array import chunks as ch
from neoarray.array.errors import ArrayValueError


@pytest.mark.parametrize("spec", [None, ("zlib", 1), ("zlib", 9)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_codec_round_trip(spec, order):
    codec = ch.codec_from_spec(spec)
    array = np.asfortranarray(np.arange(24.0).reshape(4, 6)) if order == "F" else \
        np.arange(24.0).reshape(4, 6)
    decoded = ch.decode_chunk(ch.encode_chunk(array, codec, order), codec,
                              array.dtype, (4, 6), order)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.f_contiguous if order == "F" else decoded.flags.c_contiguous


def test_raw_decode_is_a_view_of_the_payload():
    payload = np.arange(6, dtype="i8").tobytes()
    decoded = ch.decode_chunk(payload, ch.RawCodec(), np.dtype("i8"), (2, 3), "C")
    assert decoded.base is not None and not decoded.flags.writeable


def test_zlib_compresses_fill_heavy_chunks():
    codec = ch.codec_from_spec(ch.codec_spec("zlib", 6))
    array = np.zeros(10000)
    array[5] = 1
    assert len(ch.encode_chunk(array, codec, "C")) < array.nbytes // 10


def test_codec_spec_validation():
    assert ch.codec_spec("zlib") == ("zlib", 6)
    assert ch.codec_spec(("zlib", 2)) == ("zlib", 2)
    with pytest.raises(ArrayValueError):
        ch.codec_spec("snappy")
    with pytest.raises(ArrayValueError):
        ch.codec_spec("zlib", 12)


@pytest.mark.parametrize("fill, other", [(0.0, -0.0), (np.nan, 1.0), (3.0, 3.0000001)])
def test_is_all_fill_is_bytewise(fill, other):
    fill_item = np.float64(fill).tobytes()
    array = np.full((3, 4), fill)
    assert ch.is_all_fill(array, fill_item)
    array[1, 2] = other
    assert not ch.is_all_fill(array, fill_item)
    assert ch.is_all_fill(np.asfortranarray(np.full((3, 4), fill)), fill_item)


def test_is_all_fill_structured():
    dtype = np.dtype([("a", "i4"), ("b", "f8")])
    array = np.zeros(5, dtype=dtype)
    assert ch.is_all_fill(array, bytes(dtype.itemsize))
    array[2]["b"] = 1
    assert not ch.is_all_fill(array, bytes(dtype.itemsize))


def test_chunk_state_is_the_payload():
    chunk = ch.Chunk(b"abc")
    assert chunk.__getstate__() == b"abc"
    copy = pickle.loads(pickle.dumps(chunk))
    assert copy.payload == b"abc"
