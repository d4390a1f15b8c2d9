"""Sorting, unique, searchsorted (ordering.py) and order statistics (quantiles.py) against
numpy, with ``memory_bytes_max`` far below the arrays' size: the external sort spills
runs, the quantiles take selection passes, nothing is loaded whole."""
import warnings

import numpy as np
import pytest
from array_helpers import assert_same_array, examples, values_for
from hypothesis import given
from hypothesis import strategies as st

import neoarray.array as na
from neoarray.array import fetch, ordering, quantiles

SORT_DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int64", "float32", "float64",
                                     "complex128")]
REAL_DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint16", "int32", "int64", "float32",
                                     "float64")]
METHODS = ["linear", "lower", "higher", "nearest", "midpoint", "inverted_cdf",
           "averaged_inverted_cdf", "closest_observation", "interpolated_inverted_cdf", "hazen",
           "weibull", "median_unbiased", "normal_unbiased"]
SMALL_MEMORY = 512      # bytes: a few dozen items per run, every path bounded


@st.composite
def operands(draw, dtypes=SORT_DTYPES, min_dims=1, max_dims=1, max_side=300):
    """(numpy oracle, neoarray with the same items): dense, sparse or with repeats and NaNs."""
    ndim = draw(st.integers(min_dims, max_dims))
    shape = tuple(draw(st.integers(1 if ndim > 1 else 0, max_side if ndim == 1 else 12))
                  for _ in range(ndim))
    dtype = draw(st.sampled_from(dtypes))
    chunks = tuple(draw(st.integers(1, max(1, n))) for n in shape)
    oracle = values_for(draw, shape, dtype)
    style = draw(st.sampled_from(["dense", "repeats", "sparse"]))
    if style == "repeats" and oracle.size:
        oracle = oracle.reshape(-1)[np.random.default_rng(draw(st.integers(0, 99))).integers(
            0, min(5, oracle.size), oracle.size)].reshape(shape)
    if dtype.kind in "fc" and oracle.size and draw(st.booleans()):
        oracle.flat[draw(st.lists(st.integers(0, oracle.size - 1), max_size=4))] = np.nan
    fill = 0
    if style == "sparse":
        fill = draw(st.sampled_from([0, 1] + ([np.nan] if dtype.kind in "fc" else [])))
        keep = np.random.default_rng(draw(st.integers(0, 99))).random(shape) < 0.1
        oracle = np.where(keep, oracle, np.asarray(fill).astype(dtype))
    array = na.ndarray(shape, dtype=dtype, chunks=chunks, fill_value=fill,
                       order=draw(st.sampled_from("CF")))
    if style == "sparse":
        for index in zip(*np.nonzero(keep)):
            array[index] = oracle[index]
    else:
        array[...] = oracle
    return oracle, array


# ---------------------------------------------------------------------- sort

@examples(80)
@given(operands(), st.sampled_from([None, "stable", "quicksort", "heapsort"]))
def test_sort_and_argsort_of_1d_arrays_match_numpy_with_spilled_runs(pair, kind):
    oracle, array = pair
    stats = {}
    with na.configure(memory_bytes_max=2048):       # runs of 32 items at most
        result = ordering.sort(array, kind=kind, stats=stats)
        via_numpy = np.sort(array, kind=kind)
        indices = np.argsort(array, kind="stable")
        any_kind = np.argsort(array, kind=kind)
    assert stats["run_items"] * stats["item_bytes"] * 2 <= stats["buffer_bytes"]
    assert stats.get("held_items_max", 0) * stats["item_bytes"] <= stats["buffer_bytes"]
    if oracle.size - stats["fill_items"] > stats["run_items"]:     # the items read (stored)
        assert stats["runs"] > 1
    expected = np.sort(oracle, kind=kind)
    assert_same_array(result, expected)
    assert_same_array(via_numpy, expected)
    assert_same_array(indices, np.argsort(oracle, kind="stable"))
    assert_same_array(oracle[np.asarray(any_kind)], expected)          # a valid answer of any kind


