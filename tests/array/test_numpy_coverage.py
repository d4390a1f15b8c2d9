"""Every numpy function of the coverage table (``neoarray/array/coverage.py``) on a
neoarray against numpy, and the table's freshness.

Each function gets a sample call (``SAMPLES``, else ``f(A)``) built twice: once with
numpy arrays, once with neoarrays of the same values (chunks smaller than the arrays,
so every call crosses chunk boundaries).  The results, and the arrays a function
writes into, must be equal.  Functions marked *in memory* must refuse an array beyond
``memory_bytes_max`` with ``ArrayTooLargeError``; those marked *chunk-wise* without a
note must give the right answer under that bound.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import neoarray.array as na
from neoarray.array import coverage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHUNKS_2D = (4, 3)


def _values(scale=1):
    """The sample arrays; ``scale`` multiplies the sides of A, B, V, W and S."""
    rng = np.random.default_rng(7)
    a = np.round(rng.normal(size=(6 * scale, 5 * scale)), 3)
    a[1, 2] = 0.0
    return {
        "A": a,
        "B": np.round(rng.normal(size=(6 * scale, 5 * scale)), 3),
        "V": np.round(rng.normal(size=6 * scale), 3),
        "W": np.round(rng.normal(size=5 * scale), 3),
        "S": np.round(rng.normal(size=(5 * scale, 5 * scale)), 3),
        "I": np.array([0, 3, 1, 5], dtype=np.int64),
        "POS": np.array([0, 1, 1, 3, 2, 1, 7], dtype=np.int64),
        "U8": np.array([1, 2, 255, 0, 17], dtype=np.uint8),
        "SORTED": np.array([-2.0, -1.0, 0.0, 0.5, 3.0, 9.0]),
        "MASK": a > 0,
        "CPLX": np.array([1 + 2j, -1j, 3.0, 0.5 - 0.5j]),
        "IDX2": np.argsort(a, axis=0)[:2],
    }


class Ref(str):
    """A placeholder for one of ``_values()``'s arrays in a sample call."""


A, B, V, W, S, I, POS, U8 = (Ref(n) for n in ("A", "B", "V", "W", "S", "I", "POS", "U8"))
SORTED, MASK, CPLX, IDX2 = Ref("SORTED"), Ref("MASK"), Ref("CPLX"), Ref("IDX2")


def call(*args, **kwargs):
    return args, kwargs


