"""The master's cluster core (``master/cluster.py``) driven with events and times:
no sockets, no threads, no LMDB; its durable state is a dict written by ``persist``."""
import random

import pytest

from master.cluster import (
    BROADCAST,
    EPOCH_ROUND,
    NAME_CHARS_MAX,
    TRY_START,
    ClusterCore,
    DropChannel,
    Identity,
    Pending,
    Recovered,
    Settle,
    follows_state,
    known_stamp,
    PRIMARY_NOW,
    STANDBY_FIRST,
    TAKE_OVER,
    may_take_over,
    must_take_over,
    must_witness,
    unwitnessed,
    newer_primary,
    stale_copy,
    start_role,
    state_stamp,
    take_over,
)
from master.commit import NODE_ID_RESERVE, CommitCore
from master.core import OID_RESERVE, TID_RESERVE, IdAllocator, PartitionTable
from master.replication import CatchUp
from neoarray.errors import ClusterUnavailable, LimitExceeded, RequestRefused, StaleCopy
from neoarray.ids import Z64, p64
from neoarray.states import CellState, ClusterState, NodeState, NodeType

TIMEOUT_S = 5.0
S, C = NodeType.STORAGE, NodeType.CLIENT


class Durable(dict):
    """The master's state as ``persist`` wrote it."""
    def persist(self, **values):
        self.update(values)


def make(partitions=4, replicas=1, expected=2, nodes_max=100, db=None, now_s=0.0, copy_stamp=None):
    """A core as a (re)started master builds it from ``db`` (a fresh one without)."""
    db = db if db is not None else Durable()
    pt = PartitionTable.from_doc(db["pt"]) if "pt" in db else PartitionTable(partitions, replicas)
    first = db.get("next_node_id", 1)
    ids = IdAllocator(db.persist, 0, db.get("oid_reserved", 0), Z64, db.get("tid_reserved", Z64))
    core = ClusterCore(pt, db.get("nodes", {}), first, storages_expected=expected,
                       node_timeout_s=TIMEOUT_S, nodes_max=nodes_max, now_s=now_s, persist=db.persist,
                       ids=ids, commits=CommitCore(first, 300.0, 100, 100), catchup=CatchUp(),
                       copy_stamp=copy_stamp)
    return core, db


def storage(nid=0, port=None, last_tid=b"", last_oid=b""):
    return Identity(S, nid, f"127.0.0.1:{port or 7000 + nid}", "127.0.0.1", last_tid=last_tid, last_oid=last_oid)


def join(core, who, now_s=0.0):
    return core.identify(who, now_s)[0]


def running_cluster(storages=2, replicas=1, partitions=4):
    """A core RUNNING over ``storages`` nodes (ids 1..storages)."""
    core, db = make(partitions, replicas, expected=storages)
    for _ in range(storages):
        join(core, storage(port=7000 + len(core.nodes) + 1))
    assert core.try_start(0.0) == list(range(1, storages + 1))
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING
    return core, db


def live_none(node):
    return False


# -- registration ------------------------------------------------------------------------
def test_a_new_storage_gets_an_id_persisted_before_use_and_its_actions():
    core, db = make()
    nid, actions = core.identify(storage(port=7001), 1.5)
    assert nid == 1 and db["next_node_id"] == 2
    assert db["nodes"] == {"1": [S, "127.0.0.1:7001", "127.0.0.1"]}
    node = core.nodes[1]
    assert node.state == NodeState.RUNNING      # no table yet: every storage is RUNNING
    assert node.last_seen == 1.5 and node.since == 1.5
    assert actions == [DropChannel(1), TRY_START, BROADCAST]


def test_a_returning_node_keeps_its_id_and_a_client_is_running_without_broadcast():
    core, db = make()
    assert join(core, storage(port=7001)) == 1
    assert join(core, storage(1, port=7011), 2.0) == 1       # same node, new address
    assert core.nodes[1].address == "127.0.0.1:7011" and db["nodes"]["1"][1] == "127.0.0.1:7011"
    cid, actions = core.identify(Identity(C, 1, "", "h"), 3.0)     # id 1 is a storage: a new id
    assert cid == 2 and actions == [] and core.nodes[2].state == NodeState.RUNNING
    assert core.nodes[1].type == S


