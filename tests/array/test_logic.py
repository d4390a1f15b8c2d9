"""np.where, np.isclose, np.allclose, np.array_equal (logic.py) against numpy."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na

from array_helpers import chunk_shapes, examples, values_for, write_sparse_or_dense

DTYPES = [np.dtype(d) for d in ("int32", "float64", "float32", "bool", "complex128")]


@st.composite
def operands(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    chunks = draw(chunk_shapes(shape))
    oracle = values_for(draw, shape, dtype)
    if dtype.kind == "f" and draw(st.booleans()):
        oracle.flat[draw(st.integers(0, oracle.size - 1))] = np.nan
    array = na.ndarray(shape, dtype=dtype, chunks=chunks)
    array[...] = oracle
    return oracle, array, chunks


def _other(draw, oracle, chunks, kind):
    """An operand shaped like ``oracle``: a neoarray (same chunks), numpy, a scalar or a row."""
    other = values_for(draw, oracle.shape, oracle.dtype)
    if draw(st.booleans()):
        other = oracle.copy()          # equal operands too
    if kind == "scalar":
        return other.flat[0], other.flat[0]
    if kind == "row":
        return other[(0,) * (other.ndim - 1)], other[(0,) * (other.ndim - 1)]
    if kind == "numpy":
        return other, other.copy()
    array = na.ndarray(other.shape, dtype=other.dtype, chunks=chunks)
    array[...] = other
    return other, array


@examples(150)
@given(operands(), st.sampled_from(["neo", "numpy", "scalar", "row"]), st.data())
def test_where_and_isclose_match_numpy(pair, kind, data):
    oracle, array, chunks = pair
    other0, other = _other(data.draw, oracle, chunks, kind)
    cond0 = oracle != np.zeros((), oracle.dtype)
    cond = na.ndarray(oracle.shape, dtype=bool, chunks=chunks)
    cond[...] = cond0
    got = np.where(cond, array, other)
    expected = np.where(cond0, oracle, other0)
    assert isinstance(got, na.lazyarray) and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), expected)
    for g, e in zip(np.where(cond), np.where(cond0)):
        np.testing.assert_array_equal(g, e)
    if oracle.dtype != bool:
        equal_nan = data.draw(st.booleans())
        np.testing.assert_array_equal(np.asarray(np.isclose(array, other, equal_nan=equal_nan)),
                                      np.isclose(oracle, other0, equal_nan=equal_nan))


@examples(150)
@given(operands(), st.sampled_from(["neo", "numpy", "scalar", "row"]), st.booleans(), st.data())
def test_allclose_and_array_equal_match_numpy(pair, kind, equal_nan, data):
    oracle, array, chunks = pair
    other0, other = _other(data.draw, oracle, chunks, kind)
    if oracle.dtype != bool:
        assert np.allclose(array, other, equal_nan=equal_nan) == np.allclose(oracle, other0, equal_nan=equal_nan)
    assert np.array_equal(array, other, equal_nan=equal_nan) == np.array_equal(oracle, other0, equal_nan=equal_nan)


def test_comparisons_of_exabyte_shaped_sparse_arrays_visit_stored_chunks_only():
    a = na.zeros((10**9, 10**9), chunks=(100, 100))
    b = na.zeros((10**9, 10**9), chunks=(100, 100))
    a[5, 7] = b[5, 7] = 1.0
    assert np.array_equal(a, b) and np.allclose(a, b)
    b[123_456, 7] = 2.0
    assert not np.array_equal(a, b) and not np.allclose(a, b)
    chosen = np.where(a > 0.5, a, -1.0)
    assert chosen[5, 7] == 1.0 and chosen[0, 0] == -1.0 and len(list(chosen.chunk_keys())) == 1
    with pytest.raises(ValueError, match="both or neither"):
        np.where(a > 0, a)


@st.composite
def real_operands(draw):
    shape = tuple(draw(st.lists(st.integers(1, 8), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.dtype(d) for d in ("int8", "int64", "uint16", "float32", "float64")]))
    chunks = draw(chunk_shapes(shape))
    oracle = values_for(draw, shape, dtype)
    array = na.ndarray(shape, dtype=dtype, chunks=chunks)
    write_sparse_or_dense(draw, oracle, array, items_max=3)
    return oracle, array


@examples(150)
@given(real_operands(), st.integers(1, 12), st.booleans(), st.booleans())
def test_histogram_matches_numpy(pair, bins, given_range, density):
    oracle, array = pair
    kwargs = {"bins": bins, "density": density}
    if given_range:
        kwargs["range"] = (-20.0, 30.0)
    counts, edges = np.histogram(array, **kwargs)
    counts0, edges0 = np.histogram(oracle, **kwargs)
    np.testing.assert_allclose(edges, edges0)
    np.testing.assert_allclose(counts, counts0, equal_nan=True)


@examples(100)
@given(st.integers(1, 300), st.integers(1, 64), st.integers(0, 40), st.data())
def test_bincount_matches_numpy(size, chunk, minlength, data):
    oracle = np.asarray(data.draw(st.lists(st.integers(0, 50), min_size=size, max_size=size)), dtype=np.int64)
    array = na.ndarray((size,), dtype=np.int64, chunks=(chunk,))
    array[...] = oracle
    np.testing.assert_array_equal(np.bincount(array, minlength=minlength), np.bincount(oracle, minlength=minlength))
