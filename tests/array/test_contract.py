"""np.einsum, np.tensordot, np.inner, np.vdot and vector products (contract.py) against
numpy, with the memory bound below the operands' size: nothing is loaded whole."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import neoarray.array as na
from array_helpers import chunk_shapes, examples, values_for, write_sparse_or_dense

DTYPES = [np.dtype(d) for d in ("int32", "int64", "float64", "complex128")]
# (subscripts, operand letters) of two operands; the sizes come from the letters
PATTERNS = ["ij,jk->ik", "ij,j->i", "i,ij->j", "i,i->", "ij,ij->", "ij,ij->i", "ij,ik->jk", "ij,kj->ik",
            "i,j->ij", "ij->ji", "ij->", "ii->i", "ii->", "ij,jk", "ij,ji->", "ijk,jk->i"]


@st.composite
def einsum_cases(draw):
    subscripts = draw(st.sampled_from(PATTERNS))
    inputs = subscripts.split("->")[0].split(",")
    sizes = {c: draw(st.integers(1, 6)) for c in sorted(set("".join(inputs)))}
    dtype = draw(st.sampled_from(DTYPES))
    oracles, arrays = [], []
    for sub in inputs:
        shape = tuple(sizes[c] for c in sub)
        oracle = values_for(draw, shape, dtype)
        if draw(st.booleans()):          # a neoarray (at least the first one is)
            array = na.ndarray(shape, dtype=dtype, chunks=draw(chunk_shapes(shape)),
                               order=draw(st.sampled_from("CF")))
            write_sparse_or_dense(draw, oracle, array, items_max=3)
        else:
            array = oracle.copy()
        oracles.append(oracle)
        arrays.append(array)
    if not isinstance(arrays[0], na.ndarray):
        arrays[0] = na.ndarray(oracles[0].shape, dtype=dtype, chunks=draw(chunk_shapes(oracles[0].shape)))
        arrays[0][...] = oracles[0]
    return subscripts, oracles, arrays


def _bound(arrays, result_bytes):
    """Below every neoarray operand's size; room for the output and one block each."""
    neo = [a for a in arrays if isinstance(a, na.ndarray)]
    blocks = sum(int(np.prod(a.chunks)) * a.dtype.itemsize if isinstance(a, na.ndarray) else a.nbytes
                 for a in arrays)
    return max(result_bytes + 4 * blocks, min(a.nbytes for a in neo) - 1)


def _close(got, expected):
    got = np.asarray(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-8)
    else:
        np.testing.assert_array_equal(got, expected)


@given(einsum_cases())
@examples(300)
def test_einsum_matches_numpy(case):
    subscripts, oracles, arrays = case
    expected = np.einsum(subscripts, *oracles)
    with na.configure(memory_bytes_max=_bound(arrays, 16 * max(1, expected.size))):
        got = np.einsum(subscripts, *arrays)
    _close(got, expected)


@given(einsum_cases().filter(lambda c: c[0] in ("ij,jk->ik", "ij,ik->jk", "ij,kj->ik", "ijk,jk->i")))
@examples(100)
def test_tensordot_and_inner_match_numpy(case):
    subscripts, (a0, b0), (a, b) = case
    contracted = {"ij,jk->ik": ([1], [0]), "ij,ik->jk": ([0], [0]), "ij,kj->ik": ([1], [1]),
                  "ijk,jk->i": ([1, 2], [0, 1])}[subscripts]
    _close(np.tensordot(a, b, axes=contracted), np.tensordot(a0, b0, axes=contracted))
    if subscripts == "ij,kj->ik":
        _close(np.inner(a, b), np.inner(a0, b0))
    if subscripts == "ij,jk->ik":
        _close(np.tensordot(a, b, axes=1), np.tensordot(a0, b0, axes=1))


@given(st.data())
@examples(100)
def test_vdot_and_vector_products_match_numpy(data):
    shape = tuple(data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=2)))
    dtype = data.draw(st.sampled_from(DTYPES))
    a0, b0 = values_for(data.draw, shape, dtype), values_for(data.draw, shape, dtype)
    a = na.ndarray(shape, dtype=dtype, chunks=data.draw(chunk_shapes(shape)))
    write_sparse_or_dense(data.draw, a0, a, items_max=3)
    with na.configure(memory_bytes_max=max(a.nbytes - 1, 64 * int(np.prod(a.chunks)))):
        _close(np.vdot(a, b0), np.vdot(a0, b0))
        _close(np.vdot(b0, a), np.vdot(b0, a0))
        if len(shape) == 1:
            _close(a @ b0, a0 @ b0)
            _close(np.dot(a, a), np.dot(a0, a0))


def test_products_of_exabyte_shaped_sparse_vectors_visit_their_stored_chunks():
    a = na.zeros((10**15,), chunks=(1 << 16,))
    b = na.zeros((10**15,), chunks=(1 << 16,))
    a[5], a[10**14], b[10**14] = 2.0, 3.0, 4.0
    assert np.einsum("i,i->", a, a) == 13.0 and a @ b == 12.0 and np.vdot(a, b) == 12.0
    assert np.dot(a, b) == 12.0 and np.inner(a, a) == 13.0
    b[5] = np.inf            # infinity times a stored 2.0; the zeros elsewhere still multiply by 0
    assert np.einsum("i,i->", a, b) == np.inf


def test_an_output_beyond_the_bound_is_refused_with_its_size():
    a = na.ndarray((400,), dtype=np.float64, chunks=(50,))
    a[...] = 1.0
    with na.configure(memory_bytes_max=100_000), pytest.raises(na.ArrayTooLargeError, match="einsum 'i,j->ij'"):
        np.einsum("i,j->ij", a, a)


def test_malformed_subscripts_are_refused():
    a = na.ndarray((3, 4), dtype=np.float64, chunks=(2, 2))
    with pytest.raises(na.ArrayValueError, match="do not fit an operand of shape"):
        np.einsum("i,i->", a, a)
    with pytest.raises(na.ArrayShapeError, match="subscript 'j' has sizes 4 and 3"):
        np.einsum("ij,jk->ik", a, a)