def test_refusals_come_before_anything_is_registered():
    core, db = make(nodes_max=2)
    with pytest.raises(RequestRefused, match="storage node 9 is not known"):
        core.identify(storage(9), 0.0)
    with pytest.raises(RequestRefused, match="is not host:port"):
        core.identify(Identity(S, 0, "nowhere"), 0.0)
    with pytest.raises(RequestRefused, match="data_address"):
        core.identify(Identity(S, 0, "h:1", data_address="h:0"), 0.0)
    with pytest.raises(RequestRefused, match="host longer than"):
        core.identify(Identity(C, 0, "", "h" * (NAME_CHARS_MAX + 1)), 0.0)
    with pytest.raises(RequestRefused, match="last_tid"):
        core.identify(storage(last_tid=b"\xff" * 8), 0.0)
    with pytest.raises(RequestRefused, match="unknown node type"):
        core.identify(Identity(NodeType.MASTER, 0, "h:1"), 0.0)
    assert core.nodes == {} and "next_node_id" not in db
    join(core, storage(port=7001))
    join(core, Identity(C))
    with pytest.raises(LimitExceeded, match="nodes_max=2"):
        core.identify(Identity(C), 0.0)
    assert join(core, storage(1)) == 1      # a known node is not a new one
    core.stop()
    with pytest.raises(ClusterUnavailable, match="stopping"):
        core.identify(storage(1), 0.0)


def test_a_storage_raises_the_id_allocation_to_what_it_holds():
    core, _ = make()
    join(core, storage(port=7001, last_tid=p64(1 << 40), last_oid=p64(77)))
    assert core.ids.last_oid == 77 and core.ids.last_tid == p64(1 << 40)
    assert core.ids.new_oids(1) == [p64(78)]


def test_node_ids_are_never_reused_after_a_restart_or_a_client_leaving():
    core, db = make()
    join(core, storage(port=7001))
    cid = join(core, Identity(C))
    assert core.session_ended(cid) is False and cid not in core.nodes
    again, _ = make(db=db)
    assert join(again, Identity(C)) == cid + 1
    assert join(again, storage(port=7002)) == cid + 2


def test_a_counter_behind_the_known_nodes_skips_their_ids():
    db = Durable(next_node_id=2, nodes={"1": [S, "h:1", "h"], "2": [S, "h:2", "h"], "3": [S, "h:3", "h"]})
    core, _ = make(db=db)
    assert join(core, Identity(C)) == 4 and db["next_node_id"] == 5


def test_a_storage_joining_a_cluster_with_a_table_is_pending_until_added():
    core, _db = running_cluster()
    nid, actions = core.identify(storage(port=7003), 1.0)
    assert core.nodes[nid].state == NodeState.PENDING and TRY_START in actions
    assert nid not in core.pt.nodes()


# -- liveness and loss -------------------------------------------------------------------
def test_a_storage_silent_for_node_timeout_is_named_at_the_right_time():
    core, _ = make()
    join(core, storage(port=7001), 10.0)
    join(core, storage(port=7002), 10.0)
    assert core.heartbeat(1, 12.0)
    assert core.silent(10.0 + TIMEOUT_S) == []
    assert core.silent(10.0 + TIMEOUT_S + 0.1) == [2]
    assert core.silent(12.0 + TIMEOUT_S + 0.1) == [1, 2]
    assert core.storage_lost(2, "no heartbeat", 16.0) == [DropChannel(2), BROADCAST]
    assert core.heartbeat(2, 16.5) is False          # DOWN: it must identify again
    assert core.heartbeat(42, 16.5) is False         # unknown
    assert core.storage_lost(2, "again", 17.0) == []
    assert core.silent(30.0) == [1]                  # a DOWN node is not lost again


def test_losing_a_copy_keeps_running_with_out_of_date_cells():
    core, db = running_cluster(storages=2, replicas=1)
    ptid = core.pt.ptid
    core.storage_lost(1, "lock failed", 1.0)
    assert core.cluster_state == ClusterState.RUNNING
    assert core.pt.cells_of(1, CellState.OUT_OF_DATE) == [0, 1, 2, 3]
    assert core.pt.ptid == ptid + 1 and db["pt"] == core.pt.to_doc()


