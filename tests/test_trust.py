"""Trust under faults: what the master acknowledges is there, whole, and no lock
outlives its transaction (the rules of ``master/commit.py``).

Deterministic scenarios with real processes: a storage node restarted between vote and
finish; a master restarted between a client's stores and its vote, and between its vote
and its finish; a client that vanished with its vote held while the master was down.
"""
import time

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

from neoarray.client import calls as client_calls
from neoarray.cluster import LocalCluster
from neoarray.errors import ClusterUnavailable, NotCommitted
from neoarray.ids import Z64
from neoarray.states import NodeState
from tests.cluster_helpers import letters, storage_ids
from tests.conftest import running_cluster

MAX_TID = b"\x7f" + b"\xff" * 7


@pytest.fixture
def split_cluster(tmp_path):
    """2 storage nodes, no replicas, 2 partitions: one partition on each node."""
    yield from running_cluster(tmp_path / "split", storages=2, replicas=0, partitions=2, node_timeout_s=3.0)


def _objects(storage, count: int) -> list[bytes]:
    """Commit ``count`` new objects (MinPO(0)); their oids."""
    oids = [storage.new_oid() for _ in range(count)]
    t = TransactionMetaData()
    storage.tpc_begin(t)
    for oid in oids:
        storage.store(oid, Z64, zodb_pickle(MinPO(0)), "", t)
    storage.tpc_vote(t)
    storage.tpc_finish(t)
    return oids


def _current(storage, oid):
    data, serial, _ = storage.loadBefore(oid, MAX_TID)
    return zodb_unpickle(data).value, serial


def _store(storage, values: dict) -> TransactionMetaData:
    """Begin and store ``{oid: value}`` over the current revisions; not voted."""
    t = TransactionMetaData()
    serials = {oid: _current(storage, oid)[1] for oid in values}
    storage.tpc_begin(t)
    for oid, value in values.items():
        storage.store(oid, serials[oid], zodb_pickle(MinPO(value)), "", t)
    return t