@examples(60)
@given(operands(min_dims=2, max_dims=3), st.data())
def test_sort_along_an_axis_and_flattened_match_numpy(pair, data):
    oracle, array = pair
    axis = data.draw(st.sampled_from([None] + list(range(-oracle.ndim, oracle.ndim))))
    memory = max(SMALL_MEMORY, 4 * 24 * max(oracle.shape))       # one line (and indices) fits
    with na.configure(memory_bytes_max=memory):
        got = np.sort(array, axis=axis)
        indices = np.argsort(array, axis=axis, kind="stable")
    assert_same_array(got, np.sort(oracle, axis=axis))
    assert_same_array(indices, np.argsort(oracle, axis=axis, kind="stable"))
    if axis is not None:
        with na.configure(memory_bytes_max=memory):
            array.sort(axis=axis)
        assert_same_array(array[...], np.sort(oracle, axis=axis))


def test_in_place_sort_of_a_large_1d_array_spills_and_merges_in_passes():
    rng = np.random.default_rng(3)
    oracle = rng.normal(size=20_000)
    oracle[::97] = np.nan
    array = na.ndarray(oracle.shape, chunks=(1000,))
    array[...] = oracle
    stats = {}
    with na.configure(memory_bytes_max=16_000):       # 160,000 bytes of items: 10x the memory
        ordering.sort(array, stats=stats, out=array)
        indices = ordering.argsort(array)
    assert stats["runs"] >= 20 and stats["merge_passes"] >= 1
    assert_same_array(array[...], np.sort(oracle))
    assert_same_array(indices[...], np.arange(oracle.size))     # sorted already: stable identity


def test_a_sort_of_a_mostly_unwritten_array_reads_and_writes_only_its_stored_chunks():
    array = na.ndarray((10**15,), chunks=(1000,), fill_value=0.5)
    written = {7: -3.0, 999_999_999_999: np.nan, 10**15 - 1: 2.0, 10**12 + 5: 0.25, 42: 0.5}
    for index, value in written.items():
        array[index] = value
    stats = {}
    with na.configure(memory_bytes_max=4096):
        result = ordering.sort(array, stats=stats)
    assert stats["fill_items"] == 10**15 - 4000 and stats["runs"] > 1     # 4 chunks read
    # the head (-3, 0.25, then fill values) and the tail (fill values, 2, NaN) only
    assert len(list(result.chunk_keys())) == 2
    assert_same_array(result[:3], np.array([-3.0, 0.25, 0.5]))
    assert_same_array(result[-3:], np.array([0.5, 2.0, np.nan]))
    assert result[10**14] == 0.5 and result.fill_value == 0.5
    array.sort()                                     # in place: its stored chunks go
    assert_same_array(array[:2], np.array([-3.0, 0.25]))
    assert len(list(array.chunk_keys())) == 2 and np.isnan(array[-1])


def test_a_sort_into_an_array_of_another_fill_value_writes_the_fill_items():
    oracle = np.zeros(5000)
    oracle[[3, 4000]] = [-1.0, 1.0]
    array = na.zeros(oracle.shape, chunks=(100,))
    array[[3, 4000]] = [-1.0, 1.0]
    out = na.full(oracle.shape, 9.0, chunks=(300,))
    out[:] = 7.0
    with na.configure(memory_bytes_max=2048):
        ordering.sort(array, out=out)
    assert_same_array(out[...], np.sort(oracle))
    numpy_out = np.empty(5000)
    with na.configure(memory_bytes_max=2048):
        ordering.sort(array, out=numpy_out)
    assert_same_array(numpy_out, np.sort(oracle))


def test_sorting_along_an_axis_whose_lines_do_not_fit_is_refused_with_the_bytes():
    array = na.zeros((4, 10_000), chunks=(1, 1000))
    with na.configure(memory_bytes_max=10_000), pytest.raises(na.ArrayTooLargeError,
                                                              match="lines of 10000 items"):
        np.sort(array, axis=1)
    with na.configure(memory_bytes_max=10_000):
        assert np.sort(array, axis=0).shape == (4, 10_000)


def test_sort_errors_are_numpy_s():
    array = na.ndarray((5,))
    with pytest.raises(ValueError):
        np.sort(array, kind="bogus")


