"""Matrix products (linalg.py) and running reductions (scans.py) against numpy, with
memory bounded below the operands' size: nothing is loaded whole."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na
from neoarray.array.config import configure
from neoarray.array.errors import ArrayShapeError, ArrayValueError

from array_helpers import examples, values_for

PRODUCT_DTYPES = [np.dtype(d) for d in ("int32", "int64", "float64", "float32", "complex128")]
SCAN_DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int64", "float64", "complex128")]


def _operand(draw, shape, dtype, kind):
    oracle = values_for(draw, shape, dtype)
    if kind == "numpy":
        return oracle, oracle.copy()
    chunks = tuple(draw(st.integers(1, max(1, n))) for n in shape)
    array = na.ndarray(shape, dtype=dtype, chunks=chunks, order=draw(st.sampled_from("CF")))
    array[...] = oracle
    return oracle, array


def _bound(*operands):
    """A memory bound below every neoarray operand's size, above one chunk's blocks."""
    chunk_bytes = [int(np.prod(a.chunks)) * a.itemsize for a in operands if isinstance(a, na.ndarray)]
    return 64 * max(chunk_bytes) + (1 << 14)


@st.composite
def products(draw):
    n, k, m = (draw(st.integers(1, 24)) for _ in range(3))
    left_1d, right_1d = draw(st.booleans()), draw(st.booleans())
    dtype = draw(st.sampled_from(PRODUCT_DTYPES))
    kinds = draw(st.sampled_from([("neo", "neo"), ("neo", "numpy"), ("numpy", "neo")]))
    a = _operand(draw, (k,) if left_1d else (n, k), dtype, kinds[0])
    b = _operand(draw, (k,) if right_1d else (k, m), draw(st.sampled_from(PRODUCT_DTYPES)), kinds[1])
    return a, b


def _same(got, expected, scale=1.0):
    """Equal up to rounding: blocks sum in another order than numpy (``scale``: the
    largest sum of absolute terms)."""
    if np.ndim(expected) == 0:
        assert np.ndim(got) == 0
    else:
        assert isinstance(got, na.ndarray) and got.shape == expected.shape
    got = np.asarray(got)
    assert got.dtype == expected.dtype
    eps = np.finfo(expected.dtype).eps if expected.dtype.kind in "fc" else 0.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * eps * scale + 1e-12)


@examples(120)
@given(products(), st.sampled_from(["@", "matmul", "dot", "method"]))
def test_products_match_numpy_in_bounded_memory(pair, how):
    (a0, a), (b0, b) = pair
    expected = a0 @ b0
    with configure(memory_bytes_max=_bound(a, b)):
        if how == "@":
            got = a @ b
        elif how == "matmul":
            got = np.matmul(a, b)
        elif how == "dot":
            got = np.dot(a, b)
        else:
            if not isinstance(a, na.ndarray):
                return
            got = a.dot(b)
    _same(got, expected, float(np.max(np.abs(a0) @ np.abs(b0), initial=0.0)))


def test_a_product_larger_than_memory_runs_block_by_block():
    rng = np.random.default_rng(7)
    a0, x0 = rng.normal(size=(400, 300)), rng.normal(size=300)
    a = na.ndarray(a0.shape, chunks=(50, 60))
    a[...] = a0
    with configure(memory_bytes_max=a0.nbytes // 8):
        with pytest.raises(na.ArrayTooLargeError):
            np.asarray(a)            # the operand itself does not fit
        y = a @ x0
    np.testing.assert_allclose(np.asarray(y), a0 @ x0)


def test_products_refuse_mismatched_and_unsupported_operands():
    a = na.ndarray((4, 3), chunks=(2, 2))
    with pytest.raises(ArrayShapeError, match="contracted axes differ"):
        a @ np.ones(5)
    with pytest.raises(TypeError):
        np.matmul(a, np.ones((2, 3, 4)))       # 3-D: numpy's own error
    with pytest.raises(TypeError):
        np.vecdot(a, a) if hasattr(np, "vecdot") else np.subtract.accumulate(a)


@st.composite
def scans(draw):
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from(SCAN_DTYPES))
    _, array = oracle_array = _operand(draw, shape, dtype, "neo")
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return oracle_array, axis


@examples(120)
@given(scans(), st.sampled_from(["cumsum", "cumprod", "method", "add", "multiply", "maximum",
                                 "minimum", "logical_or", "logical_and"]))
def test_running_reductions_match_numpy_in_bounded_memory(case, how):
    (a0, a), axis = case
    if how in ("cumsum", "cumprod"):
        expected = getattr(np, how)(a0, axis=axis)
        run = lambda: getattr(np, how)(a, axis=axis)      # noqa: E731
    elif how == "method":
        expected = a0.cumsum(axis=axis)
        run = lambda: a.cumsum(axis=axis)                 # noqa: E731
    else:
        ufunc = getattr(np, how)
        if a0.dtype.kind == "c" and how in ("maximum", "minimum"):
            return
        with np.errstate(all="ignore"):
            expected = ufunc.accumulate(a0, axis=axis)
        run = lambda: ufunc.accumulate(a, axis=axis)       # noqa: E731
    with configure(memory_bytes_max=_bound(a)), np.errstate(all="ignore"):
        got = run()
    assert isinstance(got, na.ndarray) and got.shape == expected.shape and got.dtype == expected.dtype
    if expected.dtype.kind not in "fc":
        np.testing.assert_array_equal(np.asarray(got), expected)
        return
    # the carry joins each chunk's running values in another order than numpy's: equal
    # up to rounding of the partial sums (or products)
    eps = np.finfo(expected.dtype).eps
    with np.errstate(all="ignore"):
        scale = np.abs(a0).astype(expected.dtype).cumsum(axis=axis) if how in ("cumsum", "method", "add") \
            else np.abs(expected)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=64 * eps, atol=float(64 * eps * np.max(np.abs(scale))))


def test_scans_write_into_out_and_flatten_within_the_memory_bound():
    a0 = np.arange(24, dtype=np.int64).reshape(4, 6)
    a = na.ndarray(a0.shape, dtype=a0.dtype, chunks=(3, 4))
    a[...] = a0
    out = na.ndarray(a0.shape, dtype=np.int64, chunks=(2, 2))
    assert np.cumsum(a, axis=1, out=out) is out
    np.testing.assert_array_equal(np.asarray(out), np.cumsum(a0, axis=1))
    np.testing.assert_array_equal(np.asarray(np.cumsum(a)), np.cumsum(a0))     # flattened, in memory
    with na.configure(memory_bytes_max=a0.nbytes - 1), pytest.raises(na.ArrayTooLargeError):
        np.cumsum(a)
    one = na.ndarray((7,), dtype=np.int8, chunks=(3,))
    one[...] = np.arange(7, dtype=np.int8)
    np.testing.assert_array_equal(np.asarray(np.cumsum(one)), np.cumsum(np.arange(7, dtype=np.int8)))
    with pytest.raises(ArrayValueError, match="out of bounds"):
        np.cumsum(a, axis=2)


@examples(120)
@given(scans(), st.integers(0, 3), st.booleans())
def test_differences_match_numpy_from_the_stored_chunks(case, n, sparse):
    (a0, a), axis = case
    if sparse:                      # one item written, the rest the fill value
        a0 = np.zeros_like(a0)
        a0[(0,) * a0.ndim] = 1
        a = na.ndarray(a0.shape, dtype=a0.dtype, chunks=a.chunks)
        a[(0,) * a0.ndim] = a0[(0,) * a0.ndim]
    with np.errstate(all="ignore"):
        expected = np.diff(a0, n=n, axis=axis)
        got = np.diff(a, n=n, axis=axis)
    assert isinstance(got, na.ndarray) and got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_differences_of_an_exabyte_shaped_series_touch_its_stored_chunks_only():
    series = na.zeros((10**12,), chunks=(1000,))
    series[5000] = 2.0
    series[123_456_789] = 1.0
    d = np.diff(series)
    assert d.shape == (10**12 - 1,) and len(list(d.chunk_keys())) <= 4
    assert (d[4999], d[5000], d[123_456_788], d[123_456_789], d[10**9]) == (2.0, -2.0, 1.0, -1.0, 0.0)
    with pytest.raises(ArrayValueError, match="non-negative"):
        np.diff(series, n=-1)


def test_a_product_with_an_exabyte_shaped_sparse_matrix_computes_its_stored_rows():
    """Before, ``A @ x`` listed every block of rows of a (10**18, 2) array: MemoryError."""
    a = na.zeros((10**18, 2), order="F")
    a[5], a[10**17] = [1.0, 2.0], [3.0, 4.0]
    y = a @ np.array([1.0, 10.0])
    assert y.shape == (10**18,) and (y[5], y[10**17], y[7]) == (21.0, 43.0, 0.0) and y.sum() == 64.0
    assert len(list(y.chunk_keys())) == 2
    with_inf = a @ np.array([1.0, np.inf])            # 0 * inf in every unstored row, as numpy
    assert with_inf[5] == np.inf and np.isnan(with_inf[7])
    ones = na.full((10**18, 2), 1.0)
    assert (ones @ np.array([1.0, 1.0]))[123] == 2.0
    mixed = np.ones((2, 3))
    mixed[1, 2] = np.inf                                # unstored rows give [0, 0, nan]: not one value
    with pytest.raises(na.ArrayTooLargeError, match="would compute .* tiles"):
        a @ mixed
