"""Lazy expressions (lazy.py): nothing stored until asked, values against numpy, sparse
inputs cheap, storing chunk by chunk; on every storage of the ``db`` fixture."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from ZODB.utils import get_pickle_metadata

import neoarray.array as na
from neoarray.array.errors import ArrayCastError, ArrayShapeError, ArrayValueError

from array_helpers import examples, indices, values_for

DTYPES = [np.dtype(d) for d in ("bool", "int32", "int64", "float64", "complex128")]


def records_of_last_transaction(database):
    """``{class name: records}`` written by the database's last transaction."""
    last = database.lastTransaction()
    counts = {}
    for txn in database.storage.iterator(last, last):
        for record in txn:
            name = get_pickle_metadata(record.data)[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def stored(conn, shape, chunks, values=None, fill_value=0, dtype=float):
    array = conn.root()[f"a{len(conn.root())}"] = na.full(shape, fill_value, dtype=dtype,
                                                          chunks=chunks)
    if values is not None:
        array[...] = values
    conn.transaction_manager.commit()
    return array


# ---------------------------------------------------------------------- nothing stored

def test_an_expression_stores_nothing_at_commit(db, conn):
    a = stored(conn, (40, 6), (7, 4), np.arange(240.0).reshape(40, 6))
    before = db.lastTransaction(), len(db.storage)
    b = np.sqrt(a + 1) * 2
    c = b.astype(np.float32).clip(0, 10)
    assert isinstance(b, na.lazyarray) and not hasattr(b, "_p_jar")
    assert float(c.sum()) == pytest.approx(np.clip(np.sqrt(np.arange(240.0) + 1) * 2, 0, 10).sum(),
                                           rel=1e-5)
    conn.transaction_manager.commit()
    assert (db.lastTransaction(), len(db.storage)) == before


def test_assigning_an_expression_into_the_database_names_the_fix(db, conn):
    a = stored(conn, (10,), (4,), np.arange(10.0))
    conn.root()["b"] = a + 1
    with pytest.raises(na.ArrayLazyError, match=r"persist\(\)"):
        conn.transaction_manager.commit()
    conn.transaction_manager.abort()
    conn.root()["b"] = (a + 1).persist()
    conn.transaction_manager.commit()
    np.testing.assert_array_equal(conn.root()["b"][...], np.arange(10.0) + 1)


def test_storing_writes_exactly_the_chunks_where_inputs_are_stored(db, conn):
    a = stored(conn, (1000, 10), (100, 5))
    a[150, 2] = 1.0
    a[999, 9] = 2.0
    b = stored(conn, (1000, 10), (30, 10))          # another grid
    b[500, 0] = 3.0
    conn.transaction_manager.commit()
    expr = a * 2 + b - 1
    # b's chunk of rows 480-509 overlaps four chunks of a's grid; all fill but one
    assert list(expr.chunk_keys()) == [(1, 0), (4, 0), (4, 1), (5, 0), (5, 1), (9, 1)]
    conn.root()["c"] = expr.persist()
    conn.transaction_manager.commit()
    # a new array: its record, its chunk tree, the log of its concurrent appends
    assert records_of_last_transaction(db) == {"Chunk": 3, "OOBTree": 1, "ndarray": 1, "AppendLog": 1,
                                               "PersistentMapping": 1}
    c = conn.root()["c"]
    assert c.fill_value == -1.0 and c.chunks == a.chunks
    assert (c[150, 2], c[999, 9], c[500, 0], c[0, 0]) == (1.0, 3.0, 2.0, -1.0)
    target = conn.root()["d"] = na.full((1000, 10), -1.0, chunks=(250, 10))
    conn.transaction_manager.commit()
    na.store(expr, target)
    conn.transaction_manager.commit()
    assert records_of_last_transaction(db) == {"Chunk": 3, "OOBTree": 1}   # rows 0, 2, 3
    np.testing.assert_array_equal(target[...], np.asarray(expr))


# ---------------------------------------------------------------------- values

@st.composite
def expressions(draw):
    """``(numpy oracle, lazy expression)``: nested, over two arrays of different chunk
    grids, an operand (numpy or neoarray) broadcast along rows or whole, scalars, one
    dtype."""
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 7)))
    dtype = draw(st.sampled_from(DTYPES))
    x, y = values_for(draw, shape, dtype), values_for(draw, shape, dtype)
    if draw(st.booleans()):                   # sparse: fill everywhere but one item
        x[...] = 0
        x[tuple(draw(st.integers(0, n - 1)) for n in shape)] = values_for(draw, (), dtype)
    a = na.zeros(shape, dtype=dtype, chunks=(draw(st.integers(1, 4)), draw(st.integers(1, 4))))
    b = na.zeros(shape, dtype=dtype, chunks=(draw(st.integers(1, 5)), draw(st.integers(1, 5))))
    a[...], b[...] = x, y
    row = values_for(draw, shape[-1:], dtype) if draw(st.booleans()) else values_for(draw, shape, dtype)
    row_neo = na.asarray(row, chunks=draw(st.integers(1, 4))) if draw(st.booleans()) else row
    scalar = draw(st.sampled_from([2, 3.5, True, 1j]))
    steps = [("add", b, y), ("multiply", scalar, scalar), ("subtract", row_neo, row),
             ("maximum", b, y), ("multiply", a, x)]
    expr, oracle = a, x
    for name, neo, numpy_value in steps[:draw(st.integers(1, len(steps)))]:
        ufunc = getattr(np, name)
        try:
            oracle = quiet(ufunc, oracle, numpy_value)
        except TypeError:
            continue                        # numpy refuses: so must we
        expr = quiet(ufunc, expr, neo)
    if draw(st.booleans()) and oracle.dtype.kind in "biuf":
        oracle, expr = oracle > 1, expr > 1
    return oracle, expr