# ---------------------------------------------------------------------- unique

@examples(100)
@given(operands(max_dims=3), st.booleans(), st.booleans())
def test_unique_matches_numpy(pair, counts, equal_nan):
    oracle, array = pair
    with na.configure(memory_bytes_max=max(SMALL_MEMORY, 4 * 24 * oracle.size)):
        got = np.unique(array, return_counts=counts, equal_nan=equal_nan)
    expected = np.unique(oracle, return_counts=counts, equal_nan=equal_nan)
    for g, e in zip(got, expected) if counts else [(got, expected)]:
        np.testing.assert_array_equal(g, e)


def test_unique_index_and_inverse_go_to_numpy_in_memory_or_fail_clearly():
    array = na.ndarray((1000,), chunks=(100,))
    array[...] = np.arange(1000) % 7
    _values, index = np.unique(array, return_index=True)
    np.testing.assert_array_equal(index, np.arange(7))
    with na.configure(memory_bytes_max=1000), pytest.raises(na.ArrayTooLargeError, match="8000 bytes"):
        np.unique(array, return_inverse=True)


def test_unique_of_too_many_distinct_items_is_refused_with_the_bytes():
    array = na.ndarray((10_000,), chunks=(100,))
    array[...] = np.arange(10_000.0)
    with na.configure(memory_bytes_max=4000), pytest.raises(na.ArrayTooLargeError, match="distinct items"):
        np.unique(array)


# ---------------------------------------------------------------------- searchsorted

class CountingFetcher:
    """The process's fetcher, counting the chunks it is asked for."""

    def __init__(self, inner):
        self.inner, self.chunks = inner, 0

    def fetch(self, chunks):
        self.chunks += len(chunks)
        return self.inner.fetch(chunks)


@examples(100)
@given(operands(dtypes=[np.dtype(d) for d in ("int16", "int64", "float64", "uint8")]),
       st.sampled_from(["left", "right"]), st.data())
