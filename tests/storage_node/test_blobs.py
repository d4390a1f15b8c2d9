"""Blob chunks in the backend and the manager, on the LMDB store and the memory reference:
stored before their record, owned by it (lock moves no chunk), dropped by abort, pack,
truncate and a dropped partition, verified by check and copied by replication."""
import pytest

from neoarray.errors import ChecksumError, LimitExceeded, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore, MemoryStore
from storage_node import check
from storage_node.backend import (
    Backend,
    BlobRef,
    NoBlob,
    Stored,
    TransactionInfo,
    checksum,
)
from storage_node.manager import VOTED, TransactionManager

PARTITIONS = 3
OID = p64(4)
TTID = p64((7 << 32) | 1)
CHUNKS = [b"a" * 100, b"b" * 100, b"c" * 42]


@pytest.fixture(params=["memory", "lmdb"])
def manager(request, tmp_path):
    kv = MemoryStore() if request.param == "memory" else LMDBStore(str(tmp_path / "db"), 1 << 26)
    yield TransactionManager(Backend(kv, partitions=PARTITIONS))
    kv.close()


def blob_rows(backend):
    with backend.kv.read() as txn:
        return [bytes(k) for k in txn.keys("blob", b"")]


def store_blob(m, ttid=TTID, oid=OID, chunks=CHUNKS, node=7, serial=Z64):
    for i, c in enumerate(chunks):
        m.store_blob_chunk(ttid, node, oid, i, checksum(c), c, 1 << 20)
    data = b"blob record pickle"
    m.store(ttid, node, [Stored(oid, serial, data, checksum(data), None,
                                BlobRef(ttid, len(chunks), sum(map(len, chunks))))])


def commit_blob(m, tid, ttid=TTID, oid=OID, chunks=CHUNKS, serial=Z64):
    store_blob(m, ttid, oid, chunks, serial=serial)
    meta = TransactionInfo(b"", b"u", b"d", b"", [oid], ttid)
    assert m.vote(ttid, 7, [], meta, [oid]).status == VOTED
    m.lock(ttid, tid)


def read_blob(backend, oid, tid):
    out, index = [], 0
    while True:
        try:
            rec, crc, data = backend.load_blob_chunk(oid, tid, index)
        except NoBlob:
            return b"".join(out)
        assert checksum(data) == crc and rec.blob.chunks == len(CHUNKS)
        out.append(data)
        index += 1


def test_a_committed_blob_reads_back_by_chunk_and_lock_moves_no_chunk(manager):
    b = manager.backend
    commit_blob(manager, p64(100))
    assert read_blob(b, OID, p64(100)) == b"".join(CHUNKS)
    assert all(k[12:20] == TTID for k in blob_rows(b))      # still under the ttid: not rewritten
    with b.kv.read() as txn:
        assert not list(txn.keys("voted_blob", b""))
    assert b.load(OID).blob == BlobRef(TTID, 3, 242)
    records, _ = check.list_objects(b, int.from_bytes(OID, "big") % PARTITIONS, None, None, 100, 1 << 20)
    assert records[0].data_ok and records[0].blob_checksum and records[0].data_bytes == 242 + 18


def test_a_record_without_all_its_chunks_is_refused_and_abort_drops_them(manager):
    b = manager.backend
    manager.store_blob_chunk(TTID, 7, OID, 0, checksum(CHUNKS[0]), CHUNKS[0], 1 << 20)
    with pytest.raises(RequestRefused, match="upload every chunk"):
        manager.store(TTID, 7, [Stored(OID, Z64, b"x", checksum(b"x"), None, BlobRef(TTID, 3, 242))])
    with pytest.raises(ChecksumError, match="corrupted in transit"):
        manager.store_blob_chunk(TTID, 7, OID, 1, 0, CHUNKS[1], 1 << 20)
    with pytest.raises(LimitExceeded, match="blob_chunk_bytes_max=10"):
        manager.store_blob_chunk(TTID, 7, OID, 1, checksum(CHUNKS[1]), CHUNKS[1], 10)
    assert TTID in b.pending_ttids()        # found again after a restart: aborted then
    manager.abort(TTID)
    assert blob_rows(b) == [] and b.pending_ttids() == set()


def test_a_blob_uploaded_again_replaces_the_first_upload(manager):
    store_blob(manager)
    store_blob(manager, chunks=[b"short"])
    assert len(blob_rows(manager.backend)) == 1


def test_pack_truncate_and_drop_free_the_chunks(manager):
    b = manager.backend
    ttids = [p64((7 << 32) | n) for n in (1, 2, 3)]
    commit_blob(manager, p64(100), ttid=ttids[0])
    commit_blob(manager, p64(200), ttid=ttids[1], chunks=[b"new"], serial=p64(100))
    commit_blob(manager, p64(300), ttid=ttids[2], chunks=[b"newer"], serial=p64(200))
    assert len(blob_rows(b)) == 5
    b.pack(p64(250), [], prune_history=True)          # the first revision goes, with its chunks
    assert sorted({k[12:20] for k in blob_rows(b)}) == ttids[1:]
    b.truncate(p64(250), p64(350))                    # the third goes too
    assert [k[12:20] for k in blob_rows(b)] == [ttids[1]]
    while b.drop_partition(int.from_bytes(OID, "big") % PARTITIONS, 2):
        pass
    assert blob_rows(b) == []


def test_check_sees_a_rotten_or_missing_chunk(manager):
    b = manager.backend
    commit_blob(manager, p64(100))
    p = int.from_bytes(OID, "big") % PARTITIONS
    key = blob_rows(b)[1]
    with b.kv.write() as txn:
        value = bytearray(txn.get("blob", key))
        value[-1] ^= 0xFF
        txn.put("blob", key, bytes(value))
    assert not check.list_objects(b, p, None, None, 100, 1 << 20)[0][0].data_ok
    with pytest.raises(ChecksumError, match="chunk 1 .* fails its checksum"):
        b.load_blob_chunk(OID, p64(100), 1)
    with b.kv.write() as txn:
        txn.delete("blob", key)
    assert not check.list_objects(b, p, None, None, 100, 1 << 20)[0][0].data_ok
    # a repair rewrites the record only when its chunks are sound here
    data = b"blob record pickle"
    outcomes, _ = check.repair_records(b, [check.RepairRevision(OID, p64(100), data, checksum(data), None,
                                                                BlobRef(TTID, 3, 242))], [], set(), set())
    assert outcomes[0][2] in (check.SKIPPED_BLOB, check.UNCHANGED)
