"""Locking and conflict rules of a storage node, with plain calls (no gRPC)."""
import threading

import pytest

from neoarray.errors import ChecksumError, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore, MemoryStore
from storage_node.backend import Backend, Stored, checksum
from storage_node.manager import BUSY, CONFLICTS, VOTED, TransactionManager


@pytest.fixture
def tm():
    return TransactionManager(Backend(MemoryStore(), partitions=2))


def rec(oid, data, serial=Z64):
    return Stored(p64(oid), serial, data, checksum(data))


def test_vote_then_lock_releases(tm):
    tm.store(p64(1), 1, [rec(1, b"a")])
    assert tm.vote(p64(1), 1, [], None, [p64(1)]).status == VOTED
    tm.store(p64(2), 2, [rec(1, b"b")])
    busy = tm.vote(p64(2), 2, [], None, [p64(1)])
    assert busy.status == BUSY and busy.busy_with == p64(1)
    tm.lock(p64(1), p64(10))
    res = tm.vote(p64(2), 2, [], None, [p64(1)])
    assert res.status == CONFLICTS
    assert (res.conflicts[0].committed_serial, res.conflicts[0].serial) == (p64(10), Z64)


def test_resolved_store_votes(tm):
    tm.store(p64(1), 1, [rec(1, b"a")])
    tm.vote(p64(1), 1, [], None, [])
    tm.lock(p64(1), p64(10))
    tm.store(p64(2), 2, [rec(1, b"b", p64(10))])
    assert tm.vote(p64(2), 2, [], None, []).status == VOTED


def test_read_conflict(tm):
    tm.store(p64(1), 1, [rec(1, b"a")])
    tm.vote(p64(1), 1, [], None, [])
    tm.lock(p64(1), p64(10))
    tm.store(p64(2), 2, [rec(2, b"x")])
    res = tm.vote(p64(2), 2, [(p64(1), Z64)], None, [])
    assert res.status == CONFLICTS and res.conflicts[0].read_conflict
    # a failed vote holds no lock
    assert tm.locks == {}


def test_checked_oids_are_locked_at_vote(tm):
    tm.store(p64(1), 1, [rec(2, b"x")])
    assert tm.vote(p64(1), 1, [(p64(5), Z64)], None, []).status == VOTED
    tm.store(p64(2), 2, [rec(5, b"y")])
    assert tm.vote(p64(2), 2, [], None, []).status == BUSY


def test_no_deadlock_between_crossed_transactions(tm):
    # T1 stores A then B, T2 stores B then A: votes take all locks or none.
    tm.store(p64(1), 1, [rec(1, b"a1"), rec(2, b"b1")])
    tm.store(p64(2), 2, [rec(2, b"b2"), rec(1, b"a2")])
    assert tm.vote(p64(1), 1, [], None, []).status == VOTED
    assert tm.vote(p64(2), 2, [], None, []).status == BUSY
    assert set(tm.locks.values()) == {p64(1)}


def test_bad_checksum_refused(tm):
    bad = Stored(p64(1), Z64, b"data", checksum(b"data") ^ 1)
    with pytest.raises(ChecksumError, match="does not match its checksum"):
        tm.store(p64(1), 1, [bad])
    assert tm.backend.stored(p64(1)) == []


def test_vote_missing_stores_refused(tm):
    with pytest.raises(RequestRefused, match="missing"):
        tm.vote(p64(1), 1, [], None, [p64(3)])


def test_transaction_size_limit():
    tm = TransactionManager(Backend(MemoryStore(), partitions=2), transaction_bytes_max=10)
    tm.store(p64(1), 1, [rec(1, b"12345")])
    with pytest.raises(RequestRefused, match="transaction_bytes_max=10"):
        tm.store(p64(1), 1, [rec(2, b"123456")])


def test_store_after_vote_takes_the_vote_back(tm):
    tm.store(p64(1), 1, [rec(1, b"a")])
    assert tm.vote(p64(1), 1, [], None, []).status == VOTED
    tm.store(p64(1), 1, [rec(2, b"b")])
    assert tm.locks == {} and tm.backend.voted() == {}
    assert tm.vote(p64(1), 1, [], None, []).status == VOTED
    assert set(tm.locks) == {p64(1), p64(2)}


def test_restart_keeps_votes_and_drops_unvoted_stores():
    backend = Backend(MemoryStore(), partitions=2)
    tm = TransactionManager(backend)
    tm.store(p64(1), 1, [rec(1, b"a")])
    tm.vote(p64(1), 1, [], None, [])
    tm.store(p64(2), 2, [rec(2, b"b")])
    tm2 = TransactionManager(backend)           # the node restarted
    assert tm2.locks == {p64(1): p64(1)}
    assert backend.pending_ttids() == {p64(1)}
    tm2.store(p64(3), 3, [rec(1, b"c")])
    assert tm2.vote(p64(3), 3, [], None, []).status == BUSY


