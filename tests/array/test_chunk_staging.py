"""Chunk records stored from staged payloads (``neoarray.client.staging``): the same
bytes as ZODB's own pickle, through savepoints, rollbacks, conflicts and undo."""

import copy
import pickle

import numpy as np
import pytest
import transaction
from array_helpers import open_conn
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError, StorageError
from ZODB.serialize import ObjectWriter

import neoarray.array as na
from neoarray.array.chunks import Chunk

CHUNK_ITEMS = 1 << 18         # 2 MiB of float64: above the client's resolvable_bytes_max (1 MiB)


def _chunks(conn):
    return [obj for _oid, obj in conn._cache.items() if isinstance(obj, Chunk) and obj.payload is not None]


def _assert_records_classic(storage, chunks):
    """Each chunk's stored record is what ZODB's ObjectWriter makes of it."""
    assert chunks
    for chunk in chunks:
        record = storage.load(chunk._p_oid)[0]
        classic = ObjectWriter(chunk).serialize(chunk)      # outside a commit: the whole state
        assert len(classic) > len(chunk.payload)
        assert record == classic


@pytest.mark.parametrize("codec", [None, ("zlib", 1)])
def test_a_staged_chunk_record_is_the_classic_pickle(neo_db, codec):
    staging = neo_db.storage._staging
    before = staging.spliced_records
    conn, tm = open_conn(neo_db)
    values = np.random.default_rng(3).standard_normal(3 * CHUNK_ITEMS + 1000)
    a = na.zeros(values.shape, chunks=(CHUNK_ITEMS,), codec=codec)
    conn.root()["a"] = a
    a[...] = values
    tm.commit()
    large = [c for c in _chunks(conn) if len(c.payload) > neo_db.storage.resolvable_bytes_max]
    assert len(large) >= 3 and staging.spliced_records - before == len(large)    # the rest: classic
    _assert_records_classic(neo_db.storage, _chunks(conn))
    reader, _ = open_conn(neo_db)
    np.testing.assert_array_equal(reader.root()["a"][...], values)
    chunk = _chunks(conn)[0]
    assert copy.copy(chunk).__getstate__() == bytes(chunk.payload)      # copies get the whole state
    assert pickle.loads(pickle.dumps(chunk)).payload == bytes(chunk.payload)
    reader.close()
    conn.close()


def test_savepoints_rollback_and_undo_of_staged_chunks(neo_db):
    rng = np.random.default_rng(4)
    first, second, third = (rng.standard_normal(2 * CHUNK_ITEMS) for _ in range(3))
    conn, tm = open_conn(neo_db)
    a = na.zeros(first.shape, chunks=(CHUNK_ITEMS,))
    conn.root()["a"] = a
    a[...] = first
    tm.commit()
    committed_first = neo_db.storage.lastTransaction()

    a[...] = second
    savepoint = tm.savepoint()          # the chunks go to ZODB's TmpStore, the classic way
    a[:CHUNK_ITEMS] = third[:CHUNK_ITEMS]
    inner = tm.savepoint()
    a[CHUNK_ITEMS:] = third[CHUNK_ITEMS:]
    inner.rollback()
    expected = np.concatenate([third[:CHUNK_ITEMS], second[CHUNK_ITEMS:]])
    np.testing.assert_array_equal(a[...], expected)
    tm.commit()
    assert savepoint is not None
    _assert_records_classic(neo_db.storage, _chunks(conn))
    reader, rtm = open_conn(neo_db)
    np.testing.assert_array_equal(reader.root()["a"][...], expected)

    a[...] = third          # straight to the storage, staged
    tm.commit()
    np.testing.assert_array_equal(reader.root()["a"][...], expected)   # the reader's snapshot
    rtm.abort()
    np.testing.assert_array_equal(reader.root()["a"][...], third)

    undone = [d for d in neo_db.undoLog(0, 3) if d["id"] > committed_first]
    assert len(undone) == 2
    for description in undone:
        neo_db.undo(description["id"])
        transaction.commit()
    rtm.abort()
    np.testing.assert_array_equal(reader.root()["a"][...], first)
    reader.close()
    conn.close()


def test_conflicting_writes_of_a_staged_chunk(neo_db):
    conn, tm = open_conn(neo_db)
    a = na.zeros((2 * CHUNK_ITEMS,), chunks=(CHUNK_ITEMS,))
    conn.root()["a"] = a
    a[...] = 1.0
    tm.commit()
    other, otm = open_conn(neo_db)
    a[:10] = 2.0
    other.root()["a"][:10] = 3.0
    tm.commit()
    with pytest.raises(ConflictError):
        otm.commit()        # chunks do not resolve conflicts: the same refusal as before
    otm.abort()
    other.root()["a"][:10] = 3.0
    otm.commit()
    tm.abort()
    assert a[0] == 3.0 and a[10] == 1.0
    _assert_records_classic(neo_db.storage, _chunks(other))
    other.close()
    conn.close()


def test_store_refuses_a_placeholder_it_cannot_splice(neo_db):
    storage = neo_db.storage
    oid, other_oid = storage.new_oid(), storage.new_oid()
    payload = bytes(2 << 20)
    record = pickle.dumps(("neoarray.array.chunks", "Chunk"), 3)
    placeholder = storage.stage_chunk_payload(oid, payload, 1 << 30)
    assert placeholder is not None and len(placeholder) < 100
    meta = TransactionMetaData()
    storage.tpc_begin(meta)
    try:
        with pytest.raises(StorageError, match="staged for oid"):
            storage.store(other_oid, None, record + pickle.dumps(placeholder, 3), "", meta)
        with pytest.raises(StorageError, match="not staged"):     # the slot is spent
            storage.store(oid, None, record + pickle.dumps(placeholder, 3), "", meta)
    finally:
        storage.tpc_abort(meta)
    assert storage.stage_chunk_payload(oid, bytes(1000), 1 << 30) is None      # small: classic
    assert storage.stage_chunk_payload(oid, payload, 1 << 20) is None          # ZODB would warn


def test_stores_on_their_way_reach_the_node_in_order(neo_cluster):
    """Several Stores go to a node before their replies are read (one record each
    here): a later store of an oid still wins over an earlier one."""
    storage = neo_cluster.open_storage(store_batch_bytes_max=1)
    try:
        oids = [storage.new_oid() for _ in range(4)]
        meta = TransactionMetaData()
        storage.tpc_begin(meta)
        for oid in oids:        # a large store, then a small one that a node takes faster
            storage.store(oid, None, pickle.dumps((0, oid, bytes(4 << 20)), 3), "", meta)
            storage.store(oid, None, pickle.dumps((1, oid, b""), 3), "", meta)
        storage.tpc_vote(meta)
        storage.tpc_finish(meta)
        for oid in oids:
            assert pickle.loads(storage.load(oid)[0])[:2] == (1, oid)
    finally:
        storage.close()
