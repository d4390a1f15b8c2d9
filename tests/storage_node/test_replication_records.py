"""The replication batches of ``storage_node.replication`` between two backends (no
network): keys by cursor, only missing records fetched, idempotent apply, checksums."""
import pytest

from neoarray.errors import ChecksumError, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.kv import MemoryStore
from neoarray.records import BlobRef
from storage_node import calls
from storage_node.backend import (
    DATA_INLINE_BYTES_MAX,
    DROP_BEHIND_BYTES_MIN,
    Backend,
    Stored,
    TransactionInfo,
    checksum,
)
from storage_node.replica import (
    KeysBatch,
    KeysQuery,
    RecordsBatch,
    RecordsQuery,
    ReplicaObject,
)
from storage_node.replication import (
    OBJECTS,
    TRANSACTIONS,
    Pacer,
    apply_records,
    missing_keys,
    replica_keys,
    replica_records,
)

PARTITIONS = 2


def commit(backend, ttid, tid, values):
    records = [Stored(p64(oid), Z64, data, 0 if data is None else checksum(data)) for oid, data in values.items()]
    backend.store_voted(p64(ttid), records)
    backend.vote(p64(ttid), TransactionInfo(b"", b"u", b"d", b"", [r.oid for r in records], p64(ttid)),
                 [r.oid for r in records], node=1)
    backend.lock(p64(ttid), p64(tid))


def copy_partition(src, dst, p, min_tid, max_tid, keys_max=2, bytes_max=10):
    """Copy like the Replicator does, in small batches; returns records written."""
    written = 0
    for table in (TRANSACTIONS, OBJECTS):
        after = b""
        while True:
            keys = replica_keys(src, KeysQuery(partition=p, table=table, min_tid=min_tid,
                                                           max_tid=max_tid, after=after, keys_max=keys_max), 1000)
            todo = missing_keys(dst, p, table, keys.keys)
            while todo:
                reply = replica_records(src, RecordsQuery(partition=p, table=table, keys=todo,
                                                                      bytes_max=bytes_max), 1000, 1 << 20)
                written += apply_records(dst, p, reply, None)
                todo = todo[reply.keys_done:]
            if not keys.next_after:
                break
            after = keys.next_after
    return written


@pytest.fixture
def pair():
    src, dst = Backend(MemoryStore(), PARTITIONS), Backend(MemoryStore(), PARTITIONS)
    big = b"x" * (DATA_INLINE_BYTES_MAX + 500)
    commit(src, 1, 10, {2: b"a", 4: big})            # tid 10: partition 0
    commit(dst, 1, 10, {2: b"a", 4: big})            # dst had the first transaction
    commit(src, 3, 12, {2: b"b", 6: b"c", 3: None})  # dst missed these two
    commit(src, 5, 14, {4: big + b"!", 8: b"d"})
    return src, dst


def test_copy_brings_every_missing_revision_and_is_idempotent(pair):
    src, dst = pair
    assert copy_partition(src, dst, 0, b"", p64(14)) == 2 + 4   # 2 transactions, 4 revisions
    for oid in (2, 4, 6, 8):
        for tid in (10, 12, 14):
            try:
                expected = src.load(p64(oid), serial=p64(tid))
            except KeyError:
                continue
            assert dst.load(p64(oid), serial=p64(tid)) == expected
    assert [t.tid for t in dst.transactions([0], None, None, 10)] == [p64(10), p64(12), p64(14)]
    assert dst.last_ids()[0] == p64(14)
    assert copy_partition(src, dst, 0, b"", p64(14)) == 0        # applying again changes nothing


def test_tid_bounds_and_other_partition(pair):
    src, dst = pair
    assert copy_partition(src, dst, 0, p64(10), p64(12)) == 1 + 2   # only tid 12
    assert dst.last_serial(p64(8)) is None
    assert copy_partition(src, dst, 1, b"", p64(14)) == 1           # oid 3's deletion record
    assert dst.load(p64(3)).data is None


def test_bad_checksum_on_the_source_is_not_copied(pair):
    src, dst = pair
    with src.kv.write() as txn:        # bit rot in oid 6's inline data
        key = b"\0\0\0\0" + p64(6) + p64(12)
        value = txn.get("obj", key)
        txn.put("obj", key, value[:-1] + b"Z")
    with pytest.raises(ChecksumError):
        copy_partition(src, dst, 0, b"", p64(14))
    reply = RecordsBatch(objects=[ReplicaObject(oid=p64(6), tid=p64(12), data=b"c", checksum=1)])
    with pytest.raises(ChecksumError, match="corrupted in transit"):
        apply_records(dst, 0, reply, None)
    assert dst.last_serial(p64(6)) is None


