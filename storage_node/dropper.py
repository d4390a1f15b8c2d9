"""Deleting the data of partitions this node no longer has a cell of.

A cell leaves a node when ``neoctl tweak`` moved it elsewhere (its FEEDING cell is
dropped once the new copy is UP_TO_DATE) or ``neoctl drop`` removed the node: the
master only removes a cell when a readable copy remains elsewhere, so the data is
dead weight here.  The node learns the table when it identifies, when the master
pushes one, and when a heartbeat reply shows a newer ptid.

Safety: only partitions without any cell of this node in the newest table the node
knows are dropped, never while that table is empty (not created yet); each batch is
deleted under the manager's write mutex after checking again that the partition is
still not ours, so a cell given back (tweak again) stops the deletion before its
catch-up writes anything (replication writes under the same mutex, and stops writing
once the partition is not ours).  A commit locked here after the node left the
partition (its client stored with an older table) writes rows again: the lock tells
the dropper under the same mutex (``written``), which goes over that partition again,
so nothing is left behind for good.  Batches are
bounded (``drop_rows_per_batch_max`` rows per LMDB transaction) so commits go on
between them.
"""
from __future__ import annotations

import logging
import threading

from .replication import drop_progress

log = logging.getLogger("neoarray.storage")


def partitions_of(pt, node_id: int, state=None) -> set[int]:
    """Partitions where ``node_id`` has a cell in ``pt`` (of ``state``, if given)."""
    return {p for p, row in enumerate(pt.rows)
            if any(c.node_id == node_id and (state is None or c.state == state) for c in row.cells)}


class PartitionDropper:
    def __init__(self, node, rows_per_batch_max: int = 10_000):
        self.node = node
        self.rows_per_batch_max = rows_per_batch_max
        self.mutex = threading.Lock()
        self.orphans: set[int] = set()          # partitions with no cell of this node
        self.emptied: set[int] = set()          # orphans found empty (until the table changes)
        self.wakeup = threading.Event()
        self.rows_dropped = 0
        self.thread = threading.Thread(target=self._loop, daemon=True, name="partition-dropper")

    def start(self) -> None:
        self.thread.start()

    def table_changed(self, pt) -> None:
        """The newest partition table the node knows (``cpb.PartitionTable``)."""
        if not pt.rows:
            return
        mine = partitions_of(pt, self.node.node_id)
        with self.mutex:
            self.orphans = set(range(len(pt.rows))) - mine
            self.emptied &= self.orphans
        if self.orphans:
            self.wakeup.set()

    def still_orphan(self, p: int) -> bool:
        with self.mutex:
            return p in self.orphans

    def written(self, partitions: set[int]) -> None:
        """Rows were just written to ``partitions`` (called under the write mutex):
        an orphan among them is dropped again."""
        with self.mutex:
            again = partitions & self.emptied
            self.emptied -= again
        if again:
            self.wakeup.set()

    def _loop(self) -> None:
        while not self.node.stopped.is_set():
            self.wakeup.wait(1.0)
            self.wakeup.clear()
            with self.mutex:
                todo = sorted(self.orphans - self.emptied)
            for p in todo:
                self._drop(p)

    def _drop(self, p: int) -> None:
        backend, manager = self.node.backend, self.node.manager
        total = 0
        while not self.node.stopped.is_set():
            with manager.write_mutex:
                if not self.still_orphan(p):
                    break
                if not total:     # a cell given back mid-way copies everything again
                    drop_progress(backend, p)
                removed = backend.drop_partition(p, self.rows_per_batch_max)
                if not removed:     # under the write mutex: a later lock calls written()
                    with self.mutex:
                        self.emptied.add(p)
                    break
            total += removed
        if total:
            self.rows_dropped += total
            log.info("dropped %d rows of partition %d: this node has no cell of it any more", total, p)
