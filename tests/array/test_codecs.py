"""numcodecs chunk codecs (blosc, zstd, lz4): specs, round trips, storage-node reductions."""

import json

import numcodecs
import numpy as np
import pytest
import transaction
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import neoarray.array as na
from neoarray import codecs, jobs, payload
from neoarray.array import layout
from neoarray.array.chunks import (
    codec_from_spec,
    codec_spec,
    decode_chunk,
    encode_chunk,
)
from neoarray.errors import CodecUnavailable
from neoarray.ids import MAX_TID
from tests.cluster_helpers import neoctl

CODECS = ["blosc", "zstd", "lz4",
          {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
          {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
          numcodecs.Zstd(level=5), numcodecs.LZ4(acceleration=2)]


def test_specs_are_plain_canonical_json():
    spec = codec_spec({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1})
    assert spec[0] == "numcodecs" and isinstance(spec[1], str)
    assert json.loads(spec[1]) == numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1).get_config()
    assert codec_spec(numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1)) == spec
    assert codec_spec("blosc", 5) == spec                   # numcodecs' defaults: lz4, byte shuffle
    assert json.loads(codec_spec("zstd", 7)[1])["level"] == 7
    assert codec_spec(spec) == spec
    assert codec_spec("zlib") == ("zlib", 6)                # old arrays keep their codec


@pytest.mark.parametrize(("codec", "level", "message"), [
    ("snappy", None, "unknown codec 'snappy'"),
    ({"id": "pickle"}, None, "unknown numcodecs codec"),
    (numcodecs.Delta(dtype="i4"), None, "unknown numcodecs codec"),
    ("lz4", 3, "codec_level applies to zlib, zstd and blosc"),
    ({"id": "blosc", "cname": "nope"}, None, "bad codec"),
])
def test_bad_codecs_are_refused(codec, level, message):
    with pytest.raises(na.ArrayValueError, match=message):
        na.zeros(10, codec=codec, codec_level=level)


def test_missing_numcodecs_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "numcodecs", None)      # as if not installed
    codecs.numcodecs_codec.cache_clear()
    try:
        with pytest.raises(CodecUnavailable, match=r"pip install 'neoarray\[codecs\]'"):
            na.zeros(10, codec={"id": "zstd", "level": 2})
    finally:
        codecs.numcodecs_codec.cache_clear()


_DTYPES = st.sampled_from(["f8", "f4", "i8", "i2", "u1", "?", "c16", "<M8[s]", "S3",
                           [("a", "i4"), ("b", "f8")]])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), codec=st.sampled_from(CODECS), dtype=_DTYPES,
       order=st.sampled_from("CF"))
def test_chunk_round_trip(data, codec, dtype, order):
    dtype = np.dtype(dtype)
    chunks = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), label="chunks")
    array = data.draw(hnp.arrays(dtype, chunks), label="chunk")
    codec = codec_from_spec(codec_spec(codec))
    payload_bytes = encode_chunk(array, codec, order)
    back = decode_chunk(payload_bytes, codec, dtype, chunks, order)
    assert back.tobytes(order="A") == np.asarray(array, order=order).tobytes(order="A")
    raw_bytes = array.size * dtype.itemsize
    decoded = payload.decode_payload(memoryview(payload_bytes), codec.spec, raw_bytes)
    assert bytes(decoded) == array.tobytes(order=order)


@pytest.mark.parametrize("codec", ["blosc", "zstd", "lz4"])
def test_node_decoding_is_bounded_by_the_header(codec):
    spec = codec_spec(codec)
    data = np.arange(5000, dtype="f8")
    packed = encode_chunk(data, codec_from_spec(spec), "C")
    with pytest.raises(ValueError, match="expected 39992"):   # one item short
        payload.decode_payload(packed, spec, data.nbytes - 8)
    with pytest.raises(ValueError):
        payload.decode_payload(b"\x00" * 64, spec, data.nbytes)


@pytest.mark.parametrize("codec", CODECS[:3])
def test_arrays_round_trip_in_every_storage(db, codec):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 70))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()["a"] = na.asarray(x, chunks=(64, 32), order="F", codec=codec)
    tm.commit()
    conn.close()
    conn = db.open(tm)
    a = conn.root()["a"]
    assert a.codec == codec_spec(codec)
    np.testing.assert_array_equal(a[...], x)
    a[5:9, 3] = -1.0
    x[5:9, 3] = -1.0
    tm.commit()
    np.testing.assert_array_equal(a[...], x)
    conn.close()


@pytest.mark.parametrize("codec", ["zstd", "blosc", "lz4"])
def test_storage_nodes_reduce_numcodecs_chunks(neo_db, codec):
    x = np.random.default_rng(5).normal(size=(500, 6))
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    a = conn.root()["a"] = na.asarray(x, chunks=(64, 4), codec=codec)
    tm.commit()
    found = list(a._tree.items())
    states = neo_db.storage.reduce_chunks(       # every chunk decoded and reduced by the node
        [c._p_oid for _k, c in found], MAX_TID, "sum", dtype=a.dtype, acc=a.dtype,
        chunk_shape=a.chunks, order=a.order, codec=a.codec,
        extents=[layout.chunk_extent(k, a.shape, a.chunks) for k, _c in found])
    assert set(states) == {c._p_oid for _k, c in found}
    for name in ("sum", "mean", "std", "max"):
        result = jobs.reduce(a, name, executor="storage")
        np.testing.assert_allclose(result, getattr(np, name)(x), rtol=1e-12)
    conn.close()


def test_neoctl_check_verifies_compressed_records(neo_db, neo_cluster):
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    for codec in ("zstd", "blosc", "lz4"):
        conn.root()[codec] = na.asarray(np.arange(4000.0), chunks=(512,), codec=codec)
    tm.commit()
    conn.close()
    assert neoctl(neo_cluster, "--json", "check")["ok"] is True    # checksums of record bytes
