"""The commit path's decisions (``master/flow.py``, ``master/commit.py``) without I/O,
and the regressions the simulation found in them (``tests/simulation``)."""
from types import SimpleNamespace

from master.commit import COMPLETE, CommitCore, Txn
from master.core import IdAllocator, PartitionTable
from master.flow import AbortOn, CommitFlow, Done, Publish, TableChanged, Unlock
from master.replication import CatchUp
from neoarray.errors import ClusterUnavailable
from neoarray.ids import Z64, p64
from neoarray.states import CellState


def host(nodes=(1, 2), partitions=1, replicas=1):
    pt = PartitionTable.create(partitions, replicas, list(nodes))
    h = SimpleNamespace(pt=pt, partitions=partitions, commits=CommitCore(10, 30.0, 100, 100),
                        catchup=CatchUp(), ids=IdAllocator(lambda **_: None, 0, 0, Z64, Z64),
                        last_committed=Z64, running=set(nodes))
    h.running_storages = lambda: set(h.running)
    return h


def test_a_finish_locked_everywhere_is_published_unlocked_and_done():
    h = host()
    flow = CommitFlow(h)
    step = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=True, now=1.7e9)
    assert step.error is None and step.actions == []
    txn = step.txn
    actions = flow.lock_answers(txn, refused=set(), failed=set())
    assert actions == [Publish(txn), Unlock(1, txn.ttid), Unlock(2, txn.ttid), Done(txn)]
    assert txn.outcome == COMPLETE and h.last_committed == txn.tid


def test_a_finish_voted_on_one_copy_makes_the_other_copy_out_of_date_before_its_locks():
    h = host()
    flow = CommitFlow(h)
    step = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [2], 0, live=True, now=1.7e9)
    assert step.actions == [TableChanged()]
    assert h.pt.rows[0] == {1: CellState.OUT_OF_DATE, 2: CellState.UP_TO_DATE}


def test_a_finish_of_an_ended_session_is_refused_and_its_votes_aborted():
    h = host()
    step = CommitFlow(h).queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=False)
    assert step.txn is None and "not connected" in str(step.error)
    assert step.actions == [AbortOn(p64(10 << 32 | 1), (1, 2))]


def test_a_finish_refused_while_not_running_is_dead_at_once_and_its_votes_aborted():
    """Simulation seed 401504: a Finish refused because the cluster was RECOVERING left
    the transaction undecided, its votes holding their locks while the session lived."""
    h = host()
    flow = CommitFlow(h)
    ttid = p64(10 << 32 | 1)
    why = ClusterUnavailable("cluster is RECOVERING, not RUNNING")
    step = flow.refuse_finish(10, ttid, {2, 1}, why)
    assert step.error is why and step.actions == [AbortOn(ttid, (1, 2))]
    assert h.commits.decided(ttid) == (None, True)
    assert "aborted" in str(flow.queue_finish(10, ttid, [p64(1)], [1, 2], 0, live=True).error)


def test_a_finish_refused_while_not_running_leaves_what_it_cannot_decide():
    """Another client's transaction, an earlier master's (node id below this master's
    first), a committed one and a restore are not made dead by the refusal."""
    h = host()
    flow = CommitFlow(h)
    why = ClusterUnavailable("cluster is RECOVERING, not RUNNING")
    committed = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=True, now=1.7e9).txn
    flow.lock_answers(committed, refused=set(), failed=set())
    restore = p64(10 << 32 | 3)
    h.commits.begun[restore] = Txn(restore, 10)
    for node, ttid in ((11, p64(10 << 32 | 2)), (9, p64(9 << 32 | 1)), (10, committed.ttid), (10, restore)):
        step = flow.refuse_finish(node, ttid, {1, 2}, why)
        assert step.error is why and step.actions == [], (node, ttid)
        assert h.commits.decided(ttid) in (None, (committed.tid, None))
    assert h.commits.decided(committed.ttid) == (committed.tid, None)