def test_losing_the_only_readable_copy_goes_back_to_recovering():
    core, _db = running_cluster(storages=2, replicas=0)
    core.storage_lost(2, "no heartbeat", 1.0)
    assert core.cluster_state == ClusterState.RECOVERING
    assert core.nodes[2].state == NodeState.DOWN
    assert core.pt.cells_of(2, CellState.UP_TO_DATE) == [1, 3]     # no other copy: stays readable
    with pytest.raises(ClusterUnavailable, match="RECOVERING"):
        core.require_running()


# -- cluster states ----------------------------------------------------------------------
def test_first_start_waits_for_the_expected_storages_or_force():
    core, db = make(partitions=3, replicas=1, expected=3)
    join(core, storage(port=7001))
    join(core, storage(port=7002))
    assert core.try_start(1.0) is None and "pt" not in db
    assert core.cluster_state == ClusterState.RECOVERING
    assert core.try_start(1.0, force=True) == [1, 2]
    assert core.cluster_state == ClusterState.VERIFYING
    assert db["pt"] == core.pt.to_doc() and core.pt.nodes() == {1, 2}
    assert core.try_start(1.0, force=True) is None        # only from RECOVERING


def test_first_start_with_every_expected_storage_and_none_without():
    core, _ = make(expected=2)
    assert core.try_start(0.0, force=True) is None        # no storage at all
    join(core, storage(port=7001))
    join(core, storage(port=7002))
    assert core.try_start(0.0) == [1, 2]
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING
    core.require_running()
    with pytest.raises(ClusterUnavailable, match="truncated"):
        core.require_running(truncating=True)


def restarted(db, now_s=0.0):
    core, _ = make(db=db, now_s=now_s)
    assert all(n.state == NodeState.DOWN for n in core.nodes.values())
    return core


def test_a_restarted_master_gives_members_a_grace_period_then_marks_the_absent_out_of_date():
    _, db = running_cluster(storages=3, replicas=1, partitions=6)
    core = restarted(db, now_s=100.0)
    join(core, storage(1), 100.5)
    join(core, storage(2), 100.5)
    assert core.try_start(101.0) is None                  # S3 may still come back
    assert core.try_start(100.0 + TIMEOUT_S + 0.1) == [1, 2]
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING
    assert core.pt.cells_of(3, CellState.OUT_OF_DATE)
    assert not core.pt.cells_of(3, CellState.UP_TO_DATE)
    assert db["pt"] == core.pt.to_doc()


def test_force_skips_the_grace_period_and_a_failed_verification_recovers():
    _, db = running_cluster(storages=3, replicas=1, partitions=6)
    core = restarted(db, now_s=100.0)
    join(core, storage(1), 100.5)
    join(core, storage(2), 100.5)
    assert core.try_start(100.5, force=True) == [1, 2]
    core.verification_failed()
    assert core.cluster_state == ClusterState.RECOVERING


def test_losing_the_only_copy_during_verification_does_not_run():
    """Found by the random sequences (seed 6): S1 held every cell, it was lost after
    answering RecoveryInfo; the cluster went RUNNING with no readable copy."""
    core, _ = make(replicas=0, expected=1)
    join(core, storage(port=7001))
    assert core.try_start(0.0) == [1]
    core.storage_lost(1, "no heartbeat", 6.0)
    assert core.cluster_state == ClusterState.VERIFYING
    core.verified()
    assert core.cluster_state == ClusterState.RECOVERING


def test_a_restarted_master_without_an_operational_table_does_not_start():
    _, db = running_cluster(storages=2, replicas=0)
    core = restarted(db)
    join(core, storage(1))
    assert core.try_start(TIMEOUT_S * 10, force=True) is None


def test_a_member_back_while_running_copies_and_is_settled():
    core, db = running_cluster(storages=2, replicas=1)
    core.last_committed = p64(5)
    core.commits.reported.update({1, 2})
    core.storage_lost(1, "gone", 1.0)
    ptid = core.pt.ptid
    _nid, actions = core.identify(storage(1), 2.0)
    assert actions == [DropChannel(1), Settle(1), BROADCAST]
    assert core.pt.ptid == ptid + 1 and db["pt"] == core.pt.to_doc()
    assert core.catchup.until[(1, 0)] == p64(5)
    assert 1 not in core.commits.reported
    assert core.pending_verdicts(1, [Pending(p64(9 << 32 | 1), voted=True)], live_none) == ([], True)


