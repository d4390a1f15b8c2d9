"""A client learns its own commits from the Finish answer, the others' from its event
stream (``master/committing.py``): the master sends a committer no invalidation of its
own commit, and ``tpc_finish`` still returns only once every commit published before
it was applied (the event stream reached the tid published just before)."""
import threading

from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError

from neoarray.ids import Z64


def _commit(storage, oid: bytes, serial: bytes, data: bytes) -> bytes:
    meta = TransactionMetaData()
    storage.tpc_begin(meta)
    storage.store(oid, serial, data, "", meta)
    storage.tpc_vote(meta)
    return storage.tpc_finish(meta)


def _record_events(storage) -> list[bytes]:
    """The tids of the invalidations the event stream delivers to ``storage`` (the
    real handler still runs)."""
    seen, handler = [], storage._link.on_invalidation

    def record(tid, ttid, oids):
        seen.append(tid)
        handler(tid, ttid, oids)
    storage._link.on_invalidation = record
    return seen


def test_a_committer_gets_the_others_invalidations_not_its_own(cluster):
    a, b = cluster.open_storage(), cluster.open_storage()
    try:
        seen_a, seen_b = _record_events(a), _record_events(b)
        oid_a, oid_b = a.new_oid(), b.new_oid()
        tid_a = _commit(a, oid_a, Z64, b"a")
        tid_b = _commit(b, oid_b, Z64, b"b")
        tid_a2 = _commit(a, oid_a, tid_a, b"a2")      # after b's commit: a has applied it
        assert tid_b in seen_a and a.lastTransaction() == tid_a2
        assert tid_a not in seen_a and tid_a2 not in seen_a
        b.sync()
        assert seen_b == [tid_a, tid_a2]
        assert b.lastTransaction() == tid_a2 and b.load(oid_a)[0] == b"a2"
    finally:
        a.close()
        b.close()


def test_finish_returns_after_the_commits_published_before_it(cluster):
    """Clients committing at once: when a tpc_finish returns tid T, every commit with a
    smaller tid has reached that client (its last tid covers it, its cache holds
    nothing older)."""
    clients = [cluster.open_storage() for _ in range(3)]
    oid = clients[0].new_oid()
    _commit(clients[0], oid, Z64, b"0")
    errors, finished = [], {i: [] for i in range(len(clients))}

    def writer(i: int) -> None:
        s = clients[i]
        try:
            for n in range(15):
                while True:
                    meta = TransactionMetaData()
                    s.tpc_begin(meta)
                    try:
                        s.store(oid, s.load(oid)[1], f"{i}-{n}".encode(), "", meta)
                        s.tpc_vote(meta)
                        tid = s.tpc_finish(meta)
                        break
                    except ConflictError:           # another writer came first: read again
                        s.tpc_abort(meta)
                finished[i].append(tid)
                assert s.lastTransaction() >= tid
                assert s.load(oid)[1] >= tid     # nothing older than its own commit is served
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(clients))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        tids = sorted(t for ts in finished.values() for t in ts)
        assert len(tids) == len(set(tids)) == 15 * len(clients)
    finally:
        for s in clients:
            s.close()