SAMPLES = {
    "allclose": call(A, B), "append": call(A, B, axis=0), "apply_along_axis": call(np.sum, 0, A),
    "apply_over_axes": call(np.sum, A, [0]), "argpartition": call(V, 2), "array_equal": call(A, A),
    "array_equiv": call(A, B), "array_split": call(A, 3), "astype": call(A, np.float32),
    "bincount": call(POS), "broadcast_to": call(W, (3, 5)), "can_cast": call(A, np.float32),
    "choose": call(np.array([0, 1, 0, 1, 1]), [W, W * 2]), "compress": call([True, False, True], A, axis=0),
    "convolve": call(V, W), "copyto": call(A, B), "correlate": call(V, W), "cross": call(Ref("A3"), Ref("B3")),
    "cumulative_prod": call(A, axis=1), "cumulative_sum": call(A, axis=0), "delete": call(A, 1, axis=0),
    "diag_indices_from": call(S), "digitize": call(V, SORTED), "dot": call(A, W), "dsplit": call(Ref("A3D"), 2),
    "einsum": call("ij,j->i", A, W), "expand_dims": call(A, 0), "extract": call(MASK, A),
    "fill_diagonal": call(S, 7.0), "full_like": call(A, 2.5), "geomspace": call(1.0, 8.0, 4),
    "histogram2d": call(V, Ref("V2")), "hsplit": call(Ref("A6"), 2), "inner": call(A, W),
    "insert": call(A, 1, 9.0, axis=0), "interp": call(V, SORTED, SORTED), "intersect1d": call(V, SORTED),
    "isclose": call(A, B), "isin": call(A, V), "ix_": call(I, I), "kron": call(V, W), "linspace": call(0.0, 1.0, 5),
    "logspace": call(0.0, 1.0, 5), "may_share_memory": call(A, B), "moveaxis": call(A, 0, 1),
    "nanpercentile": call(A, 30), "nanquantile": call(A, 0.3), "outer": call(V, W), "packbits": call(U8),
    "pad": call(A, 1), "partition": call(V, 2), "percentile": call(A, [10, 50, 90]), "piecewise": call(V, [Ref("VNEG")], [-1, 1]),
    "place": call(A, MASK, [1.0, 2.0]), "poly": call(W), "polyadd": call(V, W), "polyder": call(V),
    "polydiv": call(V, W), "polyfit": call(V, Ref("V2"), 2), "polyint": call(V), "polymul": call(V, W),
    "polysub": call(V, W), "polyval": call(W, V), "put": call(A, [0, 7], [1.5, 2.5]),
    "put_along_axis": call(A, IDX2, 0.0, 0), "putmask": call(A, MASK, 3.0), "quantile": call(A, 0.3),
    "ravel_multi_index": call(Ref("MI"), (6, 5)), "repeat": call(A, 2, axis=1), "reshape": call(A, (5, 6)),
    "resize": call(A, (4, 4)), "roll": call(A, 2), "rollaxis": call(A, 1), "roots": call(W),
    "searchsorted": call(SORTED, V), "select": call([MASK], [A]), "setdiff1d": call(V, SORTED),
    "setxor1d": call(V, SORTED), "shares_memory": call(A, B), "split": call(A, 3), "swapaxes": call(A, 0, 1),
    "take": call(A, I), "take_along_axis": call(A, IDX2, 0), "tensordot": call(A, B, axes=([0], [0])),
    "tile": call(W, 2), "union1d": call(V, SORTED), "unpackbits": call(U8), "unravel_index": call(I, (6, 5)),
    "vander": call(V), "vdot": call(A, B), "vsplit": call(A, 2), "sort_complex": call(CPLX),
    "trim_zeros": call(Ref("ZV")), "unwrap": call(V), "i0": call(V), "sinc": call(V), "nan_to_num": call(A),
    "flatnonzero": call(A), "argwhere": call(A), "lexsort": call(A), "real_if_close": call(CPLX),
    "histogram": call(A, bins=3), "histogram_bin_edges": call(V, bins=3), "histogramdd": call(A),
    "corrcoef": call(A), "cov": call(A), "gradient": call(V), "trapezoid": call(V), "ediff1d": call(A),
    "diagonal": call(A), "trace": call(A), "diag": call(V), "diagflat": call(W), "tril": call(A), "triu": call(A),
    "tril_indices_from": call(S), "triu_indices_from": call(S), "rot90": call(A), "block": call([[A, B]]),
    "vstack": call([A, B]), "hstack": call([A, B]), "dstack": call([A, B]), "stack": call([A, B]),
    "column_stack": call([V, V]), "concatenate": call([A, B], axis=1), "concat": call([A, B]),
    "unstack": call(A), "meshgrid": call(V, W), "broadcast_arrays": call(A, W), "where": call(MASK, A, B),
    "clip": call(A, -0.5, 0.5), "round": call(A, 1), "around": call(A, 1),
    "array2string": call(A), "array_repr": call(A), "array_str": call(A), "median": call(A),
    "nanmedian": call(A), "unique_counts": call(A), "unique_inverse": call(A), "unique_all": call(A),
}
EXTRA = {   # derived arrays some samples need
    "A3": lambda v: v["A"][:, :3], "B3": lambda v: v["B"][:, :3], "A3D": lambda v: v["A"][:, :4].reshape(6, 2, 2),
    "A6": lambda v: v["A"][:, :4], "V2": lambda v: v["V"][::-1].copy(), "VNEG": lambda v: v["V"] < 0,
    "MI": lambda v: np.array([[0, 5, 2], [1, 4, 0]]), "ZV": lambda v: np.array([0.0, 0.0, 1.5, 0.0, 2.0, 0.0]),
}
NOT_ON_NEOARRAYS = {   # integer index arrays: numpy's own values, not neoarray data
    "IDX2", "MI",
}


def _chunks(shape):
    return tuple(max(1, min(c, n)) for c, n in zip(CHUNKS_2D * 2, shape)) if shape else ()


def _neo(value):
    array = na.ndarray(value.shape, dtype=value.dtype, chunks=_chunks(value.shape) or None)
    array[...] = value
    return array


def _build(template, neo: bool, scale=1):
    values = _values(scale)
    cache = {}

    def resolve(x):
        if isinstance(x, Ref):
            if x not in cache:
                raw = values[x] if x in values else EXTRA[x](values)
                cache[x] = _neo(raw) if neo and x not in NOT_ON_NEOARRAYS and raw.ndim else raw.copy()
            return cache[x]
        if isinstance(x, list):
            return [resolve(i) for i in x]
        return x
    args, kwargs = template
    return [resolve(a) for a in args], {k: resolve(v) for k, v in kwargs.items()}


