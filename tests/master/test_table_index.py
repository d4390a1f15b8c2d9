"""The partition table's index of cells by state (``PartitionTable.cells``), which
heartbeats, commits and verdicts read instead of scanning every partition, follows
every change the master makes: random sequences of the master's table operations,
the index's answers compared with a scan of the rows after each step."""
import random

import pytest

from master import tweak
from master.core import PartitionTable
from master.replication import CatchUp
from neoarray.ids import p64
from neoarray.states import READABLE, CellState


def scanned_out_of_date(pt, node):
    return [p for p, row in enumerate(pt.rows) if row.get(node) == CellState.OUT_OF_DATE]


def scanned_index(pt):
    index = {}
    for p, row in enumerate(pt.rows):
        for n, s in row.items():
            index.setdefault(s, {}).setdefault(n, []).append(p)
    return index


def scanned_fed(pt, running):
    return [(n, p) for p, row in enumerate(pt.rows)
            if CellState.OUT_OF_DATE not in row.values() and any(s == CellState.UP_TO_DATE and m in running for m, s in row.items())
            for n, s in sorted(row.items()) if s == CellState.FEEDING]


def step(rnd, pt, catchup, running, nodes, tid):
    op = rnd.randrange(6)
    if op == 0 and len(running) > 2:                      # a node is lost
        node = rnd.choice(sorted(running))
        pt.node_lost(node, running)
        running.discard(node)
    elif op == 1:                                         # a lost node returns
        down = sorted(set(nodes) - running)
        if down:
            running.add(down[0])
            catchup.node_returned(pt, down[0], p64(tid))
    elif op == 2:                                         # catch-up reports
        for node in sorted(running):
            for p, until, _ in catchup.tasks(pt, node, running, p64(tid)):
                if rnd.random() < 0.5:
                    catchup.replicated(pt, node, p, until)
    elif op == 3:                                         # a commit some nodes did not vote
        touched = set(rnd.sample(range(pt.partitions), 2))
        voters = [n for p in touched for n, s in pt.rows[p].items() if s in READABLE and n in running][:1]
        catchup.committed(pt, running, p64(tid), rnd.randrange(pt.ptid + 1), lambda: touched, voters)
    elif op == 4 and len(running) >= pt.replicas + 1:     # neoctl tweak
        pt.set_rows(tweak.plan(pt.rows, pt.replicas, {n: f"h{n}" for n in running}, running))
        catchup.cells_added(pt, [k for k, since in pt.added.items() if since == pt.ptid], p64(tid))
    else:                                                 # fed cells leave (Master._drop_fed)
        gone = pt.fed(running)
        for n, p in gone:
            pt.remove(n, p)
            catchup.forget(n, p)
        if gone:
            pt.ptid += 1


@pytest.mark.parametrize("seed", range(40))
def test_the_cell_index_follows_every_change_of_the_table(seed):
    rnd = random.Random(seed)
    nodes = list(range(1, rnd.randrange(3, 7)))
    pt, catchup = PartitionTable.create(rnd.randrange(4, 24), rnd.randrange(1, 3), nodes[:-1]), CatchUp()
    running = set(nodes)
    for tid in range(1, 120):
        step(rnd, pt, catchup, running, nodes, tid)
        assert pt.cells() == scanned_index(pt)
        for node in nodes:
            assert pt.cells_of(node, CellState.OUT_OF_DATE) == scanned_out_of_date(pt, node)
        assert pt.fed(running) == scanned_fed(pt, running)
        assert pt.nodes() == {n for row in pt.rows for n in row}


def test_cells_change_only_through_the_table():
    """A cell written straight into ``pt.rows`` would leave the index behind."""
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[2] / "master"
    write = re.compile(r"\brows?\[[^\]]+\](\[[^\]]+\])?\s*=(?!=)|\brows?\[[^\]]+\]\.(pop|update|clear|setdefault)\(")
    found = [f"{path.name}:{i}: {line.strip()}"
             for path in sorted(root.glob("*.py")) if path.name != "core.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if write.search(line)]
    assert found == []
