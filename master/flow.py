"""The orchestration of the commit path without I/O: what the master does around
``CommitCore`` (``master/commit.py``), as actions to carry out.

``CommitFlow`` decides; its caller carries out the actions it returns, in order:
``master/committing.py`` with calls to the storage nodes and the event streams of the
clients, the simulation (``simulation/``) with simulated messages.  The caller holds
the master's lock while it calls ``CommitFlow``.

The host it is given is the master's state: ``pt``, ``partitions``, ``commits`` (a
``CommitCore``), ``catchup`` (a ``CatchUp``), ``ids`` (an ``IdAllocator``),
``last_committed`` (read and raised here) and ``running_storages()``.

The steps of a Finish:

1. ``queue_finish``: the checks of ``CommitCore.accept_finish``, the tid, the check
   that the client's view covers what it wrote (``view_refusal``), the place in the
   queue, and the cells that may miss the transaction (``missed``);
2. the caller orders Lock on every voter (``Txn.storages``) and marks lost the voters
   that did not answer (the cluster's business, before step 3);
3. ``lock_answers``: the outcome of the Lock orders, then ``settle``;
4. ``settle`` (also after anything that may let the queue move on): the transactions
   that leave the queue, in tid order: published (``Publish``), their locks to
   forget (``Unlock``), the votes of those not committed aborted (``AbortOn``), and
   their finisher told (``Done``).
"""
from __future__ import annotations

from dataclasses import dataclass

from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import u64
from neoarray.states import READABLE

from .commit import COMPLETE, Txn, owner_of, written


@dataclass(frozen=True)
class AbortOn:
    """Order ``nodes`` to abort ``ttid`` (``now``: before answering the client)."""
    ttid: bytes
    nodes: tuple
    now: bool = False


@dataclass(frozen=True)
class Publish:
    """``txn`` is acknowledged: send its invalidation to every client but its own
    (``txn.node``: it learns it from the Finish answer)."""
    txn: Txn


@dataclass(frozen=True)
class Unlock:
    """``node`` may forget the locked-transaction record of ``ttid``."""
    node: int
    ttid: bytes


@dataclass(frozen=True)
class TableChanged:
    """The partition table changed: persist it, then send it to every node."""


@dataclass(frozen=True)
class Done:
    """``txn`` left the queue: its Finish answers (``txn.error`` or its tid)."""
    txn: Txn


@dataclass
class FinishStep:
    """What ``queue_finish`` decided: ``txn`` queued (``error`` None) or refused."""
    txn: Txn | None
    actions: list
    error: Exception | None = None


def view_refusal(pt, partitions: int, txn: Txn) -> str | None:
    """Why ``txn`` cannot be finished safely (None: it can).  Every partition it
    wrote needs a readable copy among the nodes that voted it.  A client routes its
    stores with its view; if cells created since then make up every readable copy
    of a partition it wrote, nothing could copy the transaction to them."""
    for p in sorted(written(txn, partitions)):
        row = pt.rows[p]
        if any(pt.added.get((n, p), 0) > txn.view_ptid for n in row):
            if not any(s in READABLE and n in txn.storages and pt.added.get((n, p), 0) <= txn.view_ptid
                       for n, s in row.items()):
                return (f"the partition table changed under transaction 0x{txn.ttid.hex()} "
                        f"(view ptid {txn.view_ptid}, now {pt.ptid}): partition {p} has no "
                        f"readable copy it stored to; it was not committed, retry it")
        elif not any(s in READABLE and n in txn.storages for n, s in row.items()):
            # the client went on without a copy that did not answer: some readable
            # copy must hold the transaction
            return (f"no readable copy of partition {p} took transaction 0x{txn.ttid.hex()} "
                    f"(it was voted on S{', S'.join(map(str, txn.storages)) or '-'}); "
                    f"it was not committed, retry it")
    return None


