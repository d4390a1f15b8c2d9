"""A full disk fails commits cleanly and the node recovers when space comes back.

Real conditions only: a small LMDB map (``map_bytes_max``) and a small tmpfs
mounted for the test (a real ENOSPC from the filesystem; skipped with the reason when
this process may not mount).  What is checked, phase by phase (see
``storage_node/space.py``): a store that does not fit is refused whole and leaves
nothing; a vote reserves what its lock will write, or is refused with its locks
released; a voted transaction always locks, however full the rest gets; abort frees
the space for the next store; catch-up refuses a batch that does not fit without
counting it as copied.
"""
import contextlib
import os
import subprocess

import pytest

from neoarray.errors import StorageFull
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore, MemoryStore
from storage_node.backend import Backend, Stored, TransactionInfo, checksum
from storage_node.manager import VOTED, TransactionManager
from storage_node.replica import KeysQuery, RecordsQuery
from storage_node.replication import (
    OBJECTS,
    apply_records,
    missing_keys,
    replica_keys,
    replica_records,
)

MiB = 1 << 20


def rec(oid: int, data: bytes) -> Stored:
    return Stored(p64(oid), Z64, data, checksum(data))


def meta(ttid: int, oids) -> TransactionInfo:
    return TransactionInfo(b"", b"user", b"desc", b"", [o if isinstance(o, bytes) else p64(o) for o in oids],
                           p64(ttid))


def commit(backend, ttid: int, tid: int, records) -> None:
    backend.store_voted(p64(ttid), records)
    backend.vote(p64(ttid), meta(ttid, []), [r.oid for r in records], node=1)
    backend.lock(p64(ttid), p64(tid))


def voted_keys(backend, ttid: int) -> list[bytes]:
    with backend.kv.read() as txn:
        return list(txn.keys("voted_obj", p64(ttid), p64(ttid) + b"\xff" * 9))


def data_rows(backend) -> int:
    with backend.kv.read() as txn:
        return len(list(txn.keys("data", b"")))


def fill(backend, ttid: int, first_oid: int, chunk_bytes: int, rounds_max: int = 64) -> int:
    """Store ``chunk_bytes`` records under ``ttid`` until refused; returns stores that fit."""
    for i in range(rounds_max):
        try:
            backend.store_voted(p64(ttid), [rec(first_oid + i, bytes([i % 251]) * chunk_bytes)])
        except StorageFull:
            return i
    raise AssertionError(f"{rounds_max} stores of {chunk_bytes} bytes all fitted")


@pytest.fixture
def lmdb_backend(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=4 * MiB)
    yield Backend(kv, partitions=2, space_reserve_bytes=256 << 10)
    kv.close()


def test_store_that_does_not_fit_leaves_nothing_and_abort_gives_the_space_back(lmdb_backend):
    b = lmdb_backend
    commit(b, 1, 10, [rec(1, b"old")])
    fitted = fill(b, 2, 100, 512 << 10)
    assert 1 <= fitted < 8
    assert len(voted_keys(b, 2)) == fitted            # the refused store wrote nothing
    with pytest.raises(StorageFull, match="needs about .* bytes, .* are free"):
        b.store_voted(p64(2), [rec(99, b"y" * (512 << 10))])
    b.abort(p64(2))
    assert voted_keys(b, 2) == [] and data_rows(b) == 0
    assert b.load(p64(1)).data == b"old"
    commit(b, 3, 11, [rec(100 + i, b"z" * (512 << 10)) for i in range(2)])   # room again
    assert b.load(p64(100)).data == b"z" * (512 << 10)


def test_voted_transaction_locks_however_full_the_rest_gets(lmdb_backend):
    b = lmdb_backend
    small = [rec(1000 + i, b"v" * 900) for i in range(200)]    # inline records: lock rewrites them
    b.store_voted(p64(5), small)
    b.vote(p64(5), meta(5, [r.oid for r in small]), [r.oid for r in small], node=1)
    assert b.space.reserved_bytes() > 3 * 200 * 900
    fill(b, 6, 2000, 128 << 10)                          # others fill all that is not reserved
    with pytest.raises(StorageFull, match="reserved for voted transactions"):
        b.store_voted(p64(6), [rec(1999, b"w" * (64 << 10))])
    b.lock(p64(5), p64(20))                              # never refused: its space was kept
    assert b.space.reserved_bytes() == 0
    assert all(b.load(r.oid).data == r.data for r in small)
    b.abort(p64(6))
    assert voted_keys(b, 6) == []


