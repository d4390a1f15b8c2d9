"""The master's pure core: id allocation and partition table rules."""
import time

import pytest

from master.core import OID_RESERVE, IdAllocator, PartitionTable
from master.state import MasterState
from neoarray.ids import Z64, p64, u64
from neoarray.states import CellState


class Durable:
    """What the master wrote to disk, and in which order relative to hand-outs."""

    def __init__(self):
        self.values = {"oid_reserved": 0, "tid_reserved": Z64}
        self.writes = 0

    def persist(self, **values):
        self.values.update(values)
        self.writes += 1

    def restart(self):
        v = self.values
        return IdAllocator(self.persist, v["oid_reserved"], v["oid_reserved"], v["tid_reserved"], v["tid_reserved"])


def test_oids_are_never_reused_across_a_crash():
    disk = Durable()
    ids = disk.restart()
    before = ids.new_oids(5) + ids.new_oids(100)
    assert [u64(o) for o in before] == list(range(1, 106))
    assert disk.writes == 1 and disk.values["oid_reserved"] >= 105
    after = disk.restart().new_oids(3)          # "kill -9", then restart
    assert min(after) > max(before)


def test_oid_reservations_are_batched():
    disk = Durable()
    ids = disk.restart()
    for _ in range(OID_RESERVE // 100):
        ids.new_oids(100)
    assert disk.writes <= 2


def test_tids_strictly_increase_and_survive_a_crash():
    disk = Durable()
    ids = disk.restart()
    tids = [ids.new_tid() for _ in range(1000)]
    assert tids == sorted(set(tids))
    later = disk.restart().new_tid()
    assert later > tids[-1]


def test_tid_lags_behind_no_clock_going_backwards():
    ids = Durable().restart()
    future = ids.new_tid(now=time.time() + 3600)
    assert ids.new_tid() > future


def test_tid_partition_matches_its_metadata_partition():
    ids = Durable().restart()
    for partition in range(7):
        assert u64(ids.new_tid(7, partition)) % 7 == partition


def test_take_tid_refuses_the_past():
    ids = Durable().restart()
    last = ids.new_tid()
    with pytest.raises(ValueError, match="not after the last tid"):
        ids.take_tid(last)
    assert ids.take_tid(p64(u64(last) + 10)) == p64(u64(last) + 10)


def test_take_tid_refuses_tids_beyond_the_largest():
    """Regression (fuzz): a restore Begin with tid 0xff..ff crashed the allocator
    (struct.error reserving past it); the allocation is left as it was."""
    ids = Durable().restart()
    last = ids.new_tid()
    with pytest.raises(ValueError, match="beyond the largest tid"):
        ids.take_tid(b"\xff" * 8)
    assert ids.last_tid == last and ids.new_tid() > last


def test_new_oids_refuses_past_the_last_oid():
    """Regression (fuzz): a storage reporting last oid 0xff..ff made NewOids overflow."""
    ids = Durable().restart()
    ids.raise_to((1 << 64) - 3, Z64)
    assert ids.new_oids(2) == [p64((1 << 64) - 2), p64((1 << 64) - 1)]
    with pytest.raises(ValueError, match="no 1 oids left"):
        ids.new_oids(1)


def test_partition_table_spreads_cells_evenly():
    pt = PartitionTable.create(12, 1, [1, 2, 3])
    counts = {n: sum(n in row for row in pt.rows) for n in (1, 2, 3)}
    assert all(len(row) == 2 for row in pt.rows)
    assert set(counts.values()) == {8}
    assert pt.operational({1, 2, 3})
    assert pt.operational({1, 2}) and pt.operational({2, 3}) and not pt.operational({3})


def test_losing_a_node_marks_only_redundant_cells_out_of_date():
    pt = PartitionTable.create(4, 1, [1, 2])
    assert pt.node_lost(2, {1, 2})
    assert all(row[2] == CellState.OUT_OF_DATE and row[1] == CellState.UP_TO_DATE for row in pt.rows)
    assert pt.operational({1})
    # the last readable copy stays UP_TO_DATE: the table is then not operational
    assert not pt.node_lost(1, {1})
    assert all(row[1] == CellState.UP_TO_DATE for row in pt.rows)
    assert not pt.operational(set())


def test_partition_table_round_trips():
    pt = PartitionTable.create(5, 2, [4, 5, 6])
    assert PartitionTable.from_doc(pt.to_doc()) == pt


def test_a_table_persisted_as_letters_loads_as_cell_states(tmp_path):
    """The master's LMDB state keeps cells as the letters it always wrote: a state
    written before the ``CellState`` enum (plain strings) loads into enum members, and
    what the enum writes back is the same letters."""
    old_doc = {"partitions": 2, "replicas": 1, "ptid": 7, "added": [[3, 1, 7]],
               "rows": [[[1, "U"], [2, "F"]], [[2, "O"], [3, "C"]]]}
    db = MasterState(str(tmp_path / "master"))
    db.put(pt=old_doc)
    pt = PartitionTable.from_doc(db.get("pt"))
    assert pt.rows == [{1: CellState.UP_TO_DATE, 2: CellState.FEEDING},
                       {2: CellState.OUT_OF_DATE, 3: CellState.CORRUPTED}]
    assert all(type(s) is CellState for row in pt.rows for s in row.values())
    db.put(pt=pt.to_doc())
    assert db.get("pt") == old_doc          # the same letters on disk, plain strings once read
    db.close()


def test_a_restore_takes_again_a_tid_that_never_committed_only_when_nothing_is_in_progress():
    from master.commit import CommitCore, Txn
    from neoarray.errors import ClusterUnavailable
    core = CommitCore(first_node_id=1, pending_timeout_s=300, finished_max=10, dead_max=10)
    committed, handed_out = p64(100), p64(200)
    assert core.retake_refusal(handed_out, committed) is None
    refusal = core.retake_refusal(committed, committed)
    assert isinstance(refusal, ValueError) and "not after the last committed tid" in str(refusal)
    core.begun[handed_out] = Txn(handed_out, node=7, tid=handed_out)     # the killed import's session lives on
    assert isinstance(core.retake_refusal(handed_out, committed), ClusterUnavailable)
    core.session_ended(7)
    assert core.retake_refusal(handed_out, committed) is None


def test_commits_are_published_after_a_restore_with_an_earlier_tid():
    """A restore takes its tid at Begin; a commit finished meanwhile gets a later tid
    and waits for it, whether the restore then finishes or ends without committing."""
    from master.commit import COMPLETE, CommitCore, Txn
    from master.core import PartitionTable
    pt = PartitionTable.create(1, 0, [1])
    for restore_ends in ("finished", "aborted", "session ended"):
        core = CommitCore(first_node_id=1, pending_timeout_s=300, finished_max=10, dead_max=10)
        restored = p64(100)
        core.begun[restored] = Txn(restored, node=7, tid=restored)
        normal = core.accept_finish(8, p64((8 << 32) | 1), live=True)
        normal.tid, normal.oids = p64(200), [p64(1)]
        core.enqueue(normal)
        core.lock_answers(normal, locked={1}, refused=set(), failed=set())
        assert core.settle(pt, 1, {1}) == [] and normal.outcome == COMPLETE    # held back
        if restore_ends == "finished":
            txn = core.accept_finish(7, restored, live=True)
            txn.oids = [p64(2)]
            core.enqueue(txn)
            assert [t.tid for t in core.queue] == [restored, p64(200)]
            assert core.settle(pt, 1, {1}) == []                   # the restore is not locked yet
            core.lock_answers(txn, locked={1}, refused=set(), failed=set())
            assert [t.tid for t in core.settle(pt, 1, {1})] == [restored, p64(200)]
        else:
            if restore_ends == "aborted":
                core.check_abort(7, restored, lambda node: True)
            else:
                core.session_ended(7)
            assert [t.tid for t in core.settle(pt, 1, {1})] == [p64(200)]