class CommitFlow:
    """The master's commit decisions around ``CommitCore``, returning actions."""

    def __init__(self, host):
        self.h = host

    def queue_finish(self, node: int, ttid: bytes, oids, storages, view_ptid: int, live: bool,
                     now: float | None = None) -> FinishStep:
        """Accept the Finish of ``ttid`` (``CommitCore.accept_finish`` raises when it
        may not be), choose its tid (``now``: the time, for the simulation's clock)
        and queue it; or refuse it (``FinishStep.error``) with its votes aborted."""
        h, core = self.h, self.h.commits
        actions = []
        if not live and owner_of(ttid) == node:
            # it can never be finished: its votes go now (and by verdicts if this fails)
            actions.append(AbortOn(ttid, tuple(sorted(set(storages)))))
        try:
            txn = core.accept_finish(node, ttid, live)
        except RequestRefused as exc:        # refused, after the actions above
            return FinishStep(None, actions, exc)
        txn.oids, txn.storages, txn.written_memo = list(oids), sorted(set(storages)), ()
        txn.view_ptid = view_ptid
        txn.tid = txn.tid or h.ids.new_tid(h.partitions, u64(ttid) % h.partitions, now)
        refusal = view_refusal(h.pt, h.partitions, txn)
        if refusal is None:
            core.enqueue(txn)
            actions += self.missed(txn, txn.storages, h.last_committed)
            return FinishStep(txn, actions)
        core.mark_dead(ttid)
        actions.append(AbortOn(ttid, tuple(txn.storages), now=True))
        return FinishStep(txn, actions, ClusterUnavailable(refusal))

    def refuse_finish(self, node: int, ttid: bytes, storages, why: Exception) -> FinishStep:
        """The Finish of ``ttid`` cannot be taken now (``why``: the cluster is not
        RUNNING, or is being truncated).  A transaction of ``node``'s own session of
        this master, not begun (a restore) nor finished or finishing, is then never
        committed: it is recorded dead, so that ``final_status`` answers "not
        committed" and a Finish sent again is refused, and its votes are aborted, by
        the order below and by verdicts (they held their objects' locks while the
        session lived: the simulation's seed 401504).  Another's, or an earlier
        master's, is left as it is (rule 3 of ``master/commit.py``)."""
        core = self.h.commits
        if (owner_of(ttid) != node or owner_of(ttid) < core.first_node_id or ttid in core.begun
                or ttid in core.finished or core.finishing(ttid) is not None):
            return FinishStep(None, [], why)
        core.mark_dead(ttid)
        return FinishStep(None, [AbortOn(ttid, tuple(sorted(set(storages))))], why)

    def lock_answers(self, txn: Txn, refused: set[int], failed: set[int]) -> list:
        """The Lock orders of ``txn`` ended: ``failed`` voters did not lock it, of them
        ``refused`` answered that they have no vote of it (the others are lost: the
        caller marked them so).  A lost node without a cell of what it writes holds
        nothing of it that counts."""
        h = self.h
        holders = {n for p in written(txn, h.partitions) for n in h.pt.rows[p]}
        lost = set(failed) - refused
        h.commits.lock_answers(txn, set(txn.storages) - set(failed), refused | (lost - holders),
                               lost & holders)
        actions = []
        if refused and txn.decided:
            actions += self.missed(txn, self.voters(txn), txn.tid)
        return actions + self.settle()

    @staticmethod
    def voters(txn: Txn) -> list[int]:
        return [n for n in txn.storages if n not in txn.refused]

    def missed(self, txn: Txn, voters, until: bytes) -> list:
        """Cells that may miss ``txn`` copy it (``master/replication.py``): those of
        nodes that returned after the client's view, and the readable ones of running
        nodes that did not vote it.  Before the Lock orders they become OUT_OF_DATE,
        copying up to ``until``, the last committed tid (not yet the transaction's:
        its sources do not hold it, a copy could end before it and be taken for
        complete), so that the last readable copies of what it writes are its voters;
        once it is complete they copy up to its tid.  The new table is sent before its
        invalidation."""
        h = self.h
        if h.catchup.committed(h.pt, h.running_storages(), until, txn.view_ptid,
                               lambda: written(txn, h.partitions), voters):
            return [TableChanged()]
        return []

    def settle(self) -> list:
        """Acknowledge, in tid order, the transactions whose outcome is known: publish
        the complete ones; abort the votes of the others."""
        h = self.h
        actions = []
        for txn in h.commits.settle(h.pt, h.partitions, h.running_storages()):
            if txn.outcome == COMPLETE or txn.decided:      # decided but not complete: torn
                txn.prev_tid = h.last_committed
                h.last_committed = max(h.last_committed, txn.tid)
                actions += self.missed(txn, self.voters(txn), txn.tid)
                actions.append(Publish(txn))
            if txn.outcome == COMPLETE:
                actions += [Unlock(nid, txn.ttid) for nid in sorted(txn.locked_on)]
            elif not txn.decided:
                actions.append(AbortOn(txn.ttid, tuple(txn.storages)))
            actions.append(Done(txn))
        return actions
