"""Locking and conflict rules of a storage node, with plain calls (no gRPC)."""
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neoarray.errors import ChecksumError, RequestRefused
from neoarray.ids import Z64, p64, u64
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


# -- a vote carrying its transaction's last stores -------------------------------------

def test_a_vote_with_its_stores_writes_once(tmp_path):
    """Stores carried by a vote are written with it in one write transaction (one
    LMDB commit, where a store then a vote took two) and committed by the lock."""
    tm = TransactionManager(Backend(LMDBStore(str(tmp_path / "db")), partitions=2))
    tm.store(p64(1), 1, [rec(1, b"earlier")])          # an earlier store of the same transaction
    before = tm.backend.kv.write_transactions
    res = tm.vote(p64(1), 1, [], None, [p64(1)], sync=False, records=[rec(2, b"x" * 5000), rec(3, b"small")])
    assert res.status == VOTED
    assert tm.backend.kv.write_transactions - before == 1
    assert tm.held[p64(1)] == {p64(1), p64(2), p64(3)}
    tm.lock(p64(1), p64(10))
    for oid, data in ((1, b"earlier"), (2, b"x" * 5000), (3, b"small")):
        loaded = tm.backend.load(p64(oid))
        assert (bytes(loaded.data), loaded.serial) == (data, p64(10))
    assert tm.sizes == {} and tm.locks == {}


def test_a_vote_that_fails_keeps_its_stores(tm):
    """Busy or in conflict, a vote's stores are kept as a store before it would have
    kept them: the client votes again without sending them."""
    tm.store(p64(1), 1, [rec(1, b"a")])
    assert tm.vote(p64(1), 1, [], None, []).status == VOTED
    busy = tm.vote(p64(2), 2, [], None, [], records=[rec(1, b"b"), rec(2, b"c")])
    assert busy.status == BUSY and busy.busy_with == p64(1)
    assert dict(tm.backend.stored_serials(p64(2))[0]) == {p64(1): Z64, p64(2): Z64}
    assert tm.counts[p64(2)] == 2
    tm.lock(p64(1), p64(10))
    res = tm.vote(p64(2), 2, [], None, [], records=[rec(3, b"d")])
    assert res.status == CONFLICTS and [c.oid for c in res.conflicts] == [p64(1)]
    assert len(tm.backend.stored_serials(p64(2))[0]) == 3 and tm.counts[p64(2)] == 3
    # resolved: the record of oid 1 is stored again, on serial 10, inside the vote
    assert tm.vote(p64(2), 2, [], None, [], records=[rec(1, b"b2", p64(10))]).status == VOTED
    tm.lock(p64(2), p64(11))
    assert {oid: bytes(tm.backend.load(p64(oid)).data) for oid in (1, 2, 3)} == {1: b"b2", 2: b"c", 3: b"d"}


def test_a_vote_missing_stores_keeps_what_it_carried(tm):
    with pytest.raises(RequestRefused, match="missing"):
        tm.vote(p64(1), 1, [], None, [p64(1), p64(9)], records=[rec(1, b"a")])
    assert [oid for oid, _ in tm.backend.stored_serials(p64(1))[0]] == [p64(1)]
    assert tm.counts[p64(1)] == 1 and tm.locks == {}


def test_a_vote_refused_for_space_writes_nothing_of_its_stores(tmp_path):
    """A real full store: a map of 1 MiB, and a vote carrying a record of 2 MiB."""
    from neoarray.errors import StorageFull
    tm = TransactionManager(Backend(LMDBStore(str(tmp_path / "db"), map_bytes_max=1 << 20), partitions=2))
    tm.store(p64(1), 1, [rec(1, b"a")])
    with pytest.raises(StorageFull):
        tm.vote(p64(1), 1, [], None, [], records=[rec(2, b"x" * (2 << 20))])
    assert tm.backend.stored_serials(p64(1))[0] == [(p64(1), Z64)]       # the earlier store only
    assert tm.backend.voted() == {} and tm.backend.space.reserved_bytes() == 0
    assert (tm.sizes[p64(1)], tm.counts[p64(1)], tm.locks) == (1, 1, {})


_step = st.tuples(st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["current", "new", "stale"])),
                           max_size=4, unique_by=lambda t: t[0]),
                  st.lists(st.integers(1, 5), max_size=2),              # readCurrent checks
                  st.sampled_from(["lock", "abort", "hold"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_step, min_size=1, max_size=8))
def test_a_vote_with_its_stores_decides_as_a_store_then_a_vote(steps):
    """Whatever the transactions (busy, conflicting, read checks), voting with the
    records gives the outcomes and the committed data of storing them then voting."""
    managers = [TransactionManager(Backend(MemoryStore(), partitions=2)) for _ in range(2)]
    outcomes = []
    for tm in managers:
        committed: dict[int, bytes] = {}           # oid -> its last tid
        held, out = [], []
        for k, (records, checks, then) in enumerate(steps):
            ttid = p64(100 + k)
            recs = [rec(oid, b"%d-%d" % (k, oid), {"current": committed.get(oid, Z64), "new": Z64,
                                                   "stale": p64(1)}[base]) for oid, base in records]
            check_list = [(p64(oid), committed.get(oid, Z64)) for oid in checks]
            if tm is managers[0]:
                if recs:
                    tm.store(ttid, 1 + k, recs)
                res = tm.vote(ttid, 1 + k, check_list, None, [r.oid for r in recs])
            else:
                res = tm.vote(ttid, 1 + k, check_list, None, [r.oid for r in recs], records=recs)
            out.append((res.status, res.busy_with, sorted((c.oid, c.read_conflict) for c in res.conflicts),
                        sorted(tm.backend.stored_serials(ttid)[0]), tm.counts.get(ttid), tm.sizes.get(ttid)))
            if res.status != VOTED or then == "abort":
                tm.abort(ttid)
            elif then == "lock":
                tm.lock(ttid, p64(1000 + k))
                committed.update((u64(r.oid), p64(1000 + k)) for r in recs)
            else:
                held.append(ttid)
        loads = {}
        for oid in range(1, 6):
            try:
                loaded = tm.backend.load(p64(oid))
                loads[oid] = (bytes(loaded.data), loaded.serial)
            except Exception as exc:  # noqa: BLE001 - compared below
                loads[oid] = type(exc).__name__
        outcomes.append((out, loads, sorted(tm.locks.items()), sorted(tm.counts.items())))
    assert outcomes[0] == outcomes[1]
