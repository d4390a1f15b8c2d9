"""A client of the simulation: a workload of counters and appends, committed by the
rules of ``neoarray/client/commit.py``.

Each transaction reads what it changes from a readable copy, makes its ttid from
its session (node id << 32 | counter), stores its records on every writable cell of
the partitions it writes (the metadata's too), votes on each of those nodes (a
single voter is told so: its vote is not synced), refuses to go on when a written
partition has no readable voter, and asks the master to finish.  When the finish
reply is lost or says the outcome is not known, it asks ``final_status`` until it
knows.  A conflict or a busy object aborts the transaction (it is retried as a new
one).  Counters: read-modify-write of one of a few oids.  Appends: a new object
(from the master's oids) and an entry added to a log object.
"""
from __future__ import annotations

from neoarray.errors import ClusterUnavailable, OutcomeUnknown, RequestRefused
from neoarray.ids import Z64, p64, u64
from neoarray.records import NoObject, TransactionInfo
from neoarray.states import READABLE, CellState, ClusterState
from storage_node.backend import Stored, checksum
from storage_node.manager import VOTED

from .world import Call, Sleep, StaleEpoch

RPC_S = 1.0
SILENT_MAX = 2                # calls unanswered in a row: the event stream is taken for broken
FINISH_S = 5.0
OUTCOME_ASKS_MAX = 40
THINK_S_MAX = 0.3             # StoresInVoteClient: between a transaction's read and its stores
PROBE_TRIES_MAX = 10          # tries of the increment made once the faults stopped (``probe``)
ABORT_RETRY_S_MIN, ABORT_RETRY_S_MAX = 0.2, 5.0   # an Abort sent again (``neoarray/client/owed.py``)