def test_stop_names_the_storages_to_shut_down():
    core, _ = running_cluster(storages=3)
    core.storage_lost(2, "gone", 1.0)
    assert core.stop() == [1, 3]
    assert core.cluster_state == ClusterState.STOPPING
    assert core.try_start(10.0, force=True) is None


# -- verification ------------------------------------------------------------------------
def recovering_with_two():
    _, db = running_cluster(storages=2, replicas=1)
    db["next_node_id"] = 10            # sessions 3..9 belonged to the previous master
    core = restarted(db)
    join(core, storage(1))
    join(core, storage(2))
    assert core.try_start(0.0) == [1, 2]
    return core


def test_verification_locks_a_transaction_one_node_locked_and_aborts_dead_votes():
    core = recovering_with_two()
    committed, tid = p64(3 << 32 | 1), p64(1 << 50)
    dead = p64(4 << 32 | 1)            # a session of the previous master, locked nowhere
    mine = p64(12 << 32 | 1)           # a session of this master, live
    infos = {1: Recovered(p64(40), p64(1 << 50), locked=((committed, tid),)),
             2: Recovered(p64(41), p64(1 << 49), voted=(committed, dead, mine))}
    core.recovered(infos)
    assert core.last_committed == p64(1 << 50) and core.ids.last_oid == 41
    done = core.reconcile(infos, lambda node: node == 12)
    assert done.everyone
    assert done.locks == [(2, committed, tid)]
    assert done.aborts == [(2, dead, None)]
    assert core.commits.finished[committed] == tid
    assert core.reconciled(infos, done) == {1: [committed], 2: [committed]}
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING
    assert core.ids.tid_reserved >= core.ids.last_tid


def test_a_leftover_vote_of_an_earlier_masters_commit_is_aborted_but_not_called_not_committed():
    """Simulation seed 3436: T voted on S1 and S2, S1 crashed before its Lock (lost,
    its cells OUT_OF_DATE), T complete on S2 and unlocked there; the client's Finish
    reply was lost, then the master restarted.  Verification finds T voted on S1 and
    locked nowhere: the vote is aborted, but T was committed, so its client must not
    hear 'not committed'."""
    core = recovering_with_two()
    ttid = p64(4 << 32 | 2)            # a session of the previous master
    infos = {1: Recovered(p64(40), p64(1 << 50), voted=(ttid,)), 2: Recovered(p64(40), p64(1 << 50))}
    core.recovered(infos)
    done = core.reconcile(infos, live_none)
    assert done.everyone and done.aborts == [(1, ttid, None)] and done.locks == []
    core.reconciled(infos, done)
    core.verified()
    assert core.commits.final_status(ttid, owner_live=False) == (None, False)
    assert core.pending_verdicts(1, [Pending(ttid, voted=True)], live_none) == ([(ttid, None)], False)
    assert core.commits.final_status(ttid, owner_live=False) == (None, False)


def test_before_every_node_reported_an_earlier_masters_vote_stays():
    core = recovering_with_two()
    dead = p64(4 << 32 | 1)
    infos = {2: Recovered(voted=(dead,))}
    done = core.reconcile(infos, live_none)
    assert not done.everyone and done.aborts == [] and done.locks == []
    assert core.reconciled(infos, done) == {}


def test_pending_verdicts_need_running_and_a_reported_node():
    core, _ = running_cluster(storages=2)
    core.commits.first_node_id = 10
    dead, mine = p64(4 << 32 | 1), p64(12 << 32 | 1)
    reports = [Pending(dead, voted=True), Pending(mine, voted=True)]
    core.commits.reported.add(1)
    # S2 has not reported: an earlier master's session is not known dead yet
    assert core.pending_verdicts(1, reports, lambda n: n == 12) == ([], False)
    core.commits.reported.add(2)
    assert core.pending_verdicts(1, reports, lambda n: n == 12) == ([(dead, None)], False)
    core.storage_lost(1, "gone", 1.0)
    core.storage_lost(2, "gone", 1.0)
    assert core.pending_verdicts(1, reports, live_none) == ([], False)