def _plain(x):
    """``x`` with every neoarray loaded, for comparison."""
    if isinstance(x, na.ndarray):
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return [_plain(i) for i in x]
    if hasattr(x, "_fields"):           # namedtuples (unique_all...)
        return [_plain(i) for i in x]
    return x


SHAPE_ONLY = {"empty_like"}     # values undefined


def _assert_same(got, expected, name):
    got, expected = _plain(got), _plain(expected)
    if name in SHAPE_ONLY:
        assert (got.shape, got.dtype) == (expected.shape, expected.dtype), name
        return
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), name
        for g, e in zip(got, expected):
            _assert_same(g, e, name)
        return
    if isinstance(expected, (str, bool, type(None), np.dtype)):
        assert got == expected, name
        return
    expected_arr, got_arr = np.asarray(expected), np.asarray(got)
    assert got_arr.shape == expected_arr.shape, f"np.{name}: shape {got_arr.shape} != {expected_arr.shape}"
    if expected_arr.dtype.kind in "fc":
        np.testing.assert_allclose(got_arr, expected_arr, rtol=1e-12, atol=1e-12, equal_nan=True,
                                   err_msg=f"np.{name}")
    else:
        np.testing.assert_array_equal(got_arr, expected_arr, err_msg=f"np.{name}")


def _run(name, neo, scale=1):
    args, kwargs = _build(SAMPLES.get(name) or call(A), neo, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = getattr(np, name)(*args, **kwargs)
    return result, args


FUNCTIONS = [n for n in coverage.numpy_functions() if coverage.status(n) != coverage.NOT_ARRAY]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_numpy_function_on_a_neoarray_matches_numpy(name):
    expected, expected_args = _run(name, neo=False)
    got, got_args = _run(name, neo=True)
    _assert_same(got, expected, name)
    for g, e in zip(got_args, expected_args):      # what a function wrote into its arguments
        if isinstance(g, na.ndarray):
            _assert_same(g, e, name + " (argument written)")


IN_MEMORY = [n for n in FUNCTIONS if coverage.status(n) == coverage.IN_MEMORY]


@pytest.mark.parametrize("name", IN_MEMORY)
def test_in_memory_functions_refuse_arrays_beyond_the_bound(name):
    args, kwargs = _build(SAMPLES.get(name) or call(A), neo=True)
    neo = _neoarrays(args)
    if not neo:
        pytest.skip(f"np.{name}'s sample passes no neoarray")
    bound = min(a.nbytes for a in neo) - 1
    with na.configure(memory_bytes_max=bound), pytest.raises(na.ArrayTooLargeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(np, name)(*args, **kwargs)


def _neoarrays(args):
    out = []
    for a in args:
        if isinstance(a, na.ndarray):
            out.append(a)
        elif isinstance(a, list):
            out += _neoarrays(a)
    return out


BOUNDED = [n for n in FUNCTIONS if coverage.status(n) == coverage.CHUNK_WISE and n not in coverage.PARTLY]
BOUND_SCALE = 8     # arrays of 48x40 items in chunks of 4x3: far more than one chunk in memory
# what must be held in memory whole (about as large as the operands here): the bound
# gets that many times the result's bytes on top
RESULT_IN_MEMORY = {"unique": 4,            # the distinct values (all distinct here), in a quarter of the bound
                    "einsum": 1, "inner": 1, "tensordot": 1,      # the output
                    "searchsorted": 1}      # the values searched for, and their indices


@pytest.mark.parametrize("name", BOUNDED)
def test_chunk_wise_functions_run_on_arrays_beyond_the_bound(name):
    """The sample's arrays are larger than ``memory_bytes_max``; their chunks are not."""
    expected, _ = _run(name, neo=False, scale=BOUND_SCALE)
    args, kwargs = _build(SAMPLES.get(name) or call(A), neo=True, scale=BOUND_SCALE)
    bound = min(a.nbytes for a in _neoarrays(args)) - 1
    if name in RESULT_IN_MEMORY:
        bound += RESULT_IN_MEMORY[name] * sum(
            np.asarray(r).nbytes for r in (expected if isinstance(expected, tuple) else [expected]))
    with na.configure(memory_bytes_max=bound), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = getattr(np, name)(*args, **kwargs)
    _assert_same(got, expected, name)


def test_a_neoarray_given_as_out_gets_the_result_of_an_in_memory_function():
    values = _values()
    out = _neo(np.zeros((4, 5)))
    assert np.take(_neo(values["A"]), values["I"], axis=0, out=out) is out
    np.testing.assert_array_equal(np.asarray(out), np.take(values["A"], values["I"], axis=0))


def test_the_coverage_table_is_fresh():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_numpy_coverage.py"), "--check"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
