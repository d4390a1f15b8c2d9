"""Window operations on 1-D series (windows.py): diff, moving_mean, alerts.

Property tests compare them with numpy (``np.diff``, ``np.convolve(x, ones(w) / w,
'valid')``) and the kernels' alerts reference, on partially written arrays stored
on a real cluster; an exabyte-shaped series checks that the work and the stored
output follow the written regions only.
"""

import math

import numpy as np
import pytest
import ZODB
from array_helpers import examples, open_conn
from hypothesis import given
from hypothesis import strategies as st
from ZODB.POSException import POSKeyError

import neoarray.array as na
from neoarray import kernels

DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int32", ">i4", "int64",
                                "float16", "float32", "float64")]
LIMITS = [-0.5, 0.0, 0.05, 0.5, 3.0]


@pytest.fixture(scope="module")
def neo_db(neo_cluster):
    """A ZODB.DB on the session's cluster, shared by the examples of this module."""
    database = ZODB.DB(neo_cluster.open_storage())
    yield database
    database.close()


# ---------------------------------------------------------------------- strategies

def _values(rng, size, dtype):
    """Small values (zeros, big rates of variation), NaNs now and then for floats."""
    if dtype == bool:
        return rng.integers(0, 2, size).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(0 if dtype.kind == "u" else -4, 5, size).astype(dtype)
    if rng.random() < 0.3:
        return rng.choice([-2.0, 0.0, 1.0, 3.5, np.nan], size).astype(dtype)
    return (rng.normal(size=size) * 10).astype(dtype)


def _fills(dtype):
    if dtype == bool:
        return st.booleans()
    if dtype.kind in "iu":
        return st.sampled_from([0, 3])
    return st.sampled_from([0.0, 2.5, float("nan")])


@st.composite
def series(draw, dtypes=DTYPES, max_len=60):
    """``(x, chunk length, fill, regions)``: x is fill outside the written regions."""
    n = draw(st.integers(0, max_len))
    dtype = draw(st.sampled_from(dtypes))
    fill = draw(_fills(dtype))
    x = np.full(n, fill, dtype=dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    regions = [(lo, min(n, lo + size)) for lo, size in draw(st.lists(
        st.tuples(st.integers(0, n), st.integers(0, 15)), max_size=3))]
    for lo, hi in regions:
        x[lo:hi] = _values(rng, hi - lo, dtype)
    return x, draw(st.integers(1, 12)), fill, regions


def stored_series(database, drawn):
    """Commit the drawn series; return (conn, tm, array) with the chunks as ghosts."""
    x, chunks, fill, regions = drawn
    conn, tm = open_conn(database)
    a = na.full(len(x), fill, dtype=x.dtype, chunks=chunks)
    for lo, hi in regions:
        a[lo:hi] = x[lo:hi]
    conn.root()["a"] = a
    tm.commit()
    conn.cacheMinimize()
    return conn, tm, conn.root()["a"]


@st.composite
def outs(draw):
    """How to pass ``out``: None, or (chunk length, same fill as the result?, junk region)."""
    if draw(st.booleans()):
        return None
    return draw(st.integers(1, 12)), draw(st.booleans()), draw(st.integers(0, 30))


def make_out(spec, length, dtype, constant):
    """An out array per ``spec``, partly holding stale values (to be replaced)."""
    chunks, same_fill, junk = spec
    fill = constant if same_fill else (1 if dtype == bool else 7)
    out = na.full(length, fill, dtype=dtype, chunks=chunks)
    out[:junk] = np.asarray(5).astype(dtype)
    return out


# ---------------------------------------------------------------------- helpers

def reaches_stored(a, out, key, width):
    """Whether output chunk ``key`` reads a stored chunk of ``a``."""
    co, c = out.chunks[0], a.chunks[0]
    start = key[0] * co
    stop = min(start + co, out.shape[0]) + width - 1
    return any(k * c < stop and (k + 1) * c > start for (k,) in a.chunk_keys())


def assert_sparse(a, out, width):
    """A result array stores only chunks whose input span holds stored data."""
    assert all(reaches_stored(a, out, key, width) for key in out.chunk_keys())


def convolve_mean(x, window):
    if window > len(x):
        return np.empty(0)
    return np.convolve(x.astype(np.float64), np.ones(window) / window, "valid")


def assert_close(got, expected, x, rtol=1e-9):
    scale = np.nanmax(np.abs(np.where(np.isfinite(x), x, 0)), initial=0) if x.size else 0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * (1 + float(scale)),
                               equal_nan=True)


