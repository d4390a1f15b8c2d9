"""Envelope overviews (``neoarray.array.overview``): what a plot draws from them equals
numpy's envelope of the items, through writes, removals, appends and resizes, with small
pages so that pages and top pages fill; two writers of one page merge without a
conflict (a top entry both moved is read from its page); on a real cluster, a wide draw
reduces on the nodes only the chunks its bucket edges cut.
"""
import numpy as np
import pytest
import transaction
import ZODB
from hypothesis import given, settings
from hypothesis import strategies as st
from ZODB.POSException import ConflictError

import neoarray.array as na
from neoarray import envelopes
from neoarray.array import overview
from neoarray.array.envelope import envelope
from neoarray.array.errors import ArrayValueError
from tests.dashboard.test_envelope import _count_reduced


def _check(arr, expected, start, stop, buckets):
    got = envelope(arr, start, stop, buckets)
    ref = envelopes.reference(expected, start, stop, buckets)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    assert got[1].dtype == expected.dtype
    # a plot's buckets: whole chunks where the span holds enough of them
    starts, mins, maxs = envelope(arr, start, stop, buckets, align=True)
    assert starts[0] == start and starts[-1] == stop and len(mins) == len(starts) - 1 <= buckets
    assert (np.diff(starts) > 0).all()
    at = starts[:-1] - start
    np.testing.assert_array_equal(mins, np.minimum.reduceat(expected[start:stop], at))
    np.testing.assert_array_equal(maxs, np.maximum.reduceat(expected[start:stop], at))
    chunk = arr.chunks[0]
    if arr.has_overview and stop - start >= buckets * chunk and buckets > 1:
        assert (starts[1:-1] % chunk == 0).all()
        assert (np.diff(starts[1:-1]) == np.diff(starts[1:-1])[:1]).all()     # one width


ops = st.lists(st.tuples(st.sampled_from(["write", "write", "fill", "append", "shrink", "grow", "keep"]),
                         st.integers(0, 10**6), st.integers(1, 40)), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None)
@given(ops, st.integers(1, 6), st.sampled_from([("<f8", 0.0), ("<f8", np.nan), ("<i2", -3), ("<u1", 7)]),
       st.booleans(), st.randoms(use_true_random=False))
def test_draws_from_the_overview_equal_numpy(steps, chunk, kind, nans, rnd):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(overview, "PAGE_ENTRIES", 3)     # pages of 3 chunks, top pages of 9
        _draws_equal_numpy(steps, chunk, kind, nans, rnd)


def _draws_equal_numpy(steps, chunk, kind, nans, rnd):
    dtype, fill = kind
    rng = np.random.default_rng(rnd.randrange(1 << 30))
    db = ZODB.DB(None)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        n = int(rng.integers(1, 120))
        arr = conn.root()["a"] = na.full((n,), fill, dtype=dtype, chunks=(chunk,))
        expected = np.full(n, fill, dtype=dtype)
        arr.keep_overview()
        for op, at, size in steps:
            n = len(expected)
            lo = at % n if n else 0
            hi = min(n, lo + size)
            if op == "write" and hi > lo:
                values = (rng.standard_normal(hi - lo) * 50).astype(dtype)
                if nans and expected.dtype.kind == "f":
                    values[rng.integers(0, hi - lo)] = np.nan
                arr[lo:hi] = values
                expected[lo:hi] = values
            elif op == "fill" and hi > lo:          # chunks left all fill are removed
                arr[lo:hi] = fill
                expected[lo:hi] = fill
            elif op == "append":
                values = (rng.standard_normal(size) * 50).astype(dtype)
                arr.append(values)
                expected = np.concatenate([expected, values])
            elif op == "shrink" and n > 1:
                new = max(1, n - size)
                arr.resize((new,))
                expected = expected[:new].copy()
            elif op == "grow":
                arr.resize((n + size,))
                expected = np.concatenate([expected, np.full(size, fill, dtype=dtype)])
            elif op == "keep":                      # again: kept already, nothing to do
                assert arr.keep_overview() == 0
            tm.commit()
            n = len(expected)
            for _ in range(3):
                start = int(rng.integers(0, n))
                stop = int(rng.integers(start + 1, n + 1))
                _check(arr, expected, start, stop, int(rng.integers(1, 12)))
            _check(arr, expected, 0, n, 1)
    finally:
        tm.abort()
        conn.close()
        db.close()


