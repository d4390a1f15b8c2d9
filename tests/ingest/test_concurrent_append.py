"""Concurrent appends (neoarray.array.streams): 8 processes append to one array of a
real cluster at once; every append is stored once, whole, and readers only ever see a
prefix of the committed appends."""
import multiprocessing
import threading

import numpy as np
import pytest
import transaction
import ZODB
import ZODB.FileStorage
from ZODB.POSException import ConflictError

import neoarray.array as na
from neoarray.array import streams

WRITERS = 8
APPENDS_PER_WRITER = 8
ROWS = 7        # rows per append, so appends straddle chunk boundaries (chunks of 16)


def _writer(kwargs, writer, start):
    from neoarray.client import NeoStorage
    db = ZODB.DB(NeoStorage(**kwargs))
    try:
        conn = db.open()
        array = conn.root()["stream"]
        start.wait(60)
        for n in range(APPENDS_PER_WRITER):
            # one append: ROWS rows of (writer, n, i)
            rows = np.array([(writer, n, i) for i in range(ROWS)], dtype=np.int64)
            array.append(rows, concurrent=True)
            transaction.commit()
        conn.close()
    finally:
        db.close()


def _check_prefix(values):
    """``values`` (N x 3) is a sequence of whole appends, each writer's in its order."""
    assert len(values) % ROWS == 0, f"{len(values)} rows is not whole appends of {ROWS}"
    nexts = {}
    for block in values.reshape(-1, ROWS, 3):
        writer, n = int(block[0, 0]), int(block[0, 1])
        assert (block[:, 0] == writer).all() and (block[:, 1] == n).all(), block
        assert (block[:, 2] == np.arange(ROWS)).all(), block
        assert nexts.get(writer, 0) == n, f"writer {writer}: append {n} out of order"
        nexts[writer] = n + 1
    return nexts


def test_eight_processes_append_concurrently(cluster):
    kwargs = cluster.storage_kwargs()
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["stream"] = na.full((0, 3), -1, dtype=np.int64, chunks=(16, 3))
    transaction.commit()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(kwargs, w, start)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    seen = []
    start.set()
    while any(p.is_alive() for p in procs):     # a reader, meanwhile
        transaction.begin()
        seen.append(np.asarray(conn.root()["stream"][...]))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for values in seen:
        _check_prefix(values)
    transaction.begin()
    array = conn.root()["stream"]
    assert streams.pending(array) == 0
    assert _check_prefix(np.asarray(array[...])) == {w: APPENDS_PER_WRITER for w in range(WRITERS)}
    conn.close()
    db.close()


def test_log_merges_and_fold_is_whole(tmp_path):
    """Two transactions append through the log at once; both commit; the array then
    holds both, in commit order (conflict resolution of ``AppendLog``)."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(transaction_manager=tm1), db.open(transaction_manager=tm2)
    c1.root()["a"] = na.zeros(0, dtype=np.int32, chunks=4)
    tm1.commit()
    tm2.begin()
    c1.root()["a"].append(np.arange(5, dtype=np.int8), concurrent=True)     # cast to the array's int32
    c2.root()["a"].append([100, 101, 102], concurrent=True)
    assert len(c1.root()["a"]) == 0                 # not visible before its fold
    tm1.commit()
    tm2.commit()                                    # resolved: no ConflictError
    tm1.begin()
    assert list(c1.root()["a"][...]) == [0, 1, 2, 3, 4, 100, 101, 102]
    db.close()


def test_a_fold_without_log_entries_of_its_own_is_a_no_op(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    conn = db.open()
    conn.root()["a"] = na.zeros(0, dtype=np.int32, chunks=4)
    transaction.commit()
    assert streams.fold(conn.root()["a"]) == 0
    assert streams.settle(db, conn.root()["a"]._p_oid) is True
    db.close()


def test_concurrent_append_of_a_detached_array_is_refused():
    with pytest.raises(ValueError, match="stored in a database"):
        na.zeros(0).append([1.0], concurrent=True)


def test_plain_appends_still_conflict(tmp_path):
    """Without ``concurrent``, two appends at once conflict as before (documented)."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(transaction_manager=tm1), db.open(transaction_manager=tm2)
    c1.root()["a"] = na.zeros(0, dtype=np.int32, chunks=4)
    tm1.commit()
    tm2.begin()
    c1.root()["a"].append([1, 2])
    c2.root()["a"].append([3])
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    db.close()


def test_threads_of_one_process_append_concurrently(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    conn = db.open()
    conn.root()["a"] = na.zeros(0, dtype=np.int64, chunks=8)
    transaction.commit()

    def write(w):
        tm = transaction.TransactionManager()
        c = db.open(transaction_manager=tm)
        for n in range(20):
            tm.begin()
            c.root()["a"].append(np.full(3, w * 100 + n), concurrent=True)
            tm.commit()
        c.close()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    transaction.begin()
    values = np.asarray(conn.root()["a"][...])
    assert sorted(values.reshape(-1, 3)[:, 0]) == sorted(w * 100 + n for w in range(4) for n in range(20))
    assert (values.reshape(-1, 3) == values.reshape(-1, 3)[:, :1]).all()
    db.close()
