"""ndarray methods (methods.py) against numpy, on dense and sparse arrays of several
shapes, dtypes, orders and chunk shapes."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na
from neoarray.array.errors import ArrayShapeError, ArrayValueError

from array_helpers import chunk_shapes, examples, values_for, write_sparse_or_dense

DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int32", "int64", "float32", "float64",
                                "complex128")]


@st.composite
def operands(draw, max_dims=3):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=max_dims)))
    dtype = draw(st.sampled_from(DTYPES))
    chunks = draw(chunk_shapes(shape))
    oracle = values_for(draw, shape, dtype)
    array = na.ndarray(shape, dtype=dtype, chunks=chunks, order=draw(st.sampled_from("CF")))
    write_sparse_or_dense(draw, oracle, array)
    return oracle, array


def same(got, expected, kind=(na.lazyarray, na.ndarray)):
    """``got`` (a lazy array or view, or the stored array itself, unless ``kind`` says
    otherwise) holds numpy's result."""
    assert isinstance(got, kind)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), expected)


@examples(150)
@given(operands(), st.data())
def test_axis_moves_match_numpy(pair, data):
    oracle, array = pair
    same(array.T, oracle.T)
    perm = data.draw(st.permutations(range(oracle.ndim)))
    same(array.transpose(*perm), oracle.transpose(*perm))
    same(np.transpose(array, perm), np.transpose(oracle, perm))
    a, b = data.draw(st.integers(-oracle.ndim, oracle.ndim - 1)), data.draw(st.integers(0, oracle.ndim - 1))
    same(array.swapaxes(a, b), oracle.swapaxes(a, b))
    assert len(list(array.T.chunk_keys())) == len(list(array.chunk_keys()))   # stored chunks only


@examples(150)
@given(operands(), st.sampled_from(DTYPES), st.data())
def test_elementwise_methods_match_numpy(pair, dtype, data):
    oracle, array = pair
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        same(array.astype(dtype), oracle.astype(dtype), na.lazyarray)
        same(array.copy(), oracle.copy(), na.ndarray)
        same(np.copy(array), np.copy(oracle), na.ndarray)
        if oracle.dtype.kind in "if":
            low = data.draw(st.integers(-50, 0))
            same(array.clip(low, low + 40), oracle.clip(low, low + 40), na.lazyarray)
            same(np.clip(array, low, None), np.clip(oracle, low, None), na.lazyarray)
        if oracle.dtype.kind in "fc":
            decimals = data.draw(st.integers(-1, 3))
            same(array.round(decimals), oracle.round(decimals), na.lazyarray)
            same(np.round(array, decimals), np.round(oracle, decimals), na.lazyarray)
    assert array.astype(array.dtype, copy=False) is array


def _shapes_with_ones(draw, shape):
    out = [n for n in shape if n != 1 or draw(st.booleans())]
    for _ in range(draw(st.integers(0, 2))):
        out.insert(draw(st.integers(0, len(out))), 1)
    return tuple(out)


@examples(150)
@given(operands(), st.data())
def test_shape_methods_match_numpy(pair, data):
    oracle, array = pair
    ones = _shapes_with_ones(data.draw, oracle.shape)
    same(array.reshape(ones), oracle.reshape(ones))
    if ones:
        same(array.reshape(*ones), oracle.reshape(*ones))
    same(array.ravel(), oracle.ravel())
    same(array.flatten(), oracle.flatten())
    same(np.reshape(array, (-1,)), np.reshape(oracle, (-1,)))
    if oracle.squeeze().shape != oracle.shape:
        same(array.squeeze(), oracle.squeeze())
    axis = data.draw(st.integers(-oracle.ndim - 1, oracle.ndim))
    same(np.expand_dims(array, axis), np.expand_dims(oracle, axis))
    assert array.reshape(oracle.shape) is array


@examples(100)
@given(operands(), st.data())
def test_value_methods_match_numpy(pair, data):
    oracle, array = pair
    flat = data.draw(st.integers(-oracle.size, oracle.size - 1))
    assert array.item(flat) == oracle.item(flat)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in oracle.shape)
    assert array.item(*index) == oracle.item(*index)
    assert array.tolist() == oracle.tolist()
    for got, expected in zip(array.nonzero(), oracle.nonzero()):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(np.nonzero(array), np.nonzero(oracle)):
        np.testing.assert_array_equal(got, expected)


def test_fill_sets_every_item_and_drops_the_chunks():
    array = na.ndarray((6, 5), chunks=(2, 2), dtype="i4")
    array[...] = np.arange(30).reshape(6, 5)
    array.fill(7)
    assert list(array.chunk_keys()) == []
    np.testing.assert_array_equal(np.asarray(array), np.full((6, 5), 7, dtype="i4"))


def test_axis_moves_of_an_exabyte_shaped_array_touch_only_its_stored_chunks():
    array = na.zeros((10**12, 10**6), chunks=(1000, 1000))
    array[123_456_789, 7] = 1.5
    array[5, 999_999] = -2.0
    moved = array.T
    assert moved.shape == (10**6, 10**12) and len(list(moved.chunk_keys())) == 2
    assert moved[7, 123_456_789] == 1.5 and moved[999_999, 5] == -2.0
    assert moved.sum() == -0.5
    rows, cols = array.nonzero()
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(5, 999_999), (123_456_789, 7)]


def test_methods_refuse_what_they_cannot_do_clearly():
    array = na.ndarray((4, 6), chunks=(2, 3))
    with pytest.raises(ArrayShapeError, match="cannot reshape an array of size 24"):
        array.reshape(5, 5)
    with pytest.raises(ArrayShapeError, match="one -1 at most"):
        array.reshape(-1, -1)
    with pytest.raises(ArrayValueError, match="not a permutation"):
        array.transpose(0, 0)
    with pytest.raises(ArrayValueError, match="out of bounds"):
        array.swapaxes(0, 2)
    with pytest.raises(ArrayShapeError, match="axis 1 has size 6"):
        array.squeeze(axis=1)
    with pytest.raises(ArrayValueError, match="not one"):
        array.item()
    with pytest.raises(ArrayValueError, match="a_min, a_max or both"):
        array.clip()
    big = na.zeros((10**9, 10**9))
    with pytest.raises(na.ArrayTooLargeError, match="reshape of shape"):
        big.reshape(10**6, 10**12)
    with pytest.raises(na.ArrayTooLargeError):
        big.tolist()
