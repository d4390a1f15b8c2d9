"""np.concatenate, np.stack, np.vstack, np.hstack (joining.py) against numpy, operands
neoarrays (dense or sparse, chunks lined up or not, other fill values) and numpy arrays,
in memory below the operands' size."""
import numpy as np
import pytest
from array_helpers import examples, values_for
from hypothesis import given
from hypothesis import strategies as st

import neoarray.array as na

DTYPES = [np.dtype(d) for d in ("int16", "int64", "float32", "float64", "bool", "complex128")]


def _operand(draw, shape, dtype, chunks):
    """(numpy oracle, operand): a numpy array, or a neoarray dense or sparse, with the
    common chunks or its own, fill value 0 or another."""
    oracle = values_for(draw, shape, dtype)
    kind = draw(st.sampled_from(["numpy", "neo", "neo", "sparse"]))
    if kind == "numpy":
        return oracle, oracle.copy()
    if draw(st.booleans()):
        chunks = tuple(draw(st.integers(1, max(1, n))) for n in shape)
    fill = draw(st.sampled_from([0, 0, 1]))
    array = na.ndarray(shape, dtype=dtype, chunks=chunks, fill_value=fill,
                       order=draw(st.sampled_from("CF")))
    if kind == "sparse":
        oracle[...] = np.asarray(fill).astype(dtype)
        if oracle.size:
            index = tuple(draw(st.integers(0, n - 1)) for n in shape)
            oracle[index] = values_for(draw, (), dtype)
            array[index] = oracle[index]
    else:
        array[...] = oracle
    return oracle, array


@st.composite
def joins(draw):
    ndim = draw(st.integers(1, 3))
    base = [draw(st.integers(1, 6)) for _ in range(ndim)]
    axis = draw(st.integers(0, ndim - 1))
    chunks = tuple(draw(st.integers(1, n + 1)) for n in base)
    dtype = draw(st.sampled_from(DTYPES))
    pairs = []
    for _ in range(draw(st.integers(1, 4))):
        shape = list(base)
        shape[axis] = draw(st.sampled_from([0, 1, 2, 5, chunks[axis], 2 * chunks[axis]]))
        pairs.append(_operand(draw, tuple(shape), draw(st.sampled_from([dtype, dtype, np.dtype("int8")])),
                              tuple(max(1, min(c, n)) for c, n in zip(chunks, shape))))
    if not any(isinstance(a, na.ndarray) for _, a in pairs):
        pairs[0] = (pairs[0][0], _neo_copy(pairs[0][0], chunks))
    return axis, [o for o, _ in pairs], [a for _, a in pairs]


def _neo_copy(oracle, chunks):
    array = na.ndarray(oracle.shape, dtype=oracle.dtype, chunks=tuple(max(1, min(c, max(1, n)))
                                                                      for c, n in zip(chunks, oracle.shape)))
    array[...] = oracle
    return array


def _bound(arrays):
    """Memory below the operands' total, above a chunk and an output tile."""
    return max(4096, sum(a.nbytes for a in arrays) // 2)


def _equal(got, expected):
    assert isinstance(got, na.ndarray)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got[...], expected)


@examples(150)
@given(joins(), st.booleans())
def test_concatenate_matches_numpy(join, flat):
    axis, oracles, arrays = join
    axis = None if flat else axis
    with na.configure(memory_bytes_max=_bound(arrays)):
        got = np.concatenate(arrays, axis=axis)
    _equal(got, np.concatenate(oracles, axis=axis))


@examples(80)
@given(joins(), st.sampled_from(["neo", "numpy"]), st.data())
def test_concatenate_into_out_matches_numpy(join, kind, data):
    axis, oracles, arrays = join
    expected = np.concatenate(oracles, axis=axis)
    if kind == "numpy":
        out = np.full(expected.shape, 7, expected.dtype)
    else:
        out = na.ndarray(expected.shape, dtype=expected.dtype,
                         chunks=tuple(data.draw(st.integers(1, max(1, n))) for n in expected.shape),
                         fill_value=data.draw(st.sampled_from([0, 1])))
        out[...] = np.ones((), expected.dtype)       # stale items, to be overwritten
    assert np.concatenate(arrays, axis=axis, out=out) is out
    np.testing.assert_array_equal(out[...], expected)


@examples(80)
@given(joins(), st.data())
def test_stack_vstack_hstack_match_numpy(join, data):
    _axis, oracles, arrays = join
    same = [(o, a) for o, a in zip(oracles, arrays) if o.shape == oracles[0].shape]
    oracles, arrays = [o for o, _ in same], [a for _, a in same]
    if not any(isinstance(a, na.ndarray) for a in arrays):
        return
    axis = data.draw(st.integers(-oracles[0].ndim - 1, oracles[0].ndim))
    with na.configure(memory_bytes_max=_bound(arrays)):
        stacked = np.stack(arrays, axis=axis)
        vertical = np.vstack(arrays)
        horizontal = np.hstack(arrays)
    _equal(stacked, np.stack(oracles, axis=axis))
    _equal(vertical, np.vstack(oracles))
    _equal(horizontal, np.hstack(oracles))


def test_joining_sparse_arrays_copies_only_stored_chunks():
    a = na.zeros((10**9, 10**6), chunks=(1000, 1000))
    b = na.zeros((10**9, 10**6), chunks=(1000, 1000))
    a[5, 5], b[7, 7] = 1.0, 2.0
    joined = np.concatenate([a, b])
    assert joined.shape == (2 * 10**9, 10**6)
    assert list(joined.chunk_keys()) == [(0, 0), (10**6, 0)]
    assert joined[5, 5] == 1.0 and joined[10**9 + 7, 7] == 2.0 and joined[10**9 + 5, 5] == 0.0
    stacked = np.stack([a, b], axis=1)
    assert list(stacked.chunk_keys()) == [(0, 0, 0), (0, 1, 0)]
    assert stacked[5, 0, 5] == 1.0 and stacked[7, 1, 7] == 2.0


def test_unaligned_sparse_operands_write_only_the_chunks_they_reach():
    a = na.zeros((10**9,), chunks=(1000,))
    b = na.zeros((10**9 + 1,), chunks=(1000,))
    a[10] = 1.0
    b[10**9] = 2.0
    joined = np.concatenate([a, b])
    assert sorted(joined.chunk_keys()) == [(0,), ((2 * 10**9) // 1000,)]
    assert joined[10] == 1.0 and joined[2 * 10**9] == 2.0


def test_join_errors_are_numpy_like():
    a, b = na.zeros((2, 3)), na.zeros((2, 4))
    with pytest.raises(ValueError, match="along dimension 1"):
        np.concatenate([a, b])
    with pytest.raises(ValueError, match="same number of dimensions"):
        np.concatenate([a, na.zeros(3)])
    with pytest.raises(ValueError, match="same shape"):
        np.stack([a, b])
    with pytest.raises(TypeError):
        np.concatenate([a, np.zeros((2, 3))], dtype=np.int8, casting="same_kind")
    with pytest.raises(ValueError, match="does not match"):
        np.concatenate([a, a], out=na.zeros((3, 3)))
