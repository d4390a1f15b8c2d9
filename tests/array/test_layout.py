"""Validation of shapes, dtypes, orders, chunk shapes and fill values."""

import math

import numpy as np
import pytest

from neoarray.array import layout
from neoarray.array.errors import ArrayDtypeError, ArrayShapeError, ArrayValueError


@pytest.mark.parametrize("dtype", [object, [("a", "i4"), ("b", object)], "S", "U"])
def test_dtypes_without_fixed_binary_items_are_refused(dtype):
    with pytest.raises(ArrayDtypeError) as info:
        layout.normalize_dtype(dtype)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("dtype", ["?", "i1", "u8", "f2", "c16", ">f8", "S5", "M8[s]",
                                   [("x", "<i2"), ("y", "<c8", (2,))]])
def test_fixed_size_dtypes_round_trip_through_state(dtype):
    dtype = layout.normalize_dtype(dtype)
    assert layout.dtype_from_state(layout.dtype_to_state(dtype)) == dtype


def test_shape_overflowing_64_bits_names_the_shape():
    with pytest.raises(ArrayShapeError, match=r"\(10000000000000000000, 10\)"):
        layout.normalize_shape((10**19, 10), 8)
    assert layout.normalize_shape((10**18, 2), 8) == (10**18, 2)


def test_negative_and_malformed_shapes():
    with pytest.raises(ValueError, match="negative"):
        layout.normalize_shape((3, -1), 8)
    with pytest.raises(ValueError, match="integers"):
        layout.normalize_shape((3.5,), 8)
    assert layout.normalize_shape(np.int64(4), 1) == (4,)


@pytest.mark.parametrize("shape, itemsize, order", [
    ((10**18, 2), 8, "F"), ((10**18, 2), 8, "C"), ((1000, 1000), 8, "C"),
    ((7,), 1, "C"), ((0, 3), 4, "C"), ((5, 5, 5), 1 << 23, "C"), ((), 8, "C")])
def test_default_chunks_aim_at_target_bytes(shape, itemsize, order):
    target = 4 << 20
    chunks = layout.default_chunks(shape, itemsize, order, target)
    assert len(chunks) == len(shape)
    assert all(c >= 1 for c in chunks)
    nbytes = math.prod(chunks) * itemsize
    assert nbytes <= max(target, itemsize)
    whole = math.prod(max(n, 1) for n in shape) * itemsize
    assert nbytes >= min(whole, target // 2) or itemsize > target


def test_chunks_validation():
    assert layout.normalize_chunks(3, (10, 10), 8, "C", 1 << 22, 1 << 28) == (3, 3)
    with pytest.raises(ArrayValueError, match="one positive extent per axis"):
        layout.normalize_chunks((3,), (10, 10), 8, "C", 1 << 22, 1 << 28)
    with pytest.raises(ArrayValueError, match="chunk_bytes_max"):
        layout.normalize_chunks((1 << 20, 1 << 20), (10, 10), 8, "C", 1 << 22, 1 << 28)


def test_fill_bytes():
    assert layout.fill_bytes(None, np.dtype("f8")) == bytes(8)
    assert layout.fill_bytes(1.5, np.dtype("f4")) == np.float32(1.5).tobytes()
    struct = np.dtype([("a", "i4"), ("b", "f8")])
    assert layout.fill_bytes((1, 2.0), struct) == np.array((1, 2.0), dtype=struct).tobytes()
    with pytest.raises(ArrayValueError):
        layout.fill_bytes([1, 2], np.dtype("f8"))


def test_order():
    assert layout.normalize_order("f") == "F"
    with pytest.raises(ArrayValueError):
        layout.normalize_order("K")
