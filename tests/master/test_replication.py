"""The master's catch-up bookkeeping (``master.replication.CatchUp``), pure."""
from master.core import PartitionTable
from master.replication import CatchUp
from neoarray.ids import p64
from neoarray.states import CellState


def table():
    pt = PartitionTable.create(2, 1, [1, 2])        # both nodes hold both partitions
    pt.node_lost(2, {1, 2})                         # S2 went away: its cells are O
    return pt


def test_return_sets_until_and_increases_the_ptid():
    pt, c = table(), CatchUp()
    ptid = pt.ptid
    assert c.node_returned(pt, 2, p64(100))
    assert pt.ptid == ptid + 1 and c.returned_ptid[2] == pt.ptid
    assert c.tasks(pt, 2, {1, 2}, p64(999)) == [(0, p64(100), [1]), (1, p64(100), [1])]
    assert not c.node_returned(pt, 1, p64(100))    # nothing to copy: no ptid change


def test_report_marks_up_to_date_only_at_until():
    pt, c = table(), CatchUp()
    c.node_returned(pt, 2, p64(100))
    assert not c.replicated(pt, 2, 0, p64(99))
    assert c.replicated(pt, 2, 0, p64(100))
    assert pt.rows[0][2] == CellState.UP_TO_DATE and pt.rows[1][2] == CellState.OUT_OF_DATE
    assert not c.replicated(pt, 2, 0, p64(100))    # already UP_TO_DATE
    assert not c.replicated(pt, 2, 7, p64(100))    # out of range: ignored


def test_transaction_of_an_older_view_is_copied_too():
    pt, c = table(), CatchUp()
    c.node_returned(pt, 2, p64(100))
    since = c.returned_ptid[2]
    # a view at the return routes to S2: nothing to do, and the partitions are not computed
    assert not c.committed(pt, {1, 2}, p64(110), since, lambda: 1 / 0)
    # an older view: S2's cell of partition 1 must copy up to 120
    assert not c.committed(pt, {1, 2}, p64(120), since - 1, lambda: {1})
    assert c.tasks(pt, 2, {1, 2}, p64(0))[1][1] == p64(120)
    assert not c.replicated(pt, 2, 1, p64(100))
    # partition 0 caught up, then an old-view transaction writes it: back to O
    assert c.replicated(pt, 2, 0, p64(100))
    ptid = pt.ptid
    assert c.committed(pt, {1, 2}, p64(130), 0, lambda: {0})
    assert pt.rows[0][2] == CellState.OUT_OF_DATE and pt.ptid == ptid + 1
    assert c.tasks(pt, 2, {1, 2}, p64(0))[0] == (0, p64(130), [1])


def test_sole_readable_copy_is_never_turned_out_of_date():
    pt, c = table(), CatchUp()
    c.node_returned(pt, 2, p64(100))
    c.replicated(pt, 2, 0, p64(100))
    # S1 is not running: S2 holds the only readable copy of partition 0
    assert not c.committed(pt, {2}, p64(130), 0, lambda: {0})
    assert pt.rows[0][2] == CellState.UP_TO_DATE


def test_running_nodes_that_did_not_vote_copy_only_the_partitions_written():
    pt, c = PartitionTable.create(3, 1, [1, 2, 3, 4]), CatchUp()    # rows: {1,2} {2,3} {3,4}
    pt.rows.append({1: CellState.UP_TO_DATE, 4: CellState.UP_TO_DATE})                  # partition 3: {1,4}
    running, ptid = {1, 2, 3, 4, 5}, pt.ptid                        # S5 runs and holds no cell
    # every holder of what it wrote voted: nothing to copy, and S5 changes nothing
    assert not c.committed(pt, running, p64(10), pt.ptid, lambda: {0}, storages=[1, 2])
    # voted on S1 only (S2 did not answer) for partitions 0 and 3: S2 and S4 copy them
    assert c.committed(pt, running, p64(20), pt.ptid, lambda: {0, 3}, storages=[1])
    assert pt.ptid == ptid + 1
    assert pt.rows[0] == {1: CellState.UP_TO_DATE, 2: CellState.OUT_OF_DATE}
    assert pt.rows[3] == {1: CellState.UP_TO_DATE, 4: CellState.OUT_OF_DATE}
    assert pt.rows[1] == {2: CellState.UP_TO_DATE, 3: CellState.UP_TO_DATE}             # not written: untouched
    assert c.tasks(pt, 4, running, p64(99)) == [(3, p64(20), [1])]