# -- standby masters -----------------------------------------------------------------------
def test_standby_masters_are_shown_with_new_ids():
    core, db = make()
    assert core.show_master("10.0.0.2:5000", NodeState.DOWN, 0.0) is None
    nid = core.show_master("10.0.0.2:5000", NodeState.RUNNING, 1.0)
    assert core.nodes[nid].type == NodeType.MASTER and core.nodes[nid].host == "10.0.0.2"
    assert db["next_node_id"] == nid + 1
    assert core.show_master("10.0.0.2:5000", NodeState.DOWN, 2.0) == nid
    assert core.nodes[nid].state == NodeState.DOWN and core.nodes[nid].since == 2.0


def test_take_over_raises_every_reservation_and_the_epoch():
    values = take_over(epoch=3, oid_reserved=500, tid_reserved=p64(1000), next_node_id=7, token=5)
    assert values == {"epoch": EPOCH_ROUND + 5, "oid_reserved": 500 + OID_RESERVE,
                      "tid_reserved": p64(1000 + TID_RESERVE), "next_node_id": 7 + NODE_ID_RESERVE,
                      "taken_over_from": [3, 0]}
    assert take_over(0, 0, Z64, 1, token=1)["epoch"] == EPOCH_ROUND + 1
    # the next round is above every epoch of this one, whatever its token
    assert take_over(EPOCH_ROUND + EPOCH_ROUND - 1, 0, Z64, 1, token=1)["epoch"] == 2 * EPOCH_ROUND + 1
    with pytest.raises(RequestRefused, match="token"):
        take_over(3, 0, Z64, 1, token=EPOCH_ROUND)


def test_two_standbys_taking_over_from_one_copy_get_different_epochs():
    """Simulation seed 180: two standbys lost the primary at once and both took over
    with epoch 2; storages obeyed both.  Their tokens tell their epochs apart: storages
    obey the higher only."""
    first = take_over(1, 10, p64(10), 3, token=7)["epoch"]
    second = take_over(1, 10, p64(10), 3, token=9)["epoch"]
    assert first != second and min(first, second) > 1
    assert not must_take_over(False, 100.0, TIMEOUT_S, 0.2)
    assert not must_take_over(True, TIMEOUT_S + 0.1, TIMEOUT_S, 0.2)
    assert must_take_over(True, TIMEOUT_S + 0.2, TIMEOUT_S, 0.2)


def test_a_standby_follows_no_older_primary_and_a_primary_steps_down_for_a_newer_one():
    held = 3
    assert newer_primary(True, 3, held - 1) and newer_primary(True, 4, held - 1)
    assert not newer_primary(True, 2, held - 1)       # an old primary restarted alone
    assert not newer_primary(False, 9, held - 1)      # a standby is followed by nobody
    assert not newer_primary(True, 3, 3) and newer_primary(True, 4, 3)   # a primary's check
    assert follows_state(3, held) and follows_state(4, held) and not follows_state(2, held)