def test_an_overview_is_built_from_the_stored_chunks_and_kept_where_asked():
    db = ZODB.DB(None)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        values = np.arange(1, 1002, dtype="<f4")[::-1].copy()
        arr = conn.root()["a"] = na.zeros((1003,), dtype="<f4", chunks=(10,))
        arr[:1001] = values
        tm.commit()
        assert not arr.has_overview
        assert arr.keep_overview() == 101           # the stored chunks, the cut one too
        tm.commit()
        assert arr.has_overview
        expected = np.concatenate([values, np.zeros(2, "<f4")])
        for span in [(0, 1003, 7), (5, 999, 30), (0, 1003, 100)]:
            _check(arr, expected, *span)
        arr.drop_overview()
        tm.commit()
        assert not arr.has_overview
        _check(arr, expected, 0, 1003, 7)
        with pytest.raises(ArrayValueError, match="1-d arrays"):
            na.zeros((4, 4)).keep_overview()
        with pytest.raises(ArrayValueError, match="bool, integer and float"):
            na.zeros((4,), dtype="<c16").keep_overview()
    finally:
        tm.abort()
        conn.close()
        db.close()


def test_a_wide_draw_reduces_only_the_chunks_its_edges_cut(db):
    n, chunk = 200_000, 100
    values = np.random.default_rng(3).standard_normal(n)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        arr = conn.root()["series"] = na.asarray(values, chunks=(chunk,))
        tm.commit()
        assert arr.keep_overview() == 2000          # built by the nodes' reductions
        tm.commit()
        reduced = _count_reduced(db)
        for start, stop, buckets in [(0, n, 120), (50, n - 7, 33), (0, n, 2000), (12_345, 98_765, 10)]:
            del reduced[:]
            got = envelope(arr, start, stop, buckets)
            np.testing.assert_array_equal(got[1], envelopes.reference(values, start, stop, buckets)[1])
            assert len(set(reduced)) <= buckets + 1      # not the 2,000 chunks
            del reduced[:]
            envelope(arr, start, stop, buckets, align=True)
            assert len(set(reduced)) <= 2               # the chunks start and stop cut
            _check(arr, values, start, stop, buckets)
        arr[150_000:150_003] = [50.0, -50.0, 7.0]       # a rewrite moves the overview with it
        values[150_000:150_003] = [50.0, -50.0, 7.0]
        tm.commit()
        _check(arr, values, 0, n, 120)
    finally:
        tm.abort()
        conn.close()


def test_two_writers_of_one_page_merge_and_a_top_entry_both_moved_is_read_from_its_page(db):
    tm1, tm2, tm3 = (transaction.TransactionManager() for _ in range(3))
    c1, c2 = db.open(tm1), db.open(tm2)
    try:
        base = c1.root()["pages"] = na.zeros((4000,), chunks=(10,))
        base.keep_overview()
        tm1.commit()
        c2.sync()
        a1, a2 = c1.root()["pages"], c2.root()["pages"]
        a1[0:5] = 9.0           # chunk 0 and chunk 1: one page, one top entry,
        a2[15:18] = -4.0        # both moved differently
        tm1.commit()
        tm2.commit()            # resolved: no ConflictError
        c3 = db.open(tm3)
        a3 = c3.root()["pages"]
        top = a3._overview._tops[0]
        assert top.stale[0]     # each writer saw the page without the other's chunk
        expected = np.zeros(4000)
        expected[0:5], expected[15:18] = 9.0, -4.0
        _check(a3, expected, 0, 4000, 2)        # the stale entry is read from its page
        a3[30:31] = 1.0         # the next writer of the page sets it again
        expected[30] = 1.0
        tm3.commit()
        assert not a3._overview._tops[0].stale[0]
        _check(a3, expected, 0, 4000, 3)
        c3.close()
        # two writers of one chunk: the chunk (and its overview entry) conflict
        tm1.begin()
        tm2.begin()
        c1.root()["pages"][100:101] = 1.0
        c2.root()["pages"][101:102] = 2.0
        tm1.commit()
        with pytest.raises(ConflictError):
            tm2.commit()
    finally:
        tm1.abort()
        tm2.abort()
        c1.close()
        c2.close()
