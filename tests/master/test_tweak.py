"""The tweak planner (master/tweak.py): even spread, minimal movement, idempotence, hosts."""
import pytest

from master.core import PartitionTable
from master.tweak import TweakError, changes, plan
from neoarray.states import CellState


def counts(rows):
    out = {}
    for row in rows:
        for n, s in row.items():
            if s != CellState.FEEDING:
                out[n] = out.get(n, 0) + 1
    return out


def settle(rows):
    """The table once every new cell caught up and FEEDING cells left."""
    return [{n: CellState.UP_TO_DATE for n, s in row.items() if s != CellState.FEEDING} for row in rows]


def test_new_node_gets_an_even_share_with_minimal_movement():
    rows = PartitionTable.create(12, 1, [1, 2]).rows
    hosts = {1: "h", 2: "h", 3: "h"}
    new = plan(rows, 1, hosts, {1, 2, 3})
    assert counts(new) == {1: 8, 2: 8, 3: 8}
    diff = changes(rows, new)
    assert sorted({(old, st) for _, _, old, st in diff}) == [("", CellState.OUT_OF_DATE), (CellState.UP_TO_DATE, CellState.FEEDING)]
    assert sum(1 for *_, st in diff if st == CellState.OUT_OF_DATE) == 8      # only S3's share moves
    for row in new:
        assert sum(1 for s in row.values() if s != CellState.FEEDING) == 2
    # idempotent, both while the move runs and once it is over
    assert changes(new, plan(new, 1, hosts, {1, 2, 3})) == []
    done = settle(new)
    assert changes(done, plan(done, 1, hosts, {1, 2, 3})) == []


def test_emptying_a_node_and_changing_replicas():
    rows = settle(plan(PartitionTable.create(6, 1, [1, 2]).rows, 1, {1: "a", 2: "a", 3: "a"}, {1, 2, 3}))
    new = plan(rows, 1, {2: "a", 3: "a"}, {1, 2, 3})           # empty S1
    assert all(row.get(1) in (None, CellState.FEEDING) for row in new) and counts(new) == {2: 6, 3: 6}
    more = plan(settle(new), 2, {1: "a", 2: "a", 3: "a"}, {1, 2, 3})
    assert counts(more) == {1: 6, 2: 6, 3: 6}
    fewer = plan(settle(more), 0, {1: "a", 2: "a", 3: "a"}, {1, 2, 3})
    assert counts(fewer) == {1: 2, 2: 2, 3: 2}
    assert all(s in (CellState.UP_TO_DATE, CellState.FEEDING) for row in fewer for s in row.values())   # nothing copied
    with pytest.raises(TweakError, match="need at least 3"):
        plan(rows, 2, {1: "a", 2: "a"}, {1, 2})


def test_replicas_go_to_different_hosts():
    rows = [{1: CellState.UP_TO_DATE, 2: CellState.UP_TO_DATE} for _ in range(8)]     # S1 and S2 share host a
    hosts = {1: "a", 2: "a", 3: "b", 4: "b"}
    new = settle(plan(rows, 1, hosts, set(hosts)))
    assert counts(new) == {1: 4, 2: 4, 3: 4, 4: 4}
    assert all(len({hosts[n] for n in row}) == 2 for row in new)
    assert changes(new, plan(new, 1, hosts, set(hosts))) == []


def test_down_and_corrupted_cells_are_not_kept():
    rows = [{1: CellState.UP_TO_DATE, 2: CellState.OUT_OF_DATE}, {1: CellState.UP_TO_DATE, 2: "C"}]
    new = plan(rows, 1, {1: "a", 3: "a"}, {1, 3})                  # S2 is down
    assert new == [{1: CellState.UP_TO_DATE, 3: CellState.OUT_OF_DATE}, {1: CellState.UP_TO_DATE, 3: CellState.OUT_OF_DATE}]


def test_table_bookkeeping_of_added_and_fed_cells():
    pt = PartitionTable.create(2, 1, [1, 2])
    pt.set_rows(plan(pt.rows, 1, {1: "a", 2: "a", 3: "a"}, {1, 2, 3}))
    assert set(pt.added.values()) == {pt.ptid}
    assert pt.fed({1, 2, 3}) == []
    for (n, p) in list(pt.added):
        pt.set_cell(p, n, CellState.UP_TO_DATE)
    pt.ptid += 1
    fed = pt.fed({1, 2, 3})
    assert fed and all(pt.rows[p][n] == CellState.FEEDING for n, p in fed)
    assert PartitionTable.from_doc(pt.to_doc()) == pt
    assert "last readable copy" in pt.drop_refusal(3, {3}) and pt.drop_refusal(3, {1, 2, 3}) is None


def test_a_tweak_applied_feeds_until_the_new_cells_caught_up_and_older_views_ended():
    """``master/table_core.py``: the moved cells FEED, the new ones catch up to the last
    committed tid; a FEEDING cell leaves only once its partition has an UP_TO_DATE
    cell and none OUT_OF_DATE, and no queued commit of an older view writes it."""
    from master import table_core
    from master.commit import Txn
    from master.replication import CatchUp
    from neoarray.errors import RequestRefused
    from neoarray.ids import p64

    pt = PartitionTable.create(2, 0, [1])
    catchup = CatchUp()
    with pytest.raises(RequestRefused, match="tweak"):
        table_core.plan(pt, {}, {1})                           # no node to spread over
    rows, diff = table_core.plan(pt, {2: "h"}, {1, 2})         # off S1, onto S2
    old_ptid = pt.ptid
    added, gone = table_core.apply(pt, catchup, rows, diff, {1, 2}, p64(7), [], 2)
    assert (added, gone) == ({2}, [])
    assert pt.rows == [{1: CellState.FEEDING, 2: CellState.OUT_OF_DATE}] * 2 and pt.ptid > old_ptid
    assert catchup.until == {(2, 0): p64(7), (2, 1): p64(7)}
    assert table_core.drop_fed(pt, catchup, {1, 2}, [], 2) == []                  # still catching up
    pt.set_cell(0, 2, CellState.UP_TO_DATE)
    older = Txn(p64(1 << 32), 1)                                 # writes partition 0, an older view
    older.oids, older.tid, older.view_ptid = [p64(0)], p64(2), old_ptid
    assert table_core.drop_fed(pt, catchup, {1, 2}, [older], 2) == []
    ptid = pt.ptid
    assert table_core.drop_fed(pt, catchup, {1, 2}, [], 2) == [(1, 0)]
    assert pt.rows[0] == {2: CellState.UP_TO_DATE} and pt.ptid == ptid + 1
    assert pt.rows[1] == {1: CellState.FEEDING, 2: CellState.OUT_OF_DATE}
