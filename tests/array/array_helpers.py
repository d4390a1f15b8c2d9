"""Helpers shared by the array tests: Hypothesis strategies, connections."""

import os

import numpy as np
import transaction
from hypothesis import settings, strategies as st


def examples(n):
    """Hypothesis settings running ``n`` examples, times $NEOARRAY_EXAMPLES_SCALE."""
    scale = float(os.environ.get("NEOARRAY_EXAMPLES_SCALE", "1"))
    return settings(max_examples=max(1, int(n * scale)), deadline=None)


STRUCT = np.dtype([("a", "<i4"), ("b", "<f8")])
DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int32", "int64", "float32",
                                "float64", "complex128", ">i4")] + [STRUCT]
NUMERIC = [np.dtype(d) for d in ("bool", "int8", "uint16", "int32", "int64", "float32",
                                 "float64", "complex128")]


def shapes(min_dims=1, max_dims=3, max_side=9):
    return st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def chunk_shapes(shape):
    return st.tuples(*[st.integers(1, max(1, n + 1)) for n in shape])


def values_for(draw, shape, dtype):
    """A random numpy array of ``shape`` and ``dtype`` (no NaN)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype.fields:
        out = np.zeros(shape, dtype=dtype)
        out["a"] = rng.integers(-100, 100, size=shape)
        out["b"] = rng.normal(size=shape)
        return out
    if dtype == bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape,
                            endpoint=True).astype(dtype)
    if dtype.kind == "c":
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    return (rng.normal(size=shape) * 10).astype(dtype)


def write_sparse_or_dense(draw, oracle, array, items_max=1):
    """Write ``oracle`` into ``array`` whole, or (drawn) make both sparse: the fill value
    (0) everywhere but 1 to ``items_max`` items written."""
    if not draw(st.booleans()):
        array[...] = oracle
        return
    oracle[...] = 0
    for _ in range(draw(st.integers(1, items_max))):
        index = tuple(draw(st.integers(0, n - 1)) for n in oracle.shape)
        oracle[index] = values_for(draw, (), oracle.dtype)
        array[index] = oracle[index]


def assert_same_array(got, expected):
    """``got`` (any array-like) equals the numpy array ``expected`` in shape, dtype and items."""
    got = np.asarray(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def _slice(draw, n):
    start = draw(st.none() | st.integers(-n - 2, n + 2))
    stop = draw(st.none() | st.integers(-n - 2, n + 2))
    step = draw(st.none() | st.integers(-4, 4).filter(lambda s: s != 0))
    return slice(start, stop, step)


@st.composite
def indices(draw, shape, advanced=True, unique=False):
    """A numpy index over ``shape``: basic items, optionally integer/bool arrays."""
    items = []
    axis = 0
    adv_len = draw(st.integers(0, 4))
    kinds = ["int", "slice", "slice"] + (["array", "mask"] if advanced else [])
    while axis < len(shape):
        if draw(st.booleans()) and draw(st.booleans()):
            items.append(None)
        n = shape[axis]
        kind = draw(st.sampled_from(kinds))
        if kind == "int" and n:
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "array" and n:
            size = draw(st.sampled_from([adv_len, adv_len, 1]))
            if unique:
                size = min(size, n)
            arr = draw(st.lists(st.integers(-n, n - 1), min_size=size, max_size=size,
                                unique_by=(lambda i: i % n) if unique else None))
            items.append(np.array(arr, dtype=np.intp))
        elif kind == "mask":
            width = draw(st.integers(1, len(shape) - axis))
            mshape = shape[axis:axis + width]
            bits = draw(st.lists(st.booleans(), min_size=int(np.prod(mshape)),
                                 max_size=int(np.prod(mshape))))
            items.append(np.array(bits, dtype=bool).reshape(mshape))
            axis += width
            continue
        else:
            items.append(_slice(draw, n))
        axis += 1
    cut = draw(st.integers(0, len(items)))
    if draw(st.booleans()):
        items = items[:cut] + [Ellipsis] + [i for i in items[cut:]
                                             if not isinstance(i, slice) or draw(st.booleans())]
    elif draw(st.booleans()):
        items = items[:cut]
    return tuple(items)


def open_conn(database):
    """Open a connection with a private transaction manager; return (conn, tm)."""
    tm = transaction.TransactionManager()
    return database.open(tm), tm
