"""Each Numba kernel against its numpy reference (neoarray.kernels.REFERENCE)."""
import math

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neoarray import kernels as k

DTYPES = [np.bool_, np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float32, np.float64]


def arrays(dtype, min_size=0, max_size=300, nan=True):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elements = st.floats(-1e6, 1e6, width=dtype.itemsize * 8)
        if nan:
            elements = st.one_of(elements, st.just(float("nan")))
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(info.min, -1000), min(info.max, 1000))
    return hnp.arrays(dtype, st.integers(min_size, max_size), elements=elements)


def same(a, b, rtol=1e-9):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=rtol, atol=1e-6, equal_nan=True)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_reductions_match_numpy(dtype, data):
    x = data.draw(arrays(dtype))
    acc = np.sum(np.zeros(1, dtype)).dtype          # numpy's accumulation dtype
    rtol = 1e-4 if x.dtype == np.float32 else 1e-9
    same(k.sum_(x, acc), k.REFERENCE["sum"](x, acc), rtol)
    assert k.count_nonzero(x) == k.REFERENCE["count_nonzero"](x)
    assert k.any_(x) == k.REFERENCE["any"](x) and k.all_(x) == k.REFERENCE["all"](x)
    n, mean, m2 = k.moments(x)
    rn, rmean, rm2 = k.REFERENCE["moments"](x)
    assert n == rn
    same(mean, rmean, 1e-6 if x.dtype == np.float32 else 1e-9)
    same(m2, rm2, 1e-6)
    if x.size == 0:
        with pytest.raises(ValueError, match="zero-size array"):
            k.min_(x)
        return
    for name, kernel in (("min", k.min_), ("max", k.max_)):
        got, want = kernel(x), k.REFERENCE[name](x)
        assert (got == want) or (np.isnan(got) and np.isnan(want)), (name, got, want)
    for name, kernel in (("argmin", k.argmin), ("argmax", k.argmax)):
        assert kernel(x)[0] == k.REFERENCE[name](x)[0], name


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, max_size=40), st.integers(1, 6))
def test_prod_matches_numpy(x, _):
    x = np.clip(x, -3, 3)
    same(k.prod(x, np.float64), k.REFERENCE["prod"](x, np.float64), 1e-9)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, max_size=400), st.integers(1, 40),
       st.floats(-1e6, 1e6), st.floats(0, 2e6))
def test_histogram_matches_numpy(x, bins, lo, width):
    counts, edges = k.histogram(x, bins, lo, lo + width)
    finite = x[~np.isnan(x)]
    try:
        want, want_edges = k.REFERENCE["histogram"](finite, bins, lo, lo + width)
    except ValueError:      # numpy: "Too many bins for data range" (bins narrower than floats)
        reject()
    np.testing.assert_array_equal(counts, want)
    np.testing.assert_allclose(edges, want_edges)


def test_histogram_of_a_subnormal_range_follows_its_edges():
    """A range so narrow that bins / width overflows (0 * inf is NaN): every item still
    goes to the bin its edges give (hypothesis found 0.0 counted in the middle bin)."""
    for x, width, bins in ((0.0, 2.225073858507e-311, 3), (1e-311, 2.225073858507e-311, 3),
                           (2.225073858507e-311, 2.225073858507e-311, 3), (0.0, 5e-324, 7)):
        counts, edges = k.histogram(np.array([x]), bins, 0.0, width)
        want = np.histogram(np.array([x]), np.linspace(0.0, width, bins + 1))[0]
        np.testing.assert_array_equal(counts, want)


def test_histogram_edges_follow_numpy_on_exact_edges():
    x = np.array([0.0, 0.1, 0.2, 0.3, 0.7, 1.0, 1.0000001, -0.0000001, np.nan])
    np.testing.assert_array_equal(k.histogram(x, 10, 0.0, 1.0)[0],
                                  np.histogram(x[:-1], 10, range=(0.0, 1.0))[0])
    tiny = k.histogram(np.array([0.0, 1e-309]), 1, 0.0, 2.2e-309)[0]     # subnormal width
    assert tiny.tolist() == [2]
    with pytest.raises(ValueError, match="bins >= 1"):
        k.histogram(x, 0, 0, 1)
    with pytest.raises(ValueError, match="must be finite"):
        k.histogram(x, 3, 0, np.inf)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, max_size=200, nan=False), st.integers(1, 200))
def test_chunked_merges_equal_whole_array_results(x, cut):
    """Partial states of two chunks, merged, give the whole array's answer."""
    cut = min(cut, x.size)
    a, b = x[:cut], x[cut:]
    n, mean, m2 = k.merge_moments(k.moments(a), k.moments(b))
    rn, rmean, rm2 = k.REFERENCE["moments"](x)
    assert n == rn
    same(mean, rmean), same(m2, rm2, 1e-7)
    if a.size and b.size:
        for name in ("argmin", "argmax"):
            ia, va = getattr(k, name)(a)
            ib, vb = getattr(k, name)(b)
            assert k.merge_arg(name, (ia, va), (ib + cut, vb))[0] == k.REFERENCE[name](x)[0]


SERIES_ITEMS = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 200), elements=SERIES_ITEMS), st.integers(0, 200),
       st.integers(1, 8))
def test_windows_across_a_chunk_boundary(x, cut, window):
    cut = min(cut, x.size)
    head, tail = x[:cut], x[cut:]
    whole = k.diff(x)
    same(whole, k.REFERENCE["diff"](x))
    if cut:
        same(np.concatenate([k.diff(head), k.diff(tail, halo=head[-1:])]), whole)
    mm = k.moving_mean(x, window)
    same(mm, k.REFERENCE["moving_mean"](x, window) if x.size >= window else np.empty(0), 1e-7)
    if cut >= window - 1 and cut:
        halo = head[-(window - 1):] if window > 1 else head[:0]
        same(np.concatenate([k.moving_mean(head, window), k.moving_mean(tail, window, halo=halo)]),
             mm, 1e-7)
    limit = 0.05
    flagged = k.alerts(x, limit)
    np.testing.assert_array_equal(flagged, k.REFERENCE["alerts"](x, limit))
    if cut:
        np.testing.assert_array_equal(
            np.concatenate([k.alerts(head, limit), k.alerts(tail, limit, halo=head[-1:], offset=cut)]),
            flagged)


def test_alerts_flag_large_moves_of_a_price_series():
    prices = np.array([100.0, 101.0, 90.0, 90.5, 0.0, 5.0, 99.0, np.nan, 99.0])
    assert list(k.alerts(prices, 0.05)) == [2, 4, 6]       # after a zero or a NaN: no rate
    assert list(k.alerts(prices, 0.05)) == list(k.REFERENCE["alerts"](prices, 0.05))


def test_single_items_and_errors():
    one = np.array([2.5])
    assert k.sum_(one, np.float64) == 2.5 and k.min_(one) == 2.5 and k.argmax(one) == (0, 2.5)
    assert k.moments(one) == (1, 2.5, 0.0) and math.isnan(k.var(one, ddof=1))
    assert k.diff(one).size == 0 and k.moving_mean(one, 2).size == 0 and k.alerts(one, 0.1).size == 0
    with pytest.raises(ValueError, match="window >= 1"):
        k.moving_mean(one, 0)
    assert not k.supported(np.complex128) and k.supported(np.int16)


def test_warm_up_loads_every_kernel():
    k.warm_up((np.float32, np.uint8))
    assert k.sum_(np.ones(3, np.uint8), np.uint64) == 3
