"""Transactions: snapshot reads, abort, concurrent writers (FileStorage and all `db`)."""

import threading

import numpy as np
import pytest
from ZODB.POSException import ConflictError

import neoarray.array as na

from array_helpers import open_conn


def make_array(database, name="a", shape=(100, 10), chunks=(10, 10), written=True):
    conn, tm = open_conn(database)
    array = na.zeros(shape, chunks=chunks)
    if written:
        array[...] = 1.0
    conn.root()[name] = array
    tm.commit()
    conn.close()


def test_reads_see_the_transaction_snapshot(db):
    make_array(db)
    reader, rtm = open_conn(db)
    writer, wtm = open_conn(db)
    reader.cacheMinimize()
    a = reader.root()["a"]
    assert a[0, 0] == 1.0  # the reader's transaction starts here
    writer.root()["a"][...] = 2.0
    writer.root()["a"].append(np.full((1, 10), 2.0))
    wtm.commit()
    assert a.shape == (100, 10)
    np.testing.assert_array_equal(a[...], np.ones((100, 10)))  # no torn read
    assert a.sum() == 1000.0
    rtm.commit()  # new transaction: sees the commit
    assert a.shape == (101, 10)
    assert a.sum() == 2020.0
    reader.close()
    writer.close()


def test_concurrent_commits_never_tear_a_read(file_db):
    make_array(file_db, shape=(200, 20), chunks=(10, 10))
    stop = threading.Event()
    errors = []

    def write():
        conn, tm = open_conn(file_db)
        value = 1.0
        while not stop.is_set():
            value += 1
            conn.root()["a"][...] = value
            tm.commit()
        conn.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        reader, tm = open_conn(file_db)
        for _ in range(20):
            tm.begin()
            values = reader.root()["a"][...]
            if len(np.unique(values)) != 1:
                errors.append(np.unique(values))
            tm.abort()
        reader.close()
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_writes_visible_only_after_commit_and_abort_discards(db):
    make_array(db, written=False)
    writer, wtm = open_conn(db)
    reader, rtm = open_conn(db)
    writer.root()["a"][5, 5] = 7.0
    rtm.begin()
    assert reader.root()["a"][5, 5] == 0.0
    wtm.abort()
    assert writer.root()["a"][5, 5] == 0.0
    assert list(writer.root()["a"].chunk_keys()) == []
    writer.root()["a"][5, 5] = 8.0
    wtm.commit()
    rtm.begin()
    assert reader.root()["a"][5, 5] == 8.0
    writer.close()
    reader.close()


@pytest.mark.parametrize("written", [True, False], ids=["existing-chunks", "new-chunks"])
def test_writers_of_different_chunks_both_commit(file_db, written):
    make_array(file_db, written=written)
    c1, tm1 = open_conn(file_db)
    c2, tm2 = open_conn(file_db)
    c1.root()["a"][0:10, :] = 5.0     # chunk (0, 0)
    c2.root()["a"][90:100, :] = 6.0   # chunk (9, 0)
    tm1.commit()
    tm2.commit()  # BTree bucket conflict resolution for new keys
    c3, tm3 = open_conn(file_db)
    a = c3.root()["a"]
    base = 1.0 if written else 0.0
    assert a[0, 0] == 5.0 and a[95, 3] == 6.0 and a[50, 0] == base
    for conn in (c1, c2, c3):
        conn.close()


@pytest.mark.parametrize("written", [True, False], ids=["existing-chunk", "new-chunk"])
def test_writers_of_the_same_chunk_conflict(file_db, written):
    make_array(file_db, written=written)
    c1, tm1 = open_conn(file_db)
    c2, tm2 = open_conn(file_db)
    c1.root()["a"][0, 0] = 5.0
    c2.root()["a"][1, 1] = 6.0
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    assert c2.root()["a"][0, 0] == 5.0
    c1.close()
    c2.close()


def test_removing_a_chunk_conflicts_with_a_concurrent_write_to_it(file_db):
    make_array(file_db)
    c1, tm1 = open_conn(file_db)
    c2, tm2 = open_conn(file_db)
    c1.root()["a"][0:10, :] = 0.0  # all fill: chunk removed
    c2.root()["a"][3, 3] = 9.0
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    c1.close()
    c2.close()


