"""Batch chunk fetchers (neoarray/array/fetch.py)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import neoarray.array as na
from neoarray.array import fetch

from array_helpers import open_conn


@given(st.lists(st.integers(0, 50)), st.integers(1, 60))
def test_iter_batches_bounds_bytes_and_keeps_order(sizes, bytes_max):
    batches = list(fetch.iter_batches(sizes, lambda n: n, bytes_max))
    assert [n for batch in batches for n in batch] == sizes
    for batch in batches:
        assert sum(batch) <= bytes_max or len(batch) == 1


def stored_array(database, shape=(30, 30), chunks=(5, 5)):
    conn, tm = open_conn(database)
    array = na.zeros(shape, chunks=chunks)
    array[...] = np.arange(np.prod(shape), dtype=float).reshape(shape)
    conn.root()["a"] = array
    tm.commit()
    conn.close()
    conn, tm = open_conn(database)
    conn.cacheMinimize()
    return conn, tm, conn.root()["a"]


def test_storage_fetcher_matches_attribute_access_and_leaves_ghosts(db):
    conn, tm, a = stored_array(db)
    chunks = [a._tree[k] for k in a.chunk_keys()]
    assert all(c._p_changed is None for c in chunks)
    fast = fetch.StorageChunkFetcher().fetch(chunks)
    assert all(c._p_changed is None for c in chunks)
    slow = fetch.AttributeChunkFetcher().fetch(chunks)
    assert all(c._p_changed is None for c in chunks)  # deactivated after use
    assert fast == slow and len(fast) == 36
    conn.close()


def test_batch_load_method_of_the_storage_is_used(db, monkeypatch):
    conn, tm, a = stored_array(db)
    storage = conn._storage
    calls = []

    def load_many(oids):
        calls.append(len(oids))
        return [storage.load(oid) for oid in oids]

    monkeypatch.setattr(storage, "load_many", load_many, raising=False)
    expected = np.arange(900.0).reshape(30, 30)
    np.testing.assert_array_equal(a[...], expected)
    assert calls == [36]
    conn.close()


def test_uncommitted_and_savepointed_changes_are_read(db):
    conn, tm, a = stored_array(db)
    a[0, 0] = -1.0
    assert a[0, 0] == -1.0
    tm.savepoint(True)
    a[29, 29] = -2.0
    tm.savepoint(True)
    conn.cacheMinimize()
    np.testing.assert_array_equal(a[[0, 29], [0, 29]], [-1.0, -2.0])
    assert a.sum() == np.arange(900.0).sum() - 1 - 899 - 2
    tm.abort()
    assert a[0, 0] == 0.0
    conn.close()


def test_single_thread_configuration(db):
    conn, tm, a = stored_array(db)
    with na.configure(fetch_threads_max=1):
        assert a.sum() == np.arange(900.0).sum()
    conn.close()


def test_configure_rejects_unknown_limits():
    with pytest.raises(TypeError, match="unknown"):
        with na.configure(cache_size=3):
            pass
