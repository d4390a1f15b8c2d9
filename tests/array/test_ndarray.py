"""The persistent ndarray against numpy as the oracle (neoarray/array/core.py)."""

import itertools
import math

import numpy as np
import pytest
import transaction
from hypothesis import HealthCheck, given, settings, strategies as st

import neoarray.array as na
from neoarray.array.chunks import is_all_fill
from neoarray.array.errors import (ArrayCastError, ArrayDtypeError, ArrayShapeError,
                                   ArrayTooLargeError)

from array_helpers import (DTYPES, chunk_shapes, examples, indices, open_conn, shapes,
                           values_for)

SETTINGS = examples(200)


@st.composite
def arrays(draw, dtypes=DTYPES):
    """(numpy oracle, neoarray with the same content, partially written)."""
    shape = draw(shapes())
    dtype = draw(st.sampled_from(dtypes))
    order = draw(st.sampled_from("CF"))
    chunks = draw(chunk_shapes(shape))
    codec = draw(st.sampled_from([None, "zlib"]))
    oracle = values_for(draw, shape, dtype)
    fill = np.zeros((), dtype=dtype)
    array = na.zeros(shape, dtype=dtype, order=order, chunks=chunks, codec=codec)
    if oracle.ndim and draw(st.booleans()):  # leave part unwritten
        cut = draw(st.integers(0, shape[0]))
        oracle[cut:] = fill
        array[:cut] = oracle[:cut]
    else:
        array[...] = oracle
    return oracle, array


def assert_same(got, expected):
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got, expected)


@SETTINGS
@given(arrays(), st.data())
def test_reads_match_numpy(pair, data):
    oracle, array = pair
    key = data.draw(indices(oracle.shape))
    try:
        expected = oracle[key]
    except IndexError:
        with pytest.raises(IndexError):
            array[key]
        return
    got = array[key]
    assert_same(got, expected)
    assert np.isscalar(got) == np.isscalar(expected)


@SETTINGS
@given(arrays(), st.data())
def test_writes_match_numpy(pair, data):
    oracle, array = pair
    key = data.draw(indices(oracle.shape, unique=True))
    try:
        target = oracle[key]
    except IndexError:
        return
    shape = np.shape(target)
    if data.draw(st.booleans()) and shape:  # broadcast a trailing part
        shape = shape[data.draw(st.integers(0, len(shape))):]
    value = values_for(data.draw, shape, oracle.dtype)
    oracle[key] = value
    array[key] = value
    assert_same(array[...], oracle)
    for key in array.chunk_keys():  # no stored chunk is entirely fill
        chunk = array._decode(array._tree[key].payload)
        assert not is_all_fill(chunk, array._fill)


@settings(SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=arrays(), data=st.data())
def test_round_trip_through_the_database(db, pair, data):
    oracle, array = pair
    name = f"a{next(_names)}"  # one database for all examples
    writer, wtm = open_conn(db)
    writer.root()[name] = array
    wtm.commit()
    writer.cacheMinimize()  # chunks become ghosts: writes go through the fetcher
    key = data.draw(indices(oracle.shape, unique=True))
    try:
        value = values_for(data.draw, np.shape(oracle[key]), oracle.dtype)
    except IndexError:
        key, value = (), oracle
    oracle[key] = value
    writer.root()[name][key] = value
    wtm.commit()
    reader, rtm = open_conn(db)
    reader.cacheMinimize()
    stored = reader.root()[name]
    key = data.draw(indices(oracle.shape))
    try:
        expected = oracle[key]
    except IndexError:
        expected, key = oracle, Ellipsis
    assert_same(stored[key], expected)
    assert stored.chunks == array.chunks and stored.order == array.order
    writer.close()
    reader.close()


_names = itertools.count()


@SETTINGS
@given(arrays(), st.data())
def test_append_and_resize_match_a_numpy_model(pair, data):
    oracle, array = pair
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()):
            axis = data.draw(st.integers(0, oracle.ndim - 1))
            shape = list(oracle.shape)
            shape[axis] = data.draw(st.integers(0, 4))
            values = values_for(data.draw, tuple(shape), oracle.dtype)
            array.append(values, axis=axis)
            oracle = np.concatenate([oracle, values], axis=axis).astype(oracle.dtype)
        else:
            shape = tuple(data.draw(st.integers(0, 10)) for _ in oracle.shape)
            model = np.zeros(shape, dtype=oracle.dtype)
            common = tuple(slice(0, min(a, b)) for a, b in zip(shape, oracle.shape))
            model[common] = oracle[common]
            array.resize(shape)
            oracle = model
        assert array.shape == oracle.shape
    assert_same(array[...], oracle)