def test_vote_refused_when_its_lock_would_not_fit_releases_its_locks(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=4 * MiB)
    try:
        tm = TransactionManager(Backend(kv, partitions=2, space_reserve_bytes=256 << 10))
        small = [rec(1000 + i, b"v" * 900) for i in range(300)]
        tm.store(p64(5), 1, small)
        fill(tm.backend, 6, 2000, 128 << 10)             # the stores of 5 fitted, its lock would not
        with pytest.raises(StorageFull, match=r"the vote of 0x0+5 \(space for its lock\) needs about"):
            tm.vote(p64(5), 1, [], meta(5, []), [r.oid for r in small])
        assert tm.locks == {} and tm.backend.voted() == {} and tm.backend.space.reserved_bytes() == 0
        tm.abort(p64(6))                                  # the client aborts: space comes back
        assert tm.vote(p64(5), 1, [], meta(5, []), [r.oid for r in small]).status == VOTED
        tm.lock(p64(5), p64(30))
        assert tm.backend.load(p64(1000)).data == b"v" * 900
    finally:
        kv.close()


def test_reservations_of_votes_survive_a_restart(tmp_path):
    path = str(tmp_path / "db")
    kv = LMDBStore(path, map_bytes_max=4 * MiB)
    b = Backend(kv, partitions=2, space_reserve_bytes=256 << 10)
    b.store_voted(p64(5), [rec(1, b"v" * 900)])
    b.vote(p64(5), meta(5, [1]), [p64(1)], node=1)
    kv.close()
    kv = LMDBStore(path, map_bytes_max=4 * MiB)
    try:
        tm = TransactionManager(Backend(kv, partitions=2, space_reserve_bytes=256 << 10))
        assert tm.backend.space.reserved_bytes() > 900
        tm.lock(p64(5), p64(10))
        assert tm.backend.space.reserved_bytes() == 0
    finally:
        kv.close()


def test_full_node_does_not_count_a_catch_up_batch_as_copied():
    src = Backend(MemoryStore(), 2)
    commit(src, 1, 10, [rec(2, b"a" * 5000), rec(4, b"b" * 5000)])
    dst_kv = MemoryStore(bytes_max=4000)
    dst = Backend(dst_kv, 2)
    keys = replica_keys(src, KeysQuery(partition=0, table=OBJECTS, max_tid=p64(10)), 100).keys
    reply = replica_records(src, RecordsQuery(partition=0, table=OBJECTS, keys=keys,
                                                          bytes_max=1 << 20), 100, 1 << 20)
    with pytest.raises(StorageFull, match="catch-up of partition 0"):
        apply_records(dst, 0, reply, {"done": Z64})
    assert missing_keys(dst, 0, OBJECTS, keys) == list(keys)          # nothing written
    dst_kv.bytes_max = 1 << 30                                        # space comes back
    assert apply_records(dst, 0, reply, None) == 2
    assert dst.load(p64(2)).data == b"a" * 5000