# -- random sequences ------------------------------------------------------------------------
class Model:
    """Drives a core with random events as ``Master``'s shell would, and checks the
    invariants after each."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.core, self.db = make(partitions=5, replicas=self.rng.choice([0, 1, 2]),
                                  expected=self.rng.choice([1, 2, 3]))
        self.now_s = 0.0
        self.handed_out: set[int] = set()
        self.verifying = False

    def step(self):
        rng, core = self.rng, self.core
        self.now_s += rng.choice([0.1, 0.5, 1.0, TIMEOUT_S])
        event = rng.choice(["join", "join", "rejoin", "client", "beat", "monitor", "start", "verify",
                            "lose", "restart"])
        if event == "join" and len(self.handed_out) < 20:
            self._register(storage(port=7000 + len(self.handed_out) + 1))
        elif event == "rejoin":
            down = sorted(n for n, i in core.nodes.items() if i.type == S and i.state == NodeState.DOWN)
            if down:
                self._register(storage(rng.choice(down)))
        elif event == "client" and len(self.handed_out) < 20:
            self._register(Identity(C))
        elif event == "beat":
            for nid in sorted(core.nodes):
                if rng.random() < 0.7:
                    core.heartbeat(nid, self.now_s)
        elif event == "monitor":
            for nid in core.silent(self.now_s):
                core.storage_lost(nid, "no heartbeat", self.now_s)
        elif event == "start":
            self.verifying |= core.try_start(self.now_s, force=rng.random() < 0.2) is not None
        elif event == "verify" and self.verifying:
            self.verifying = False
            if rng.random() < 0.2:
                core.verification_failed()
            else:
                core.verified()
        elif event == "lose":
            alive = sorted(n for n, i in core.nodes.items() if i.type == S and i.state != NodeState.DOWN)
            if alive:
                core.storage_lost(rng.choice(alive), "lock failed", self.now_s)
        elif event == "restart" and rng.random() < 0.3:
            self.core, _ = make(db=self.db, now_s=self.now_s, expected=core.storages_expected)
            self.verifying = False

    def _register(self, who):
        try:
            nid, _ = self.core.identify(who, self.now_s)
        except ClusterUnavailable:
            return
        if who.node_id == 0 or self.core.nodes[nid].type != who.type:
            assert nid not in self.handed_out, f"node id {nid} handed out twice"
            self.handed_out.add(nid)

    def check(self):
        core, db = self.core, self.db
        running = core.running_storages()
        if core.cluster_state == ClusterState.RUNNING:
            assert core.pt.operational(running), "RUNNING without an operational table"
        if core.pt.rows:
            assert db["pt"] == core.pt.to_doc(), "the table changed without being persisted"
        assert db.get("next_node_id", 1) > max(self.handed_out, default=0)
        stored = {int(n) for n in db.get("nodes", {})}
        assert stored == {n for n, i in core.nodes.items() if i.type == S}
        assert all(core.nodes[n].type == S for n in core.pt.nodes())


@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_keep_the_invariants(seed):
    model = Model(seed)
    for _ in range(300):
        model.step()
        model.check()


def test_random_sequences_reach_running():
    states = set()
    for seed in range(40):
        model = Model(seed)
        for _ in range(300):
            model.step()
            states.add(model.core.cluster_state)
    assert ClusterState.RUNNING in states and ClusterState.RECOVERING in states



def test_a_storage_that_rejoins_during_a_verification_tells_again_what_it_holds():
    """A node that reported what it held, restarted and joined again while the cluster
    was not RUNNING (a verification under way does not ask it) must report again:
    else its votes never reach the commit queue, which waits for them for good
    (found by the simulation, seed 16986)."""
    core, _ = make(expected=2)
    join(core, storage(port=7001))
    join(core, storage(port=7002))
    assert core.try_start(0.0) == [1, 2]
    core.reconcile({1: Recovered(), 2: Recovered()}, live_none)
    assert core.commits.reported == {1, 2}
    assert join(core, storage(nid=2, port=7002), 1.0) == 2       # S2 restarted meanwhile
    assert core.commits.reported == {1}


def queued(core, tid, voters=(1, 2), failed=(1, 2)):
    """A transaction of a live session in the commit queue with ``tid``, its Lock
    orders ended with ``failed`` not answering (undecided when both failed)."""
    txn = core.commits.accept_finish(10, p64(10 << 32 | 1), live=True)
    txn.tid, txn.oids, txn.storages = tid, [p64(1)], list(voters)
    core.commits.enqueue(txn)
    core.commits.lock_answers(txn, set(voters) - set(failed), set(), set(failed))
    return txn


def test_a_verification_does_not_take_a_queued_commits_tid_for_the_last_committed():
    """A node's last tid that is a commit still queued (locked there, not published)
    does not raise the last committed tid: returning cells would copy up to it before
    their sources hold it (simulation seed 20832)."""
    core, _ = running_cluster()
    txn = queued(core, p64(1000))
    core.recovered({1: Recovered(last_tid=p64(1000)), 2: Recovered(last_tid=p64(900))})
    assert core.last_committed == p64(900)                      # before the queue: committed
    core.commits.queue.remove(txn)
    core.recovered({1: Recovered(last_tid=p64(1000))})
    assert core.last_committed == p64(1000)


def test_a_voter_that_reported_its_vote_is_ordered_to_lock_once_another_reports_it_locked():
    """Both Lock orders failed; S2 reports T's vote, then S1 reports T locked: the
    reconciliation orders S2 to lock T too, or S2's readable cells miss a published
    commit (simulation seed 16986)."""
    core, _ = running_cluster()
    txn = queued(core, p64(1000))
    done = core.reconcile({2: Recovered(voted=(txn.ttid,))}, live_none)
    assert done.locks == [] and not txn.decided
    done = core.reconcile({1: Recovered(locked=((txn.ttid, txn.tid),))}, live_none)
    assert (2, txn.ttid, txn.tid) in done.locks


def test_a_master_with_peers_and_no_primary_takes_a_new_epoch_never_a_copied_one():
    """Simulation seed 187: the old primary, restarted, followed the new one; restarted
    again while no primary answered, it started as primary with the copied epoch (two
    masters obeyed with one epoch)."""
    assert start_role(standby_of=True, has_peers=True, primary_found=False) == STANDBY_FIRST
    assert start_role(standby_of=False, has_peers=True, primary_found=True) == STANDBY_FIRST
    assert start_role(standby_of=False, has_peers=True, primary_found=False) == TAKE_OVER
    assert start_role(standby_of=False, has_peers=False, primary_found=False) == PRIMARY_NOW


# -- storages as witnesses of the masters' state (rules A and B) ---------------------------
def test_rule_a_witnesses_only_when_a_known_standby_did_not_acknowledge():
    assert not must_witness(True, set(), set())                         # no standby: no round trip
    assert not must_witness(True, {"m2:1"}, {"m2:1"})                   # every standby acknowledged
    assert must_witness(True, {"m2:1", "m3:1"}, {"m2:1"})               # one no longer waited for
    assert not must_witness(False, {"m2:1"}, set())                     # a take-over not confirmed


def test_rule_a_does_not_act_on_a_state_no_storage_recorded():
    """Cut off from every storage it asked, a primary steps down instead of acting
    (simulation seed 201117 with stores inside votes)."""
    gone = ConnectionError("no answer")
    assert unwitnessed([2, 3], {2: gone, 3: gone})          # nobody recorded it
    assert not unwitnessed([2, 3], {3: gone})                # S2 is a witness: S3 is lost
    assert not unwitnessed([], {})                           # no storage running: none to ask
    # a copy is stale when a storage recorded a newer stamp, the epoch compared first
    assert stale_copy((7, 10), (7, 11)) and stale_copy((7, 10), (8, 0))
    assert not stale_copy((7, 10), (7, 10)) and not stale_copy((7, 10), (6, 99))
    assert not stale_copy(None, (9, 9))                                 # confirmed: nothing to check


def test_take_over_keeps_the_stamp_of_an_unconfirmed_copy():
    assert take_over(3, 0, Z64, 1, token=5, version=42)["taken_over_from"] == [3, 42]
    # the copy of a master that took over and was not confirmed: checked against what it copied
    assert take_over(EPOCH_ROUND + 5, 0, Z64, 1, token=2, version=50, taken_over_from=[3, 42])[
        "taken_over_from"] == [3, 42]


def taken_over(copy_stamp=(1, 10)):
    """A master that took over from a copy (of ``running_cluster``'s state) with stamp
    ``copy_stamp``, its storages all down."""
    _, db = running_cluster(storages=2, replicas=1, partitions=4)
    core, _ = make(db=db, now_s=100.0, copy_stamp=copy_stamp)
    return core, db


def test_rule_b_a_take_over_waits_for_every_member_without_grace_period():
    core, db = taken_over()
    join(core, storage(1, last_tid=p64(5)), 100.5)
    assert core.try_start(100.0 + 10 * TIMEOUT_S) is None       # S2 must tell its stamp first
    assert core.cluster_state == ClusterState.RECOVERING
    join(core, storage(2), 150.0)
    assert core.try_start(150.0) == [1, 2]
    core.recovered({1: Recovered(stamp=(1, 10)), 2: Recovered(stamp=(0, 0))})
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING
    assert core.confirmed() and db["taken_over_from"] is None   # the copy is confirmed, durably


def test_rule_b_forcing_a_take_over_without_every_member_is_possible():
    core, db = taken_over()
    join(core, storage(1), 100.5)
    assert core.try_start(101.0) is None
    assert core.try_start(101.0, force=True) == [1]             # neoctl start: the risk is logged
    core.recovered({1: Recovered(stamp=(1, 9))})
    core.verified()
    assert core.cluster_state == ClusterState.RUNNING and core.confirmed()


def test_rule_b_a_storage_with_a_newer_stamp_makes_the_copy_stale():
    core, db = taken_over(copy_stamp=(1, 10))
    with pytest.raises(StaleCopy, match=r"S2 .*\(1, 11\).*\(1, 10\)"):
        join(core, Identity(S, 2, "127.0.0.1:7002", "h", stamp=(1, 11)), 100.5)
    assert core.nodes[2].state == NodeState.DOWN                # not registered
    join(core, storage(1), 100.5)
    join(core, storage(2), 100.5)                               # its stamp is read again at verification
    assert core.try_start(100.6) == [1, 2]
    with pytest.raises(StaleCopy, match="S1"):
        core.recovered({1: Recovered(stamp=(EPOCH_ROUND + 3, 1)), 2: Recovered()})
    assert not core.confirmed() and "taken_over_from" not in db
    # a master that never took over (or is confirmed) checks nothing
    plain, _ = make()
    join(plain, Identity(S, 0, "127.0.0.1:7009", "h", stamp=(99, 99)))


def test_a_standby_keeps_a_newer_state_than_an_unconfirmed_primarys_copy():
    """Simulation seed 3076: a master holding a newer state followed a primary that took
    over from an older copy (not confirmed yet), and the newer state was lost for good."""
    held = state_stamp(EPOCH_ROUND + 7, 19)                   # its own state, confirmed
    assert held == (EPOCH_ROUND + 7, 19)
    assert not follows_state(2 * EPOCH_ROUND + 1, EPOCH_ROUND + 7, base=[1, 8], held_stamp=held)
    assert follows_state(2 * EPOCH_ROUND + 1, EPOCH_ROUND + 7, base=None, held_stamp=held)    # confirmed
    # a copy of that same unconfirmed primary stands for what it copied: followed
    assert follows_state(EPOCH_ROUND + 3, EPOCH_ROUND + 3, base=[1, 8],
                         held_stamp=state_stamp(EPOCH_ROUND + 3, 30, [1, 8]))


def test_a_master_shown_stale_starts_as_a_standby_and_takes_over_only_after_following():
    assert start_role(standby_of=False, has_peers=True, primary_found=False, stale=True) == STANDBY_FIRST
    assert not may_take_over(True, stale=True) and may_take_over(True, stale=False)
    assert not may_take_over(False, stale=False)


def test_a_master_shown_stale_follows_no_primary_that_took_over_from_a_copy_as_old():
    """Simulation seed 401555: masters shown stale (their copies from stamp (1, 7), a
    storage holding (R + 5, 23)) followed each other's take-overs from that same old
    copy, which cleared their marks, took over in turn with ever higher epochs and
    deposed the primary that held the newest state: the cluster never came back."""
    newer = (EPOCH_ROUND + 5, 23)
    held = known_stamp(state_stamp(3 * EPOCH_ROUND + 9, 40, [1, 7]), newer)
    assert held == newer
    assert not follows_state(4 * EPOCH_ROUND + 2, 3 * EPOCH_ROUND + 9, base=[1, 7], held_stamp=held)
    assert follows_state(4 * EPOCH_ROUND + 2, 3 * EPOCH_ROUND + 9, base=None, held_stamp=held)   # confirmed
    assert follows_state(4 * EPOCH_ROUND + 2, 3 * EPOCH_ROUND + 9, base=list(newer), held_stamp=held)
    # without a mark, or with one older than the copy, the copy's own stamp stands
    assert known_stamp((2, 3)) == (2, 3) and known_stamp((2, 3), (1, 9)) == (2, 3)


def test_stale_copy_carries_the_newer_stamp_through_pickling():
    import pickle
    exc = StaleCopy("S1 recorded a newer stamp", (7, 2))
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.stamp) == ("S1 recorded a newer stamp", (7, 2))
    with pytest.raises(StaleCopy) as err:
        taken = taken_over(copy_stamp=(1, 10))[0]
        join(taken, Identity(S, 2, "127.0.0.1:7002", "h", stamp=(1, 11)), 100.5)
    assert err.value.stamp == (1, 11)
