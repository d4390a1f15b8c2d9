"""Lazy views (views.py): transposes, basic slices, size-1 axes and reshapes of stored
arrays and lazy expressions, against numpy; chunk by chunk within memory_bytes_max;
sparse exabyte shapes cheap; writes through views of stored arrays."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na
from neoarray.array import views
from neoarray.array.errors import ArrayShapeError, ArrayValueError

from array_helpers import STRUCT, chunk_shapes, examples, indices, values_for, write_sparse_or_dense

DTYPES = [np.dtype(d) for d in ("bool", "int16", "int64", "float32", "float64", "complex128",
                                ">i4")] + [STRUCT]


@st.composite
def operands(draw, max_dims=3, max_side=7, chunk_max=None):
    """``(oracle, neoarray)``: a stored array, or (numeric dtypes, drawn) an expression
    over one; C or F order, any chunks (at most ``chunk_max`` per axis), dense or sparse."""
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims)))
    dtype = draw(st.sampled_from(DTYPES))
    oracle = values_for(draw, shape, dtype)
    chunks = draw(chunk_shapes(shape) if chunk_max is None else
                  st.tuples(*[st.integers(1, chunk_max)] * len(shape)))
    array = na.ndarray(shape, dtype=dtype, chunks=chunks,
                       order=draw(st.sampled_from("CF")))
    write_sparse_or_dense(draw, oracle, array, items_max=3)
    if dtype.kind in "if" and draw(st.booleans()):
        return oracle * 2 + 1, array * 2 + 1
    return oracle, array


def _basic_key(draw, shape):
    """A basic index: integers, slices with any step, None and Ellipsis."""
    key = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "slice", "all"] if n else ["slice", "all"]))
        if kind == "int":
            key.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            key.append(slice(draw(st.none() | st.integers(-n - 1, n + 1)),
                             draw(st.none() | st.integers(-n - 1, n + 1)),
                             draw(st.none() | st.integers(-3, 3).filter(bool))))
        else:
            key.append(slice(None))
        if draw(st.integers(0, 4)) == 0:
            key.append(None)
    if draw(st.booleans()) and key:
        key[draw(st.integers(0, len(key) - 1))] = Ellipsis
        key = [k for i, k in enumerate(key) if k is not Ellipsis or i == key.index(Ellipsis)]
    return tuple(key)


def _step(draw, oracle, array):
    """One view operation drawn, applied to both."""
    op = draw(st.sampled_from(["T", "transpose", "swapaxes", "slice", "squeeze", "expand",
                               "reshape", "ravel"]))
    ndim = oracle.ndim
    if op == "T":
        return oracle.T, array.T
    if op == "transpose":
        perm = draw(st.permutations(range(ndim)))
        return np.transpose(oracle, perm), array.transpose(*perm)
    if op == "swapaxes" and ndim:
        a, b = draw(st.integers(-ndim, ndim - 1)), draw(st.integers(-ndim, ndim - 1))
        return oracle.swapaxes(a, b), np.swapaxes(array, a, b)
    if op == "slice" and ndim:
        key = _basic_key(draw, oracle.shape)
        expected = oracle[key]
        if not np.ndim(expected):
            return oracle, array
        # a lazy array's basic selection is a view; a stored array's is read (a view of
        # it made here)
        return expected, array[key] if isinstance(array, na.lazyarray) else views.select(array, key)
    if op == "squeeze":
        return oracle.squeeze(), np.squeeze(array)
    if op == "expand":
        axis = draw(st.integers(-ndim - 1, ndim))
        return np.expand_dims(oracle, axis), np.expand_dims(array, axis)
    if op == "reshape" and oracle.size:
        shape = _factorization(draw, oracle.size)
        return oracle.reshape(shape), array.reshape(shape)
    if op == "ravel":
        return oracle.ravel(), array.ravel()
    return oracle, array


def _factorization(draw, size):
    factors, n, p = [], size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    factors = draw(st.permutations(factors))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(factors) - 1)), max_size=3)))
    parts = [math.prod(factors[a:b]) for a, b in zip([0] + cuts, cuts + [len(factors)])]
    for _ in range(draw(st.integers(0, 1))):
        parts.insert(draw(st.integers(0, len(parts))), 1)
    return tuple(parts) if size > 1 else (1,) * draw(st.integers(0, 2))


def check(got, expected):
    assert isinstance(got, (na.lazyarray, na.ndarray)), type(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), expected)
    # chunk by chunk: the chunks of the view, each computed from its base's
    np.testing.assert_array_equal(np.asarray(na.store(got)), expected)
    if expected.dtype.kind in "biufc" and expected.size:
        scale = np.abs(expected.astype(np.complex128)).sum()   # float32 sums round
        assert abs(complex(got.sum()) - complex(expected.sum())) <= 1e-5 * scale


@examples(60)
@given(operands(), st.data())
def test_chains_of_views_match_numpy(pair, data):
    oracle, array = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        for _ in range(data.draw(st.integers(1, 3))):
            oracle, array = _step(data.draw, oracle, array)
            check(array, oracle)
        if oracle.ndim:
            key = data.draw(indices(oracle.shape))
            try:
                expected = oracle[key]
            except IndexError:
                with pytest.raises(IndexError):
                    np.asarray(array[key])
                return
            got = array[key]
            np.testing.assert_array_equal(np.asarray(got), expected)
            assert np.shape(got) == np.shape(expected)


@examples(40)
@given(operands(max_dims=2, max_side=40, chunk_max=5), st.data())
def test_views_of_arrays_larger_than_memory_read_chunk_by_chunk(pair, data):
    oracle, array = pair
    memory = 25 * array.itemsize                # a chunk, far less than most arrays
    with na.configure(memory_bytes_max=memory), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        try:
            for _ in range(2):
                oracle, array = _step(data.draw, oracle, array)
        except na.ArrayTooLargeError:           # a reshape the chunks do not allow
            assert oracle.nbytes > memory
            return
        stored = na.store(array)
        if oracle.nbytes > memory:
            with pytest.raises(na.ArrayTooLargeError):
                np.asarray(array)
    np.testing.assert_array_equal(np.asarray(stored), oracle)


def test_views_read_their_base_when_read_and_write_through():
    a = na.asarray(np.arange(24.0).reshape(4, 6), chunks=(3, 4))
    oracle = np.arange(24.0).reshape(4, 6)
    t, row = a.T, (a + 1)[1:3, ::2]
    a[0, 1] = oracle[0, 1] = 50
    assert t[1, 0] == 50
    t[2:4, 1] = oracle.T[2:4, 1] = -1            # writes into a
    a.swapaxes(0, 1)[::-2, 3] = oracle.swapaxes(0, 1)[::-2, 3] = [7, 8, 9]
    np.expand_dims(a, 0)[0, 3, None] = oracle[None][0, 3, None] = 4
    np.testing.assert_array_equal(a[...], oracle)
    np.testing.assert_array_equal(np.asarray(row), (oracle + 1)[1:3, ::2])
    with pytest.raises(ArrayValueError, match="read-only"):
        row[0, 0] = 1
    with pytest.raises(ArrayValueError, match="basic selections only"):
        t[[0, 1], 0] = 1
    with pytest.raises(ArrayShapeError, match="could not broadcast"):
        t[0] = [1, 2, 3]


def test_reshape_is_a_view_when_the_chunks_allow_it():
    rows = na.asarray(np.arange(120.0).reshape(12, 10), chunks=(3, 10))     # whole rows
    assert isinstance(rows.ravel(), views.reshapeview)
    assert isinstance(rows.reshape(4, 3, 2, 5), views.reshapeview)
    assert rows.reshape(4, 3, 2, 5).chunks == (1, 3, 2, 5)
    np.testing.assert_array_equal(np.asarray(rows.reshape(4, 3, 2, 5).ravel().reshape(12, 10)),
                                  np.arange(120.0).reshape(12, 10))
    tiles = na.asarray(np.arange(120.0).reshape(12, 10), chunks=(3, 4))     # cut rows
    with na.configure(memory_bytes_max=900), pytest.raises(na.ArrayTooLargeError, match="960 bytes"):
        tiles.ravel()
    assert not isinstance(tiles.reshape(2, 60), views.reshapeview)
    np.testing.assert_array_equal(np.asarray(tiles.reshape(2, 60)), np.arange(120.0).reshape(2, 60))


def test_views_of_an_exabyte_shaped_sparse_expression_touch_only_written_chunks():
    a = na.zeros((10**12, 10**6), chunks=(10, 1000))
    a[123_456_789, 7] = 1.5
    a[5, 999_999] = -2.0
    b = (a * 2)[::3, 5:].T
    assert b.shape == (10**6 - 5, -(-10**12 // 3))
    # each written chunk of a reaches at most 2 chunks of b per axis (row 5 is not selected)
    assert len(list(b.chunk_keys())) <= 8 and b.sum() == 3.0
    assert b[999_994, 5 // 3] == 0.0 and b[2, 123_456_789 // 3] == 3.0
    column = np.expand_dims(a.T[7], 0)
    assert column.shape == (1, 10**12) and column.sum() == 1.5
    rows = na.zeros((10**15, 1000), chunks=(10, 1000))       # chunks of whole rows
    rows[123_456_789, 7] = 1.5
    rows[5, 999] = -2.0
    flat = rows.reshape(10**18)                         # runs of 10,000 items: a view
    assert isinstance(flat, views.reshapeview) and len(list(flat.chunk_keys())) == 2
    assert flat[123_456_789 * 1000 + 7] == 1.5 and flat.min() == -2.0
    split = (rows + 1).reshape(10**6, 10**9, 1000)
    assert split[0, 123_456_789, 7] == 2.5 and split.max() == 2.5
    assert len(list(split.chunk_keys())) == 2
    with pytest.raises(na.ArrayTooLargeError, match="do not cut both shapes"):
        a.ravel()