def _wait_node_running(cluster, node_id: int, timeout_s: float = 30.0) -> None:
    """Until the master shows ``node_id`` RUNNING and the cluster RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = cluster.admin()
        try:
            states = {n.node_id: n.state for n in admin.nodes()}
            if states.get(node_id) is NodeState.RUNNING and admin.cluster_state() == "RUNNING":
                return
        except ClusterUnavailable:
            pass
        finally:
            admin.close()
        assert time.monotonic() < deadline, f"S{node_id} not RUNNING within {timeout_s} s"
        time.sleep(0.1)


def _commit(storage, values: dict) -> bytes:
    t = _store(storage, values)
    storage.tpc_vote(t)
    return storage.tpc_finish(t)


def _voted(storage) -> tuple[list[bytes], TransactionMetaData]:
    """Two new objects, and a transaction that set both to 1, voted, not finished."""
    oids = _objects(storage, 2)
    t = _store(storage, {oid: 1 for oid in oids})
    storage.tpc_vote(t)
    return oids, t


def test_a_vote_survives_a_restart_of_its_node_before_finish(split_cluster):
    """Issue "Trust under faults", scenario 1: x and y on different nodes, voted on
    both; the node of x is killed and restarted before tpc_finish.  Before the fix the
    master's settlement of the returning node aborted its vote, Finish locked y only,
    and tpc_finish returned the tid of a torn transaction."""
    c = split_cluster
    storage = c.open_storage()
    try:
        x, y = _objects(storage, 2)
        assert storage._link.partition(x) != storage._link.partition(y)
        owner = {p: nid for nid, row in letters(c).items() for p, ch in enumerate(row) if ch == "U"}
        index_of = {nid: i for i, nid in storage_ids(c).items()}
        holder = owner[storage._link.partition(x)]
        t = _store(storage, {x: 1, y: 1})
        storage.tpc_vote(t)
        c.kill_storage(index_of[holder])
        c.start_storage(index_of[holder])
        _wait_node_running(c, holder)
        time.sleep(2.0)         # the master settles the returned node meanwhile
        tid = storage.tpc_finish(t)
    finally:
        storage.close()
    reader = c.open_storage(local_reads=False, cache_bytes_max=0)
    try:
        assert _current(reader, x) == (1, tid)
        assert _current(reader, y) == (1, tid)
        for oid in (x, y):
            assert zodb_unpickle(reader.loadSerial(oid, tid)).value == 1
    finally:
        reader.close()


@pytest.fixture
def cluster2(tmp_path):
    """2 storage nodes, replicas=1."""
    yield from running_cluster(tmp_path / "c2", storages=2, replicas=1, partitions=4, node_timeout_s=3.0)


def _another_client_commits(cluster, oids) -> bytes:
    """A second client commits to ``oids`` (it must not wait on a lock left behind)."""
    other = cluster.open_storage(busy_wait_s_max=20.0)
    try:
        return _commit(other, {oid: 100 for oid in oids})
    finally:
        other.close()


def test_a_vote_after_a_master_restart_is_refused_and_leaves_no_lock(cluster2):
    """Scenario 3: a client stores, the master is killed and restarted, the client
    votes once the cluster is RUNNING.  Before the fix its commit failed and its vote
    stayed, locking the objects for every other client (the new master refused the
    old session's Finish and Abort)."""
    c = cluster2
    storage = c.open_storage()
    try:
        oids = _objects(storage, 3)
        t = _store(storage, {oid: 1 for oid in oids})
        c.kill_master()
        c.start_master()
        c.wait_state("RUNNING", 60)
        with pytest.raises(ClusterUnavailable, match="cannot be committed"):
            storage.tpc_vote(t)
        storage.tpc_abort(t)
        tid = _another_client_commits(c, oids)
    finally:
        storage.close()
    _assert_values(c, oids, 100, tid)


def _assert_values(cluster, oids, value, tid) -> None:
    """Read by a new client (no cache that a reconnection has yet to drop)."""
    reader = cluster.open_storage(local_reads=False, cache_bytes_max=0)
    try:
        assert [_current(reader, oid) for oid in oids] == [(value, tid)] * len(oids)
    finally:
        reader.close()


def test_a_finish_after_a_master_restart_is_refused_and_leaves_no_lock(cluster2):
    """A client votes, the master is killed and restarted before its tpc_finish: the
    new master refuses the earlier session's Finish (nothing committed), and the vote
    does not stay."""
    c = cluster2
    storage = c.open_storage()
    try:
        oids = _objects(storage, 2)
        before = {oid: _current(storage, oid) for oid in oids}
        t = _store(storage, {oid: 1 for oid in oids})
        storage.tpc_vote(t)
        c.kill_master()
        c.start_master()
        c.wait_state("RUNNING", 60)
        with pytest.raises(NotCommitted):
            storage.tpc_finish(t)
        storage.tpc_abort(t)
    finally:
        storage.close()
    reader = c.open_storage(local_reads=False, cache_bytes_max=0)
    try:
        assert {oid: _current(reader, oid) for oid in oids} == before
    finally:
        reader.close()
    tid = _another_client_commits(c, oids)
    _assert_values(c, oids, 100, tid)


def test_an_abort_lost_on_its_way_is_sent_again_while_the_session_lives(cluster2, monkeypatch):
    """A client votes, then aborts, and its Abort does not reach the master (here the
    first one is dropped before it is sent; a connection cut while the event stream
    stays does the same), its session living on.  The master keeps the vote of a live
    session, so before the fix its locks stayed until ``pending_timeout_s`` (300 s):
    the client now sends the Abort again, and another client commits to the objects
    (the simulation's seed 401504)."""
    c = cluster2
    storage = c.open_storage()
    try:
        oids, t = _voted(storage)
        lost = []
        sent = client_calls.abort

        def lossy(master, session, ttid, nodes, timeout_s):
            if not lost:
                lost.append(ttid)
                raise ClusterUnavailable("tpc_abort: no answer from the master (dropped by the test)")
            return sent(master, session, ttid, nodes, timeout_s)

        monkeypatch.setattr(client_calls, "abort", lossy)
        storage.tpc_abort(t)
        assert lost
        tid = _another_client_commits(c, oids)
        assert len(storage._commits.owed) == 0
    finally:
        storage.close()
    _assert_values(c, oids, 100, tid)


def test_a_finish_the_master_cannot_take_is_not_committed_and_its_votes_end(cluster2):
    """A client votes; both storage nodes die; its Finish reaches a master that is no
    longer RUNNING and cannot take it.  The master records the transaction dead, so
    the client learns at once that it was not committed (before: the outcome stayed
    unknown, ``OutcomeUnknown`` after ``rpc_timeout_s``, and the votes kept their
    objects' locks while the session lived: the simulation's seed 401504), and once
    the nodes are back the verdicts abort the votes: no ``tpc_abort`` is called here,
    and another client commits to the objects."""
    c = cluster2
    storage = c.open_storage()
    try:
        oids, t = _voted(storage)
        c.kill_storage(0)
        c.kill_storage(1)
        deadline = time.monotonic() + 60
        while _cluster_state(c) == "RUNNING":
            assert time.monotonic() < deadline, "the master did not leave RUNNING with every storage node dead"
            time.sleep(0.1)
        with pytest.raises(NotCommitted):
            storage.tpc_finish(t)
        c.start_storage(0)
        c.start_storage(1)
        c.wait_state("RUNNING", 60)
        tid = _another_client_commits(c, oids)
    finally:
        storage.close()
    _assert_values(c, oids, 100, tid)


def _cluster_state(cluster) -> str:
    admin = cluster.admin()
    try:
        return admin.cluster_state()
    finally:
        admin.close()


def test_a_vote_of_a_client_that_vanished_while_the_master_was_down_ends(cluster2):
    """A client votes and disappears (no abort) while the master is down: nobody will
    ever finish its transaction.  The restarted master's verdicts end its locks (before
    the fix nothing did: "objects stayed locked by transaction ...")."""
    c = cluster2
    storage = c.open_storage()
    oids, _ = _voted(storage)
    c.kill_master()
    storage.close()
    c.start_master()
    c.wait_state("RUNNING", 60)
    tid = _another_client_commits(c, oids)
    _assert_values(c, oids, 100, tid)


def test_a_hung_client_s_vote_ends_after_the_pending_timeout(tmp_path):
    """A connected client that votes and neither finishes nor aborts: after the
    master's ``--pending-timeout-s`` its vote is aborted (rule 4), its Finish is
    refused, and other clients commit."""
    c = LocalCluster(str(tmp_path / "hung"), storages=1, partitions=2, node_timeout_s=3.0,
                     master_args=("--pending-timeout-s", "2"), storage_args=("--pending-report-age-s", "1"))
    c.start()
    try:
        storage = c.open_storage()
        try:
            oids, t = _voted(storage)
            tid = _another_client_commits(c, oids)
            with pytest.raises(NotCommitted, match="aborted"):
                storage.tpc_finish(t)
            storage.tpc_abort(t)
        finally:
            storage.close()
        _assert_values(c, oids, 100, tid)
    finally:
        c.stop()


def test_zodb_commits_resume_after_a_master_restart(cluster2):
    """Through ZODB: a connection whose master restarts commits again (a retryable
    refusal at most, never a raw error)."""
    db = ZODB.DB(cluster2.open_storage())
    try:
        with db.transaction() as conn:
            conn.root()["m"] = PersistentMapping(v=0)
        cluster2.kill_master()
        cluster2.start_master()
        cluster2.wait_state("RUNNING", 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                with db.transaction() as conn:
                    conn.root()["m"]["v"] += 1
                break
            except (ClusterUnavailable, NotCommitted, ConflictError):
                transaction.abort()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        with db.transaction() as conn:
            assert conn.root()["m"]["v"] == 1
    finally:
        db.close()


def test_a_vote_taken_only_by_a_copy_catching_up_is_refused_at_vote(tmp_path):
    """Issue "The data plane", defect 1: 2 storages, replicas=1, one partition; S1
    misses a 4 MB commit and catches up slowly; S0, the only readable copy, dies.  The
    next commit must be refused by tpc_vote (or earlier), never by tpc_finish."""
    c = LocalCluster(str(tmp_path / "one"), storages=2, replicas=1, partitions=1, node_timeout_s=10.0)
    c.start()
    try:
        storage = c.open_storage(local_reads=False, rpc_timeout_s=5.0, connect_timeout_s=60.0)
        try:
            (x,) = _objects(storage, 1)
            c.kill_storage(1)
            _commit(storage, {x: "y" * (4 << 20)})
            c.start_storage(1, args=("--replication-bytes-per-s", "10000"))
            ids = storage_ids(c)
            deadline = time.monotonic() + 30
            while letters(c).get(ids[1]) != "O":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            serial = _current(storage, x)[1]
        finally:
            storage.close()
        storage = c.open_storage(local_reads=False, rpc_timeout_s=5.0)    # suspects no node
        try:
            c.kill_storage(0)
            t = TransactionMetaData()
            with pytest.raises(ClusterUnavailable, match="no readable copy of partition 0 voted"):
                storage.tpc_begin(t)
                storage.store(x, serial, zodb_pickle(MinPO(2)), "", t)
                storage.tpc_vote(t)
            storage.tpc_abort(t)
        finally:
            storage.close()
    finally:
        c.stop()


def test_closing_a_database_while_invalidations_arrive(cluster2, monkeypatch):
    """Issue "The data plane", defect 2: the client's event thread died with
    ``AttributeError: _instances`` when an invalidation arrived while its database
    closed (ZODB's MVCCAdapter drops its instances right after the storage closes)."""
    import threading
    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    writer_storage = cluster2.open_storage()
    (oid,) = _objects(writer_storage, 1)
    stop = threading.Event()

    def write():
        while not stop.is_set():
            t = _store(writer_storage, {oid: time.monotonic_ns()})
            try:
                writer_storage.tpc_vote(t)
                writer_storage.tpc_finish(t)
            except ConflictError:
                writer_storage.tpc_abort(t)
    writers = [threading.Thread(target=write) for _ in range(4)]
    for w in writers:
        w.start()
    try:
        for _ in range(150):
            db = ZODB.DB(cluster2.open_storage(cache_bytes_max=1 << 20))
            with db.transaction() as conn:
                conn.root()
            db.close()
    finally:
        stop.set()
        for w in writers:
            w.join(30)
        writer_storage.close()
    assert died == []