def test_a_cell_does_not_catch_up_while_a_commit_it_missed_is_unpublished():
    """Simulation seed 586 when found: S1 missed T (voted on S2 only) and copied up to the last
    tid before T while T waited in the queue; had S1 become UP_TO_DATE, losing S2
    before T's publication left S1 the readable copy without T."""
    h = host()
    flow = CommitFlow(h)
    first = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=True, now=1.7e9).txn
    missed = flow.queue_finish(10, p64(10 << 32 | 2), [p64(1)], [2], 0, live=True, now=1.7e9).txn
    flow.lock_answers(missed, refused=set(), failed=set())     # complete, behind the first
    assert h.pt.rows[0][1] == CellState.OUT_OF_DATE
    assert h.commits.unpublished_on(1, 0, 1)
    def held():
        return h.commits.unpublished_on(1, 0, 1)

    assert not h.catchup.replicated(h.pt, 1, 0, h.catchup.until[(1, 0)], held)
    assert h.pt.rows[0][1] == CellState.OUT_OF_DATE
    flow.lock_answers(first, refused=set(), failed=set())      # both published: S1 copies up to T
    assert h.catchup.until[(1, 0)] == missed.tid and not held()
    assert h.catchup.replicated(h.pt, 1, 0, missed.tid, held)


def test_an_earlier_masters_transaction_unknown_here_is_not_called_not_committed():
    """Simulation seed 829 (205, 608 before it drove ClusterCore; 1705, 1798 when
    found): a commit acknowledged by an earlier master and unlocked before it ended
    leaves no locked record; its client, whose finish reply was lost, must not hear
    'not committed' from the new master."""
    core = CommitCore(10, 30.0, 100, 100)
    ttid = p64(3 << 32 | 8)                                    # session 3: an earlier master's
    assert core.final_status(ttid, owner_live=False) == (None, False)
    assert core.final_status(p64(12 << 32 | 1), owner_live=False) == (None, True)
    core.mark_dead(ttid)
    assert core.final_status(ttid, owner_live=False) == (None, True)


def test_a_verification_does_not_take_an_unpublished_commits_tid_for_the_last_committed():
    """Simulation seed 20832: S3 locked T, whose Lock failed on S1; the cluster went
    back to RECOVERING, and its verification took S3's last tid (T's) for the last
    committed tid.  S2's cell, returning, copied up to T from S1 before S1 held T
    and was taken for caught up once T was published: a readable copy without T."""
    h = host()
    flow = CommitFlow(h)
    txn = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=True, now=1.7e9).txn
    assert h.commits.published_bound(txn.tid) == Z64
    assert h.commits.published_bound(p64(5)) == p64(5)         # before the queue: committed
    flow.lock_answers(txn, refused=set(), failed=set())
    assert h.commits.published_bound(txn.tid) == txn.tid


def test_a_voter_that_told_its_vote_locks_the_transaction_another_voter_locked_later():
    """Simulation seed 16986: both Lock orders of T failed (S1 locked it, its answer
    was lost; S2 was down); S2 came back in recovery with T's vote, T undecided; S1
    came back later with T locked.  S2 must be ordered to lock T: its readable cells
    would miss T once it is complete on S1."""
    h = host()
    flow = CommitFlow(h)
    txn = flow.queue_finish(10, p64(10 << 32 | 1), [p64(1)], [1, 2], 0, live=True, now=1.7e9).txn
    flow.lock_answers(txn, refused=set(), failed={1, 2})
    core = h.commits
    core.vote_reported(txn, 2)
    assert core.late_locks({1, 2}) == [] and not txn.decided
    core.node_reported(txn, 1, locked=True)
    assert core.late_locks({1, 2}) == [(2, txn.ttid, txn.tid)]
    assert core.late_locks({1}) == []                           # S2 down: ordered when it returns
    core.node_reported(txn, 2, locked=True)
    assert core.late_locks({1, 2}) == []
