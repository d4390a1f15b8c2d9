"""The master's commit path (``Begin``, ``Abort``, ``Finish`` and the Lock orders),
as the rules of ``master/commit.py`` say.

A mixin of ``Master`` (``master/node.py``): ``CommitCore`` (``self.commits``) and
``CommitFlow`` (``self.flow``, ``master/flow.py``) decide and return actions; these
methods hold ``self.lock`` while they call them, carry the actions out
(``_carry_out``), and call the storage nodes outside the lock.

A published commit's invalidation goes to every subscriber but the session that made
it: that client learns its commit from the Finish answer (the tid, and the tid
published just before it, which tells it when its event stream has delivered every
earlier commit: ``NeoStorage.tpc_finish``), as ZEO answers its committer.  Per small
commit of a lone client that is one frame and one wake-up fewer on the master and on
the client.
"""
from __future__ import annotations

import logging

from neoarray.errors import ClusterUnavailable, LimitExceeded, RequestRefused
from neoarray.ids import checked_id
from neoarray.states import NodeType

from .commit import COMPLETE, Txn, owner_of
from .flow import AbortOn, Done, Publish, TableChanged, Unlock

log = logging.getLogger("neoarray.master")


def _refused(exc: Exception) -> bool:
    """A storage answered with a refusal (``RequestRefused``, INVALID_ARGUMENT at the
    wire), not a failure to answer (a limit it applies is not a refusal of the lock)."""
    return isinstance(exc, RequestRefused) and not isinstance(exc, LimitExceeded)


