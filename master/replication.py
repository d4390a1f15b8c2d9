"""Which OUT_OF_DATE cells must copy which transactions: the master's side of catch-up.

Pure (no I/O, no locks): ``Master`` calls it under its lock and persists and
broadcasts the partition table when a method says it changed.

A storage node whose cells went OUT_OF_DATE while it was away accepts writes again as
soon as it is back (its cells are writable), but only from clients that *know* it is
back: a client routes its stores with the partition table and node states it had when
it stored, so a transaction whose stores were routed before the node's return may have
skipped it, and clients make their temporary tids themselves, so the master does not
know which transactions are in flight.  Hence:

- When a node with OUT_OF_DATE cells returns while the cluster is RUNNING (or the
  cluster becomes RUNNING with such a node), the ptid is increased (``returned_ptid``):
  a client that began a transaction with a view at or after it routes every store of
  that transaction to the node.  Each OUT_OF_DATE cell must copy every transaction up
  to the last committed tid at that moment (``until``): later transactions reach the
  node, or are in the commit queue and published after it.
- Every published transaction whose client view is older than a returned node's
  ``returned_ptid`` (``view_ptid`` in ``Finish``; 0, unknown, counts as older) may have
  skipped it: each of that node's cells of a partition the transaction wrote (its
  oids' partitions and its metadata partition) copies up to the transaction's tid too.
  A cell already UP_TO_DATE goes back to OUT_OF_DATE (when another readable copy
  exists), before the transaction's invalidation is sent, so no client reads it stale.
- The node reports the tid it copied each partition up to; once that reaches
  ``until``, the cell is UP_TO_DATE.

Cells created by ``neoctl tweak`` (``master/tweak.py``) follow the same rules, per
cell instead of per node: ``cells_added`` sets their ``until`` to the last committed
tid, and the ptid of their creation (``pt.added``, persisted with the table) plays
the part of ``returned_ptid`` for the partitions they belong to.  The master also
refuses to finish a transaction whose view is so old that no readable cell it could
have stored to remains (``TableAdmin.view_covers``).

``until`` lives in memory: after a master restart, the cluster's becoming RUNNING
counts as the return of every node with OUT_OF_DATE cells, with the tids it
recovered.
"""
from __future__ import annotations

from neoarray.ids import Z64
from neoarray.states import READABLE, CellState


class CatchUp:
    def __init__(self):
        self.returned_ptid: dict[int, int] = {}          # node -> ptid of its return
        self.until: dict[tuple[int, int], bytes] = {}    # (node, partition) -> tid

    @staticmethod
    def out_of_date(pt, node: int) -> list[int]:
        return pt.cells_of(node, CellState.OUT_OF_DATE)

    def node_returned(self, pt, node: int, last_committed: bytes) -> bool:
        """``node`` is writable again; True (ptid increased) when it has cells to copy."""
        for key in [k for k in self.until if k[0] == node]:
            del self.until[key]
        cells = self.out_of_date(pt, node)
        if not cells:
            self.returned_ptid.pop(node, None)
            return False
        pt.ptid += 1
        self.returned_ptid[node] = pt.ptid
        for p in cells:
            self.until[(node, p)] = last_committed
        return True

    def committed(self, pt, running: set[int], tid: bytes, view_ptid: int, partitions,
                  storages=None) -> bool:
        """A transaction was published; True when a cell went back to OUT_OF_DATE.

        ``partitions``: a callable giving the partitions the transaction wrote (only
        computed when some returned node is newer than the client's view, or some
        running node with cells is not among ``storages``, the nodes that voted it:
        a client goes on without a copy that did not answer, and that copy must not
        be read before it copied the transaction).
        """
        stale = [n for n, since in self.returned_ptid.items() if view_ptid < since and n in running]
        added = [key for key, since in pt.added.items() if view_ptid < since and key[0] in running]
        # running nodes that did not vote: those with a cell of a partition written skipped
        # it (found below from those partitions' rows, not from every cell of the table,
        # which would cost each commit O(cells): 360,000 of them on 1,000 nodes)
        not_voters = set() if storages is None else running - set(storages)
        if not stale and not added and not not_voters:
            return False
        changed = False
        touched = partitions()
        for p in touched:
            for node in [n for n in pt.rows[p] if n in not_voters]:
                changed |= self._missed(pt, running, node, p, tid)
        for node in stale:
            for p in touched:
                changed |= self._missed(pt, running, node, p, tid)
        for node, p in added:
            if p in touched and node in pt.rows[p]:
                changed |= self._missed(pt, running, node, p, tid)
        if changed:
            pt.ptid += 1
        return changed

    def _missed(self, pt, running, node: int, p: int, tid: bytes) -> bool:
        row = pt.rows[p]
        state = row.get(node)
        if state == CellState.OUT_OF_DATE:
            self.until[(node, p)] = max(self.until.get((node, p), Z64), tid)
        elif state in READABLE and any(n != node and s in READABLE and n in running for n, s in row.items()):
            if state == CellState.FEEDING:        # it was leaving: it goes now
                pt.remove(node, p)
                return True
            pt.set_cell(p, node, CellState.OUT_OF_DATE)
            self.until[(node, p)] = tid
            return True
        return False

    def cells_added(self, pt, cells, last_committed: bytes) -> None:
        """New OUT_OF_DATE ``cells`` ``[(node, partition)]`` copy up to ``last_committed``
        (later transactions reach them, or are caught by ``committed``)."""
        for key in cells:
            self.until[key] = last_committed

    def forget(self, node: int, p: int) -> None:
        """The cell left the table."""
        self.until.pop((node, p), None)

    def replicated(self, pt, node: int, p: int, tid: bytes, unpublished=None) -> bool:
        """``node`` copied partition ``p`` up to ``tid``; True when its cell became
        UP_TO_DATE (the caller increases nothing: the ptid is increased here).
        ``unpublished()`` (when given): True while a transaction the cell may miss is
        committed and not yet published (``CommitCore.unpublished_on``): the cell
        stays OUT_OF_DATE until it is."""
        if not 0 <= p < len(pt.rows) or pt.rows[p].get(node) != CellState.OUT_OF_DATE:
            return False
        until = self.until.get((node, p))
        if until is None or tid < until or (unpublished is not None and unpublished()):
            return False
        pt.set_cell(p, node, CellState.UP_TO_DATE)
        del self.until[(node, p)]
        pt.ptid += 1
        return True

    def tasks(self, pt, node: int, running: set[int], last_committed: bytes) -> list[tuple[int, bytes, list[int]]]:
        """``[(partition, until, source nodes)]`` for each OUT_OF_DATE cell of ``node``."""
        out = []
        for p in self.out_of_date(pt, node):
            until = self.until.setdefault((node, p), last_committed)
            sources = [n for n, s in sorted(pt.rows[p].items()) if s in READABLE and n in running and n != node]
            out.append((p, until, sources))
        return out
