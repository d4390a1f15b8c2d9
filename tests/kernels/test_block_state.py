"""Whole-block states (``kernels.block_state``) against numpy, and their encoding.

Blocks are n-d, C or F ordered, whole or sliced like the in-bounds part of an edge
chunk (not contiguous), with NaNs, so the compiled kernels and the numpy fallbacks
(float32 sums, complex items) are both exercised, and the arg-reductions give the
C-order index whatever the memory order.
"""
import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neoarray import kernels as k
from neoarray.array import reductions

DTYPES = [np.bool_, np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float16, np.float32,
          np.float64, np.complex64, np.complex128, np.dtype(">i4"), np.dtype(">f8")]
ACC_NAME = {"moments": "var", "histogram": "count_nonzero", "argmin": "min", "argmax": "max"}
HIST_BINS, HIST_LO, HIST_HI = 9, -500.0, 700.0


def elements(dtype, nan):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(max(info.min, -1000), min(info.max, 1000))
    bits = 8 * dtype.itemsize
    real = st.floats(-1000, 1000, width=bits if dtype.kind == "f" else bits // 2)
    if nan:
        real = st.one_of(real, st.just(float("nan")))
    if dtype.kind == "c":
        return st.builds(complex, real, real)
    return real


@st.composite
def blocks(draw, dtypes=DTYPES, nan=True, min_side=1):
    """A block as an array stores it: a C or F chunk, maybe sliced to its in-bounds part."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(st.lists(st.integers(min_side, 6), min_size=0, max_size=3).map(tuple))
    chunk = hnp.arrays(dtype, shape, elements=elements(dtype, nan))
    order = draw(st.sampled_from("CF"))
    full = np.asarray(draw(chunk), order=order)
    full = np.require(full, requirements=order)
    extent = tuple(draw(st.integers(min(1, n), n)) for n in shape)
    return full[tuple(slice(0, e) for e in extent)]


def acc_of(name, dtype):
    return reductions._acc_dtype(ACC_NAME.get(name, name), np.dtype(dtype), None)


def same_value(got, want, dtype, scale=1.0):
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype.kind in "fc":
        rtol = 1e-2 if dtype == np.float16 else 1e-5 if dtype in (np.float32, np.complex64) else 1e-9
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def native(dtype):
    """numpy scalars are always in native byte order."""
    return np.dtype(dtype).newbyteorder("=")


def bits(value):
    return np.asarray(value).tobytes()


@settings(max_examples=300, deadline=None)
@given(blocks(), st.sampled_from([n for n in k.BLOCK_STATES if n != "histogram"]))
def test_block_state_matches_numpy(block, name):
    acc = acc_of(name, block.dtype)
    if name == "prod":
        block = block.astype(bool) if block.dtype == bool else np.clip(
            block.real if block.dtype.kind == "c" else block, -2, 2).astype(block.dtype)
    if name in ("min", "max", "argmin", "argmax") and block.size == 0:
        with pytest.raises(ValueError):
            k.block_state(name, block, acc)
        return
    state = k.block_state(name, block, acc)
    scale = float(np.sum(np.abs(block.astype(np.complex128)))) + 1.0
    with np.errstate(all="ignore"):
        if name in ("sum", "prod"):
            assert state[0].dtype == acc
            same_value(state[0], getattr(np, name)(block, dtype=acc), block.dtype, scale)
        elif name in ("min", "max"):
            assert state[0].dtype == native(block.dtype)
            same_value(state[0], getattr(np, name)(block), block.dtype)
        elif name in ("argmin", "argmax"):
            value, index = state
            assert index.dtype == np.int64 and value.dtype == native(block.dtype)
            assert index == getattr(np, name)(block), (block, name)
            assert bits(value) == bits(block.reshape(-1)[index])
        elif name == "moments":
            n, mean, m2 = state
            assert n.dtype == np.int64 and n == block.size and mean.dtype == acc
            if block.size:
                same_value(mean, np.mean(block, dtype=acc), block.dtype, scale)
                same_value(m2, np.var(block, dtype=acc) * block.size, block.dtype, scale * scale)
        elif name == "count_nonzero":
            assert state[0].dtype == np.intp and state[0] == np.count_nonzero(block)
        else:
            assert state[0].dtype == np.bool_ and state[0] == getattr(np, name)(block)


@settings(max_examples=150, deadline=None)
@given(blocks(dtypes=[d for d in DTYPES if np.dtype(d).kind != "c"]))
def test_histogram_state_matches_numpy(block):
    (counts,) = k.block_state("histogram", block, np.dtype(np.intp),
                              bins=HIST_BINS, lo=HIST_LO, hi=HIST_HI)
    values = block.astype(np.float64).reshape(-1)
    want = np.histogram(values[~np.isnan(values)], HIST_BINS, range=(HIST_LO, HIST_HI))[0]
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, want)


@settings(max_examples=100, deadline=None)
@given(blocks(min_side=1), st.sampled_from(["sum", "min", "max", "count_nonzero", "any",
                                            "all", "moments", "prod"]))
def test_client_partials_are_block_states(block, name):
    """``reductions._partial`` of a whole block is the block state, cell for cell."""
    red = reductions.REDUCERS["var" if name == "moments" else name]
    acc = acc_of(name, block.dtype)
    if block.size == 0:
        return
    with np.errstate(all="ignore"):
        partial = reductions._partial(red, block, tuple(range(block.ndim)), acc)
        state = k.block_state(name, block, acc)
    assert [bits(p.reshape(())) for p in partial] == [bits(s) for s in state]


@pytest.mark.parametrize("name", ["argmin", "argmax"])
def test_arg_states_of_f_blocks_give_the_first_in_c_order(name):
    block = np.zeros((4, 5), order="F")
    block[3, 0] = block[0, 4] = -7.0 if name == "argmin" else 7.0     # F order: (3,0) first
    assert k.block_state(name, block, block.dtype)[1] == np.ravel_multi_index((0, 4), (4, 5))
    block[2, 1] = block[1, 3] = np.nan
    value, index = k.block_state(name, block, block.dtype)
    assert np.isnan(value) and index == getattr(np, name)(block) == 8
    edge = np.asfortranarray(np.arange(30.0).reshape(5, 6))[:3, :4]   # sliced F chunk
    edge = -edge if name == "argmax" else edge
    assert k.block_state(name, edge, edge.dtype)[1] == getattr(np, name)(edge) == 0


def test_block_state_refuses_unknown_names_and_missing_histogram_parameters():
    block = np.arange(6.0)
    with pytest.raises(ValueError, match="unknown block state 'median'.*sum, prod"):
        k.block_state("median", block, block.dtype)
    with pytest.raises(ValueError, match="needs bins, lo and hi"):
        k.block_state("histogram", block, np.intp, bins=3)
    with pytest.raises(ValueError, match="bins >= 1"):
        k.block_state("histogram", block, np.intp, bins=0, lo=0, hi=1)
    with pytest.raises(ValueError, match="not complex128"):
        k.block_state("histogram", block.astype(complex), np.intp, bins=2, lo=0, hi=1)


# -- encoding --------------------------------------------------------------------------

STATE_DTYPES = [np.bool_, np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float16,
                np.float32, np.float64, np.longdouble, np.complex64, np.complex128,
                np.dtype(">i4"), np.dtype(">f8"), np.dtype("<M8[ns]"), np.dtype("<m8[s]")]


@st.composite
def state_items(draw):
    dtype = np.dtype(draw(st.sampled_from(STATE_DTYPES)))
    shape = draw(st.sampled_from([(), (0,), (3,), (2, 3)]))
    raw = draw(st.binary(min_size=dtype.itemsize * math.prod(shape),
                         max_size=dtype.itemsize * math.prod(shape)))
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)   # any bits: NaN payloads too
    return array[()] if shape == () else array


@settings(max_examples=200, deadline=None)
@given(st.lists(state_items(), max_size=k.STATE_ITEMS_MAX).map(tuple))
def test_encode_decode_round_trip_is_exact(state):
    back = k.decode_state(k.encode_state(state))
    assert len(back) == len(state)
    for got, want in zip(back, state):
        assert type(got) is type(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.shape(got) == np.shape(want) and bits(got) == bits(want)
        if isinstance(got, np.ndarray):
            assert got.flags.writeable


@settings(max_examples=100, deadline=None)
@given(blocks(), st.sampled_from(k.BLOCK_STATES))
def test_block_states_round_trip(block, name):
    if block.size == 0 or (name == "histogram" and block.dtype.kind == "c"):
        return
    state = k.block_state(name, block, acc_of(name, block.dtype), bins=4, lo=-10, hi=10)
    back = k.decode_state(k.encode_state(state))
    assert [bits(v) for v in back] == [bits(v) for v in state]
    assert [np.asarray(v).dtype for v in back] == [np.asarray(v).dtype for v in state]


def test_python_numbers_encode_as_numpy_scalars():
    assert k.decode_state(k.encode_state((3, 2.5, True))) == (3, 2.5, True)
    assert [type(v) for v in k.decode_state(k.encode_state((3, 2.5, True)))] == [
        np.int64, np.float64, np.bool_]


def test_encode_refuses_objects_and_structures():
    with pytest.raises(ValueError, match="holds numbers"):
        k.encode_state((np.array([object()]),))
    with pytest.raises(ValueError, match="holds numbers"):
        k.encode_state((np.zeros(2, dtype=[("a", "<i4")]),))


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xc1", "not valid msgpack"),
    (b"", "not valid msgpack"),
    (pack([["<f8", [], b"\0" * 8]]) + b"\x00", "not valid msgpack"),
    ("a string", "not valid msgpack"),
    (pack({"a": 1}), "must be a list"),
    (pack([["<f8", [], b"\0" * 8]] * 17), "at most 16"),
    (pack([1]), r"\[dtype, shape, bytes\]"),
    (pack([["<f8", [], b"\0" * 8, 1]]), r"\[dtype, shape, bytes\]"),
    (pack([["<f8", "()", b"\0" * 8]]), r"\[dtype, shape, bytes\]"),
    (pack([["<f8", [], "text"]]), r"\[dtype, shape, bytes\]"),
    (pack([["nope", [], b"\0" * 8]]), "bad dtype 'nope'"),
    (pack([["|O", [], b"\0" * 8]]), "not allowed"),
    (pack([["|V8", [], b"\0" * 8]]), "not allowed"),
    (pack([["f8", [], b"\0" * 8]]), "not allowed"),          # not a dtype.str
    (pack([["<f8", [-1], b""]]), "bad shape"),
    (pack([["<f8", [1.5], b"\0" * 8]]), "bad shape"),
    (pack([["<f8", [1] * 33, b"\0" * 8]]), "bad shape"),
    (pack([["<f8", [2], b"\0" * 8]]), "needs 16 bytes, not 8"),
    (pack([["<f8", [1 << 40, 1 << 40], b""]]), "bytes, not 0"),
])
def test_decode_refuses_malformed_input(raw, message):
    with pytest.raises(ValueError, match=message):
        k.decode_state(raw)
