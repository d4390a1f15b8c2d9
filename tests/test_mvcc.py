"""MVCC: every ZODB connection reads one consistent snapshot of the cluster."""
import threading

import transaction
import ZODB
from persistent.mapping import PersistentMapping


def test_snapshot_isolation_between_connections(cluster):
    db = ZODB.DB(cluster.open_storage())
    try:
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        c1, c2 = db.open(tm1), db.open(tm2)
        c1.root()["a"] = PersistentMapping(v=0)
        c1.root()["b"] = PersistentMapping(v=0)
        tm1.commit()
        tm2.begin()
        assert c2.root()["a"]["v"] == 0
        c1.root()["a"]["v"] = 1
        c1.root()["b"]["v"] = 1
        tm1.commit()
        # c2 is still in its old transaction: "b" (not yet loaded) comes from the old snapshot
        assert c2.root()["b"]["v"] == 0
        tm2.begin()
        assert (c2.root()["a"]["v"], c2.root()["b"]["v"]) == (1, 1)
    finally:
        db.close()


def test_historical_connection_reads_the_past(cluster):
    db = ZODB.DB(cluster.open_storage())
    try:
        conn = db.open()
        conn.root()["x"] = PersistentMapping(v="old")
        transaction.commit()
        then = db.lastTransaction()
        conn.root()["x"]["v"] = "new"
        transaction.commit()
        past = db.open(transaction_manager=transaction.TransactionManager(), at=then)
        assert past.root()["x"]["v"] == "old"
        assert conn.root()["x"]["v"] == "new"
        past.close()
    finally:
        db.close()


def test_concurrent_commits_never_tear_a_read(cluster):
    """A writer moves value between two objects; readers always see the same total."""
    writer_db = ZODB.DB(cluster.open_storage())
    reader_db = ZODB.DB(cluster.open_storage())
    try:
        conn = writer_db.open()
        conn.root()["left"] = PersistentMapping(v=100)
        conn.root()["right"] = PersistentMapping(v=0)
        transaction.commit()
        conn.close()
        stop = threading.Event()

        def write():            # its own connection: transactions are per thread
            wconn = writer_db.open()
            for _ in range(40):
                wconn.root()["left"]["v"] -= 1
                wconn.root()["right"]["v"] += 1
                transaction.commit()
            wconn.close()
            stop.set()
        totals = []
        tm = transaction.TransactionManager()
        rconn = reader_db.open(tm)
        thread = threading.Thread(target=write)
        thread.start()
        while not stop.is_set() or len(totals) < 5:
            tm.begin()
            root = rconn.root()
            totals.append(root["left"]["v"] + root["right"]["v"])
            rconn.cacheMinimize()
        thread.join()
        assert set(totals) == {100}
        tm.begin()
        assert rconn.root()["right"]["v"] == 40
    finally:
        writer_db.close()
        reader_db.close()


def test_a_transaction_that_begins_sees_what_another_client_committed(cluster):
    """Another client's commits reach this one's invalidation stream asynchronously; a
    transaction that begins waits for it up to the master's last tid (``sync``), so a
    commit acknowledged to the other client before is always seen.  (A connection only
    opened, without ``begin``, reads at the last commit its client has heard of: the
    sensor stream demo once counted one batch short so.)"""
    writer, reader = ZODB.DB(cluster.open_storage()), ZODB.DB(cluster.open_storage())
    try:
        wtm = transaction.TransactionManager()
        wconn = writer.open(wtm)
        missed = []
        for i in range(1, 201):
            wconn.root()["n"] = i
            wtm.commit()
            tm = transaction.TransactionManager()
            conn = reader.open(tm)
            tm.begin()
            if conn.root()["n"] != i:
                missed.append(i)
            tm.abort()
            conn.close()
        assert missed == []
    finally:
        writer.close()
        reader.close()
