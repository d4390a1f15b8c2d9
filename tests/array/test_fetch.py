"""Batch chunk fetchers (neoarray/array/fetch.py)."""

import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st
from ZODB.POSException import ReadConflictError

import neoarray.array as na
from neoarray.array import fetch
from neoarray.array.chunks import Chunk

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
    monkeypatch.setattr(na.config, "read_in_place", False)   # the fetcher's path
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


# ---------------------------------------------------------------- snapshot batch loads


def _record_load_many(monkeypatch, base, drop=()):
    """Give ``base`` a ``load_many(oids, before)`` built on loadBefore; return its calls.

    Reads go through the fetcher (not in place), whose path these tests check.
    """
    calls = []
    monkeypatch.setattr(na.config, "read_in_place", False)

    def load_many(oids, before):
        calls.append((list(oids), before))
        found = {}
        for oid in oids:
            hit = base.loadBefore(oid, before)
            if hit is not None and oid not in drop:
                found[oid] = hit
        return found

    monkeypatch.setattr(base, "load_many", load_many, raising=False)
    return calls


def test_base_load_many_is_called_once_per_batch_with_the_snapshot(db, monkeypatch):
    conn, tm, a = stored_array(db)
    calls = _record_load_many(monkeypatch, db.storage)
    with na.configure(fetch_bytes_max=36 * 200):  # 200-byte chunks
        np.testing.assert_array_equal(a[...], np.arange(900.0).reshape(30, 30))
    assert [len(oids) for oids, _ in calls] == [18, 18]  # batches of half the limit
    assert {before for _, before in calls} == {conn._storage._start}
    conn.close()


def test_snapshot_batch_loads_see_the_snapshot(db, monkeypatch):
    conn, tm, a = stored_array(db)
    calls = _record_load_many(monkeypatch, db.storage)
    assert a[0, 0] == 0.0        # snapshot starts
    writer, wtm = open_conn(db)
    writer.root()["a"][...] = 5.0
    wtm.commit()
    conn.cacheMinimize()
    assert a.sum() == np.arange(900.0).sum() and calls
    tm.commit()                  # new snapshot
    assert a.sum() == 5.0 * 900
    writer.close()
    conn.close()


def test_oids_missing_from_the_batch_answer_are_loaded_one_by_one(db, monkeypatch):
    conn, tm, a = stored_array(db)
    dropped = a._tree[(0, 0)]._p_oid
    _record_load_many(monkeypatch, db.storage, drop={dropped})
    np.testing.assert_array_equal(a[...], np.arange(900.0).reshape(30, 30))
    conn.close()


def test_no_revision_before_the_snapshot_is_a_read_conflict(db, monkeypatch):
    conn, tm, a = stored_array(db)
    chunk = a._tree[(0, 0)]
    _record_load_many(monkeypatch, db.storage, drop={chunk._p_oid})
    base_load_before = db.storage.loadBefore

    def load_before(oid, tid):   # as if a pack removed the revision
        return None if oid == chunk._p_oid else base_load_before(oid, tid)

    monkeypatch.setattr(db.storage, "loadBefore", load_before)
    with pytest.raises(ReadConflictError):
        a.sum()
    conn.close()


def test_savepoint_reads_do_not_use_the_snapshot_batch(db, monkeypatch):
    conn, tm, a = stored_array(db)
    a[0, 0] = -1.0
    tm.savepoint(True)
    conn.cacheMinimize()
    calls = _record_load_many(monkeypatch, db.storage)
    assert a.sum() == np.arange(900.0).sum() - 1
    assert calls == []
    tm.abort()
    conn.close()


# ---------------------------------------------------------------- payload views


def _record(state_pickle):
    return pickle.dumps(Chunk, 3) + state_pickle


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70_000])
def test_payload_view_of_real_records_is_the_payload(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    record = _record(pickle.dumps(payload, 3))
    view = fetch.payload_view(record)
    assert isinstance(view, memoryview) and view.readonly
    assert view == payload and view.obj is record  # a view, not a copy


def test_payload_view_of_protocol_4_records():
    data = b"xyz" * 1000
    frame = b"\x95" + struct.pack("<Q", 20)
    for state in (pickle.dumps(data, 4),
                  b"\x80\x04" + frame + b"\x8e" + struct.pack("<Q", len(data)) + data + b"\x94.",
                  b"\x80\x03B" + struct.pack("<I", len(data)) + data + b"r\x01\x00\x00\x00."):
        assert fetch.payload_view(_record(state)) == data


@pytest.mark.parametrize("state", [
    pickle.dumps(None, 3),                         # tombstone
    pickle.dumps(bytearray(b"abc"), 3),            # not one bytes opcode
    pickle.dumps((b"abc",), 3),
    b"\x80\x03B\xff\x00\x00\x00abc.",              # length past the end
    b"\x80\x03C\x03abcq\x01.junk",                 # trailing bytes
    b"\x80\x03C\x03abc",                           # no STOP
    b"",
])
def test_payload_view_declines_other_states(state):
    assert fetch.payload_view(_record(state)) is None


def test_payload_view_declines_garbage():
    assert fetch.payload_view(b"not a pickle") is None
    assert fetch.payload_view(b"\x80\x03cx\ny\nq\x00" + b"(" * 5000) is None


def test_decode_record_falls_back_to_unpickling(db):
    conn, tm, a = stored_array(db)
    chunk = a._tree[(0, 0)]
    record = _record(pickle.dumps(bytearray(b"abc"), 3))
    assert fetch.decode_record(conn, chunk, record) == bytearray(b"abc")
    conn.close()


def test_fetched_payloads_are_views_of_the_records(db):
    conn, tm, a = stored_array(db)
    payloads = fetch.StorageChunkFetcher().fetch([a._tree[k] for k in a.chunk_keys()])
    assert all(isinstance(p, memoryview) and p.readonly for p in payloads)
    conn.close()


def test_readahead_of_a_generator_stopped_early_is_harmless(db):
    conn, tm, a = stored_array(db)
    with na.configure(fetch_bytes_max=2 * 200):
        for i, (key, block) in enumerate(a._stored_blocks()):
            if i == 2:
                break
    assert a.sum() == np.arange(900.0).sum()
    conn.close()