def test_attributes():
    a = na.zeros((10**18, 2), dtype=float, order="F")
    assert a.shape == (10**18, 2) and a.ndim == 2 and a.size == 2 * 10**18
    assert a.dtype == np.float64 and a.itemsize == 8 and a.nbytes == 16 * 10**18
    assert a.order == "F" and len(a) == 10**18
    assert math.prod(a.chunks) * 8 <= 8 << 20 and math.prod(a.chunks) * 8 >= 2 << 20
    assert a.fill_value == 0.0 and isinstance(a.fill_value, np.float64)
    b = na.full((3,), 7, dtype="i2", chunks=2, codec="zlib", codec_level=3)
    assert b.fill_value == 7 and b.chunks == (2,) and b.codec == ("zlib", 3)
    with pytest.raises(TypeError, match="unsized"):
        len(na.zeros(()))


def test_object_dtype_refused():
    with pytest.raises(ArrayDtypeError, match="object"):
        na.zeros(3, dtype=object)
    with pytest.raises(TypeError):
        na.asarray([1, "a", None])


def test_shape_overflow_refused():
    with pytest.raises(ArrayShapeError, match=r"shape \(10000000000000000000, 3\)"):
        na.zeros((10**19, 3))


def test_assignment_errors_name_shapes_and_dtypes():
    a = na.zeros((4, 5), dtype="i4", chunks=(2, 2))
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(4, 5\)"):
        a[...] = np.ones(3, dtype="i4")
    with pytest.raises(ArrayCastError, match="float64.*int32"):
        a[0] = 1.5
    with pytest.raises(TypeError, match="complex128.*float64"):
        na.zeros(3)[0] = 1j
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 0 with size 4"):
        a[4] = 1
    a[0] = np.int64(3)  # same kind
    assert a[0, 4] == 3


def test_python_values_are_weakly_typed():
    a = na.zeros(4, dtype="u1", chunks=3)
    a[0] = 7
    a[1:3] = [True, 200]
    assert a[...].tolist() == [7, 1, 200, 0]
    with pytest.raises(OverflowError):
        a[0] = 300
    with pytest.raises(ArrayCastError, match="float64 to array dtype uint8"):
        a[:2] = [1.0, 2.0]
    b = na.zeros(2, dtype="c8")
    b[...] = [1, 2.5j]
    assert b[...].tolist() == [1, 2.5j]


def test_unwritten_chunks_take_no_storage_and_fill_chunks_are_removed():
    a = na.full((100,), 5.0, chunks=10)
    assert list(a.chunk_keys()) == []
    a[15] = 1.0
    assert list(a.chunk_keys()) == [(1,)]
    assert a[10:20].tolist() == [5.0] * 5 + [1.0] + [5.0] * 4
    a[15] = 5.0
    assert list(a.chunk_keys()) == []
    a[:] = 5.0
    assert list(a.chunk_keys()) == []


def test_nan_fill_value():
    a = na.full((10,), np.nan, chunks=3)
    a[4] = 1
    a[4] = np.nan
    assert list(a.chunk_keys()) == []
    assert np.isnan(a[...]).all()


def test_structured_dtype():
    dtype = np.dtype([("id", "<i8"), ("pos", "<f4", (3,))])
    a = na.full((7,), (1, (0, 0, 1)), dtype=dtype, chunks=3)
    a[2] = (5, (1, 2, 3))
    expected = np.empty(7, dtype=dtype)
    expected[...] = np.array((1, (0, 0, 1)), dtype=dtype)
    expected[2] = (5, (1, 2, 3))
    assert_same(a[...], expected)


def test_huge_array_scattered_writes():
    a = na.zeros((10**18, 2), dtype=float, order="F")
    points = [(0, 0), (10**17, 1), (5 * 10**17 + 3, 0), (10**18 - 1, 1), (-2, 0)]
    for k, (i, j) in enumerate(points):
        a[i, j] = k + 1
    assert [a[i, j] for i, j in points] == [1, 2, 3, 4, 5]
    assert len(list(a.chunk_keys())) == 5
    np.testing.assert_array_equal(a[10**17 - 1:10**17 + 2], [[0, 0], [0, 2], [0, 0]])
    block = np.arange(20.0).reshape(10, 2)
    a[7 * 10**17:7 * 10**17 + 10] = block
    np.testing.assert_array_equal(a[7 * 10**17:7 * 10**17 + 10], block)
    np.testing.assert_array_equal(a[[-1, 10**17], 1], [4, 2])
    np.testing.assert_array_equal(a[::10**17, 1], [0, 2, 0, 0, 0, 0, 0, block[0, 1], 0, 0])
    assert a[-1:-3:-1, 1].tolist() == [4, 0]


def test_materialising_huge_arrays_is_a_memory_error():
    a = na.zeros((10**18, 2))
    with pytest.raises(ArrayTooLargeError, match=str(16 * 10**18)) as info:
        np.asarray(a)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(MemoryError):
        a[:10**16]
    with na.configure(memory_bytes_max=100):
        with pytest.raises(MemoryError, match="160 bytes"):
            np.asarray(na.zeros(20))
        assert np.asarray(na.zeros(10)).shape == (10,)