def test_abort_node_aborts_its_transactions(tm):
    tm.store(p64(1), 5, [rec(1, b"a")])
    tm.vote(p64(1), 5, [], None, [])
    tm.store(p64(2), 6, [rec(2, b"b")])
    assert tm.abort_node(5) == [p64(1)]
    assert tm.locks == {} and tm.backend.stored(p64(2))


def test_a_transaction_is_held_by_one_client(tm):
    """What a client left under a ttid (a dead import's, under a tid a restore takes
    again) is never stored over, voted, nor committed with another client's records."""
    tm.store(p64(7), 1, [rec(1, b"old")])
    with pytest.raises(RequestRefused, match="held on this node by client C1"):
        tm.store(p64(7), 2, [rec(2, b"new")])
    with pytest.raises(RequestRefused, match="held on this node by client C1"):
        tm.store_blob_chunk(p64(7), 2, p64(2), 0, checksum(b"x"), b"x", 1 << 20)
    with pytest.raises(RequestRefused, match="held on this node by client C1"):
        tm.vote(p64(7), 2, [], None, [])
    assert tm.locks == {} and {s.oid for s in tm.backend.stored(p64(7))} == {p64(1)}
    tm.vote(p64(7), 1, [], None, [])
    with pytest.raises(RequestRefused):      # its vote is not taken back by another client
        tm.store(p64(7), 2, [rec(2, b"new")])
    assert tm.locks == {p64(1): p64(7)}
    tm.abort(p64(7))                          # the master's abort before the tid is taken again
    tm.store(p64(7), 2, [rec(2, b"new")])
    assert tm.vote(p64(7), 2, [], None, []).status == VOTED
    assert set(tm.locks) == {p64(2)}


class _PausingBackend(Backend):
    """A backend whose vote pauses right after it found the transaction's stores (and
    whose stores pause before writing), so that a test can run the other call there."""

    def __init__(self, kv, partitions, pause):
        super().__init__(kv, partitions=partitions)
        self.pause = pause      # {"scan" | "store": (reached Event, go on Event)}

    def _wait(self, where):
        if where in self.pause:
            reached, go_on = self.pause.pop(where)
            reached.set()
            assert go_on.wait(10)

    def stored_serials(self, ttid):
        found = super().stored_serials(ttid)
        self._wait("scan")
        return found

    def store_voted(self, ttid, records):
        self._wait("store")
        return super().store_voted(ttid, records)


@pytest.mark.parametrize("first", ["vote", "store"])
def test_a_store_and_a_vote_of_one_transaction_never_overlap(tmp_path, first):
    """A client that sends a store while its vote runs (or votes while a store runs):
    the second call is refused.  Before, a store landing after the vote had found the
    stores was committed by the lock without the vote's object lock or conflict check:
    here another transaction's commit of the same object in between would be lost."""
    reached, go_on = threading.Event(), threading.Event()
    pause = {"scan" if first == "vote" else "store": (reached, go_on)}
    tm = TransactionManager(_PausingBackend(LMDBStore(str(tmp_path / "db")), 2, pause))
    if first == "vote":
        tm.store(p64(1), 1, [rec(1, b"a")])
    results = {}

    def run_first():
        try:
            results["first"] = (tm.vote(p64(1), 1, [], None, [p64(1)]).status if first == "vote"
                                else tm.store(p64(1), 1, [rec(1, b"a")]))
        except Exception as exc:  # noqa: BLE001 - reported below
            results["first"] = exc
    thread = threading.Thread(target=run_first)
    thread.start()
    assert reached.wait(10)
    with pytest.raises(RequestRefused, match="runs on this node"):
        if first == "vote":
            tm.store(p64(1), 1, [rec(2, b"unchecked")])
        else:
            tm.vote(p64(1), 1, [], None, [p64(1)])
    go_on.set()
    thread.join(10)
    assert results["first"] in (VOTED, None), results
    assert tm.storing == {} and tm.voting == set()
    if first == "store":
        assert tm.vote(p64(1), 1, [], None, [p64(1)]).status == VOTED
    tm.lock(p64(1), p64(10))
    assert tm.backend.last_serial(p64(1)) == p64(10)
    assert tm.backend.last_serial(p64(2)) is None        # the refused store wrote nothing
