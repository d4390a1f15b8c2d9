"""Replica check listings and repairs on one node (storage_node/check.py), LMDB and memory."""
import pytest

from neoarray.errors import ChecksumError, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore, MemoryStore
from neoarray.records import PARTITION, RECORD_HEAD, record_tail
from storage_node import check
from storage_node.backend import Backend, Stored, TransactionInfo, checksum
from storage_node.manager import TransactionManager

PARTITIONS = 2
BIG = b"x" * 3000            # > DATA_INLINE_BYTES_MAX: goes to the data table
ALL = set(range(PARTITIONS))


@pytest.fixture(params=["memory", "lmdb"])
def backend(request, tmp_path):
    kv = MemoryStore() if request.param == "memory" else LMDBStore(str(tmp_path / "db"), 1 << 26)
    yield Backend(kv, partitions=PARTITIONS)
    kv.close()


def commit(backend, ttid, tid, items):
    """Commit ``{oid: data}`` (ints) as ``tid``."""
    records = [Stored(p64(o), Z64, d, checksum(d)) for o, d in items.items()]
    backend.store_voted(p64(ttid), records)
    meta = TransactionInfo(b"", b"user", b"desc", b"", [r.oid for r in records], p64(ttid))
    backend.vote(p64(ttid), meta, [r.oid for r in records], node=7)
    backend.lock(p64(ttid), p64(tid))
    backend.unlock([p64(ttid)])          # the master's Unlock: no longer a commit in progress


def listing(backend, partition, keys_max=2, max_tid=None):
    """Every record of ``partition``, fetched ``keys_max`` at a time through the cursor."""
    out, after = [], None
    while True:
        batch, after = check.list_objects(backend, partition, after, max_tid, keys_max, 1 << 30)
        out += batch
        if after is None:
            return out


def flip_last_byte(backend, db, key):
    with backend.kv.write() as txn:
        value = bytearray(txn.get(db, key))
        value[-1] ^= 0xFF
        txn.put(db, key, bytes(value))


def data_key(backend, oid, tid):
    with backend.kv.read() as txn:
        value = txn.get("obj", backend._okey(p64(oid)) + p64(tid))
        return record_tail(value[0], value, RECORD_HEAD.size)[1]


def test_listing_in_batches_with_tid_bound(backend):
    for i in range(5):
        commit(backend, 100 + i, 10 + i, {2 * i: b"v%d" % i, 2 * i + 2: BIG})
    recs = listing(backend, 0)
    keys = [(r.oid, r.tid) for r in recs]
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 10
    assert all(r.data_ok for r in recs)
    assert {r.data_bytes for r in recs} == {2, len(BIG)}
    assert len(listing(backend, 0, max_tid=p64(11))) == 4
    assert listing(backend, 1) == []
    rows, after = check.list_transactions(backend, 0, None, None, 100)
    assert [r.tid for r in rows] == [p64(10), p64(12), p64(14)] and after is None
    assert all(r.data_ok for r in rows)


def test_listing_finds_bit_rot_inline_and_in_data_rows(backend):
    commit(backend, 1, 10, {2: b"small", 4: BIG, 6: BIG})
    flip_last_byte(backend, "obj", backend._okey(p64(2)) + p64(10))
    flip_last_byte(backend, "data", data_key(backend, 4, 10))
    with backend.kv.write() as txn:
        txn.delete("data", data_key(backend, 6, 10))
    bad = {r.oid: r.data_ok for r in listing(backend, 0)}
    assert bad == {p64(2): False, p64(4): False, p64(6): False}