def test_malformed_requests_are_refused(pair):
    src, _ = pair
    with pytest.raises(RequestRefused, match="partition 9 out of range"):
        replica_keys(src, KeysQuery(partition=9, table=OBJECTS, max_tid=p64(1)), 10)
    with pytest.raises(RequestRefused, match="max_tid is required"):
        replica_keys(src, KeysQuery(partition=0, table=OBJECTS, max_tid=b""), 10)
    with pytest.raises(RequestRefused, match="unknown replica table"):
        replica_keys(src, KeysQuery(partition=0, table=0, max_tid=p64(1)), 10)
    with pytest.raises(RequestRefused, match="3 keys in one request"):
        replica_records(src, RecordsQuery(partition=0, table=TRANSACTIONS,
                                                      keys=[p64(1)] * 3), 2, 100)
    with pytest.raises(RequestRefused, match="not in partition 0"):
        replica_records(src, RecordsQuery(partition=0, table=OBJECTS, keys=[p64(3) + p64(12)]), 10, 100)


def test_pacer_keeps_the_rate():
    import threading
    import time
    pacer = Pacer(100_000, threading.Event())
    started = time.monotonic()
    for _ in range(5):
        pacer.spend(10_000)
    assert time.monotonic() - started >= 0.5 * 0.99


def test_keys_after_the_largest_tid_are_none(pair):
    """Regression (fuzz): a min_tid or cursor of 0xff..ff overflowed (struct.error)."""
    src, _ = pair
    top = b"\xff" * 8
    reply = replica_keys(src, KeysQuery(partition=0, table=TRANSACTIONS, min_tid=top, max_tid=top), 10)
    assert list(reply.keys) == [] and not reply.next_after
    reply = replica_keys(src, KeysQuery(partition=0, table=TRANSACTIONS, after=top, max_tid=top), 10)
    assert list(reply.keys) == []
    everything = replica_keys(src, KeysQuery(partition=0, table=TRANSACTIONS, max_tid=top), 10)
    assert list(everything.keys) == [p64(10), p64(12), p64(14)]


def test_batches_cross_the_wire_unchanged():
    """The catch-up's values and the messages of the contract: what the servicer sends
    is what the receiver applies (a deletion, a record with data from another tid, a
    blob, a transaction)."""
    batch = RecordsBatch(
        transactions=[TransactionInfo(p64(12), b"u\xe9", b"d", b"\x80x", [p64(6)], p64(11), False)],
        objects=[ReplicaObject(p64(6), p64(12), None, 0),
                 ReplicaObject(p64(7), p64(12), b"abc", checksum(b"abc"), p64(3)),
                 ReplicaObject(p64(8), p64(12), b"", checksum(b""), None, BlobRef(p64(11), 3, 2_000_000))],
        keys_done=4)
    assert calls.records_batch_from_pb(calls.records_batch_to_pb(batch)) == batch
    keys = KeysBatch([p64(1), p64(2)], p64(2))
    assert calls.keys_batch_from_pb(calls.keys_batch_to_pb(keys)) == keys
    query = KeysQuery(3, OBJECTS, p64(9), p64(1), p64(4) + p64(5), 7)
    assert calls.keys_query_from_pb(calls.keys_query_to_pb(query)) == query
    records = RecordsQuery(3, TRANSACTIONS, [p64(1)], 100)
    assert calls.records_query_from_pb(calls.records_query_to_pb(records)) == records


def test_bulk_data_copied_is_named_for_write_behind():
    """A catch-up copying bulk data lets it leave the page cache once synced, as a
    client's store does (``Backend.write_behind``); small records do not."""
    src, dst = Backend(MemoryStore(), PARTITIONS), Backend(MemoryStore(), PARTITIONS)
    commit(src, 1, 10, {2: b"small", 4: b"y" * (DATA_INLINE_BYTES_MAX + 1)})
    assert copy_partition(src, dst, 0, b"", p64(10), bytes_max=1 << 20) == 3
    assert dst.kv.write_behinds == 0
    commit(src, 3, 12, {6: b"z" * DROP_BEHIND_BYTES_MIN})
    assert copy_partition(src, dst, 0, b"", p64(12), bytes_max=1 << 20) == 2
    assert dst.kv.write_behinds == 1
    assert dst.load(p64(6)).data == b"z" * DROP_BEHIND_BYTES_MIN
