"""numpy protocols: __array__, __array_ufunc__, __array_function__ (ufuncs.py)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na

from array_helpers import examples, chunk_shapes, shapes, values_for

UNARY = [np.negative, np.sqrt, np.exp, np.isnan, np.abs, np.sin, np.logical_not]
BINARY = [np.add, np.subtract, np.multiply, np.true_divide, np.maximum, np.less,
          np.power, np.floor_divide, np.equal]
DTYPES = [np.dtype(d) for d in ("int32", "float64", "float32", "bool")]


@st.composite
def operands(draw):
    shape = draw(shapes(max_side=7))
    dtype = draw(st.sampled_from(DTYPES))
    chunks = draw(chunk_shapes(shape))
    oracle = values_for(draw, shape, dtype)
    array = na.full(shape, oracle.flat[0] if oracle.size else 0, dtype=dtype,
                    chunks=chunks, order=draw(st.sampled_from("CF")))
    if oracle.size and draw(st.booleans()):
        oracle[...] = oracle.flat[0]
        oracle[(0,) * oracle.ndim] = values_for(draw, (), dtype)
        array[(0,) * oracle.ndim] = oracle[(0,) * oracle.ndim]
    else:
        array[...] = oracle
    return oracle, array


def quiet(func, *args, **kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def same(got, expected, kind=na.lazyarray):
    """``got`` (a lazy expression, unless ``kind`` says otherwise) holds numpy's result."""
    assert isinstance(got, kind)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    values = quiet(np.asarray, got)         # a lazy expression is computed here
    np.testing.assert_allclose(values, expected, rtol=1e-6, equal_nan=True)


@examples(150)
@given(operands(), st.sampled_from(UNARY))
def test_unary_ufuncs_match_numpy(pair, ufunc):
    oracle, array = pair
    compare(ufunc, (oracle,), (array,))


@examples(150)
@given(operands(), st.sampled_from(BINARY), st.sampled_from(["neo", "numpy", "scalar",
                                                             "row"]))
def test_binary_ufuncs_match_numpy(pair, ufunc, other_kind):
    oracle, array = pair
    if other_kind == "scalar":
        other_np = other = 3
    elif other_kind == "row":
        other_np = other = (np.arange(oracle.shape[-1]) % 3 + 1).astype(oracle.dtype)
    else:
        other_np = (oracle + 1).astype(oracle.dtype)
        other = na.asarray(other_np) if other_kind == "neo" else other_np
    compare(ufunc, (oracle, other_np), (array, other))
    compare(ufunc, (other_np, oracle), (other, array))


def compare(ufunc, numpy_args, neo_args):
    """The ufunc on neoarrays gives numpy's result, or numpy's kind of error."""
    try:
        expected = quiet(ufunc, *numpy_args)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):      # when called (dtypes) or computed (values)
            quiet(np.asarray, quiet(ufunc, *neo_args))
        return
    same(quiet(ufunc, *neo_args), expected)


def test_operators_and_in_place():
    x = np.arange(20.0).reshape(4, 5)
    a = na.asarray(x, chunks=(3, 2))
    same((a + 1) * 2 - a / 4, (x + 1) * 2 - x / 4)
    same(a > 7, x > 7)
    same(-a, -x)
    a += 1
    np.testing.assert_array_equal(np.asarray(a), x + 1)
    out = na.zeros((4, 5), chunks=(2, 2))
    assert np.multiply(a, 2, out=out) is out and isinstance(out, na.ndarray)
    np.testing.assert_array_equal(np.asarray(out), (x + 1) * 2)
    out_np = np.empty((4, 5))
    assert np.add(a, a, out=out_np) is out_np
    np.testing.assert_array_equal(out_np, 2 * (x + 1))


def test_sparse_ufunc_on_huge_array_touches_only_stored_chunks():
    a = na.zeros((10**18, 2), chunks=(1 << 16, 2))
    a[10**17] = [1.0, 2.0]
    b = np.exp(a)
    assert b.fill_value == 1.0
    assert list(b.chunk_keys()) == list(a.chunk_keys())
    np.testing.assert_allclose(b[10**17 - 1:10**17 + 1], [[1, 1], [np.e, np.e ** 2]])
    c = a + a
    assert c[10**17, 1] == 4.0 and c.sum() == 6.0


def test_broadcast_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        np.add(na.zeros(3), np.zeros(4))


def test_array_protocol_and_fallback_functions():
    x = np.arange(12).reshape(3, 4)
    a = na.asarray(x, chunks=(2, 2))
    np.testing.assert_array_equal(np.asarray(a), x)
    assert np.asarray(a, dtype=float).dtype == float
    assert np.shape(a) == (3, 4) and np.ndim(a) == 2 and np.size(a) == 12
    np.testing.assert_array_equal(np.cumsum(a, axis=1), np.cumsum(x, axis=1))
    np.testing.assert_array_equal(np.concatenate([a, x]), np.concatenate([x, x]))
    view = np.array(a, copy=False)      # a view through virtual memory (neoarray.vm)
    assert type(view) is np.ndarray and not view.flags.writeable
    np.testing.assert_array_equal(view, x)
    with pytest.raises(ValueError, match="would need a copy"):
        np.array(a, dtype=float, copy=False)