def test_repair_rewrites_missing_and_corrupt_records(backend):
    commit(backend, 1, 10, {2: b"small", 4: BIG, 8: BIG})
    manager = TransactionManager(backend)
    good = {r.oid: backend.load(r.oid) for r in listing(backend, 0)}
    old_row = data_key(backend, 4, 10)
    flip_last_byte(backend, "obj", backend._okey(p64(2)) + p64(10))
    flip_last_byte(backend, "data", old_row)
    with backend.kv.write() as txn:
        txn.delete("obj", backend._okey(p64(8)) + p64(10))
        txn.delete("trans", PARTITION.pack(0) + p64(10))
    revisions = [check.RepairRevision(o, p64(10), good[o].data, good[o].checksum) for o in sorted(good)]
    meta = TransactionInfo(p64(10), b"user", b"desc", b"", [p64(2), p64(4), p64(8)], p64(1))
    outcomes, dropped = manager.repair(revisions, [meta], ALL)
    assert [a for _, _, a in outcomes] == [check.REPLACED, check.REPLACED, check.WRITTEN, check.WRITTEN]
    assert dropped == 1                                  # the rotten row of oid 4, nothing else
    with backend.kv.read() as txn:
        assert txn.get("data", old_row) is None
    assert all(r.data_ok for r in listing(backend, 0))
    for oid, loaded in good.items():
        assert backend.load(oid).data == loaded.data
    assert backend.transactions([0], None, None, 10)[0].oids == [p64(2), p64(4), p64(8)]
    again, dropped = manager.repair(revisions, [meta], ALL)
    assert {a for _, _, a in again} == {check.UNCHANGED} and dropped == 0


def test_a_corrupt_reference_never_drops_another_records_data(backend):
    commit(backend, 1, 10, {2: BIG, 4: b"y" * 3000})
    manager = TransactionManager(backend)
    good = backend.load(p64(2))
    key2 = backend._okey(p64(2)) + p64(10)
    with backend.kv.write() as txn:      # oid 2's record now points at oid 4's data row
        value = txn.get("obj", key2)
        txn.put("obj", key2, value[:RECORD_HEAD.size] + data_key(backend, 4, 10))
    assert [r.data_ok for r in listing(backend, 0)] == [False, True]
    manager.repair([check.RepairRevision(p64(2), p64(10), good.data, good.checksum)], [], ALL)
    assert backend.load(p64(4)).data == b"y" * 3000 and backend.load(p64(2)).data == BIG
    assert all(r.data_ok for r in listing(backend, 0))


def test_repair_refuses_bad_checksums_and_foreign_partitions(backend):
    manager = TransactionManager(backend)
    with pytest.raises(ChecksumError, match="does not match its checksum"):
        manager.repair([check.RepairRevision(p64(2), p64(10), b"data", 12345)], [], ALL)
    ok = check.RepairRevision(p64(3), p64(10), b"data", checksum(b"data"))
    with pytest.raises(RequestRefused, match="no cell of partition 1"):
        manager.repair([ok], [], {0})
    assert listing(backend, 0) == listing(backend, 1) == []


def test_repair_skips_what_a_commit_in_progress_holds(backend):
    commit(backend, 1, 10, {2: b"a", 4: b"b"})
    manager = TransactionManager(backend)
    manager.store(p64(50), 7, [Stored(p64(2), p64(10), b"new", checksum(b"new"))])
    assert manager.vote(p64(50), 7, [], None, [p64(2)]).status == "voted"
    revisions = [check.RepairRevision(p64(o), p64(10), d, checksum(d)) for o, d in ((2, b"a"), (4, b"b"))]
    outcomes, _ = manager.repair(revisions, [], ALL)
    assert [a for _, _, a in outcomes] == [check.SKIPPED_BUSY, check.UNCHANGED]
    manager.lock(p64(50), p64(20))       # locked, not yet unlocked: its tid is busy too
    late = check.RepairRevision(p64(2), p64(20), b"new", checksum(b"new"))
    assert manager.repair([late], [], ALL)[0][0][2] == check.SKIPPED_BUSY
    manager.unlock([p64(50)])
    assert manager.repair([late], [], ALL)[0][0][2] == check.UNCHANGED
