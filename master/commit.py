"""The master's commit core: who may finish a transaction, when a commit is
acknowledged, and what becomes of a vote whose Finish never comes.

No I/O and no threads: ``Master`` (``master/node.py``) calls it under its lock, with
the partition table and the running storage nodes, and carries out what it decides
(Lock, AbortTransaction and Unlock orders, invalidations, answers to Finish).

The rules, which the README's "Durability" section states for operators:

Sessions.  A client's *session* is the node id this master gave it at Identify; it
lasts while the client's event stream is open.  Node ids are never handed out twice
(the counter is persisted before use; a standby that takes over skips
``NODE_ID_RESERVE`` ids).  A client makes its ttids itself from its node id (node id
<< 32 | counter), so a ttid names its session; a restore ttid comes from Begin and
is recorded here with its session.

Finish.  The master accepts the Finish of a ttid only from the live session that owns
it, once, and never after it decided the ttid dead.  So once a session has ended
(the client went away, or the master it identified to was restarted or replaced) no
transaction of it can be finished any more, and its votes can be dropped safely.

Who decides that a voted transaction is dead, and when.  Only the master.  Storage
nodes never drop a vote on their own (``neoctl truncate`` aside): they report the
transactions they have held for a few seconds in every heartbeat and carry out the
master's verdicts (abort it; lock it as TID, a Lock they missed; or keep it).  A
transaction that is not being finished is dead when

1. its client aborted it (Abort), or every storage node named by its Finish refused
   to lock it (none has a vote of it);
2. its session, a session of this master, ended: the master orders its abort at
   once (AbortNode) and again in verdicts until the nodes have carried it out;
3. its session belongs to an earlier master (a restart, a take-over) and every
   storage node of the partition table has reported to this master what it holds
   without any holding it locked: only an earlier master could have locked it, and
   a node that did would say so, unless that master published it and had its lock
   records forgotten (Unlock) while a voter whose Lock failed kept its vote (that
   voter's cells are OUT_OF_DATE and copy the commit).  So its votes are aborted,
   but it is not recorded dead: ``final_status`` does not call it not committed;
4. it has been voted for longer than ``pending_timeout_s`` (a client that hangs
   between vote and finish, as ZEO's ``transaction-timeout``): the master records it
   dead first, so its Finish is refused.  (Stores that are not voted hold no lock:
   those of a connected client stay until it votes, aborts or goes away.)

Commit point.  A transaction is committed when the first storage node locks it
durably.  The master orders Lock only after Finish (the tid is chosen) and after the
readable cells that did not vote it became OUT_OF_DATE (they copy it): so the last
readable copies of every partition it writes are its voters.  A voter that does not
answer its Lock is lost (its cells go OUT_OF_DATE while another copy is readable).

Acknowledgement.  Finish answers with the tid only once every partition the
transaction writes has a readable cell that locked it (*complete*); commits are
acknowledged and published strictly in tid order.  A restore takes its tid at Begin
(``IStorageRestoreable``: the tid is the copied transaction's), so commits finished
while it is in progress get later tids: the queue is kept in tid order, and a
committed transaction is not published while a restore with an earlier tid is begun
and not yet finishing or ended (it waits; a restore that conflicts with it on an
object gives up after ``busy_wait_s_max``, as any vote).  If the Lock orders leave a
partition without a locked readable copy, that partition's readable copies are all
lost, so the cluster is back to RECOVERING, and the transaction is settled there: a
voter that returns with it locked, or with its vote while another node locked it,
completes it; when every voter has returned and none locked it, it is not committed.
Finish waits for that (bounded by its time limit); a client whose Finish ended
without an answer asks ``final_status``: committed (the tid), not committed, or not
known yet, never a tid for a transaction that is not complete.  "Not committed" only
for a transaction this master decided dead (or one of its own sessions it never
saw): an earlier master's transaction it does not know may have been committed, its
lock records then forgotten (Unlock) before this master started.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import Z64, u64
from neoarray.states import READABLE

CLIENT_TTID_LIMIT = 1 << 56   # client-made ttids (node id << 32 | counter) stay below real tids
NODE_ID_RESERVE = 1 << 14     # node ids a standby skips when it takes over

PENDING, COMPLETE, NOT_COMMITTED = "pending", "complete", "not committed"
LOCK, ABORT = "lock", "abort"


@dataclass
class Txn:
    ttid: bytes
    node: int                                     # the session that owns it
    tid: bytes | None = None                      # chosen at Begin for restore, else at Finish
    oids: list = field(default_factory=list)
    storages: list = field(default_factory=list)  # the voters its Finish named
    view_ptid: int = 0                            # the client's ptid when it began (0: unknown)
    locked_on: set = field(default_factory=set)   # nodes that locked it durably
    refused: set = field(default_factory=set)     # voters that had no vote of it
    reported: set = field(default_factory=set)    # voters known not to hold it locked
    voted_on: set = field(default_factory=set)    # of them, those that told they hold its vote
    lock_answered: bool = False                   # the Lock orders of Finish all ended
    outcome: str = PENDING
    error: Exception | None = None
    prev_tid: bytes = b""                         # the tid published just before it
    done: threading.Event = field(default_factory=threading.Event)
    # ``written``'s answer for (partitions, tid): a Finish asks it several times, and a
    # transaction of 1,000 objects took 0.3 ms each time (its oids are set once)
    written_memo: tuple = field(default=(), repr=False, compare=False)

    @property
    def decided(self) -> bool:
        """Committed: some node locked it."""
        return bool(self.locked_on)


def owner_of(ttid: bytes) -> int:
    """The client node a client-made ttid belongs to (0 for a restore tid)."""
    value = u64(ttid)
    return value >> 32 if value < CLIENT_TTID_LIMIT else 0


def written(txn: Txn, partitions: int) -> frozenset[int]:
    """Partitions ``txn`` writes: its objects' and its metadata's (the tid's)."""
    memo = txn.written_memo
    if memo and memo[0] == partitions and memo[1] == txn.tid:
        return memo[2]
    parts = {int.from_bytes(o, "big") % partitions for o in txn.oids}
    parts.add(u64(txn.tid) % partitions)
    txn.written_memo = (partitions, txn.tid, frozenset(parts))
    return txn.written_memo[2]


class CommitCore:
    """Transactions being committed and the decisions about them (not thread-safe:
    the master's lock guards it)."""

    def __init__(self, first_node_id: int, pending_timeout_s: float,
                 finished_max: int, dead_max: int):
        self.first_node_id = first_node_id        # sessions below are an earlier master's
        self.pending_timeout_s = pending_timeout_s
        self.finished_max = finished_max
        self.dead_max = dead_max
        self.begun: dict[bytes, Txn] = {}         # restore transactions (Begin), not finishing
        self.queue: list[Txn] = []                # finishing, in tid order
        self.finished: dict[bytes, bytes] = {}    # ttid -> tid: committed and complete
        self.dead: dict[bytes, None] = {}         # ttids decided not committed
        self.reported: set[int] = set()           # storages that told this master what they hold

    # -- sessions and Finish ----------------------------------------------------------
    def accept_finish(self, node: int, ttid: bytes, live: bool) -> Txn:
        """The transaction ``node`` asks to finish, or ``RequestRefused`` (it was not
        committed and never will be).  ``live``: ``node`` is a session of this master
        whose event stream is open."""
        txn = self.begun.get(ttid)
        if txn is not None and txn.node != node:
            raise RequestRefused(f"finish of 0x{ttid.hex()}: the transaction is not client C{node}'s")
        if txn is None and owner_of(ttid) != node:
            raise RequestRefused(f"finish of unknown transaction 0x{ttid.hex()}")
        if not live:
            raise RequestRefused(f"finish of 0x{ttid.hex()} refused: client C{node} is not connected to this "
                                 f"master (it identified to an earlier master, or its connection ended); "
                                 f"the transaction was not committed")
        if ttid in self.dead:
            raise RequestRefused(f"finish of 0x{ttid.hex()} refused: the transaction was aborted "
                                 f"(by its client, or held longer than pending_timeout_s="
                                 f"{self.pending_timeout_s:g} s); it was not committed")
        if ttid in self.finished or any(t.ttid == ttid for t in self.queue):
            raise RequestRefused(f"finish of 0x{ttid.hex()}: already finished or finishing")
        self.begun.pop(ttid, None)
        return txn or Txn(ttid, node)

    def check_abort(self, node: int, ttid: bytes, is_live) -> None:
        """``node`` aborts ``ttid``: refused for another live session's transaction
        (``is_live(node id)``) and for one being finished; otherwise the transaction
        is dead from now on."""
        txn = self.begun.get(ttid)
        owner = txn.node if txn is not None else owner_of(ttid)
        if owner != node and is_live(owner):
            raise RequestRefused(f"transaction 0x{ttid.hex()} is not client C{node}'s")
        if ttid in self.finished or self.finishing(ttid) is not None:
            raise RequestRefused(f"transaction 0x{ttid.hex()} is being finished: too late to abort")
        self.begun.pop(ttid, None)
        self.mark_dead(ttid)

    def retake_refusal(self, tid: bytes, last_committed: bytes) -> Exception | None:
        """Why a restore may not take ``tid`` again, a tid handed out before (None: it
        may).  It may when it is after every committed tid and no transaction is begun
        or finishing: then nothing holds or will hold that tid (a restore that had it
        ended with its session, and its stores are aborted by AbortNode), and the
        transaction is published after every earlier one.  Transactions in progress
        make the refusal retryable (``ClusterUnavailable``)."""
        if tid <= last_committed:
            return ValueError(f"tid 0x{tid.hex()} is not after the last committed tid 0x{last_committed.hex()}: "
                              f"a restore continues after the last transaction")
        if self.begun or self.queue:
            return ClusterUnavailable(f"tid 0x{tid.hex()} was handed out before and {len(self.begun)} restore(s) "
                                      f"and {len(self.queue)} commit(s) are in progress: retry once they ended")
        return None

    def enqueue(self, txn: Txn) -> None:
        """``txn`` (its tid chosen) joins the commit queue, in tid order: a restore's
        tid, taken at Begin, is earlier than those of commits finished meanwhile."""
        bisect.insort(self.queue, txn, key=lambda t: t.tid)

    def restore_before(self, tid: bytes) -> bool:
        """A restore holding a tid earlier than ``tid`` is begun and not finishing:
        ``tid`` is not published before it ends (finished or not)."""
        return any(t.tid is not None and t.tid < tid for t in self.begun.values())

    def finishing(self, ttid: bytes) -> Txn | None:
        return next((t for t in self.queue if t.ttid == ttid), None)

    def session_ended(self, node: int) -> list[bytes]:
        """``node``'s session ended: its transactions that are not being finished are
        dead; returns the ttids it is finishing (kept)."""
        for ttid in [t for t, txn in self.begun.items() if txn.node == node]:
            del self.begun[ttid]
        return [t.ttid for t in self.queue if t.node == node]

    def mark_dead(self, ttid: bytes) -> None:
        self.dead[ttid] = None
        while len(self.dead) > self.dead_max:
            self.dead.pop(next(iter(self.dead)))

    def remember(self, ttid: bytes, tid: bytes) -> None:
        self.finished[ttid] = tid
        while len(self.finished) > self.finished_max:
            self.finished.pop(next(iter(self.finished)))

    # -- the outcome of Lock orders ---------------------------------------------------
    def lock_answers(self, txn: Txn, locked: set[int], refused: set[int], failed: set[int]) -> None:
        """The Lock orders of Finish ended: ``locked`` locked it, ``refused`` had no
        vote of it, ``failed`` did not answer (the caller marked them lost)."""
        txn.lock_answered = True
        txn.locked_on |= locked
        txn.refused |= refused
        txn.reported |= refused
        if not txn.locked_on and not failed:
            self._not_committed(txn, RequestRefused(
                f"finish of 0x{txn.ttid.hex()}: no storage node among {txn.storages} has a vote of it; "
                f"it was not committed"))

    def vote_reported(self, txn: Txn, nid: int) -> None:
        """Voter ``nid`` holds the vote of ``txn``, not locked, and ``txn`` is not
        decided (yet): ``node_reported``, and ``late_locks`` orders it to lock ``txn``
        if another voter tells later that it locked it."""
        txn.voted_on.add(nid)
        self.node_reported(txn, nid, locked=False)

    def late_locks(self, running: set[int]) -> list[tuple[int, bytes, bytes]]:
        """``(node, ttid, tid)``: Lock orders for the running voters that hold the vote
        of a transaction decided after they told so (simulation seed 16986: a voter
        back in recovery with the vote, another voter back later with it locked).
        Without them the first voter's cells, readable, would miss the transaction
        once it is complete on the other's."""
        return [(n, t.ttid, t.tid) for t in self.queue if t.lock_answered and t.decided
                for n in sorted(t.voted_on - t.locked_on) if n in running]

    def node_reported(self, txn: Txn, nid: int, locked: bool) -> None:
        """Voter ``nid`` told what it holds of ``txn`` (RecoveryInfo): locked, or not
        locked (a vote, or nothing).  When every voter said 'not locked' and none
        locked it, it is not committed."""
        if locked:
            txn.locked_on.add(nid)
            return
        txn.reported.add(nid)
        if txn.lock_answered and not txn.locked_on and set(txn.storages) <= txn.reported:
            self._not_committed(txn, ClusterUnavailable(
                f"transaction 0x{txn.ttid.hex()} was not committed: the storage nodes did not answer its "
                f"Lock and none of them locked it"))

    def _not_committed(self, txn: Txn, error: Exception) -> None:
        txn.outcome, txn.error = NOT_COMMITTED, error
        self.mark_dead(txn.ttid)

    def unpublished_on(self, node: int, p: int, partitions: int) -> bool:
        """A transaction in the queue writes partition ``p`` and ``node`` did not lock
        it.  A cell of ``node`` in ``p`` that copied up to the last committed tid must
        not become UP_TO_DATE yet: its copy ended before that transaction, which is
        published later; if the copies holding it were lost in between, the cell
        would be the readable copy without it (an acknowledged commit lost).  Once the
        transaction leaves the queue, the cell copies up to its tid
        (``CatchUp.committed``)."""
        return any(node not in t.locked_on and p in written(t, partitions) for t in self.queue)

    def published_bound(self, last_tid: bytes) -> bytes:
        """What a storage node's ``last_tid`` tells of the last committed tid at a
        verification: nothing (``Z64``) when a transaction of the queue has a tid at
        or before it (the node locked a commit that is not published, and perhaps not
        on every readable copy yet).  Cells catching up copy up to the last committed
        tid: a copy up to the tid of an unpublished commit could end before its
        sources hold it and be taken for complete."""
        return Z64 if any(t.tid is not None and t.tid <= last_tid for t in self.queue) else last_tid

    def incomplete(self, txn: Txn, pt, partitions: int) -> list[int]:
        """Partitions ``txn`` writes with no readable cell that locked it."""
        return sorted(p for p in written(txn, partitions)
                      if not any(n in txn.locked_on and s in READABLE for n, s in pt.rows[p].items()))

    def settle(self, pt, partitions: int, running: set[int]) -> list[Txn]:
        """Mark complete the committed transactions that are; returns those that leave
        the queue now, in tid order (complete, or not committed).  A committed
        transaction whose only readable copies of a partition are on running nodes
        that refused it is torn (it cannot happen unless a vote was lost): it leaves
        the queue with an error, so that the queue moves on and ``neoctl check``
        reports it.  A committed transaction waits while a restore with an earlier tid
        is begun (``restore_before``): call again when one ends."""
        for txn in self.queue:
            if txn.outcome != PENDING or not txn.lock_answered or not txn.decided:
                continue
            missing = self.incomplete(txn, pt, partitions)
            if not missing:
                txn.outcome = COMPLETE
            elif all(any(n in running and n in txn.refused and s in READABLE for n, s in pt.rows[p].items())
                     for p in missing):
                txn.outcome = NOT_COMMITTED
                txn.error = ClusterUnavailable(
                    f"transaction 0x{txn.ttid.hex()} is torn: partitions {missing} have no locked copy "
                    f"(their nodes had lost its vote); run neoctl check")
        out = []
        while self.queue and self.queue[0].outcome != PENDING:
            if self.queue[0].decided and self.restore_before(self.queue[0].tid):
                break           # published after the restore's earlier tid
            txn = self.queue.pop(0)
            if txn.outcome == COMPLETE:
                self.remember(txn.ttid, txn.tid)
            out.append(txn)
        return out

    # -- verdicts on what storage nodes hold -------------------------------------------
    def everyone_reported(self, pt) -> bool:
        return pt.nodes() <= self.reported

    def verdict(self, ttid: bytes, owner: int, voted: bool, age_s: float, live: bool, everyone: bool):
        """What a storage node must do with ``ttid`` it holds (stored, or ``voted``)
        for ``age_s``, stored by client ``owner`` (``live``: a session of this master
        still connected): ``(LOCK, tid)``, ``(ABORT, None)`` or None (keep it)."""
        tid = self.finished.get(ttid)
        if tid is not None:
            return (LOCK, tid) if voted else (ABORT, None)    # stores of a copy left out
        if self.finishing(ttid) is not None:
            return None                                        # settled by Finish or recovery
        if ttid in self.dead:
            return ABORT, None
        txn = self.begun.get(ttid)
        if live or txn is not None:
            if not voted or age_s <= self.pending_timeout_s:
                return None         # stores hold no lock: they end with the session
            self.begun.pop(ttid, None)
            self.mark_dead(ttid)
            return ABORT, None
        if owner >= self.first_node_id:
            self.mark_dead(ttid)                               # final_status: not committed
            return ABORT, None                                 # rule 2
        if everyone:
            # rule 3, not recorded dead: a voter whose Lock failed keeps its vote of a
            # transaction the earlier master committed and unlocked (simulation seed 3436)
            return ABORT, None
        return None

    def decided(self, ttid: bytes):
        """``final_status`` of a transaction this master committed or recorded dead,
        which nothing changes afterwards (whatever the cluster's state); None if
        neither."""
        tid = self.finished.get(ttid)
        if tid is not None:
            return tid, None
        if ttid in self.dead and self.finishing(ttid) is None:
            return None, True
        return None

    def final_status(self, ttid: bytes, owner_live: bool):
        """``(tid, None)`` committed; ``(None, True)`` not committed; ``(None, False)``
        not known yet."""
        decided = self.decided(ttid)
        if decided is not None:
            return decided
        if self.finishing(ttid) is not None:
            return None, False
        if ttid in self.begun or owner_live:
            return None, False                                 # not finished yet
        # a session of this master that ended: what it did not finish is dead (rule 2).
        # An earlier master's: not known, even when every node reported holding nothing
        # of it locked: it may have been committed and its locked records
        # forgotten (Unlock) before that master ended; the data it wrote tells.
        return None, owner_of(ttid) >= self.first_node_id