class Committing:
    """Begin, abort and finish of transactions (mixin of ``Master``)."""

    def begin(self, node: int, tid: bytes) -> bytes:
        retaken = False
        with self.lock:
            self.require_running()
            self.require_writer(node, "Begin")
            mine = sum(1 for t in self.commits.begun.values() if t.node == node)
            if mine >= self.limits.transactions_per_client_max:
                raise LimitExceeded(f"client C{node} has {mine} open transactions, "
                                     f"transactions_per_client_max={self.limits.transactions_per_client_max}")
            if not tid:
                ttid = self.ids.new_tid()
            elif checked_id(tid, "tid") > self.ids.last_tid:
                ttid = self.ids.take_tid(tid)
            else:
                ttid = retaken = self._retake_tid(tid)
            self.commits.begun[ttid] = Txn(ttid, node, tid=tid or None)
            storages = sorted(self.running_storages())
        if retaken:
            self._abort_stale(ttid, storages)
        return ttid

    def _retake_tid(self, tid: bytes) -> bytes:
        """A restore asks for ``tid``, handed out before (under ``self.lock``): an import
        killed between Begin and Finish, or a tid reservation of a restarted master.
        It may take it again when nothing is committed after it and no transaction is
        in progress (``CommitCore.retake_refusal``)."""
        refusal = self.commits.retake_refusal(tid, self.last_committed)
        if refusal is not None:
            raise refusal
        log.info("a restore takes again tid 0x%s, handed out before and never committed", tid.hex())
        return tid

    def _abort_stale(self, ttid: bytes, storages) -> None:
        """Before a retaken tid is used: abort on every running storage node what an
        earlier holder of it may have left there (stores or a vote of a client that
        died, whose AbortNode may not have been carried out yet), so that none of it
        is committed with the new transaction.  A node that does not answer makes the
        Begin fail (retryable); nodes that are down drop unvoted stores when they
        restart, and the verdicts abort a vote of the dead session, while its stores
        are refused to any other client (``storage_node/manager.py``)."""
        failed = self._abort_on(ttid, storages)
        if failed:
            with self.lock:
                self.commits.begun.pop(ttid, None)
                self._settle_queue()        # commits after its tid may wait for it
            nid, exc = next(iter(failed.items()))
            raise ClusterUnavailable(f"tid 0x{ttid.hex()} cannot be taken again yet: its earlier "
                                     f"holder's stores could not be dropped on S{nid} ({exc}); "
                                     f"retry") from exc

    def abort(self, node: int, ttid: bytes, storages) -> None:
        with self.lock:
            self.commits.check_abort(node, ttid, self.live_session)
            targets = set(storages) & self._storage_ids()
            self._settle_queue()            # commits after an aborted restore's tid may wait for it
        self._abort_on(ttid, targets)

    def _storage_ids(self) -> set[int]:
        return {n.node_id for n in self.nodes.values() if n.type == NodeType.STORAGE}

    def _abort_on(self, ttid: bytes, storages) -> dict[int, Exception]:
        """Order ``storages`` to abort ``ttid``; returns the nodes that failed to (their
        next heartbeat gets the verdict again)."""
        failed = {}
        for nid in storages:
            try:
                self.storage(nid).abort_transaction(ttid, self.limits.rpc_timeout_s)
            except Exception as exc:
                log.warning("abort of 0x%s on S%d failed: %s", ttid.hex(), nid, exc)
                failed[nid] = exc
        return failed

    def finish(self, node: int, ttid: bytes, oids, storages, view_ptid: int = 0) -> tuple[bytes, bytes]:
        """Commit ``ttid`` voted on ``storages``: ``(its tid, the tid published just
        before it)`` once complete (the rules of ``master/commit.py``)."""
        if len(oids) > self.limits.objects_per_transaction_max:
            raise LimitExceeded(f"finish of 0x{ttid.hex()} names {len(oids)} objects, "
                                f"objects_per_transaction_max={self.limits.objects_per_transaction_max}")
        if any(len(oid) != 8 for oid in oids):
            checked_id(next(oid for oid in oids if len(oid) != 8), "finish: oid")
        txn = self._queue_finish(node, ttid, oids, storages, view_ptid)
        self._lock_on_storages(txn)
        wait_s = self.limits.lock_timeout_s + self.limits.rpc_timeout_s
        if not txn.done.wait(wait_s):
            raise ClusterUnavailable(f"finish of 0x{ttid.hex()}: not complete after {wait_s:g} s (a storage node "
                                     f"holding it did not answer); ask for its outcome again")
        if txn.error:
            raise txn.error
        return txn.tid, txn.prev_tid

    def _queue_finish(self, node: int, ttid: bytes, oids, storages, view_ptid: int) -> Txn:
        """Checks, the tid, and the place in the commit queue (``CommitFlow.queue_finish``)."""
        with self.lock:
            self.require_writer(node, "Finish")
            try:
                self.require_running()
                if ttid not in self.commits.begun and self.truncation.fences(owner_of(ttid)):
                    raise ClusterUnavailable(f"transaction 0x{ttid.hex()} began before the cluster was "
                                             f"truncated (neoctl truncate): it was not committed")
            except ClusterUnavailable as exc:
                step = self.flow.refuse_finish(node, ttid, set(storages) & self._storage_ids(), exc)
                self._carry_out(step.actions)
                raise
            bad = [s for s in storages if s not in self._storage_ids()]
            if bad:
                raise RequestRefused(f"finish names unknown storage nodes {bad}")
            step = self.flow.queue_finish(node, ttid, oids, storages, view_ptid, self.live_session(node))
            self._carry_out([a for a in step.actions if not (isinstance(a, AbortOn) and a.now)])
        if step.error is not None:
            if step.txn is not None:
                log.warning("finish refused: %s", step.error)
            for action in step.actions:
                if isinstance(action, AbortOn) and action.now:
                    self._abort_on(action.ttid, action.nodes)
            raise step.error
        return step.txn

    def _lock_on_storages(self, txn: Txn) -> None:
        """Order every voter to lock ``txn``: a voter that does not answer is lost, one
        that refuses had no vote of it (it answered, so it is not lost; its cells copy
        the transaction if it commits)."""
        timeout_s = self.limits.lock_timeout_s
        calls, failed = {}, {}
        for nid in txn.storages:    # a node that cannot even be called fails here, as a lost one
            try:                    # (an exception escaping would leave txn queued: every later commit waits)
                calls[nid] = (self.storage(nid).lock_sent(txn.ttid, txn.tid, timeout_s)
                              if len(txn.storages) > 1 else None)
            except Exception as exc:
                failed[nid] = exc
        for nid, sent in calls.items():
            try:
                if sent is None:
                    self.storage(nid).lock(txn.ttid, txn.tid, timeout_s)
                else:
                    sent.result()
            except Exception as exc:
                failed[nid] = exc
        refused = {nid for nid, exc in failed.items() if _refused(exc)}
        for nid, exc in failed.items():
            if nid not in refused:
                self.storage_lost(nid, f"lock failed: {exc}")
        with self.lock:
            if refused:
                log.warning("lock of 0x%s refused by S%s (no vote of it there)", txn.ttid.hex(),
                            ", S".join(map(str, sorted(refused))))
            self._carry_out(self.flow.lock_answers(txn, refused, set(failed)))

    def _settle_queue(self) -> None:
        """Acknowledge, in tid order, the transactions whose outcome is known (under
        ``self.lock``): ``CommitFlow.settle``."""
        self._carry_out(self.flow.settle())

    def _carry_out(self, actions) -> None:
        """Carry out the actions of ``CommitFlow`` (under ``self.lock``)."""
        for action in actions:
            if isinstance(action, TableChanged):
                self._persist_pt()
                log.info("a transaction may be missed by some cells: they copy it (ptid %d)", self.pt.ptid)
                self.broadcast_cluster()
            elif isinstance(action, Publish):
                event = self._invalidation(action.txn)
                for nid, q in list(self.subscribers.items()):
                    if nid != action.txn.node:      # the committer has the Finish answer
                        self._push(q, event)
            elif isinstance(action, Unlock):
                self.to_unlock.setdefault(action.node, []).append(action.ttid)
            elif isinstance(action, AbortOn):
                self.pool.submit(self._abort_on, action.ttid, action.nodes)
            elif isinstance(action, Done):
                txn = action.txn
                if txn.outcome == COMPLETE:
                    self.commits_finished += 1
                else:
                    log.error("transaction 0x%s: %s", txn.ttid.hex(), txn.error)
                txn.done.set()