def test_a_copied_ufunc_result_is_stored_in_the_input_connection(db):
    make_array(db)
    conn, tm = open_conn(db)
    a = conn.root()["a"]
    b = (a * 3).copy()          # a * 3 is a lazy expression; its copy a stored array
    assert b._p_jar is conn
    conn.root()["b"] = b
    conn.root()["c"] = (a + 1).persist()
    tm.commit()
    other, tm2 = open_conn(db)
    assert other.root()["b"].sum() == 3000.0 and other.root()["c"].sum() == 2000.0
    conn.close()
    other.close()


def test_a_long_write_in_one_transaction_spills_to_savepoints(db):
    """Writing an attached array beyond memory_bytes_max in one transaction takes
    savepoints (the written chunks become ghosts, reloaded from ZODB's temporary file),
    so the transaction's memory stays bounded; the data commits whole, and a rollback
    to the user's own earlier savepoint still undoes everything after it."""
    conn, tm = open_conn(db)
    a = conn.root()["big"] = na.zeros((64, 100), chunks=(8, 100))       # 6400 bytes a chunk
    conn.add(a)
    values = np.arange(6400.0).reshape(64, 100)
    taken = []
    original = tm.savepoint

    def counting(optimistic=False):
        taken.append(optimistic)
        return original(optimistic)
    tm.savepoint = counting
    mine = tm.savepoint()
    with na.configure(memory_bytes_max=20_000):
        a[...] = values
        assert len(taken) >= 1 + 2          # the user's, then one per ~3 chunks written
        ghosts = [c for c in a._tree.values() if c._p_changed is None]
        assert ghosts                       # spilled chunks are ghosts now
    np.testing.assert_array_equal(a[...], values)   # reloaded from the savepoints
    mine.rollback()
    np.testing.assert_array_equal(a[...], np.zeros((64, 100)))
    with na.configure(memory_bytes_max=20_000):
        a[...] = values + 1
    tm.commit()
    conn.close()
    other, otm = open_conn(db)
    np.testing.assert_array_equal(other.root()["big"][...], values + 1)
    other.close()


def _unsaved_payload_bytes(*arrays):
    """Bytes of the chunk payloads the arrays hold in memory: chunks that are not ghosts
    (written and not yet spilled to a savepoint, or loaded)."""
    return sum(len(chunk.payload) for a in arrays for chunk in a._tree.values()
               if chunk._p_changed is not None and chunk.payload is not None)


def test_a_long_store_holds_at_most_a_quarter_of_the_bound_in_written_chunks(db):
    """While an expression is stored chunk by chunk into an attached array, the payloads
    of the chunks written and not yet spilled to a savepoint stay within a quarter of
    memory_bytes_max (config.unsaved_limit_bytes()) and one chunk, measured at every
    chunk the expression computes; and two arrays written in the same transaction share
    that bound (it belongs to the connection's transaction, not to each array)."""
    conn, tm = open_conn(db)
    chunk_bytes = 8 * 100 * 8
    a = conn.root()["a"] = na.zeros((400, 100), chunks=(8, 100))
    a[...] = np.arange(40_000.0).reshape(400, 100)
    tm.commit()
    out = conn.root()["out"] = na.zeros(a.shape, chunks=a.chunks)
    other = conn.root()["other"] = na.zeros(a.shape, chunks=a.chunks)
    conn.add(out)
    conn.add(other)                 # attached now: their chunks can spill
    held = []

    def probe(block):
        held.append(_unsaved_payload_bytes(out, other))
        return block + 1
    bound = 16 * chunk_bytes
    with na.configure(memory_bytes_max=bound):
        limit = na.config.unsaved_limit_bytes()
        assert limit == bound // 4
        na.store(na.lazyarray(probe, (a,)), out)
        assert len(held) >= 50 and max(held) <= limit + chunk_bytes     # (and its fill value)
        held.clear()
        for start in range(0, 400, 8):      # the two arrays in turns, one transaction
            out[start:start + 8] = a[start:start + 8] * 2
            other[start:start + 8] = a[start:start + 8] * 3
            held.append(_unsaved_payload_bytes(out, other))
        assert max(held) <= limit + chunk_bytes
    tm.commit()
    conn.close()
    reader, _ = open_conn(db)
    values = np.arange(40_000.0).reshape(400, 100)
    np.testing.assert_array_equal(reader.root()["out"][...], values * 2)
    np.testing.assert_array_equal(reader.root()["other"][...], values * 3)
    reader.close()