# ---------------------------------------------------------------------- properties

@examples(40)
@given(series(DTYPES + [np.dtype("complex128")]), outs())
def test_diff_matches_numpy(neo_db, drawn, out_spec):
    x = drawn[0]
    conn, tm, a = stored_series(neo_db, drawn)
    try:
        expected = np.diff(x)
        constant = np.diff(np.full(2, a.fill_value, dtype=x.dtype))[0]
        if out_spec is None:
            got = na.diff(a)
            assert got._p_jar is conn and got.chunks == a.chunks
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(np.asarray(got.fill_value), constant)
            assert_sparse(a, got, 2)
        else:
            out = make_out(out_spec, len(expected), expected.dtype, constant)
            got = na.diff(a, out=out)
            assert got is out
        np.testing.assert_array_equal(np.asarray(got), expected)
    finally:
        tm.abort()
        conn.close()


@examples(40)
@given(series(), st.integers(1, 20), outs(), st.sampled_from(["float64", "float32"]))
def test_moving_mean_matches_convolve(neo_db, drawn, window, out_spec, out_dtype):
    x = drawn[0]
    conn, tm, a = stored_series(neo_db, drawn)
    try:
        expected = convolve_mean(x, window)
        if out_spec is None:
            got = na.moving_mean(a, window)
            assert got.dtype == np.float64 and got.chunks == a.chunks
            assert_sparse(a, got, window)
        else:
            constant = np.float64(np.asarray(a.fill_value).astype(np.float64))
            out = make_out(out_spec, len(expected), np.dtype(out_dtype), constant)
            got = na.moving_mean(a, window, out=out)
        assert got.shape == expected.shape
        rtol = 1e-6 if got.dtype == np.float32 else 1e-9
        assert_close(np.asarray(got), expected, x.astype(np.float64), rtol)
    finally:
        tm.abort()
        conn.close()


@examples(40)
@given(series(), st.sampled_from(LIMITS))
def test_alerts_match_the_reference(neo_db, drawn, limit):
    x = drawn[0]
    conn, tm, a = stored_series(neo_db, drawn)
    try:
        got = na.alerts(a, limit)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, kernels.REFERENCE["alerts"](x, limit))
    finally:
        tm.abort()
        conn.close()


def test_non_finite_items_spoil_only_their_windows():
    x = np.arange(40, dtype=np.float64)
    x[[5, 17, 18, 30]] = [np.nan, np.inf, -np.inf, np.inf]
    a = na.asarray(x, chunks=(6,))
    for window in (1, 2, 3, 7, 13):
        np.testing.assert_allclose(np.asarray(na.moving_mean(a, window)),
                                   convolve_mean(x, window), rtol=1e-12, equal_nan=True)


def test_infinite_fills_and_nan_outs_stay_sparse():
    a = na.full(100, np.inf, chunks=10)
    a[45] = 1.0
    x = np.asarray(a)
    out = na.full(99, np.nan, chunks=10)       # inf - inf: a NaN of other bytes
    assert na.diff(a, out=out) is out and len(list(out.chunk_keys())) == 1
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.asarray(out), np.diff(x))
    mm = na.moving_mean(a, 4)
    assert mm.fill_value == np.inf and list(mm.chunk_keys()) == []      # all inf
    np.testing.assert_array_equal(np.asarray(mm), convolve_mean(x, 4))


def test_a_new_output_keeps_its_chunks_within_chunk_bytes_max():
    a = na.zeros(100, dtype=np.int8, chunks=50)
    a[7] = 3
    with na.configure(chunk_bytes_max=64):
        mm = na.moving_mean(a, 2)
    assert mm.chunks == (8,)
    np.testing.assert_allclose(np.asarray(mm), convolve_mean(np.asarray(a), 2))


