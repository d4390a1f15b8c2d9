"""The client's commit driver: the network side of two-phase commit.

``CommitDriver`` carries a transaction's records to the storage nodes and its votes
and finish to the master, with its dependencies given: the link (routing, stubs, the
session), the limits, and the conflict resolution of the ZODB storage.  ``NeoStorage``
is the ZODB face over it (``tpc_begin`` ... ``tpc_abort``, the cache, the
invalidations).

Stores are buffered per storage node and sent in batches of ``store_batch_bytes_max``
(``STORES_IN_FLIGHT_MAX`` Stores on their way per node, nodes in parallel); ``vote`` sends the rest inside the
votes (a single voter is told so, ``only_voter``: its Lock makes its vote durable,
``storage_node/backend.py``), votes on every node in parallel, resolves conflicts with
ZODB's conflict resolution and votes again, and refuses (``ClusterUnavailable``) a transaction that
could not be finished: a written partition without a readable copy that voted, a
session that ended (``master/commit.py``).  ``finish`` asks the master; when the master
was lost it asks again for the outcome (``FinalTid``) instead of guessing.  The calls
take and answer plain values (``values.py``: ``StoreRecord``, ``Ballot``,
``VoteOutcome``); ``calls.py`` makes them messages.  Record data travels as bulk
segments (``neoarray.transport.bulk``), never inside protobuf.
"""
from __future__ import annotations

import logging
import pickle
import random
import threading
import time
from dataclasses import dataclass, field

import xxhash
from ZODB import POSException

from ..errors import (
    AccessDenied,
    ClusterUnavailable,
    LimitExceeded,
    NotCommitted,
    OutcomeUnknown,
    RequestRefused,
)
from ..ids import Z64, p64, u64
from ..records import TransactionInfo
from ..states import READABLE, CellState
from ..transport.frames import Parts
from . import calls
from .owed import OwedAborts
from .values import Ballot, Conflict, StoreRecord, VoteOutcome, VoteStatus

log = logging.getLogger("neoarray.client")


@dataclass
class Txn:
    """State of one transaction in two-phase commit."""
    meta: object
    ttid: bytes = b""
    tid: bytes | None = None             # restore: the tid asked for
    status: str = " "
    data: dict = field(default_factory=dict)        # oid -> (serial, data or None) kept for resolution
    serials: dict = field(default_factory=dict)     # oid -> base serial
    checks: dict = field(default_factory=dict)      # oid -> serial (readCurrent)
    buffers: dict = field(default_factory=dict)     # node -> [(StoreRecord, data)]
    buffered_bytes: int = 0
    sent: dict = field(default_factory=dict)        # node -> set of oids sent
    inflight: dict = field(default_factory=dict)    # node -> [(store on the way (calls.start_store), its oids)]
    resolved: set = field(default_factory=set)
    voted: set = field(default_factory=set)         # nodes
    failed: set = field(default_factory=set)        # nodes that did not answer a Store or Vote
    meta_nodes: set = field(default_factory=set)    # nodes asked to write the metadata
    asked: set = field(default_factory=set)         # nodes sent a Vote (it may have voted)
    restore: bool = False
    view_ptid: int = 0                  # ptid of the partition table seen at tpc_begin
    session: int = 0                    # this client's node id at tpc_begin (master/commit.py)
    outcome_unknown: bool = False       # tpc_finish ended without knowing whether it committed
    routes: dict = field(default_factory=dict)      # partition -> writable nodes, for ``routes_view``
    routes_view: object = None          # the cluster view (link.info) ``routes`` were made from
    blobs: dict = field(default_factory=dict)       # oid -> blob file owned until finish or abort


class _TooBig:
    def __repr__(self):
        return "<data not kept: larger than resolvable_bytes_max>"


TOO_BIG = _TooBig()
STORES_IN_FLIGHT_MAX = 2    # per node: the node takes one while the next is on its way


