"""``neoctl truncate TID``: delete every transaction after TID, on every node.

A mixin of ``Master`` (``master/node.py``).  The order of events:

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
   at its next start (``apply_pending_truncate`` during verification).
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

from neoarray import wire
from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import checked_id
from neoarray.proto import storage_pb2 as spb
from neoarray.states import NodeType

log = logging.getLogger("neoarray.master")


class Truncation:
    truncate_wait_s = 60.0        # finishing transactions must end within this

    def _load_truncation(self) -> None:
        self.truncating = False
        self.client_fence = self.state_db.get("client_fence", 0)
        self.truncate_pending = self.state_db.get("truncate_pending")   # {tid, until, nodes}

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
                self._truncate_call(nid, tid, until, check_only=True)
            changed = True
            with self.lock:
                self.commits.begun.clear()
                self.client_fence = self.state_db.get("next_node_id", 1)
                self.truncate_pending = {"tid": tid, "until": until, "nodes": sorted(nodes)}
                self.state_db.put(client_fence=self.client_fence, truncate_pending=self.truncate_pending)
            totals = self._truncate_everywhere(nodes)
            with self.lock:
                self.last_committed = tid
            log.warning("cluster truncated to 0x%s (transactions up to 0x%s removed)", tid.hex(), until.hex())
            return {"tid": tid, "until": until, **totals}
        finally:
            with self.lock:
                self.truncating = False
            if changed:
                self._disconnect_clients()

    def _truncate_start(self, tid: bytes) -> list[int]:
        with self.lock:
            self.require_running()
            if self.truncate_pending:
                raise RequestRefused(f"a truncation to 0x{self.truncate_pending['tid'].hex()} is still "
                                     f"pending on S{self.truncate_pending['nodes']}: start them first")
            if tid > self.last_committed:
                raise RequestRefused(f"truncate to 0x{tid.hex()} refused: it is after the last "
                                     f"committed transaction 0x{self.last_committed.hex()}")
            running = self.running_storages()
            down = sorted(self.pt.nodes() - running)
            if down:
                raise RequestRefused(f"truncate refused: storage nodes {', '.join(f'S{n}' for n in down)} "
                                     f"hold cells and are not running (start them, or drop them first)")
            self.truncating = True
            return sorted(running & self.members())

    def _drain_commits(self) -> bytes:
        deadline = time.monotonic() + self.truncate_wait_s
        while True:
            with self.lock:
                if not self.commits.queue:
                    return self.last_committed
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"truncate: transactions still finishing after "
                                         f"{self.truncate_wait_s} s; nothing was changed, retry")
            time.sleep(0.01)

    def _truncate_call(self, nid: int, tid: bytes, until: bytes, check_only: bool = False):
        return wire.call(self.storage_stub(nid).Truncate,
                         spb.StorageTruncateRequest(tid=tid, until_tid=until, check_only=check_only),
                         self.limits.lock_timeout_s, f"truncate on S{nid}")

    def _truncate_everywhere(self, nodes: list[int]) -> dict:
        totals = {"transactions": 0, "revisions": 0}
        for nid in nodes:
            replies: list = []

            def order(nid=nid, replies=replies):
                replies.append(self.apply_pending_truncate(nid))
            if self._until_done(nid, order, f"truncate on S{nid}") and replies[-1] is not None:
                totals["transactions"] += replies[-1].transactions_removed
                totals["revisions"] += replies[-1].revisions_removed
        return totals

    def apply_pending_truncate(self, nid: int):
        """Send the pending truncation order to ``nid`` and forget it for that node;
        the reply, or None when there is no order for it.  Failures raise."""
        with self.lock:
            pending = self.truncate_pending
            if not pending or nid not in pending["nodes"]:
                return None
        reply = self._truncate_call(nid, pending["tid"], pending["until"])
        with self.lock:
            if self.truncate_pending is pending and nid in pending["nodes"]:
                pending["nodes"].remove(nid)
                if not pending["nodes"]:
                    self.truncate_pending = None
                self.state_db.put(truncate_pending=self.truncate_pending)
        return reply

    def truncate_blocks(self, nid: int) -> bool:
        """Whether ``nid`` still has a truncation to apply (its cells must not become
        UP_TO_DATE before: they could hold removed transactions)."""
        pending = self.truncate_pending
        return bool(pending) and nid in pending["nodes"]

    def truncation_fences(self, ttid_owner: int) -> bool:
        """A client-made ttid of a client identified before the last truncation."""
        return 0 < ttid_owner < self.client_fence

    def _disconnect_clients(self) -> None:
        with self.lock:
            for nid, q in list(self.subscribers.items()):
                node = self.nodes.get(nid)
                if node is not None and node.type == NodeType.CLIENT:
                    self._push(q, None)