def test_windows_longer_than_several_chunks_read_each_chunk_once(neo_db, monkeypatch):
    x = np.random.default_rng(3).normal(size=200)
    conn, tm = open_conn(neo_db)
    conn.root()["a"] = a = na.asarray(x, chunks=(7,))
    tm.commit()
    conn.cacheMinimize()
    loads = []
    real = na.ndarray._map_stored

    def counting(self, func, keys=None):
        for key, value in real(self, func, keys):
            loads.append(key)
            yield key, value
    monkeypatch.setattr(na.ndarray, "_map_stored", counting)
    try:
        out = na.zeros(156, chunks=(5,))
        assert_close(np.asarray(na.moving_mean(a, 45, out=out)), convolve_mean(x, 45), x)
        assert sorted(loads) == loads and len(loads) == len(set(loads)) == math.ceil(200 / 7)
    finally:
        tm.abort()
        conn.close()


# ---------------------------------------------------------------------- exabyte series

N = 10**18
CHUNK = 1000
WINDOW = 2500          # longer than two chunks
REGIONS = [(0, 3), (5 * 10**17 - 1500, 5 * 10**17 + 1700), (N - 7, N)]


def _prices(rng, size):
    prices = 100 * np.cumprod(1 + rng.normal(scale=0.04, size=size))
    prices[size // 3] = 0.0
    prices[size // 2] = np.nan
    return prices


@pytest.mark.parametrize("fill", [0.0, 100.0, float("nan")])
def test_an_exabyte_series_costs_its_written_regions(neo_db, fill):
    conn, tm = open_conn(neo_db)
    a = na.full(N, fill, chunks=CHUNK)
    rng = np.random.default_rng(11)
    for lo, hi in REGIONS:
        a[lo:hi] = _prices(rng, hi - lo)
    conn.root()["a"] = a
    tm.commit()
    conn.cacheMinimize()
    a = conn.root()["a"]
    try:
        stored = len(list(a.chunk_keys()))
        d, mm, found = na.diff(a), na.moving_mean(a, WINDOW), na.alerts(a, 0.05)
        assert d.shape == (N - 1,) and mm.shape == (N - WINDOW + 1,)
        assert 0 < len(list(d.chunk_keys())) <= 2 * stored
        assert len(list(mm.chunk_keys())) <= stored * (math.ceil((CHUNK + WINDOW) / CHUNK) + 1)
        expected_alerts = []
        for lo, hi in REGIONS:
            start, stop = max(0, lo - 3 * CHUNK), min(N, hi + 3 * CHUNK)
            x = a[start:stop]
            np.testing.assert_array_equal(d[start:stop - 1], np.diff(x))
            assert_close(mm[start:stop - WINDOW + 1], convolve_mean(x, WINDOW), x)
            expected_alerts.append(kernels.REFERENCE["alerts"](x, 0.05, offset=start))
        np.testing.assert_array_equal(found, np.concatenate(expected_alerts))
        for i in (12_345_678_901, 10**17, N - 10**6):
            np.testing.assert_array_equal(d[i], np.float64(fill) - np.float64(fill))
            np.testing.assert_array_equal(mm[i], np.float64(fill))
    finally:
        tm.abort()
        conn.close()


def test_alerts_that_would_not_fit_in_memory_are_refused():
    a = na.full(N, 1.0, chunks=CHUNK)
    a[10:20] = 2.0
    with pytest.raises(na.ArrayTooLargeError, match="alerts result") as info:
        na.alerts(a, -1.0)           # every unwritten item is flagged
    assert isinstance(info.value, MemoryError)
    assert list(na.alerts(a, 0.4)) == [10, 20]
    small = na.asarray(np.arange(1.0, 1001.0), chunks=(100,))
    with na.configure(memory_bytes_max=800):
        np.testing.assert_array_equal(na.alerts(small, 0.01), np.arange(1, 101))  # 800 bytes
        with pytest.raises(MemoryError):
            na.alerts(small, 0.001)


def test_a_window_that_does_not_fit_in_memory_is_refused():
    a = na.zeros(N, chunks=CHUNK)
    with na.configure(memory_bytes_max=1 << 30), pytest.raises(na.ArrayTooLargeError,
                                                               match="moving_mean"):
        na.moving_mean(a, 10**12)


# ---------------------------------------------------------------------- errors

def test_inputs_must_be_1d_numeric_neoarrays():
    with pytest.raises(TypeError, match="neoarray.array.ndarray, not ndarray"):
        na.diff(np.arange(3))
    with pytest.raises(na.ArrayShapeError, match=r"1-D series.*\(3, 3\)"):
        na.moving_mean(na.zeros((3, 3)), 2)
    complex_series = na.zeros(4, dtype=complex)
    complex_series[1] = 1 + 2j
    np.testing.assert_array_equal(np.asarray(na.diff(complex_series)), [1 + 2j, -1 - 2j, 0])
    for func, args in ((na.moving_mean, (2,)), (na.alerts, (0.1,))):
        with pytest.raises(na.ArrayDtypeError, match="complex128"):
            func(complex_series, *args)
    with pytest.raises(na.ArrayDtypeError, match="numeric dtype"):
        na.diff(na.zeros(4, dtype=[("a", "i4")]))
    with pytest.raises(na.ArrayDtypeError):
        na.alerts(na.zeros(4, dtype="M8[s]"), 0.1)


def test_window_must_be_a_positive_integer():
    a = na.zeros(10, chunks=3)
    for window in (0, -3):
        with pytest.raises(na.ArrayValueError, match="window >= 1"):
            na.moving_mean(a, window)
    with pytest.raises(TypeError):
        na.moving_mean(a, 2.5)
    assert na.moving_mean(a, 11).shape == (0,)
    assert na.diff(na.zeros(0)).shape == (0,) and na.diff(na.zeros(1)).shape == (0,)


def test_out_is_checked():
    a = na.zeros(10, dtype=np.int32, chunks=3)
    with pytest.raises(TypeError, match="out must be a neoarray"):
        na.diff(a, out=np.zeros(9))
    with pytest.raises(na.ArrayShapeError, match="out must be 1-D"):
        na.diff(a, out=na.zeros((9, 1)))
    with pytest.raises(na.ArrayShapeError, match="out has length 10, the result has length 9"):
        na.diff(a, out=na.zeros(10))
    with pytest.raises(na.ArrayShapeError, match="length 7"):
        na.moving_mean(a, 4, out=na.zeros(8))
    with pytest.raises(na.ArrayCastError, match="float64.*int64"):
        na.moving_mean(a, 4, out=na.zeros(7, dtype=np.int64))
    with pytest.raises(na.ArrayDtypeError, match="numeric"):
        na.diff(a, out=na.zeros(9, dtype="S4"))
    same = na.zeros(10)
    with pytest.raises(na.ArrayValueError, match="not be the input"):
        na.moving_mean(same, 1, out=same)
    out = na.zeros(9, dtype=np.int64, chunks=4)
    a[4] = 3
    assert na.diff(a, out=out) is out
    np.testing.assert_array_equal(np.asarray(out), np.diff(np.asarray(a)))


# ---------------------------------------------------------------------- transactions

def test_outputs_are_written_in_the_callers_transaction(db):
    x = np.arange(50.0) ** 2
    conn, tm = open_conn(db)
    root = conn.root()
    root["a"] = na.asarray(x, chunks=(8,))
    root["out"] = na.zeros(49, chunks=(5,))
    tm.commit()
    a, out = root["a"], root["out"]
    d = na.diff(a)
    assert d._p_jar is conn
    oid = d._p_oid
    na.diff(a, out=out)
    assert len(list(out.chunk_keys())) == 10
    tm.abort()
    assert list(out.chunk_keys()) == [] and not out[...].any()
    with pytest.raises(POSKeyError):
        conn.get(oid)
    root["d"] = na.moving_mean(a, 3)
    tm.commit()
    other, _tm = open_conn(db)
    np.testing.assert_allclose(other.root()["d"][...], convolve_mean(x, 3), rtol=1e-12)
    other.close()
    conn.close()
