"""Structured dtypes through the chunk-wise functions, against numpy: sorts by fields
(spilled runs, sparse arrays), unique, concatenate, where, copy/astype, fields and
comparisons."""

import numpy as np
import pytest
from array_helpers import assert_same_array, examples
from hypothesis import given
from hypothesis import strategies as st

import neoarray.array as na
from neoarray.array import ordering

PAIR = np.dtype([("a", "<i2"), ("b", "<f8")])
TRIPLE = np.dtype([("k", "u1"), ("v", "<c16"), ("s", "S3")])


def _values(rng, dtype, size):
    out = np.zeros(size, dtype)
    for name in dtype.names:
        kind = dtype.fields[name][0].kind
        if kind == "c":
            out[name] = rng.integers(-3, 3, size) + 1j * rng.integers(-2, 2, size)
        elif kind == "S":
            out[name] = rng.choice([b"", b"ab", b"b", b"abc"], size)
        elif kind == "f":
            out[name] = rng.integers(-4, 4, size) / 2
        else:
            out[name] = rng.integers(0, 4, size)
    return out


@st.composite
def operands(draw, max_side=200):
    """(oracle, array): 1-D or 2-D structured arrays, dense or sparse (fill value zero
    items), C or F order, any chunks."""
    dtype = draw(st.sampled_from([PAIR, TRIPLE]))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=1))) \
        if draw(st.booleans()) else (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    oracle = _values(rng, dtype, shape[0] * (shape[1] if len(shape) > 1 else 1)).reshape(shape)
    array = na.ndarray(shape, dtype=dtype, chunks=tuple(draw(st.integers(1, n)) for n in shape),
                       order=draw(st.sampled_from("CF")))
    if draw(st.booleans()):                              # sparse: most items unwritten
        keep = rng.random(shape) < 0.1
        oracle[~keep] = np.zeros(1, dtype)[0]
        for index in zip(*np.nonzero(keep)):
            array[index] = oracle[index]
    else:
        array[...] = oracle
    return oracle, array


def _orders(dtype):
    names = list(dtype.names)
    return st.sampled_from([None, names[-1], names[::-1], [names[1]]])


@examples(60)
@given(operands(), st.data())
def test_sorts_by_fields_match_numpy_with_spilled_runs(pair, data):
    oracle, array = pair
    order = data.draw(_orders(oracle.dtype))
    axis = data.draw(st.sampled_from([None, -1, 0]))
    with na.configure(memory_bytes_max=4096):       # a few dozen items per run
        assert_same_array(np.sort(array, axis=axis, order=order), np.sort(oracle, axis=axis, order=order))
        assert_same_array(np.argsort(array, axis=axis, order=order, kind="stable"),
               np.argsort(oracle, axis=axis, order=order, kind="stable"))
        array.sort(order=order)
    oracle.sort(order=order)
    assert_same_array(array[...], oracle)


@examples(40)
@given(operands())
def test_unique_concatenate_where_copy_astype_fields_match_numpy(pair):
    oracle, array = pair
    assert_same_array(np.unique(array), np.unique(oracle))
    values, counts = np.unique(array, return_counts=True)
    expected_values, expected_counts = np.unique(oracle, return_counts=True)
    assert_same_array(values, expected_values)
    assert_same_array(counts, expected_counts)
    mask = np.arange(oracle.shape[-1]) % 2 == 0
    wider = np.dtype([(n, "<f8" if oracle.dtype[n].kind in "iuf" else oracle.dtype[n])
                      for n in oracle.dtype.names])
    first = oracle.dtype.names[0]
    flip = (slice(None, None, -1),) if oracle.ndim == 1 else (Ellipsis,)
    with na.configure(memory_bytes_max=4096):     # chunk by chunk: stored, compared after
        pairs = [(np.concatenate([array, views_of(array)[flip]]),
                  np.concatenate([oracle, oracle[flip]])),
                 (np.where(mask, array, oracle[..., ::-1]), np.where(mask, oracle, oracle[..., ::-1])),
                 (array.copy(), oracle.copy()),
                 (array.astype(wider), oracle.astype(wider)),
                 (array[first], oracle[first]),
                 (array[[first]], oracle[[first]]),
                 (array == array.T.T, oracle == oracle.copy()),
                 (array != oracle[::-1], oracle != oracle[::-1])]
        stored = [na.store(got) if isinstance(got, na.lazyarray) else got for got, _ in pairs]
    for got, (_, expected) in zip(stored, pairs):
        assert_same_array(got[...], expected)


def views_of(array):
    """``array`` as a lazy view (its basic selections are views then)."""
    return np.expand_dims(array, 0)[0]


def test_bad_fields_are_numpy_s_errors():
    array = na.ndarray((5,), dtype=PAIR)
    with pytest.raises(ValueError, match="no field of name c"):
        np.sort(array, order="c")
    with pytest.raises(ValueError, match="no fields"):
        ordering.sort(na.ndarray((5,)), order="a")
    with pytest.raises(na.ArrayValueError, match="no field of name 'c'"):
        array["c"]
