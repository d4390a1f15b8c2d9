"""Creation functions (neoarray/array/creation.py)."""

import numpy as np
import pytest

import neoarray.array as na


@pytest.mark.parametrize("func, value", [(na.empty, 0), (na.zeros, 0), (na.ones, 1)])
@pytest.mark.parametrize("dtype", ["f8", "i2", "?", "c8", "u1"])
def test_constant_creators(func, value, dtype):
    a = func((3, 4), dtype=dtype, order="F", chunks=(2, 2))
    assert a.shape == (3, 4) and a.dtype == np.dtype(dtype) and a.order == "F"
    np.testing.assert_array_equal(np.asarray(a), np.full((3, 4), value, dtype=dtype))
    assert list(a.chunk_keys()) == []


def test_full_dtype_follows_numpy():
    assert na.full(3, 7).dtype == np.full(3, 7).dtype
    assert na.full(3, 1.5).dtype == np.float64
    assert na.full(3, True).fill_value


@pytest.mark.parametrize("source", [
    [[1, 2, 3], [4, 5, 6]], np.arange(24.0).reshape(2, 3, 4),
    np.asfortranarray(np.arange(6).reshape(2, 3)), 5.0, np.zeros((0, 3)),
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])])
def test_asarray_round_trip(source):
    a = na.asarray(source)
    expected = np.asarray(source)
    assert a.shape == expected.shape and a.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(a), expected)
    assert a.order == ("F" if expected.ndim > 1 and not expected.flags.c_contiguous else "C")
    assert na.asarray(a) is a
    if expected.dtype.fields is None:
        converted = na.asarray(a, dtype="f4")
        assert converted.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(converted), expected.astype("f4"))


def test_like_functions():
    proto = na.zeros((5, 6), dtype="i4", order="F", chunks=(2, 3), codec="zlib")
    for func, value in [(na.empty_like, 0), (na.zeros_like, 0), (na.ones_like, 1)]:
        a = func(proto)
        assert (a.shape, a.dtype, a.order, a.chunks, a.codec) == \
            ((5, 6), np.dtype("i4"), "F", (2, 3), ("zlib", 6))
        assert a[4, 5] == value
    b = na.full_like(np.zeros((2, 2), dtype="f4"), 2.5)
    assert b.dtype == np.float32 and b[1, 1] == 2.5
    c = na.zeros_like(proto, dtype="f8", shape=(3,))
    assert c.shape == (3,) and c.dtype == np.float64


def test_creation_errors():
    with pytest.raises(TypeError, match="object"):
        na.zeros(3, dtype=object)
    with pytest.raises(ValueError, match="shape"):
        na.ones((10**19, 10))
    with pytest.raises(ValueError, match="order"):
        na.zeros(3, order="X")