class ClientActor:
    # the real client sends a transaction's last stores inside its vote; this one sends
    # them apart, then votes (the schedules and the seeds kept for their bugs were made
    # so): ``StoresInVoteClient`` does what the real one does
    stores_in_vote = False
    # seconds a transaction may spend between its read and its stores (drawn each
    # time): the work a real client does in between, which lets concurrent
    # transactions overlap; none here, so that the kept seeds replay as they were
    think_s_max = 0.0
    # after an outcome it could not learn, abort through the master, as the real client
    # does (``OutcomeUnknown``, then ZODB's ``tpc_abort``); not here either, for the seeds
    aborts_unknown = False
    # Abort through the master as a call, and send it again while the session lives
    # when no answer came (``neoarray/client/owed.py``); here a message sent once
    sends_aborts_again = False
    # a Finish that failed without a refusal: ask its outcome (``_refused``)
    finish_errors_as_real = False

    def __init__(self, world, index: int, checker, partitions: int, counters: list[bytes], log_oid: bytes,
                 ops_max: int):
        self.world, self.index, self.checker = world, index, checker
        self.name = f"C{index}"
        self.partitions, self.counters, self.log_oid = partitions, counters, log_oid
        self.ops_max = ops_max
        self.up, self.epoch = False, 0
        self.nid = None
        self.seq = 0
        self.ops_done = 0
        self.finished = False
        self.masters = ["M"]                  # the master address list (primary and standbys)
        self.master = "M"                     # the one in use
        self.silent = 0
        self.outcome = ""                     # how the last transaction ended
        self.probed: bool | None = None       # the probe's verdict (``probe``)

    def start(self) -> None:
        self.up = True
        self.epoch += 1
        self.world.spawn(self.name, self.main())

    def crash(self) -> None:
        """The client process dies: its session ends with its event stream."""
        self.up = False
        self.epoch += 1
        self.nid = None

    def handle(self, kind: str, payload: tuple, src: str):
        raise RequestRefused(f"a client serves no {kind!r}")

    def _session(self):
        while self.nid is None:
            reply = yield Call(self.master, "identify", ("client", 0), RPC_S)
            if reply is not None and reply.ok:
                self.nid, self.silent = reply.value, 0
            else:
                if len(self.masters) > 1 and (reply is None or isinstance(reply.error, ClusterUnavailable)):
                    self._next_master()         # (``MasterLink._connect``)
                yield Sleep(0.2)

    def _next_master(self) -> None:
        self.master = self.masters[(self.masters.index(self.master) + 1) % len(self.masters)]

    def _master_reply(self, reply) -> None:
        """After a master call: with several masters, a master that answers as a standby
        or stays silent has lost this client's event stream; the client cancels it and
        connects again from the next address (``MasterLink``)."""
        if len(self.masters) < 2 or self.nid is None:
            return
        self.silent = self.silent + 1 if reply is None else 0
        if self.silent >= SILENT_MAX or (reply is not None and isinstance(reply.error, ClusterUnavailable)):
            self.world.send(self.name, self.master, "unsubscribe", (self.nid,), 0)
            self.nid, self.silent = None, 0
            self._next_master()

    def _running_view(self):
        """One try, in a session: the master's view of a RUNNING cluster, or None
        (``outcome`` says why)."""
        yield from self._session()
        reply = yield Call(self.master, "view", (self.nid,), RPC_S)
        self._master_reply(reply)
        if reply is not None and not reply.ok and isinstance(reply.error, RequestRefused):
            self.nid = None         # the master does not know this session
        if reply is not None and reply.ok and reply.value[0] == ClusterState.RUNNING:
            return reply.value
        self.outcome = ("view: no answer" if reply is None else f"view: {reply.error}" if not reply.ok
                        else f"view: cluster {reply.value[0]}")
        return None

    def main(self):
        rng = self.world.rng
        while self.ops_done < self.ops_max:
            while (view := (yield from self._running_view())) is None:
                yield Sleep(0.2)
            self.ops_done += 1
            yield from self.transaction(view, "counter" if rng.random() < 0.6 else "append")
            yield Sleep(rng.random() * 0.2)
        self.finished = True

    def probe(self) -> None:
        """Once the faults stopped and the cluster settled: one more increment, which
        must be acknowledged within ``PROBE_TRIES_MAX`` tries (a conflict or a busy
        object is tried again).  A cluster that refuses every commit after the faults
        (locks outliving their transactions, a queue that never moves, a node that
        refuses every vote) is caught here, though it loses nothing."""
        self.world.spawn(self.name, self._probe())

    def _probe(self):
        for _ in range(PROBE_TRIES_MAX):
            view = yield from self._running_view()
            if view is not None:
                yield from self.transaction(view, "counter")
                if self.outcome == "acknowledged":
                    self.probed = True
                    return
            yield Sleep(0.5)
        self.probed = False

    # -- one transaction ----------------------------------------------------------------
    def _read(self, rows, running, oid: bytes):
        """``(data, serial)`` of ``oid`` from a readable copy; None when none answers."""
        p = u64(oid) % self.partitions
        for n in sorted(n for n, s in rows[p].items() if s in READABLE and n in running):
            reply = yield Call(f"S{n}", "load", (oid,), RPC_S)
            if reply is None:
                continue
            if reply.ok:
                return reply.value.data, reply.value.serial
            if isinstance(reply.error, NoObject):
                return b"", Z64
        return None

    def _changes(self, kind: str, rows, running):
        """``{oid: (serial, data)}`` of the transaction; None when a read failed."""
        rng = self.world.rng
        tag = b"C%d.%d;" % (self.index, self.seq)
        oid = rng.choice(self.counters) if kind == "counter" else self.log_oid
        read = yield from self._read(rows, running, oid)
        if read is None:
            return None
        data, serial = read
        if kind == "counter":
            return {oid: (serial, b"%d" % (int(data or b"0") + 1))}
        reply = yield Call(self.master, "new_oids", (self.nid, 1), RPC_S)
        if reply is None or not reply.ok:
            return None
        return {oid: (serial, data + tag), reply.value[0]: (Z64, b"A" + tag)}

    def transaction(self, view, kind: str):
        _, rows, ptid, running = view
        self.seq += 1
        nid = self.nid
        ttid = p64(nid << 32 | self.seq)
        self.outcome = "read failed"
        changes = yield from self._changes(kind, rows, running)
        if changes is None:
            return
        if self.think_s_max:
            yield Sleep(self.world.rng.random() * self.think_s_max)
        writable = {p: [n for n, s in sorted(rows[p].items()) if s != CellState.CORRUPTED and n in running]
                    for p in range(self.partitions)}
        meta_p = u64(ttid) % self.partitions
        stores: dict[int, list] = {n: [] for n in writable[meta_p]}
        for oid, (serial, data) in sorted(changes.items()):
            for n in writable[u64(oid) % self.partitions]:
                stores.setdefault(n, []).append(Stored(oid, serial, data, checksum(data)))
        targets = sorted(stores)
        # apart: every store; in the vote: the first half apart, the rest in the vote
        apart = {n: stores[n][:len(stores[n]) // 2] if self.stores_in_vote else stores[n] for n in targets}
        replies = yield [Call(f"S{n}", "store", (ttid, nid, apart[n]), RPC_S) for n in targets if apart[n]]
        failed = {n for n, r in zip([n for n in targets if apart[n]], replies) if r is None or not r.ok}
        voters = yield from self._vote(ttid, nid, targets, failed, stores, meta_p, writable, sorted(changes))
        written = {u64(o) % self.partitions for o in changes} | {meta_p}
        if voters is None or not all(any(n in voters and rows[p][n] in READABLE for n in rows[p])
                                     for p in written):
            self.outcome = "vote: " + (self.outcome if voters is None else
                                       f"no readable voter of a partition ({self.outcome})")
            yield from self._abort(ttid, targets)
            return
        yield from self._finish(ttid, sorted(changes), voters, ptid, changes)

    def _vote(self, ttid, nid, targets, failed, stores, meta_p, writable, oids):
        meta = TransactionInfo(Z64, b"sim", b"", b"", oids, ttid)
        asked = [n for n in targets if n not in failed]
        sync = len(asked) > 1
        carried = {n: stores[n][len(stores[n]) // 2:] if self.stores_in_vote else [] for n in asked}
        replies = yield [Call(f"S{n}", "vote", (ttid, nid, meta if n in writable[meta_p] else None,
                                                [r.oid for r in stores[n]], sync, carried[n]), RPC_S)
                         for n in asked]
        if any(r is not None and r.ok and r.value.status != VOTED for r in replies):
            self.outcome = ", ".join(sorted({str(r.value.status) for r in replies if r is not None and r.ok}))
            return None             # a conflict, or busy: abort and retry as a new transaction
        errors = {str(r.error) for r in replies if r is not None and not r.ok}
        self.outcome = ", ".join(sorted(errors | ({"no answer"} if None in replies else set())))
        return sorted(n for n, r in zip(asked, replies) if r is not None and r.ok)

    def _refused(self, error: Exception) -> bool:
        """Whether a Finish's error says the transaction was not committed.  The real
        client (``CommitDriver.finish``) takes only a refusal for that and asks the
        outcome after any failure to answer (a master that stepped down while it
        finished: not acting on an unwitnessed state, or fenced); this one, also
        after ``OutcomeUnknown`` only, so that the kept seeds replay as they were."""
        if not self.finish_errors_as_real:
            return not isinstance(error, OutcomeUnknown)
        return isinstance(error, RequestRefused) and not isinstance(error, StaleEpoch)

    def _abort(self, ttid: bytes, targets):
        session = self.nid
        for n in targets:
            self.world.send(self.name, f"S{n}", "abort", (ttid,), 0)
        if not self.sends_aborts_again:
            self.world.send(self.name, self.master, "abort", (session, ttid, list(targets)), 0)
            return
        if not (yield from self._abort_once(session, ttid, targets)):
            self.world.spawn(self.name, self._abort_again(session, ttid, targets))

    def _abort_once(self, session: int, ttid: bytes, targets):
        """One Abort through the master: False when it may not have reached it."""
        reply = yield Call(self.master, "abort", (session, ttid, list(targets)), RPC_S)
        return reply is not None and (reply.ok or not isinstance(reply.error, ClusterUnavailable))

    def _abort_again(self, session: int, ttid: bytes, targets):
        """``OwedAborts``: until the master answers or the session ends (the master then
        aborts it itself)."""
        wait_s = ABORT_RETRY_S_MIN
        while True:
            yield Sleep(wait_s)
            if self.nid != session or (yield from self._abort_once(session, ttid, targets)):
                return
            wait_s = min(wait_s * 2, ABORT_RETRY_S_MAX)

    def _finish(self, ttid, oids, voters, ptid, changes):
        writes = {oid: data for oid, (_, data) in changes.items()}
        reply = yield Call(self.master, "finish", (self.nid, ttid, oids, voters, ptid), FINISH_S)
        if reply is not None and reply.ok:
            self.checker.acknowledged(ttid, reply.value, writes)
            self.outcome = "acknowledged"
            return
        if reply is not None and self._refused(reply.error):
            self.checker.not_committed(ttid, reply.error)
            self.outcome = f"finish: {reply.error}"
            return
        for _ in range(OUTCOME_ASKS_MAX):
            yield Sleep(0.25)
            yield from self._session()
            reply = yield Call(self.master, "final_status", (self.nid, ttid), RPC_S)
            self._master_reply(reply)
            if reply is None or not reply.ok:
                if reply is not None and isinstance(reply.error, RequestRefused):
                    self.nid = None
                continue
            tid, dead = reply.value
            if tid is not None:
                self.checker.acknowledged(ttid, tid, writes)
                self.outcome = "acknowledged"
                return
            if dead:
                self.checker.not_committed(ttid, None)
                self.outcome = "finish: not committed"
                return
        self.checker.unknown(ttid, writes)
        self.outcome = "finish: outcome unknown"
        if self.aborts_unknown:     # its vote would keep its locks while the session lives
            if self.sends_aborts_again:     # in its own session only (``CommitDriver.abort``)
                if self.nid == u64(ttid) >> 32:
                    yield from self._abort(ttid, voters)
            else:
                self.world.send(self.name, self.master, "abort", (u64(ttid) >> 32, ttid, list(voters)), 0)


class StoresInVoteClient(ClientActor):
    """Sends half of a transaction's stores apart, the rest inside its vote, as the
    real client sends its last ones (``TransactionManager.vote(records=...)``), and
    works a while between its read and its stores, so that transactions of several
    clients on one counter overlap and the votes' conflict checks are exercised; and,
    as the real client, aborts a transaction whose outcome it could not learn, and
    sends an Abort again when the master did not answer it."""
    stores_in_vote = True
    think_s_max = THINK_S_MAX
    aborts_unknown = True
    sends_aborts_again = True
    finish_errors_as_real = True
