"""Reductions against numpy (neoarray/array/reductions.py)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na

from array_helpers import examples, NUMERIC, chunk_shapes, shapes, values_for

SETTINGS = examples(300)
NAMES = ["sum", "prod", "mean", "var", "std", "min", "max", "any", "all",
         "count_nonzero", "argmin", "argmax"]


def tolerance(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if dtype in (np.float32, np.complex64) else \
        {"rtol": 1e-9, "atol": 1e-9}


@st.composite
def sparse_arrays(draw, dtypes=NUMERIC):
    """A neoarray with a non-zero fill value, a few chunks written, and its oracle."""
    shape = draw(shapes(max_side=8))
    dtype = draw(st.sampled_from(dtypes))
    chunks = draw(chunk_shapes(shape))
    fill = values_for(draw, (), dtype)[()]
    oracle = np.full(shape, fill, dtype=dtype)
    array = na.full(shape, fill, dtype=dtype, order=draw(st.sampled_from("CF")),
                    chunks=chunks)
    for _ in range(draw(st.integers(0, 3))):
        region = tuple(slice(draw(st.integers(0, n)), draw(st.integers(0, n))) for n in shape)
        values = values_for(draw, oracle[region].shape, dtype)
        oracle[region] = values
        array[region] = values
    if draw(st.booleans()) and oracle.size and dtype.kind in "fc":
        index = tuple(draw(st.integers(0, n - 1)) for n in shape)
        oracle[index] = np.nan
        array[index] = np.nan
    return oracle, array


def numpy_result(func, oracle, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return func(oracle, **kwargs), None
        except (ValueError, TypeError) as exc:
            return None, exc


def check(name, oracle, array, **kwargs):
    func = getattr(np, name)
    expected, error = numpy_result(func, oracle, **kwargs)
    if error is not None:
        with pytest.raises(type(error)):
            func(array, **kwargs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = func(array, **kwargs)
        method = getattr(array, name)(**kwargs)
    assert np.shape(got) == np.shape(expected), (name, kwargs)
    assert np.asarray(got).dtype == np.asarray(expected).dtype, (name, kwargs)
    assert type(got) is type(expected) or isinstance(got, np.ndarray), (name, kwargs)
    if name in ("argmin", "argmax", "count_nonzero", "any", "all", "min", "max") or \
            oracle.dtype.kind in "biu" and name in ("sum", "prod"):
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, equal_nan=True, **tolerance(oracle.dtype))
    np.testing.assert_array_equal(method, got)


@SETTINGS
@given(sparse_arrays(), st.sampled_from(NAMES), st.data())
def test_reductions_match_numpy(pair, name, data):
    oracle, array = pair
    ndim = oracle.ndim
    if name in ("argmin", "argmax"):
        axis = data.draw(st.none() | st.integers(-ndim, ndim - 1))
    else:
        axis = data.draw(st.none() | st.integers(-ndim, ndim - 1) |
                         st.lists(st.integers(0, ndim - 1), unique=True).map(tuple))
    kwargs = {"axis": axis, "keepdims": data.draw(st.booleans())}
    if name in ("var", "std"):
        kwargs["ddof"] = data.draw(st.integers(0, 1))
    if name == "prod" and oracle.dtype.kind in "fc":
        return check(name, np.clip(oracle.real, -1.5, 1.5), na.asarray(
            np.clip(oracle.real, -1.5, 1.5), chunks=array.chunks), **kwargs)
    check(name, oracle, array, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_reductions_of_empty_arrays_match_numpy(name):
    for shape, axis in [((0,), None), ((3, 0), 0), ((3, 0), 1), ((0, 4), None)]:
        check(name, np.zeros(shape), na.zeros(shape), axis=axis)


def test_huge_array_reductions_use_only_stored_chunks():
    a = na.full((10**18, 2), 1.0, order="F", chunks=(1 << 16, 1))
    a[5, 0] = 7.0
    a[10**18 - 1, 1] = -3.0
    a[4 * 10**17:4 * 10**17 + 4] = [[2, 2]] * 4
    n = 2 * 10**18
    assert a.sum() == pytest.approx(n - 8 + 7 + -3 - 1 + 16)
    np.testing.assert_allclose(a.sum(axis=0), [10**18 - 5 + 7 + 8, 10**18 - 5 - 3 + 8])
    assert a.max() == 7.0 and a.min() == -3.0
    assert a.argmax() == 10 and a.argmin() == n - 1
    np.testing.assert_array_equal(a.argmin(axis=0), [0, 10**18 - 1])
    assert a.mean() == pytest.approx(1.0)
    assert a.count_nonzero() == n
    assert a.all() and a.any()
    assert np.var(a) == pytest.approx(((7 - 1) ** 2 + 16 + 8) / n, rel=1e-3)


def test_argmin_prefers_the_first_unwritten_item():
    a = na.zeros((6, 6), chunks=(2, 2))
    a[0:2, 0:2] = 5.0  # first chunk stored, minimum 0 first found in chunk (0, 1)
    a[0, 3] = -0.0
    assert a.argmin() == np.asarray(a).argmin() == 2
    np.testing.assert_array_equal(a.argmin(axis=1), np.asarray(a).argmin(axis=1))
    np.testing.assert_array_equal(a.argmax(axis=0), np.asarray(a).argmax(axis=0))


def test_nan_propagates():
    a = na.zeros((10,), chunks=3)
    a[7] = np.nan
    assert np.isnan(a.sum()) and np.isnan(a.min()) and np.isnan(np.max(a))
    assert a.argmax() == 7 and a.argmin() == 7


def test_ufunc_reduce_and_out():
    a = na.asarray(np.arange(12.0).reshape(3, 4), chunks=(2, 3))
    np.testing.assert_array_equal(np.add.reduce(a), np.arange(12.0).reshape(3, 4).sum(0))
    out = np.empty(3)
    assert a.max(axis=1, out=out) is out
    np.testing.assert_array_equal(out, [3, 7, 11])


def test_structured_reduction_raises_numpy_error():
    a = na.zeros(3, dtype=[("a", "i4")])
    with pytest.raises(TypeError):
        a.sum()