def test_searchsorted_matches_numpy(pair, side, data):
    oracle, _ = pair
    oracle = np.sort(oracle)
    array = na.ndarray(oracle.shape, dtype=oracle.dtype, chunks=data.draw(st.integers(1, 32)))
    array[...] = oracle
    probes = values_for(data.draw, (data.draw(st.integers(0, 6)),), oracle.dtype)
    if oracle.size:
        probes = np.concatenate([probes, oracle[:: max(1, oracle.size // 3)]])
    with na.configure(memory_bytes_max=SMALL_MEMORY):
        assert_same_array(np.searchsorted(array, probes, side=side), np.searchsorted(oracle, probes, side=side))
        scalar = probes[0] if len(probes) else oracle.dtype.type(0)
        assert np.searchsorted(array, scalar, side=side) == np.searchsorted(oracle, scalar, side=side)


def test_searchsorted_reads_a_logarithmic_number_of_chunks():
    array = na.ndarray((1 << 20,), dtype=np.int64, chunks=(1024,))     # 1024 chunks
    array[...] = np.arange(1 << 20) * 2
    counting = CountingFetcher(fetch.get_fetcher())
    old = fetch.set_fetcher(counting)
    try:
        assert array.searchsorted(777_777) == 388_889
        assert array.searchsorted(777_778, side="right") == 388_890
    finally:
        fetch.set_fetcher(old)
    assert counting.chunks <= 2 * (10 + 2)


# ---------------------------------------------------------------------- quantiles

def _same_result(got, expected):
    assert type(got) is type(expected)
    assert np.shape(got) == np.shape(expected) and np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def _both(func, oracle, array, *args, memory=SMALL_MEMORY, **kwargs):
    """numpy's answer and ours (under ``memory``), or the same exception type from both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            expected = func(oracle, *args, **kwargs)
        except TypeError as exc:
            with na.configure(memory_bytes_max=memory), pytest.raises(type(exc)):
                func(array, *args, **kwargs)
            return None, None
        with na.configure(memory_bytes_max=memory):
            return func(array, *args, **kwargs), expected


@examples(150)
@given(operands(dtypes=REAL_DTYPES, max_dims=3), st.sampled_from(METHODS),
       st.sampled_from([0.5, 0.0, 1.0, 0.37, [0.1, 0.5, 0.99], [0.25]]),
       st.sampled_from([np.quantile, np.percentile, np.nanquantile, np.nanpercentile]),
       st.booleans())
def test_quantiles_are_numpy_s_exactly(pair, method, q, func, keepdims):
    oracle, array = pair
    if oracle.size == 0:
        return
    if func in (np.percentile, np.nanpercentile):
        q = [x * 100 for x in q] if isinstance(q, list) else q * 100
    got, expected = _both(func, oracle, array, q, method=method, keepdims=keepdims)
    if got is not None:
        _same_result(got, expected)


@examples(80)
@given(operands(dtypes=REAL_DTYPES, max_dims=3), st.sampled_from([np.median, np.nanmedian]),
       st.booleans())
def test_medians_are_numpy_s_exactly(pair, func, keepdims):
    oracle, array = pair
    if oracle.size == 0:
        return
    got, expected = _both(func, oracle, array, keepdims=keepdims)
    _same_result(got, expected)


@examples(60)
@given(operands(dtypes=[np.dtype(d) for d in ("int32", "float32", "float64")], min_dims=2, max_dims=3),
       st.data())
def test_quantiles_along_an_axis_match_numpy(pair, data):
    oracle, array = pair
    axis = data.draw(st.integers(-oracle.ndim, oracle.ndim - 1))
    keepdims = data.draw(st.booleans())
    result_bytes = 3 * 8 * oracle.size // oracle.shape[axis]       # the result must fit
    memory = max(SMALL_MEMORY, 2 * 2 * 8 * max(oracle.shape), result_bytes)
    for func, args in ((np.percentile, ([5, 50, 95],)), (np.median, ()), (np.nanquantile, (0.3,))):
        got, expected = _both(func, oracle, array, *args, axis=axis, keepdims=keepdims, memory=memory)
        _same_result(got, expected)


def test_order_statistics_of_a_large_array_take_few_passes():
    rng = np.random.default_rng(5)
    oracle = rng.standard_cauchy(size=50_000)
    array = na.ndarray(oracle.shape, chunks=(2000,))
    array[...] = oracle
    ranks = [0, 1, 25_000, 49_999]
    stats = {}
    with na.configure(memory_bytes_max=64_000):         # 400,000 bytes of items
        found = quantiles.order_statistics(array, ranks, stats=stats)
        assert np.percentile(array, 37.5) == np.percentile(oracle, 37.5)
    expected = np.sort(oracle)[ranks]
    assert [found[r] for r in ranks] == list(expected)
    assert stats["passes"] <= 1 + 64 // 11 + 1


def test_quantile_arguments_are_checked_by_numpy():
    array = na.ndarray((10_000,), chunks=(100,))
    with na.configure(memory_bytes_max=1000):
        with pytest.raises(ValueError, match="Quantiles must be in the range"):
            np.quantile(array, 1.5)
        with pytest.raises(ValueError, match="not a valid method"):
            np.quantile(array, 0.5, method="bogus")
        with pytest.raises(TypeError, match="real numbers"):
            np.quantile(na.ndarray((10_000,), dtype=complex), 0.5)


def test_unique_of_unwritten_nans_keeps_each_one_unless_equal_nan():
    """Unwritten items of a NaN fill are one run; with ``equal_nan=False`` numpy gives
    each NaN on its own, so they count one by one (found by Hypothesis)."""
    a = na.ndarray((3, 2), dtype="f4", chunks=(1, 1), fill_value=np.nan)
    a[0, 0] = 1.5
    oracle = np.full((3, 2), np.nan, "f4")
    oracle[0, 0] = 1.5
    for equal_nan in (True, False):
        values, counts = np.unique(a, return_counts=True, equal_nan=equal_nan)
        expected, expected_counts = np.unique(oracle, return_counts=True, equal_nan=equal_nan)
        assert_same_array(values, expected)
        assert_same_array(counts.astype(expected_counts.dtype), expected_counts)
        assert_same_array(np.unique(a, equal_nan=equal_nan), expected)
