"""Transaction manager of a storage node: per-oid write locks and conflict detection.

No I/O of its own besides the backend, no gRPC: the servicer decodes requests and calls
these methods, which makes the locking rules testable with plain calls.

Rules:
- ``store`` keeps records under the transaction's ttid; nothing is locked yet.
  ``store_blob_chunk`` keeps the chunks of a blob before the record naming it.
- ``vote`` takes the write locks of every stored and every checked (readCurrent) oid
  all at once, or none: if another voted transaction holds one, it answers ``BUSY``
  and the client retries later.  Locks are never waited for while held, so two
  transactions can never deadlock.  Under the locks it compares each base serial with
  the newest committed revision: a mismatch is a conflict, the locks are released and
  the client resolves and votes again.  Otherwise the vote is made durable.
- ``unvote`` releases the locks of a vote and forgets it (stores stay): a client that
  got ``BUSY`` from one node takes back its votes elsewhere before waiting, and then
  votes node by node in node-id order, so waits always follow one global order.
- A store after a vote (the client resolved a conflict reported by another node)
  takes the vote back: the client votes again.  A store and a vote of one transaction
  never run at once: the one that comes second is refused (``RequestRefused``).  A
  client stores every record and reads every answer before it votes; one that did
  not would have records voted that the vote neither locked nor checked for
  conflicts (it found the stores before they were written).
- A vote may carry the transaction's last stores (``vote(records=...)``: the client
  sends them inside its Vote).  They count as stores made just before the vote and
  are locked and checked with the others; a vote that succeeds writes them and itself
  in one write transaction (one LMDB commit instead of two, fewer pages for the
  fsync), one that does not writes them alone, as a store would have.
- ``lock`` (from the master, with the final tid) turns the voted records into
  revisions durably and releases the locks; ``abort`` drops everything of the ttid.

Limits (``LimitExceeded``, RESOURCE_EXHAUSTED on the wire, checked before anything of
the request is written; the transaction keeps what it stored before):
``transaction_bytes_max`` data bytes and ``objects_per_transaction_max`` records
stored by one transaction on this node (a record stored again after conflict
resolution counts again); ``transactions_per_client_max`` transactions of one client
holding stores here; ``unvoted_bytes_per_client_max`` data bytes stored by one
client's transactions that are not voted yet (what a client may pile up here before
its vote: stores are written to the backend, this bounds the disk a slow or broken
client can hold).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from neoarray.errors import ChecksumError, LimitExceeded, RequestRefused
from neoarray.ids import Z64

from .backend import Backend, Stored, TransactionInfo, checksum
from .check import repair_records

VOTED, CONFLICTS, BUSY = "voted", "conflicts", "busy"


@dataclass
class Conflict:
    oid: bytes
    committed_serial: bytes
    serial: bytes
    read_conflict: bool = False


class _StoresKept(Exception):
    """A vote's refusal after its records were written alone (their count stands)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@dataclass
class VoteResult:
    status: str
    conflicts: list[Conflict] = field(default_factory=list)
    busy_with: bytes = b""