@dataclass(frozen=True)
class CommitLimits:
    objects_per_transaction_max: int
    store_batch_bytes_max: int
    resolvable_bytes_max: int
    busy_wait_s_max: float
    conflict_rounds_max: int
    rpc_timeout_s: float
    finish_timeout_s: float


class CommitDriver:
    """Two-phase commit over ``link`` (see the module docstring).  ``resolve_conflict``
    is ZODB's ``tryToResolveConflict(oid, committed_serial, old_serial, data)``."""

    def __init__(self, link, limits: CommitLimits, resolve_conflict):
        self.link = link
        self.limits = limits
        self.resolve_conflict = resolve_conflict
        self._ttid_lock = threading.Lock()
        self._ttid_counter = 0
        self.owed = OwedAborts(link, self._send_abort)      # Aborts that did not reach the master

    def new_ttid(self, session: int) -> bytes:
        """A temporary tid unique in the cluster: this client's node id and a counter."""
        with self._ttid_lock:
            self._ttid_counter = (self._ttid_counter + 1) % (1 << 32)
            return p64((session << 32) | self._ttid_counter)

    def add(self, txn: Txn, oid: bytes, serial: bytes, data: bytes | Parts | None, data_tid: bytes | None = None,
            blob: tuple[int, int] | None = None) -> None:
        """Buffer a store of ``oid``; ``data`` may be ``Parts`` (a spliced chunk record,
        ``staging.py``), sent as they are; ``blob``: ``(chunks, bytes)`` of the blob that
        ``send_blob`` uploaded for it to every node it goes to."""
        if oid not in txn.serials and len(txn.serials) >= self.limits.objects_per_transaction_max:
            raise LimitExceeded(f"transaction stores more than objects_per_transaction_max="
                                f"{self.limits.objects_per_transaction_max} objects")
        txn.serials[oid] = serial
        txn.checks.pop(oid, None)
        for oids in txn.sent.values():      # a node holds this store once it is sent this one
            oids.discard(oid)
        # kept for conflict resolution, which a restore never needs: an import of a
        # transaction of many records holds only what is buffered for the nodes
        keep = data is None or (not txn.restore and len(data) <= self.limits.resolvable_bytes_max)
        txn.data[oid] = (serial, (bytes(data) if isinstance(data, Parts) else data) if keep else TOO_BIG)
        record = StoreRecord(oid, serial, data is None, 0 if data is None else _checksum(data), data_tid or b"", blob)
        nodes = self._route(txn, self.link.partition(oid))
        if not nodes:
            raise ClusterUnavailable(f"no writable copy of the partition of oid 0x{oid.hex()}")
        for nid in nodes:
            txn.buffers.setdefault(nid, []).append((record, data or b""))
        txn.buffered_bytes += len(data or b"")
        if txn.buffered_bytes >= self.limits.store_batch_bytes_max:
            self.flush(txn)

    def send_blob(self, txn: Txn, oid: bytes, path: str, chunk_bytes: int, in_flight_max: int) -> tuple[int, int]:
        """Upload the blob file ``path`` of ``oid`` to every writable copy of its
        partition, chunk by chunk (``StoreBlobChunk``), at most ``in_flight_max``
        chunks on their way (memory: that many chunks, never the whole file).  A node
        that does not answer is left out of the transaction (``node_failed``); every
        chunk has been answered on return.  Returns ``(chunks, bytes)``."""
        nodes = list(self._route(txn, self.link.partition(oid)))
        if not nodes:
            raise ClusterUnavailable(f"no writable copy of the partition of oid 0x{oid.hex()}")
        pending, chunks, nbytes = [], 0, 0
        for nid in nodes:
            txn.sent.setdefault(nid, set())     # an abort reaches it (abort)
        with open(path, "rb") as f:
            while True:
                data = f.read(chunk_bytes)
                if not data and chunks:
                    break
                while len(pending) >= in_flight_max * len(nodes):
                    self._blob_chunk_done(txn, *pending.pop(0))
                checksum = xxhash.xxh3_64_intdigest(data)
                for nid in nodes:
                    if nid not in txn.failed:
                        pending.append((nid, calls.start_blob_chunk(self.link.storage(nid), txn.ttid, txn.session, oid,
                                                                    chunks, checksum, data, self.limits.rpc_timeout_s)))
                chunks, nbytes = chunks + 1, nbytes + len(data)
                if not data:
                    break           # an empty blob: one empty chunk
        for item in pending:
            self._blob_chunk_done(txn, *item)
        return chunks, nbytes

    def _blob_chunk_done(self, txn: Txn, nid: int, started) -> None:
        try:
            calls.done(started, f"blob chunk to S{nid}")
        except ClusterUnavailable as exc:
            if nid not in txn.failed:
                self.node_failed(txn, nid, exc)

    def _route(self, txn: Txn, partition: int) -> list[int]:
        """``link.writable(partition)``, kept for the transaction while the cluster view
        is the same one and no node failed it (a failure or a new view routes anew)."""
        view = self.link.info
        if txn.routes_view is not view:
            txn.routes, txn.routes_view = {}, view
        nodes = txn.routes.get(partition)
        if nodes is None:
            nodes = txn.routes[partition] = self.link.writable(partition)
        return nodes

    @staticmethod
    def _take_buffers(txn: Txn) -> dict:
        """The buffered ``[(record, data)]`` by node, now counted as sent (by a Store or
        inside a Vote)."""
        buffers, txn.buffers, txn.buffered_bytes = txn.buffers, {}, 0
        for nid, records in buffers.items():
            txn.sent.setdefault(nid, set()).update(r.oid for r, _ in records)
        return buffers

    def flush(self, txn: Txn) -> None:
        """Send the buffered records: up to ``STORES_IN_FLIGHT_MAX`` Stores on their way
        per node (the oldest reply is read before another is sent), nodes in parallel.
        A record of an oid that a Store on its way also carries waits for it, so a node
        takes the stores of an oid in order."""
        for nid, records in self._take_buffers(txn).items():
            oids = {r.oid for r, _ in records}
            queue = txn.inflight.get(nid, ())
            while queue and (len(queue) >= STORES_IN_FLIGHT_MAX or any(oids & sent for _, sent in queue)):
                self._wait_store(txn, nid)
                queue = txn.inflight.get(nid, ())
            if nid in txn.failed:
                continue
            started = calls.start_store(self.link.storage(nid), txn.ttid, txn.session, records,
                                        self.limits.rpc_timeout_s)
            txn.inflight.setdefault(nid, []).append((started, oids))

    def _wait_store(self, txn: Txn, nid: int) -> None:
        """Read the reply of the oldest Store on its way to ``nid``."""
        queue = txn.inflight[nid]
        started, _ = queue.pop(0)
        if not queue:
            del txn.inflight[nid]
        try:
            calls.done(started, f"store to S{nid}")
        except ClusterUnavailable as exc:
            if nid not in txn.failed:
                self.node_failed(txn, nid, exc)

    def wait_stores(self, txn: Txn) -> None:
        for nid in list(txn.inflight):
            while nid in txn.inflight:
                self._wait_store(txn, nid)

    def node_failed(self, txn: Txn, nid: int, exc: Exception) -> None:
        """``nid`` did not answer: the transaction goes on without it if every
        partition it writes keeps another copy (checked before finishing,
        ``_require_copies``); the master then marks the cells it missed OUT_OF_DATE,
        so they copy it and no one reads them stale (``master/replication.py``)."""
        log.warning("S%d failed during commit of 0x%s (%s): going on with the other copies",
                    nid, txn.ttid.hex(), exc)
        txn.failed.add(nid)
        txn.voted.discard(nid)
        txn.routes_view = None          # route the next stores anew, without it
        self.link.suspect(nid)

    def _left_out(self, txn: Txn | None, nid: int, exc: Exception) -> bool:
        """Whether the failed call of ``nid`` leaves it out of ``txn`` (it did not
        answer, during a transaction) rather than failing the caller."""
        if txn is None or not isinstance(exc, ClusterUnavailable):
            return False
        self.node_failed(txn, nid, exc)
        return True

    def _require_copies(self, txn: Txn) -> None:
        """Every partition the transaction writes (its objects' and its metadata's)
        has a node that voted it, one of them readable; otherwise it cannot be
        committed, and the refusal belongs here rather than in tpc_finish."""
        self._require_readable_voters(txn)
        if not txn.failed:
            return
        failed = f"S{', S'.join(map(str, sorted(txn.failed)))} did not answer"
        if txn.checks:
            raise ClusterUnavailable(f"the read checks of the transaction may not have run ({failed})")
        sent = [txn.sent.get(n, ()) for n in txn.voted]
        for oid in txn.serials:
            if not any(oid in oids for oids in sent):
                raise ClusterUnavailable(f"no copy of oid 0x{oid.hex()} could take the transaction ({failed})")
        if not txn.meta_nodes & txn.voted:
            raise ClusterUnavailable(f"no copy of the transaction's metadata could be written ({failed})")

    def _require_readable_voters(self, txn: Txn) -> None:
        """Each written partition has a voter whose cell is readable in this client's
        view: the copies still catching up (OUT_OF_DATE) may miss earlier commits, so
        the master refuses a transaction only they took (``Master._view_covers``)."""
        rows = self.link.info.table.rows
        written = {self.link.partition(oid) for oid in txn.serials} | {u64(txn.ttid) % self.link.partitions}
        for p in sorted(written):
            if not any(c.node_id in txn.voted and c.state in READABLE for c in rows[p].cells):
                raise ClusterUnavailable(
                    f"no readable copy of partition {p} voted transaction 0x{txn.ttid.hex()} (voted on "
                    f"S{', S'.join(map(str, sorted(txn.voted))) or '-'}): it cannot be committed now; retry it")

    def _require_session(self, txn: Txn) -> None:
        """The master still knows this client as it did at tpc_begin: a transaction of
        an ended session (the master restarted, a standby took over, the connection
        was lost) can never be finished (``master/commit.py``), so it is refused here,
        at vote, not at finish."""
        if self.link.node_id != txn.session or not self.link.connected.is_set():
            raise ClusterUnavailable(f"the connection to the master was lost during transaction 0x{txn.ttid.hex()} "
                                     f"(a master restart or take-over): it cannot be committed; retry it")

    def vote(self, txn: Txn) -> list:
        """Vote ``txn`` on every node it writes to, resolving conflicts (at most
        ``conflict_rounds_max`` rounds); the oids it resolved."""
        self._require_session(txn)
        for _ in range(self.limits.conflict_rounds_max):
            self.wait_stores(txn)
            conflicts = self._vote_all(txn)
            if not conflicts:
                self._require_copies(txn)
                self._require_session(txn)
                return list(txn.resolved)
            for c in conflicts:
                self._resolve(txn, c)
        raise POSException.ConflictError(f"transaction still conflicting after "
                                         f"{self.limits.conflict_rounds_max} rounds of resolution")

    def _ballots(self, txn: Txn) -> dict[int, Ballot]:
        """``{node: its Ballot}``, the stores still buffered for it included."""
        meta_nodes = set(self.link.writable(u64(txn.ttid) % self.link.partitions))
        check_nodes: dict[int, list] = {}
        for oid, serial in txn.checks.items():
            for nid in self.link.readable(self.link.partition(oid))[:1] or self.link.writable(self.link.partition(oid)):
                check_nodes.setdefault(nid, []).append((oid, serial))
        buffers = self._take_buffers(txn)
        nodes = (set(txn.sent) | meta_nodes | set(check_nodes)) - txn.failed
        self._leave_out_incomplete(txn, nodes, meta_nodes)
        nodes -= txn.failed
        txn.meta_nodes = meta_nodes - txn.failed
        if not txn.meta_nodes:
            raise ClusterUnavailable("no writable copy of the partition of the transaction's metadata")
        txn.asked |= nodes
        meta = meta_of(txn)
        return {nid: Ballot(txn.ttid, txn.session, check_nodes.get(nid, []), meta if nid in meta_nodes else None,
                            sorted(txn.sent.get(nid, ())), txn.restore, buffers.get(nid, []), len(nodes) == 1)
                for nid in nodes}

    def _leave_out_incomplete(self, txn: Txn, nodes: set[int], meta_nodes: set[int]) -> None:
        """Leave out of the vote each node of ``nodes`` that did not take every record
        the transaction wrote to a partition it holds a cell of (or its metadata, when
        it holds the metadata's partition), as if it had failed.

        The master takes a voter to hold the whole transaction for every partition it
        has a cell of, and marks the cells of the others OUT_OF_DATE (or makes them copy
        it: ``master/replication.py``).  A node can miss some of the records and still
        be asked to vote: stores are routed when they are made, around the nodes
        suspected then (``ClusterLink.suspect``), and the vote goes to the nodes
        writable when it is cast; a node suspected for the first and trusted again for
        the second voted a transaction without its records, and the master then saw
        its cell as complete (an acknowledged commit missing from a copy that the
        catch-up never repaired: ``tests/fault/test_trust_faults.py``, seed 586941783 in
        CI, and ``tests/client/test_incomplete_voters.py``)."""
        rows = self.link.info.table.rows
        written: dict[int, set[bytes]] = {}
        for oid in txn.serials:
            written.setdefault(self.link.partition(oid), set()).add(oid)
        meta_partition = u64(txn.ttid) % self.link.partitions
        for nid in sorted(nodes):
            got = txn.sent.get(nid, set())
            missed = [p for p, oids in written.items() if _holds(rows, p, nid) and not oids <= got]
            if _holds(rows, meta_partition, nid) and nid not in meta_nodes:
                missed.append(meta_partition)
            if missed:
                log.info("S%d is left out of the vote of 0x%s: records of partition %d were routed around "
                         "it (it copies the transaction from the other copies)", nid, txn.ttid.hex(), missed[0])
                txn.failed.add(nid)
                txn.voted.discard(nid)

    def _vote_all(self, txn: Txn) -> list[Conflict]:
        """Vote on every involved node; returns the conflicts to resolve.

        First in parallel.  If a node answers BUSY, the votes taken elsewhere are taken
        back and the nodes are voted one by one in node-id order, waiting on each: a
        transaction then only waits while holding locks of lower-numbered nodes, so no
        two transactions can wait for each other.
        """
        ballots = self._ballots(txn)
        replies = self._call_each("Vote", calls.start_vote, ballots, calls.finish_vote, txn)
        for nid in txn.failed:
            ballots.pop(nid, None)
        for ballot in ballots.values():
            ballot.stores = []              # stored already
        conflicts = [c for r in replies.values() if r.status is VoteStatus.CONFLICTS for c in r.conflicts]
        txn.voted.update(nid for nid, r in replies.items() if r.status is VoteStatus.VOTED)
        if any(r.status is VoteStatus.BUSY for r in replies.values()) and not conflicts:
            taken = sorted(nid for nid, r in replies.items() if r.status is VoteStatus.VOTED)
            if taken:
                self._call_each("Unvote", calls.start_unvote, dict.fromkeys(taken, txn.ttid), calls.done)
                txn.voted.difference_update(taken)
            for nid in sorted(ballots):
                reply = self._vote_waiting(nid, ballots[nid])
                if reply.status is VoteStatus.CONFLICTS:
                    conflicts.extend(reply.conflicts)
                    break
                txn.voted.add(nid)
        unique = {}
        for c in conflicts:
            unique.setdefault((c.oid, c.read_conflict), c)
        return list(unique.values())

    def _vote_waiting(self, nid: int, ballot: Ballot) -> VoteOutcome:
        """Vote on one node, waiting (bounded) while another transaction holds a lock."""
        deadline = time.monotonic() + self.limits.busy_wait_s_max
        delay = 0.001
        while True:
            reply = self._call_each("Vote", calls.start_vote, {nid: ballot}, calls.finish_vote)[nid]
            if reply.status is not VoteStatus.BUSY:
                return reply
            if time.monotonic() > deadline:
                raise POSException.ConflictError(
                    f"objects stayed locked by transaction 0x{reply.busy_with.hex()} on S{nid} for "
                    f"more than busy_wait_s_max={self.limits.busy_wait_s_max} s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    def _call_each(self, what: str, start, requests: dict, finish, txn: Txn | None = None) -> dict:
        """Call each node with its request: ``start(stub, request, timeout_s)`` sends it
        (a ``calls.start_*``), ``finish(started, what)`` reads the answer; the answers by
        node.  The requests are all sent, then the answers read (over the framed data
        plane: in parallel, from this thread).  With ``txn``, a node that does not
        answer is left out (``node_failed``)."""
        started = {}
        for nid, request in requests.items():
            try:
                started[nid] = start(self.link.storage(nid), request, self.limits.rpc_timeout_s)
            except ClusterUnavailable as exc:
                started[nid] = exc
        out, error = {}, None
        for nid, handle in started.items():     # every call ends before an error is raised: an
            try:                                # abort then never overtakes a vote still on its way
                if isinstance(handle, Exception):
                    raise handle
                out[nid] = finish(handle, f"{what} on S{nid}")
            except Exception as exc:  # noqa: BLE001 - raised below, once every call ended
                if not self._left_out(txn, nid, exc):
                    error = error or exc
        if error is not None:
            raise error
        return out

    def _resolve(self, txn: Txn, c: Conflict) -> None:
        oid = c.oid
        if c.read_conflict:
            raise POSException.ReadConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        serial, data = txn.data[oid]
        if data is TOO_BIG or data is None:
            raise POSException.ConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        if c.committed_serial == Z64:
            raise POSException.ConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        resolved = self.resolve_conflict(oid, c.committed_serial, serial, data)
        self.add(txn, oid, c.committed_serial, resolved)
        txn.resolved.add(oid)

    def finish(self, txn: Txn) -> tuple[bytes, bytes | None]:
        """``(tid, the tid published before it or None)``, once the master acknowledged
        the transaction as committed and complete; ``NotCommitted`` when it says it
        never will be; ``OutcomeUnknown`` when no master could tell within
        ``rpc_timeout_s``.

        A session that ended since the vote (the master was lost: restarted, replaced
        by a standby) makes ``NotCommitted`` at once: no master can finish a transaction
        of an ended session, and none was asked to (no Finish was sent), so none has
        committed it.  Asking the new master instead could not tell (its verdict on an
        earlier master's transaction is "not known": ``master/commit.py``, rule 3)."""
        if self.link.node_id != txn.session or not self.link.connected.is_set():
            raise NotCommitted(f"tpc_finish of 0x{txn.ttid.hex()}: the connection to the master was lost after "
                               f"its vote (a master restart or take-over), before its Finish was sent: it is not "
                               f"committed; retry it")
        try:
            return calls.finish(self.link.master, txn.session, txn.ttid, list(txn.serials), sorted(txn.voted),
                                txn.view_ptid, self.limits.finish_timeout_s)
        except RequestRefused as exc:
            raise NotCommitted(f"tpc_finish refused: {exc}") from exc
        except ClusterUnavailable as exc:
            return self._final_tid(txn, exc), None

    def _final_tid(self, txn: Txn, why: Exception) -> bytes:
        """Finish ended without an answer (``why``): ask the master, the only one that
        decides, until it knows (``master/commit.py``), instead of guessing."""
        deadline = time.monotonic() + self.limits.rpc_timeout_s
        while True:
            try:
                reply = calls.final_tid(self.link.master, txn.ttid, self.limits.rpc_timeout_s)
            except ClusterUnavailable:
                reply = None
            if reply is not None and reply.tid:
                return reply.tid
            if reply is not None and reply.not_committed:
                raise NotCommitted(f"tpc_finish failed and the transaction was not committed: {why}") from why
            if time.monotonic() > deadline:
                txn.outcome_unknown = True
                raise OutcomeUnknown(f"tpc_finish of 0x{txn.ttid.hex()}: no master could tell within "
                                     f"{self.limits.rpc_timeout_s:g} s whether it committed ({why}); it is "
                                     f"decided by the master, a read of what it wrote tells") from why
            time.sleep(0.2)

    def abort(self, txn: Txn) -> None:
        """Drop what ``txn`` left on the nodes (its stores end first), through the
        master.  An Abort that does not reach the master is sent again while the
        session lives (``owed.py``: its vote's locks would otherwise stay until the
        master's ``pending_timeout_s``); a refusal is logged."""
        for nid in list(txn.inflight):    # stores end before their abort
            for started, _ in txn.inflight.pop(nid):
                try:
                    calls.done(started)
                except Exception as exc:  # noqa: BLE001 - aborted anyway
                    log.debug("store of 0x%s to S%d before its abort: %s", txn.ttid.hex(), nid, exc)
        nodes = sorted(set(txn.sent) | txn.voted | txn.asked)   # a vote may succeed where another failed
        if not (nodes or txn.restore):
            return          # nothing reached any node
        if txn.outcome_unknown and self.link.node_id != txn.session:
            return          # the master that may have committed it is gone: the next decides (rule 3)
        try:
            self._send_abort(txn.session, txn.ttid, nodes)
        except (POSException.ReadOnlyError, AccessDenied) as exc:   # the commit said it already
            log.debug("tpc_abort of 0x%s: %s", txn.ttid.hex(), exc)
        except ClusterUnavailable as exc:   # lost on its way: sent again while the session lives
            log.warning("tpc_abort of 0x%s: %s; it is sent again", txn.ttid.hex(), exc)
            self.owed.owe(txn.session, txn.ttid, nodes)
        except Exception as exc:  # noqa: BLE001 - refused (being finished, ...): nothing to undo
            log.warning("tpc_abort of 0x%s: %s", txn.ttid.hex(), exc)

    def _send_abort(self, session: int, ttid: bytes, nodes: list[int]) -> None:
        calls.abort(self.link.master, session, ttid, nodes, self.limits.rpc_timeout_s)


def _holds(rows, partition: int, nid: int) -> bool:
    """Whether node ``nid`` has a cell of ``partition`` that takes writes in ``rows``."""
    return any(c.node_id == nid and c.state is not CellState.CORRUPTED for c in rows[partition].cells)


def _checksum(data) -> int:
    """xxh3-64 of a record's bytes (``Parts``: of its parts back to back)."""
    if not isinstance(data, Parts):
        return xxhash.xxh3_64_intdigest(data)
    h = xxhash.xxh3_64()
    for part in data.parts:
        h.update(part)
    return h.intdigest()


def meta_of(txn: Txn) -> TransactionInfo:
    """The metadata of ``txn`` a vote carries to the nodes that write it: ZODB's user,
    description and extension as bytes, and the oids it stores."""
    m = txn.meta
    user = m.user if isinstance(m.user, bytes) else m.user.encode("utf-8")
    desc = m.description if isinstance(m.description, bytes) else m.description.encode("utf-8")
    ext = getattr(m, "extension_bytes", None)
    if ext is None:
        ext = pickle.dumps(getattr(m, "extension", {}) or {}, 3) if getattr(m, "extension", None) else b""
    return TransactionInfo(b"", user, desc, ext or b"", sorted(txn.serials), b"")