def quiet(func, *args, **kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@examples(120)
@given(expressions(), st.data())
def test_expressions_match_numpy(pair, data):
    oracle, expr = pair
    assert expr.shape == oracle.shape and expr.dtype == oracle.dtype
    close(quiet(np.asarray, expr), oracle)
    index = data.draw(indices(oracle.shape))
    try:
        expected = oracle[index]
    except IndexError:
        with pytest.raises(IndexError):
            expr[index]
    else:
        close(quiet(expr.__getitem__, index), expected)
    axis = data.draw(st.sampled_from([None, 0, 1]))
    for name in ("sum", "mean", "any", "count_nonzero") + (("max", "min", "argmax")
                                                             if oracle.dtype.kind != "c" else ()):
        close(quiet(getattr(np, name), expr, axis=axis), quiet(getattr(np, name), oracle, axis=axis))
    if oracle.dtype.kind != "b":
        close(quiet(np.asarray, quiet(np.negative, expr) * 2), -oracle * 2)


def test_expressions_larger_than_memory_bytes_max_reduce_and_store_chunk_by_chunk():
    x = np.arange(60_000, dtype=np.float64).reshape(300, 200) % 97
    a = na.asarray(x, chunks=(50, 40))
    b = na.asarray(x.T.copy(), chunks=(30, 300)).T        # a new array of another grid
    row = np.linspace(0, 1, 200)
    with na.configure(memory_bytes_max=100_000, fetch_bytes_max=200_000):
        expr = np.sqrt(a * 2 + b) - row
        expected = np.sqrt(x * 3) - row
        with pytest.raises(na.ArrayTooLargeError, match="480000 bytes"):
            np.asarray(expr)
        assert expr.sum() == pytest.approx(expected.sum())
        close(expr.mean(axis=0), expected.mean(axis=0))
        assert expr.argmax() == expected.argmax()
        close(expr[17, 3:9], expected[17, 3:9])
        close(expr[[0, 299], [5, 199]], expected[[0, 299], [5, 199]])
        stored = na.store(expr)
        assert stored.chunks == expr.chunks and isinstance(stored, na.ndarray)
        target = na.zeros((300, 200), chunks=(64, 64))
        target[...] = expr
        assert target.sum() == pytest.approx(expected.sum())
        target[::60, 5:] = expr[:5, 5:]                     # numpy values, as before
        assert target[60, 5] == pytest.approx(expected[1, 5])
    close(np.asarray(stored), expected)


def test_assignment_of_an_expression_matches_numpy():
    x = np.arange(48.0).reshape(6, 8)
    row = na.asarray(x[0], chunks=(3,))
    # basic selections, the expression broadcast to them, chunk by chunk
    target = na.asarray(x, chunks=(4, 3))
    expected = x.copy()
    expected[1:5, 1::3] = x[0, :3] * 10 + 1
    target[1:5, 1::3] = na.asarray(x[0, :3], chunks=(2,)) * 10 + 1
    np.testing.assert_array_equal(target[...], expected)
    expected[2, :] = x[3] * 2
    target[2, :] = row * 0 + na.asarray(x[3], chunks=(5,)) * 2
    np.testing.assert_array_equal(target[...], expected)
    expected[1:3] = x[0] - 1
    target[1:3] = row - 1
    np.testing.assert_array_equal(target[...], expected)
    # advanced selection, and an expression reading its own target reversed: in memory
    expected[[0, 5]] = x[0] + 7
    target[[0, 5]] = row + 7
    expected[::-1] = expected + 1
    target[::-1] = target + 1
    np.testing.assert_array_equal(target[...], expected)
    target[...] = target * 2          # its own chunks, each read before it is written
    np.testing.assert_array_equal(target[...], expected * 2)
    with pytest.raises(ArrayShapeError, match=r"\(8,\) into a selection of shape \(2, 3\)"):
        target[:2, :3] = row + 1
    with pytest.raises(ArrayCastError):
        na.zeros(8, dtype=int)[...] = row + 0.5


def test_store_checks_its_target():
    a = na.asarray(np.arange(6.0), chunks=(4,))
    with pytest.raises(ArrayShapeError, match=r"shape \(6,\) into an array of shape \(5,\)"):
        na.store(a + 1, na.zeros(5))
    with pytest.raises(ArrayCastError):
        na.store(a + 1j, na.zeros(6))
    with pytest.raises(ArrayValueError, match="numpy array"):
        na.store(a + 1, np.zeros(6))
    with pytest.raises(ArrayValueError, match="read-only"):
        (a + 1)[0] = 5
    b = a + 1
    with pytest.raises(ArrayValueError, match=r"b = b \+ 1"):
        b += 1
    out = na.zeros(6)
    assert np.add(a, 1, out=out) is out and out[5] == 6.0


def test_an_expression_reads_its_inputs_when_read():
    a = na.asarray(np.arange(6.0), chunks=(4,))
    b = (a + 1) * 2
    frozen = b.copy()
    a[0] = 10.0
    assert b[0] == 22.0 and frozen[0] == 2.0 and isinstance(frozen, na.ndarray)
    assert len(b) == 6 and [float(v) for v in b][:2] == [22.0, 4.0]
    assert b.ndim == 1 and b.size == 6 and b.nbytes == 48 and b.fill_value == 2.0
    assert "multiply(add(ndarray(6,), 1), 2)" in repr(b)
    assert b.astype(b.dtype, copy=False) is b
    np.testing.assert_array_equal(b.T, np.asarray(b))
    np.testing.assert_array_equal(np.cumsum(b), np.cumsum(np.asarray(b)))
    with pytest.raises(ValueError):
        np.array(b, copy=False)


# ---------------------------------------------------------------------- exabyte, sparse

def test_expressions_over_an_exabyte_shaped_sparse_array_are_cheap():
    a = na.zeros((10**18, 2), chunks=(1 << 16, 2))
    a[10**17] = [1.0, 2.0]
    b = na.zeros((10**18, 2), chunks=(1 << 15, 2))
    b[5] = [4.0, 4.0]
    expr = a * 2 + 1
    assert list(expr.chunk_keys()) == list(a.chunk_keys())
    assert (expr[10**17, 1], expr[0, 0], expr[-1, -1]) == (5.0, 1.0, 1.0)
    assert expr.max() == 5.0 and expr.min() == 1.0 and expr.argmax() == 2 * 10**17 + 1
    assert expr.sum() == pytest.approx(2e18 + 6.0)
    assert np.count_nonzero(expr - 1) == 2
    mixed = expr + b
    assert len(list(mixed.chunk_keys())) == 2 and mixed[5, 1] == 5.0
    target = na.full((10**18, 2), 1.0, chunks=(1 << 14, 2))
    target[...] = mixed
    assert len(list(target.chunk_keys())) == 2
    assert target[10**17, 0] == 3.0 and target[5, 0] == 5.0 and target[6, 0] == 1.0
    kept = mixed.persist()
    assert kept.shape == (10**18, 2) and len(list(kept.chunk_keys())) == 2
    with pytest.raises(na.ArrayTooLargeError, match="bytes"):
        np.asarray(expr)


def test_asarray_stores_an_expression_chunk_by_chunk():
    a = na.zeros((10**12,), chunks=(1000,))
    a[5] = 2.0
    b = na.asarray(a * 3 + 1, dtype=np.float32)
    assert isinstance(b, na.ndarray) and b.dtype == np.float32 and b.fill_value == 1.0
    assert list(b.chunk_keys()) == [(0,)] and b[5] == 7.0
