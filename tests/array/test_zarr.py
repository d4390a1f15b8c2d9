"""zarr in and out: from_zarr and A.to_zarr, chunk by chunk, compressed chunks passing."""
import numpy as np
import pytest
import transaction

import neoarray
import neoarray.array as na
from neoarray.array import zarrs

zarr = pytest.importorskip("zarr")
numcodecs = pytest.importorskip("numcodecs")


def _raw_chunks(z) -> dict:
    """Stored chunk key -> the bytes in the store (compressed as they are)."""
    prefix = zarrs._prefix(z)
    names = {k: prefix + z.metadata.encode_chunk_key(k) for k in zarrs.stored_keys(z)}
    payloads = zarrs._sync(zarrs._gather_get(z.store_path.store, list(names.values())))
    return dict(zip(names, payloads))


def _sparse_v3(path):
    z = zarr.create_array(str(path), shape=(1000, 70), chunks=(64, 32), dtype="<f8",
                          fill_value=np.nan, attributes={"units": "K", "levels": [1, 2.5]},
                          compressors=zarr.codecs.ZstdCodec(level=3))
    z[0:64, 0:32] = np.random.default_rng(1).normal(size=(64, 32))
    z[990:, 60:] = 7.0                      # an edge chunk of both axes
    return z


def _dense_v2(path):
    z = zarr.create_array(str(path), shape=(50, 9), chunks=(16, 4), dtype=">i4", fill_value=-1,
                          zarr_format=2, order="F",
                          compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1),
                          attributes={"title": "dense"})
    z[:] = np.arange(450).reshape(50, 9)
    return z


@pytest.mark.parametrize("make", [_sparse_v3, _dense_v2])
def test_round_trip_is_bit_for_bit_through_a_cluster(make, neo_db, tmp_path):
    source = make(tmp_path / "in.zarr")
    tm = transaction.TransactionManager()
    conn = neo_db.open(tm)
    conn.root()["a"] = a = neoarray.from_zarr(str(tmp_path / "in.zarr"), connection=conn,
                                              progress=False)
    tm.commit()
    assert (a.dtype, a.order, a.chunks) == (source.dtype, source.order, source.chunks)
    assert a.fill_value.tobytes() == np.asarray(source.fill_value, source.dtype).tobytes()
    assert dict(a.attrs) == source.attrs.asdict()
    assert sorted(a.chunk_keys()) == zarrs.stored_keys(source)         # unwritten stay so
    np.testing.assert_array_equal(a[...], source[...])
    back = a.to_zarr(tmp_path / "out.zarr", zarr_format=source.metadata.zarr_format,
                     progress=False)
    assert back.dtype == source.dtype and back.attrs.asdict() == source.attrs.asdict()
    assert np.asarray(back.fill_value).tobytes() == np.asarray(source.fill_value).tobytes()
    assert _raw_chunks(back) == _raw_chunks(source)       # the compressed bytes passed through
    assert back[...].tobytes() == source[...].tobytes()
    tm.abort()
    conn.close()


def test_other_codecs_are_decoded_and_encoded(tmp_path):
    source = zarr.create_array(str(tmp_path / "gz.zarr"), shape=(300,), chunks=(64,), dtype="f4",
                               compressors=zarr.codecs.GzipCodec(level=5))
    source[100:200] = np.linspace(0, 1, 100, dtype="f4")
    assert zarrs.layout_of(source).why == "neoarray has no codec reading its compressor"
    a = na.from_zarr(source, progress=False)
    assert a.codec is None and sorted(a.chunk_keys()) == [(1,), (2,), (3,)]
    np.testing.assert_array_equal(a[...], source[...])
    recompressed = na.from_zarr(source, codec="blosc", chunks=(100,), progress=False)
    assert recompressed.codec[0] == "numcodecs"
    np.testing.assert_array_equal(recompressed[...], source[...])
    f_order = na.asarray(np.arange(24.0).reshape(4, 6), order="F", chunks=(3, 4), codec="zlib")
    v3 = f_order.to_zarr(tmp_path / "f.zarr", progress=False)     # a transpose codec keeps 'F'
    assert [type(c).__name__ for c in v3.filters] == ["TransposeCodec"]
    again = na.from_zarr(v3, progress=False)
    assert again.order == "F" and again.codec == ("zlib", 6)
    np.testing.assert_array_equal(again[...], np.arange(24.0).reshape(4, 6))


def test_an_edge_chunk_whose_padding_is_not_fill_is_rewritten(tmp_path):
    source = zarr.create_array(str(tmp_path / "e.zarr"), shape=(10,), chunks=(4,), dtype="u1",
                               fill_value=0, compressors=None)
    source[:] = 1
    # the last chunk holds items 8 and 9, then padding: make the padding 9s
    zarrs._sync(zarrs._gather_set(source.store_path.store, [("c/2", bytes([1, 1, 9, 9]))]))
    a = na.from_zarr(source, progress=False)
    a.resize((12,))                            # the padding is in bounds now: fill, not 9
    np.testing.assert_array_equal(a[...], [1] * 10 + [0, 0])


def test_bad_input_says_what_is_wrong(tmp_path):
    strings = zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype=str)
    with pytest.raises(na.ArrayDtypeError, match="cannot be stored in neoarray"):
        na.from_zarr(strings)
    source = _dense_v2(tmp_path / "d.zarr")
    with pytest.raises(na.ArrayShapeError, match=r"shape \(50, 9\) into a neoarray of shape \(3,\)"):
        na.from_zarr(source, out=na.zeros(3))
    a = na.zeros(4)
    a.attrs = {"blob": b"\x00"}
    with pytest.raises(na.ArrayValueError, match="JSON"):
        a.to_zarr(tmp_path / "j.zarr")
    with pytest.raises(na.ArrayAttrsError, match="attribute 'x' is a set"):
        a.attrs = {"x": {1}}
    with pytest.raises(na.ArrayValueError, match="zarr_format is 2 or 3"):
        a.to_zarr(tmp_path / "k.zarr", zarr_format=4)