def test_reads_are_processed_in_bounded_batches():
    calls = []
    inner = na.get_fetcher()

    class Recording:
        def fetch(self, chunks):
            calls.append(len(chunks))
            return inner.fetch(chunks)

    a = na.zeros((64, 64), chunks=(8, 8))  # 512-byte chunks
    a[...] = 1.0
    old = na.set_fetcher(Recording())
    try:
        with na.configure(fetch_bytes_max=4 * 512):
            assert a.sum() == 64 * 64
            assert a[...].sum() == 64 * 64
    finally:
        na.set_fetcher(old)
    assert max(calls) <= 4 and sum(calls) == 2 * 64


def test_append_and_resize():
    a = na.zeros((0, 3), dtype="i8", chunks=(4, 2))
    oracle = np.zeros((0, 3), dtype="i8")
    for n in (1, 5, 3):
        values = np.arange(n * 3).reshape(n, 3) + len(oracle)
        a.append(values)
        oracle = np.concatenate([oracle, values])
    a.append(np.array([7, 8, 9]))
    oracle = np.concatenate([oracle, [[7, 8, 9]]])
    assert_same(a[...], oracle)
    a.append(np.ones((a.shape[0], 2), dtype="i8"), axis=1)
    oracle = np.concatenate([oracle, np.ones((len(oracle), 2), dtype="i8")], axis=1)
    assert_same(a[...], oracle)
    a.resize((5, 4))
    a.resize((12, 6))
    grown = np.zeros((12, 6), dtype="i8")
    grown[:5, :4] = oracle[:5, :4]
    assert_same(a[...], grown)
    a.resize((0, 6))
    assert list(a.chunk_keys()) == []
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        a.append(np.ones((2, 2), dtype="i8"))
    with pytest.raises(ValueError, match="number of dimensions"):
        a.resize((3,))


def test_append_to_huge_array_touches_only_new_data():
    a = na.zeros((10**18, 2), chunks=(1 << 16, 2))
    a.append(np.ones((3, 2)))
    assert a.shape == (10**18 + 3, 2)
    np.testing.assert_array_equal(a[-4:], [[0, 0], [1, 1], [1, 1], [1, 1]])
    assert len(list(a.chunk_keys())) == 1
    a.resize((10**18 + 1, 2))
    a.resize((10**18 + 3, 2))
    np.testing.assert_array_equal(a[-3:], [[1, 1], [0, 0], [0, 0]])


def test_persistence_round_trip_of_metadata(db):
    conn, tm = open_conn(db)
    a = na.full((5, 4), -1, dtype=">i4", order="F", chunks=(2, 3), codec="zlib")
    a[1:3, 2] = [8, 9]
    conn.root()["a"] = a
    tm.commit()
    conn.close()
    conn, tm = open_conn(db)
    b = conn.root()["a"]
    assert (b.shape, b.dtype, b.order, b.chunks, b.codec, b.fill_value) == \
        ((5, 4), np.dtype(">i4"), "F", (2, 3), ("zlib", 6), -1)
    expected = np.full((5, 4), -1, dtype=">i4")
    expected[1:3, 2] = [8, 9]
    assert_same(b[...], expected)
    conn.close()


def test_chunks_are_separate_objects_and_reads_do_not_grow_the_cache(db):
    conn, tm = open_conn(db)
    a = na.zeros((40, 40), chunks=(4, 4))
    a[...] = np.arange(1600.0).reshape(40, 40)
    conn.root()["a"] = a
    tm.commit()
    oids = {a._tree[k]._p_oid for k in a.chunk_keys()}
    assert len(oids) == 100
    conn.close()
    conn, tm = open_conn(db)
    conn.cacheMinimize()  # the pooled connection still holds the written chunks
    b = conn.root()["a"]
    b._p_activate()
    assert all(b._tree[k]._p_changed is None for k in b.chunk_keys())
    before = conn._cache.cache_non_ghost_count
    assert b[...].sum() == np.arange(1600.0).sum()
    assert b.sum() == np.arange(1600.0).sum()
    after = conn._cache.cache_non_ghost_count
    assert after - before < 10  # tree nodes only, not the 100 chunks
    assert all(b._tree[k]._p_changed is None for k in b.chunk_keys())
    conn.close()


def test_writes_happen_in_the_transaction(db):
    conn, tm = open_conn(db)
    conn.root()["a"] = na.zeros((10,), chunks=3)
    tm.commit()
    a = conn.root()["a"]
    a[4] = 1.0
    tm.abort()
    assert a[4] == 0.0
    a[4] = 2.0
    tm.commit()
    other, tm2 = open_conn(db)
    assert other.root()["a"][4] == 2.0
    conn.close()
    other.close()
    transaction.abort()
