"""Partition-table changes decided without I/O: ``neoctl tweak`` and the end of the
FEEDING cells it leaves, for the master (``master/table_admin.py``, which holds the
lock, persists and broadcasts) and the simulation (``simulation/master.py``).

A tweak (``master/tweak.py`` plans the rows) turns every cell it moves away into
FEEDING (still read and written) and adds OUT_OF_DATE cells, which catch up from
the last committed tid (``CatchUp.cells_added``).  A FEEDING cell leaves the table
once its partition has an UP_TO_DATE cell on a running node and no OUT_OF_DATE
cell left (``PartitionTable.fed``), and only when no transaction in the commit
queue with an older view of the table (which may have stored to that cell and not
to the new ones) writes its partition.
"""
from __future__ import annotations

from neoarray.errors import RequestRefused
from neoarray.states import CellState

from . import tweak as planner
from .commit import written


def plan(pt, hosts: dict[int, str], running: set[int]) -> tuple[list, list[tuple[int, int, str, str]]]:
    """The rows a tweak spreads over the nodes of ``hosts`` (node -> host name) and
    their changes ``(partition, node, old state, new state)``; ``RequestRefused``
    when it cannot."""
    try:
        rows = planner.plan(pt.rows, pt.replicas, hosts, running)
    except planner.TweakError as exc:
        raise RequestRefused(f"tweak: {exc}") from None
    return rows, planner.changes(pt.rows, rows)


def apply(pt, catchup, rows, diff, running: set[int], last_committed: bytes, queue,
          partitions: int) -> tuple[set[int], list[tuple[int, int]]]:
    """Make ``rows`` the table (a new ptid): the cells that left it are forgotten by
    the catch-up, the new ones catch up to ``last_committed``, and FEEDING cells
    already replaced leave (``drop_fed``).  Returns the nodes given new cells and
    the FEEDING cells that left."""
    pt.set_rows(rows)
    for p, n, old, new in diff:
        if not new:
            catchup.forget(n, p)
    added = [(n, p) for p, n, old, new in diff if new == CellState.OUT_OF_DATE and not old]
    catchup.cells_added(pt, added, last_committed)
    return {n for n, _ in added}, drop_fed(pt, catchup, running, queue, partitions)


def drop_fed(pt, catchup, running: set[int], queue, partitions: int) -> list[tuple[int, int]]:
    """Remove the FEEDING cells whose replacements caught up (a new ptid when any):
    ``(node, partition)`` of each."""
    gone = [(n, p) for n, p in pt.fed(running) if not older_views_touch(pt, queue, partitions, p)]
    for n, p in gone:
        pt.remove(n, p)
        catchup.forget(n, p)
    if gone:
        pt.ptid += 1
    return gone


def older_views_touch(pt, queue, partitions: int, p: int) -> bool:
    """Some transaction of ``queue`` (being finished) has a view older than the table
    and writes partition ``p``."""
    return any(t.view_ptid < pt.ptid and p in written(t, partitions) for t in queue)