# -- a real ENOSPC: a small tmpfs ----------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(path, size_bytes: int):
    """Mount a tmpfs of ``size_bytes`` at ``path``; skip the test when not permitted."""
    os.makedirs(path, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {out.stderr.strip()}")
    try:
        yield str(path)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def filler(directory: str, leave_bytes: int) -> str:
    """A file taking all the filesystem's space but ``leave_bytes``."""
    st = os.statvfs(directory)
    path = os.path.join(directory, "filler")
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return path


def test_enospc_from_the_filesystem_is_storage_full_and_space_comes_back(tmp_path):
    with small_tmpfs(tmp_path / "fs", 16 * MiB) as fs:
        kv = LMDBStore(os.path.join(fs, "db"), map_bytes_max=1 << 30)
        try:
            b = Backend(kv, partitions=2, space_reserve_bytes=512 << 10)
            commit(b, 1, 10, [rec(1, b"old")])
            fill_path = filler(fs, 3 * MiB)
            assert kv.space()[1] < 4 * MiB                 # the filesystem, not the map, bounds it
            with pytest.raises(StorageFull, match="needs about"):
                b.store_voted(p64(2), [rec(2, b"n" * (3 * MiB))])
            with pytest.raises(StorageFull, match="no space left on the filesystem"):
                with kv.write() as txn:                    # unchecked: the real ENOSPC
                    txn.put("data", b"raw", b"r" * (4 * MiB))
            assert b.load(p64(1)).data == b"old"           # still readable and writable
            commit(b, 3, 11, [rec(3, b"small")])
            os.remove(fill_path)                           # space comes back: no reopen
            commit(b, 2, 12, [rec(2, b"n" * (3 * MiB))])
            assert b.load(p64(2)).data == b"n" * (3 * MiB)
        finally:
            kv.close()


# -- the whole story on a cluster: one replica on a full tmpfs -----------------------

def pending_on(path: str) -> tuple[int, int]:
    """(stores, votes) of unfinished transactions in the LMDB of a storage node,
    read like a co-located client reads it (read-only, while the node runs)."""
    kv = LMDBStore(path, readonly=True)
    try:
        with kv.read() as txn:
            return len(list(txn.keys("voted_obj", b""))), len(list(txn.keys("voted_txn", b"")))
    finally:
        kv.close()


def test_full_replica_fails_the_commit_everywhere_and_recovers(tmp_path):
    import transaction
    import ZODB

    from neoarray.cluster import LocalCluster
    from tests.cluster_helpers import letters

    root = tmp_path / "cluster"
    # storage-1/, a mount point, serves a new storage node: it is not renamed, S<id> links to it
    with small_tmpfs(root / "storage-1", 32 * MiB) as fs:
        cluster = LocalCluster(str(root), storages=2, replicas=1, partitions=2, node_timeout_s=3.0,
                               storage_args=("--space-reserve-bytes", str(1 * MiB)))
        cluster.start()
        writer = reader = None
        try:
            writer = ZODB.DB(cluster.open_storage(local_reads=False))    # pending_on opens the LMDBs
            reader = ZODB.DB(cluster.open_storage(local_reads=False))
            with writer.transaction() as conn:
                conn.root()["kept"] = b"earlier data"
            fill_path = filler(fs, 4 * MiB)
            seen = reader.open()                       # a reader with a snapshot in use
            assert seen.root()["kept"] == b"earlier data"

            tm = transaction.TransactionManager()
            conn = writer.open(tm)
            conn.root()["big"] = b"B" * (6 * MiB)       # fits on one node, not on the tmpfs one
            with pytest.raises(StorageFull, match="storage full: .*needs about"):
                tm.commit()
            tm.abort()
            conn.close()

            # aborted on every node: no stores or votes left, no lock held
            for i in range(2):
                assert pending_on(cluster.storage_dir(i)) == (0, 0), cluster.storage_name(i)
            seen.close()
            with reader.transaction() as other:        # nothing of it is visible
                assert "big" not in other.root() and other.root()["kept"] == b"earlier data"
                other.root()["after"] = b"root not locked"   # same object: its lock was released
            assert all(p.poll() is None for p in cluster.storage_procs.values())
            assert set(letters(cluster).values()) == {"UU"}   # the full node was not dropped

            os.remove(fill_path)                       # space comes back: no restart
            with writer.transaction() as conn:
                conn.root()["big"] = b"B" * (6 * MiB)
            with reader.transaction() as other:
                assert other.root()["big"] == b"B" * (6 * MiB)
                assert other.root()["after"] == b"root not locked"
            for i in range(2):
                assert pending_on(cluster.storage_dir(i)) == (0, 0)
        finally:
            for db in (writer, reader):
                if db is not None:
                    db.close()
            cluster.stop()