class TransactionManager:
    """Locks and votes over one ``Backend``; thread-safe."""

    def __init__(self, backend: Backend, transaction_bytes_max: int = 8 << 30,
                 objects_per_transaction_max: int = 1_000_000, transactions_per_client_max: int = 64,
                 unvoted_bytes_per_client_max: int = 16 << 30, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.clock = clock          # monotonic seconds (the simulation passes its clock)
        self.transaction_bytes_max = transaction_bytes_max
        self.objects_per_transaction_max = objects_per_transaction_max
        self.transactions_per_client_max = transactions_per_client_max
        self.unvoted_bytes_per_client_max = unvoted_bytes_per_client_max
        self.mutex = threading.Lock()
        self.write_mutex = threading.Lock()
        self.locks: dict[bytes, bytes] = {}       # oid -> ttid
        self.held: dict[bytes, set[bytes]] = {}   # ttid -> oids
        self.owners: dict[bytes, int] = {}        # ttid -> client node id
        self.sizes: dict[bytes, int] = {}         # ttid -> bytes stored
        self.counts: dict[bytes, int] = {}        # ttid -> records stored
        self.since: dict[bytes, float] = {}       # ttid -> monotonic time it was first held
        self.storing: dict[bytes, int] = {}       # ttid -> stores running now
        self.voting: set[bytes] = set()           # ttids whose vote runs now
        # partitions of OUT_OF_DATE cells (set by the node): revisions may be missing
        # here, so an older last serial is no conflict (the readable copies check)
        self.catching_up: set[int] = set()
        # called with the partitions a lock wrote, under the write mutex (the node's
        # dropper: a partition it emptied may have rows again)
        self.on_written: Callable[[set[int]], None] | None = None
        self._recover()

    def _recover(self) -> None:
        """After a restart: drop unvoted stores, take back the locks of voted ones."""
        voted = self.backend.voted()
        for ttid in self.backend.pending_ttids() - set(voted):
            self.backend.abort(ttid)
        self.backend.keep_reservations()
        now = self.clock()
        for ttid, doc in voted.items():
            oids = set(doc["oids"])
            self.held[ttid] = oids
            self.owners[ttid] = doc["node"]
            self.since[ttid] = now
            for oid in oids:
                self.locks[oid] = ttid

    # -- client side ---------------------------------------------------------------
    def store(self, ttid: bytes, node: int, records: list[Stored]) -> None:
        self._check_records(records)
        with self.mutex:
            self._check_owner(ttid, node)
            if ttid in self.voting:
                raise RequestRefused(f"store of {len(records)} objects of 0x{ttid.hex()} while its vote runs on "
                                     f"this node: store every record, and read the answers, before voting")
            self.storing[ttid] = self.storing.get(ttid, 0) + 1
        try:
            size = self._count_stores(ttid, node, records)
            try:
                with self.write_mutex:
                    large = self.backend.store_voted(ttid, records)
            except BaseException:
                self._uncount_stores(ttid, size, len(records))
                raise
        finally:
            with self.mutex:
                left = self.storing.pop(ttid) - 1
                if left:
                    self.storing[ttid] = left
        self.backend.write_behind(large)        # outside the write mutex: it may wait for the disk

    @staticmethod
    def _check_records(records: list[Stored]) -> None:
        for r in records:
            if len(r.oid) != 8 or len(r.serial) != 8:
                raise RequestRefused("oid and serial must be 8 bytes")
            if r.data is not None and checksum(r.data) != r.checksum:
                raise ChecksumError(f"store of oid 0x{r.oid.hex()} refused: data does not "
                                    f"match its checksum (corrupted in transit)")

    def _count_stores(self, ttid: bytes, node: int, records: list[Stored]) -> int:
        """Before ``records`` of ``ttid`` are written: take back its vote (a store after
        a vote, the client resolved a conflict, unvotes), check the limits and count
        them; returns their data bytes."""
        size = sum(len(r.data or b"") for r in records)
        self.unvote(ttid)
        with self.mutex:
            self._check_owner(ttid, node)
            self._check_limits(ttid, node, size, len(records))
            self.sizes[ttid] = self.sizes.get(ttid, 0) + size
            self.counts[ttid] = self.counts.get(ttid, 0) + len(records)
            self.owners[ttid] = node
            self.since.setdefault(ttid, self.clock())
        return size

    def _uncount_stores(self, ttid: bytes, size: int, count: int) -> None:
        """Nothing of a store counted by ``_count_stores`` was written."""
        with self.mutex:
            if ttid in self.sizes:      # not dropped meanwhile (truncate)
                self.sizes[ttid] -= size
                self.counts[ttid] = self.counts.get(ttid, 0) - count

    def store_blob_chunk(self, ttid: bytes, node: int, oid: bytes, index: int, crc: int, data,
                         chunk_bytes_max: int) -> None:
        """Keep one chunk of a blob that ``ttid`` uploads for ``oid`` (before the
        record that names it, ``Backend.store_blob_chunk``); counted in the
        transaction's and the client's bytes like a store, and like a store it takes
        back a vote."""
        if len(oid) != 8:
            raise RequestRefused("oid must be 8 bytes")
        if len(data) > chunk_bytes_max:
            raise LimitExceeded(f"blob chunk {index} of oid 0x{oid.hex()} has {len(data)} bytes, "
                                f"blob_chunk_bytes_max={chunk_bytes_max}: send smaller chunks")
        if checksum(data) != crc:
            raise ChecksumError(f"blob chunk {index} of oid 0x{oid.hex()} refused: its bytes do not "
                                f"match its checksum (corrupted in transit)")
        self._check_owner(ttid, node)
        self.unvote(ttid)
        with self.mutex:
            self._check_owner(ttid, node)
            self._check_limits(ttid, node, len(data), 0)
            self.sizes[ttid] = self.sizes.get(ttid, 0) + len(data)
            self.owners[ttid] = node
            self.since.setdefault(ttid, self.clock())
        try:
            with self.write_mutex:
                large = self.backend.store_blob_chunk(ttid, oid, index, crc, data)
        except BaseException:
            with self.mutex:
                self.sizes[ttid] = self.sizes.get(ttid, 0) - len(data)
            raise
        self.backend.write_behind(blob_keys=large)     # outside the write mutex

    def _check_owner(self, ttid: bytes, node: int) -> None:
        """``RequestRefused`` if another client holds stores or a vote of ``ttid``: a
        transaction belongs to the client that began it, and what a dead one left
        under a tid that a restore takes again (``master/node.py``, ``_abort_stale``)
        is never committed with another client's records."""
        owner = self.owners.get(ttid)
        if owner is not None and owner != node:
            raise RequestRefused(f"transaction 0x{ttid.hex()} is held on this node by client C{owner}, "
                                 f"not C{node}: it is aborted when that client's session ends; retry then")

    def _check_limits(self, ttid: bytes, node: int, size: int, count: int) -> None:
        """``LimitExceeded`` if a store of ``count`` records, ``size`` data bytes,
        would take ``ttid`` or its client past a limit (see the module docstring)."""
        total = self.sizes.get(ttid, 0) + size
        if total > self.transaction_bytes_max:
            raise LimitExceeded(f"transaction 0x{ttid.hex()} would store {total} bytes on this node, "
                                f"transaction_bytes_max={self.transaction_bytes_max}")
        objects = self.counts.get(ttid, 0) + count
        if objects > self.objects_per_transaction_max:
            raise LimitExceeded(f"transaction 0x{ttid.hex()} would store {objects} objects on this node, "
                                f"objects_per_transaction_max={self.objects_per_transaction_max}")
        mine = [t for t, n in self.owners.items() if n == node]
        if ttid not in self.owners and len(mine) >= self.transactions_per_client_max:
            raise LimitExceeded(f"client C{node} already has {len(mine)} transactions storing on this node, "
                                f"transactions_per_client_max={self.transactions_per_client_max}")
        unvoted = size + sum(self.sizes.get(t, 0) for t in mine if t not in self.held and t != ttid)
        unvoted += self.sizes.get(ttid, 0)
        if unvoted > self.unvoted_bytes_per_client_max:
            raise LimitExceeded(f"client C{node} would hold {unvoted} bytes of unvoted stores on this node, "
                                f"unvoted_bytes_per_client_max={self.unvoted_bytes_per_client_max}")

    def vote(self, ttid: bytes, node: int, checks: list[tuple[bytes, bytes]],
             meta: TransactionInfo | None, expected: list[bytes], restore: bool = False,
             sync: bool = True, records: list[Stored] = ()) -> VoteResult:
        """Take the vote's object locks (``BUSY`` when another transaction holds one),
        check for conflicts, and record the vote (fsynced when ``sync``:
        ``Backend.vote``).

        ``records``: stores the vote request carries (the transaction's last ones),
        kept as ``store`` keeps them, before the vote in effect: they are locked and
        checked with the earlier ones.  A vote that succeeds writes them with itself
        in one write transaction (``Backend.vote(records=...)``); one that does not
        (busy, conflicts, refused) writes them alone first, as a store would have."""
        for what, items in (("checked objects", checks), ("expected objects", expected)):
            if len(items) > self.objects_per_transaction_max:
                raise LimitExceeded(f"vote of 0x{ttid.hex()} names {len(items)} {what}, "
                                    f"objects_per_transaction_max={self.objects_per_transaction_max}")
        self._check_records(records)
        with self.mutex:
            self._check_owner(ttid, node)
            if self.storing.get(ttid) or ttid in self.voting:
                raise RequestRefused(f"vote of 0x{ttid.hex()} while a {'store' if self.storing.get(ttid) else 'vote'} "
                                     f"of it runs on this node: read every answer before voting")
            self.voting.add(ttid)
        try:
            if not records:
                return self._vote(ttid, node, checks, meta, expected, restore, sync, ())
            size = self._count_stores(ttid, node, records)
            try:
                return self._vote(ttid, node, checks, meta, expected, restore, sync, records)
            except _StoresKept as kept:
                raise kept.error from None
            except BaseException:
                self._uncount_stores(ttid, size, len(records))
                raise
        finally:
            with self.mutex:
                self.voting.discard(ttid)

    def _keep_stores(self, ttid: bytes, records) -> None:
        """Write the stores of a vote that will not write them with itself."""
        if records:
            with self.write_mutex:
                large = self.backend.store_voted(ttid, records)
            self.backend.write_behind(large)

    def _vote(self, ttid, node, checks, meta, expected, restore, sync, records) -> VoteResult:
        """``vote`` once it is the only store or vote of ``ttid`` running."""
        stored, stored_bytes = self.backend.stored_serials(ttid)
        if records:
            earlier = dict(stored)
            earlier.update((r.oid, r.serial) for r in records)
            serials = list(earlier.items())
        else:
            serials = stored
        stored_oids = {oid for oid, _ in serials}
        missing = set(expected) - stored_oids
        if missing:
            error = RequestRefused(f"vote of 0x{ttid.hex()}: {len(missing)} stored objects "
                                   f"missing on this node (e.g. 0x{min(missing).hex()})")
            if records:
                self._keep_stores(ttid, records)
                raise _StoresKept(error)
            raise error
        wanted = stored_oids | {oid for oid, _ in checks}
        with self.mutex:
            self._check_owner(ttid, node)
            busy = None
            if ttid in self.held:       # voted already (and no records: they took it back)
                return VoteResult(VOTED)
            for oid in wanted:
                holder = self.locks.get(oid)
                if holder is not None and holder != ttid:
                    busy = holder
                    break
            if busy is None:
                for oid in wanted:
                    self.locks[oid] = ttid
                self.held[ttid] = wanted
                self.owners[ttid] = node
                self.since.setdefault(ttid, self.clock())
        if busy is not None:
            self._keep_stores(ttid, records)
            return VoteResult(BUSY, busy_with=busy)
        conflicts = [] if restore else self._conflicts(serials, checks)
        if conflicts:
            self._release(ttid)
            self._keep_stores(ttid, records)
            return VoteResult(CONFLICTS, conflicts)
        large, written = (), False
        try:
            with self.write_mutex:
                with self.mutex:
                    dropped = ttid not in self.held
                if dropped:    # by a truncation between the lock taking and now
                    raise RequestRefused(f"vote of 0x{ttid.hex()}: the transaction was dropped "
                                         f"by neoctl truncate while voting; it is not committed")
                large = self.backend.vote(ttid, meta, sorted(wanted), node, sync=False,
                                          stored=(stored_bytes, len(stored)), records=records)
                written = bool(records)
            if large:
                self.backend.write_behind(large)    # outside the write mutex, before the fsync
            if sync:        # outside the write mutex: concurrent votes and locks share fsyncs
                self.backend.sync_votes()
        except Exception as exc:
            self._release(ttid)
            if written:     # the records are kept: their count stands
                raise _StoresKept(exc) from None
            raise
        except BaseException:
            self._release(ttid)
            raise
        return VoteResult(VOTED)

    def unvote(self, ttid: bytes) -> None:
        """Release the locks of a voted ``ttid`` and forget its vote; stores stay."""
        if ttid in self.held:
            with self.write_mutex:
                self.backend.unvote(ttid)
            self._release(ttid)

    def _conflicts(self, stored: list[tuple[bytes, bytes]], checks) -> list[Conflict]:
        out = []
        with self.backend.kv.read() as txn:
            lasts = self.backend.last_serials([oid for oid, _ in stored], txn)
            for (oid, serial), last in zip(stored, lasts):
                last = last or Z64
                if last != serial and not (last < serial and self.backend.partition(oid) in self.catching_up):
                    out.append(Conflict(oid, last, serial))
            lasts = self.backend.last_serials([oid for oid, _ in checks], txn)
            for (oid, serial), last in zip(checks, lasts):
                last = last or Z64
                if last != serial:
                    out.append(Conflict(oid, last, serial, read_conflict=True))
        return out

    def _release(self, ttid: bytes) -> None:
        with self.mutex:
            for oid in self.held.pop(ttid, ()):
                if self.locks.get(oid) == ttid:
                    del self.locks[oid]

    def abort(self, ttid: bytes) -> None:
        with self.write_mutex:
            self.backend.abort(ttid)
        self._release(ttid)
        self._forget(ttid)

    def _forget(self, ttid: bytes) -> None:
        with self.mutex:
            self.sizes.pop(ttid, None)
            self.counts.pop(ttid, None)
            self.owners.pop(ttid, None)
            self.since.pop(ttid, None)

    def pending(self, age_min_s: float, count_max: int) -> list[tuple[bytes, int, bool, float]]:
        """Transactions held (stored, or voted) for at least ``age_min_s``, the oldest
        first, at most ``count_max``: ``[(ttid, client node, voted, age_s)]``.  The
        node reports them to the master, which alone decides when one is dead
        (``master/commit.py``)."""
        now = self.clock()
        with self.mutex:
            old = sorted(((t, s) for t, s in self.since.items() if now - s >= age_min_s), key=lambda i: i[1])
            return [(t, self.owners.get(t, 0), t in self.held, now - s) for t, s in old[:count_max]]

    def abort_node(self, node: int, keep=frozenset()) -> list[bytes]:
        """Abort every unlocked transaction of a client that went away, but ``keep``."""
        with self.mutex:
            ttids = [t for t, n in self.owners.items() if n == node and t not in keep]
        for ttid in ttids:
            self.abort(ttid)
        return ttids

    # -- master side ----------------------------------------------------------------
    def lock(self, ttid: bytes, tid: bytes) -> None:
        with self.write_mutex:
            oids = self.backend.lock(ttid, tid, sync=False)
            if self.on_written is not None:
                n = self.backend.partitions
                self.on_written({int.from_bytes(oid, "big") % n for oid in oids} | {self.backend.partition(tid)})
        self.backend.kv.sync()      # durable before it answers; outside the write mutex (group commit)
        self._release(ttid)
        self._forget(ttid)

    def unlock(self, ttids: list[bytes]) -> None:
        with self.write_mutex:
            self.backend.unlock(ttids)

    # -- truncate (neoctl truncate) ----------------------------------------------------
    def truncate(self, tid: bytes, until: bytes, check_only: bool = False) -> tuple[int, int, int]:
        """Drop every transaction not locked yet (its client's finish is refused by the
        master), then ``Backend.truncate``; returns (transactions, revisions, dropped)."""
        if check_only:
            return (*self.backend.truncate(tid, until, check_only=True), 0)
        with self.write_mutex, self.mutex:
            pending = self.backend.pending_ttids()
            for ttid in pending:
                self.backend.abort(ttid)
            self.locks.clear()
            self.held.clear()
            self.owners.clear()
            self.since.clear()
            self.sizes.clear()
            self.counts.clear()
            result = self.backend.truncate(tid, until)
        self.backend.kv.settle()        # what was freed is usable by the next write
        return (*result, len(pending))

    # -- replica repair (neoctl check --repair) -----------------------------------------
    def repair_blob_chunk(self, oid: bytes, key_tid: bytes, index: int, crc: int, data,
                          held_partitions: set[int], chunk_bytes_max: int) -> None:
        """Write one chunk of a committed blob from a good copy (before the repair of
        its record): refused (``RequestRefused``) for a partition this node has no
        cell of, or for chunks of a transaction in progress here (their key tid is
        its ttid); ``ChecksumError`` when the bytes do not match."""
        p = self.backend.partition(oid)
        if p not in held_partitions:
            raise RequestRefused(f"repair of a blob chunk of oid 0x{oid.hex()} refused: this node has no "
                                 f"cell of partition {p}")
        if len(data) > chunk_bytes_max:
            raise LimitExceeded(f"blob chunk of {len(data)} bytes, blob_chunk_bytes_max={chunk_bytes_max}")
        if checksum(data) != crc:
            raise ChecksumError(f"repair of blob chunk {index} of oid 0x{oid.hex()} refused: its bytes do "
                                f"not match its checksum")
        with self.write_mutex, self.mutex:
            if key_tid in self.owners or key_tid in self.backend.pending_ttids():
                raise RequestRefused(f"repair of blob chunk {index} of oid 0x{oid.hex()} refused: its key "
                                     f"0x{key_tid.hex()} is a transaction in progress on this node")
            self.backend.put_blob_chunk(oid, key_tid, index, crc, data)

    def repair(self, objects: list, transactions: list, held_partitions: set[int]):
        """Rewrite records from a good copy (``storage_node.check.repair_records``).

        Refused whole (``RequestRefused``) when a key belongs to a partition this node
        has no cell of.  Under both mutexes, so that no vote takes a lock between the
        busy test and the write: revisions of an oid a voted transaction holds, and
        records of a tid locked but not unlocked, are skipped and reported.
        """
        keys = [(r.oid, r.tid, self.backend.partition(r.oid)) for r in objects]
        keys += [(b"", t.tid, self.backend.partition(t.tid)) for t in transactions]
        foreign = [k for k in keys if k[2] not in held_partitions]
        if foreign:
            oid, tid, p = foreign[0]
            what = f"oid 0x{oid.hex()} at tid 0x{tid.hex()}" if oid else f"transaction 0x{tid.hex()}"
            raise RequestRefused(f"repair of {what} refused: this node has no cell of partition {p}")
        with self.write_mutex, self.mutex:
            locked_tids = set(self.backend.locked().values())
            return repair_records(self.backend, objects, transactions, set(self.locks), locked_tids)
