"""``neoctl truncate TID``: delete every transaction after TID, on every node.

An object of ``Master`` (``master/node.py``: ``master.truncation``), given the master:
it reads the cluster's table, commit queue and last tid there, and sends its orders
through ``Master.truncate_on`` (the master's shell to the storage nodes).  The order
of events:

1. Refusals first, before anything changes: the cluster must be RUNNING, TID must not
   be after the last committed transaction, every node holding cells must run (a down
   node would keep the transactions after TID in cells that become readable again),
   and no node may have been packed after TID (asked with ``check_only``).
2. ``truncating`` makes Begin, NewOids and Finish answer UNAVAILABLE; the transactions
   already finishing end first (at most ``truncate_wait_s``).
3. The order ``(tid, until]`` (``until``: the last committed tid) is persisted with the
   nodes that must apply it, and so is the client fence: clients identified so far may
   not finish a transaction any more (their ttids carry their node id; a client gets a
   new id when it reconnects).  A crash of the master from here on finishes the order
   at its next start (``apply_pending`` during verification).
4. Every node deletes the window and drops its stored and voted transactions.  A node
   that does not answer keeps the order pending: it applies it when it identifies
   again, and its cells stay OUT_OF_DATE until then.  The window is bounded above, so a
   late order never deletes what was committed after the truncation (new tids are
   always above ``until``: the tid allocator never goes back).
5. Every client is disconnected: it reconnects and drops its caches, as after a master
   restart, so that no one reads a revision that is gone.
"""
from __future__ import annotations

import logging
import time

from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import checked_id

log = logging.getLogger("neoarray.master")


class Truncation:
    """The truncation state of ``master`` (a ``Master``) and its ``truncate`` order;
    ``truncating`` makes the master refuse new commits meanwhile."""
    truncate_wait_s = 60.0        # finishing transactions must end within this

    def __init__(self, master):
        self.m = master
        self.truncating = False
        self.client_fence = master.state_db.get("client_fence", 0)
        self.truncate_pending = master.state_db.get("truncate_pending")   # {tid, until, nodes}

    def truncate(self, tid: bytes) -> dict:
        """Truncate the cluster after ``tid``; returns the figures of the reply."""
        tid = checked_id(tid, "tid")
        nodes = self._truncate_start(tid)
        changed = False
        try:
            until = self._drain_commits()
            if until <= tid:
                return {"tid": tid, "until": until, "transactions": 0, "revisions": 0}
            for nid in nodes:
                self.m.truncate_on(nid, tid, until, check_only=True)
            changed = True
            with self.m.lock:
                self.m.commits.begun.clear()
                self.client_fence = self.m.state_db.get("next_node_id", 1)
                self.truncate_pending = {"tid": tid, "until": until, "nodes": sorted(nodes)}
                self.m.state_db.put(client_fence=self.client_fence, truncate_pending=self.truncate_pending)
            totals = self._truncate_everywhere(nodes)
            with self.m.lock:
                self.m.last_committed = tid
            log.warning("cluster truncated to 0x%s (transactions up to 0x%s removed)", tid.hex(), until.hex())
            return {"tid": tid, "until": until, **totals}
        finally:
            with self.m.lock:
                self.truncating = False
            if changed:
                self.m.disconnect_clients()

    def _truncate_start(self, tid: bytes) -> list[int]:
        with self.m.lock:
            self.m.require_running()
            if self.truncate_pending:
                raise RequestRefused(f"a truncation to 0x{self.truncate_pending['tid'].hex()} is still "
                                     f"pending on S{self.truncate_pending['nodes']}: start them first")
            if tid > self.m.last_committed:
                raise RequestRefused(f"truncate to 0x{tid.hex()} refused: it is after the last "
                                     f"committed transaction 0x{self.m.last_committed.hex()}")
            running = self.m.running_storages()
            down = sorted(self.m.pt.nodes() - running)
            if down:
                raise RequestRefused(f"truncate refused: storage nodes {', '.join(f'S{n}' for n in down)} "
                                     f"hold cells and are not running (start them, or drop them first)")
            self.truncating = True
            return sorted(running & self.m.admin.members())

    def _drain_commits(self) -> bytes:
        deadline = time.monotonic() + self.truncate_wait_s
        while True:
            with self.m.lock:
                if not self.m.commits.queue:
                    return self.m.last_committed
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"truncate: transactions still finishing after "
                                         f"{self.truncate_wait_s} s; nothing was changed, retry")
            time.sleep(0.01)

    def _truncate_everywhere(self, nodes: list[int]) -> dict:
        totals = {"transactions": 0, "revisions": 0}
        for nid in nodes:
            replies: list = []

            def order(nid=nid, replies=replies):
                replies.append(self.apply_pending(nid))
            if self.m._until_done(nid, order, f"truncate on S{nid}") and replies[-1] is not None:
                transactions, revisions = replies[-1]
                totals["transactions"] += transactions
                totals["revisions"] += revisions
        return totals

    def apply_pending(self, nid: int) -> tuple[int, int] | None:
        """Send the pending truncation order to ``nid`` and forget it for that node;
        ``(transactions, revisions)`` it removed, or None when there is no order for
        it.  Failures raise."""
        with self.m.lock:
            pending = self.truncate_pending
            if not pending or nid not in pending["nodes"]:
                return None
        reply = self.m.truncate_on(nid, pending["tid"], pending["until"])
        with self.m.lock:
            if self.truncate_pending is pending and nid in pending["nodes"]:
                pending["nodes"].remove(nid)
                if not pending["nodes"]:
                    self.truncate_pending = None
                self.m.state_db.put(truncate_pending=self.truncate_pending)
        return reply

    def blocks(self, nid: int) -> bool:
        """Whether ``nid`` still has a truncation to apply (its cells must not become
        UP_TO_DATE before: they could hold removed transactions)."""
        pending = self.truncate_pending
        return bool(pending) and nid in pending["nodes"]

    def fences(self, ttid_owner: int) -> bool:
        """A client-made ttid of a client identified before the last truncation."""
        return 0 < ttid_owner < self.client_fence
