"""A storage node of the simulation: the real ``TransactionManager`` over the real
``Backend``, on a ``MemoryStore`` whose durable state is what was synced
(``DurableMemoryStore``) or on a real ``LMDBStore`` in a temporary directory.

A crash loses the actor's memory (its transaction manager, its catch-up progress)
and, on the memory store, what was written but not synced; LMDB keeps what it
committed (``kill -9``).  The restarted node builds a new manager on what is left,
which drops unvoted stores and takes back the locks of votes, as the real node does.

Its main process identifies to the master, then sends heartbeats: the transactions
it holds (the master answers with verdicts) and the partitions it copied (the
master answers with catch-up tasks, copied here with the real
``storage_node/replication.py`` functions over simulated calls to a source).
"""
from __future__ import annotations

import os
import shutil
import tempfile

from neoarray.errors import NeoError, RequestRefused
from neoarray.ids import Z64
from neoarray.kv import LMDBStore, MemoryStore
from storage_node import replication as rep
from storage_node.backend import Backend
from storage_node.fencing import EpochFence
from storage_node.manager import TransactionManager
from storage_node.replica import KeysQuery, RecordsQuery

from .world import Call, Sleep, StaleEpoch

HEARTBEAT_S = 0.5
KEYS_MAX = 16
REPLY_BYTES_MAX = 1 << 16
RPC_S = 1.0
FENCED = frozenset({"lock", "unlock", "abort", "abort_node", "recovery_info"})   # (storage_node/service.py)


class DurableMemoryStore(MemoryStore):
    """A ``MemoryStore`` that keeps, at each ``sync``, a copy of itself: the state a
    crash of the machine leaves."""

    def __init__(self, bytes_max: int = 1 << 62, durable=None):
        MemoryStore.__init__(self, bytes_max)
        self.durable = None
        if durable is not None:
            keys, values, used = durable
            self.keys = {n: list(k) for n, k in keys.items()}
            self.values = {n: dict(v) for n, v in values.items()}
            self.used_bytes = used
        self.sync()

    def sync(self) -> None:
        MemoryStore.sync(self)
        with self.lock:
            self.durable = ({n: list(k) for n, k in self.keys.items()},
                            {n: dict(v) for n, v in self.values.items()}, self.used_bytes)


class StorageActor:
    """One storage node: ``nid``, its store kind (``memory`` or ``lmdb``)."""

    backend_class = Backend     # a test may give a faulty one
    manager_class = TransactionManager      # likewise

    def __init__(self, world, nid: int, partitions: int, store: str = "memory",
                 bytes_max: int = 1 << 62):
        self.world, self.nid, self.name = world, nid, f"S{nid}"
        self.partitions, self.store_kind, self.bytes_max = partitions, store, bytes_max
        self.up, self.epoch = False, 0
        self.durable = None
        self.path = tempfile.mkdtemp(prefix="neoarray-sim-") if store == "lmdb" else None
        self.kv = self.backend = self.tm = None
        self.done: dict[int, bytes] = {}      # partition -> tid copied up to (in memory)
        self.tasks: list = []
        self.masters = ["M"]                  # the master address list (primary and standbys)
        self.master = "M"                     # the one in use
        self.checker = None                   # told the orders obeyed and the epochs seen

    def start(self) -> None:
        if self.store_kind == "lmdb":
            self.kv = LMDBStore(os.path.join(self.path, "db"), map_bytes_max=64 << 20)
        else:
            self.kv = DurableMemoryStore(self.bytes_max, self.durable)
        self.backend = self.backend_class(self.kv, self.partitions)
        if self.backend.get_config("partitions") is None:
            self.backend.set_config(partitions=self.partitions)
        self.tm = self.manager_class(self.backend, clock=lambda: self.world.now)
        self.fence = EpochFence(self.backend)
        self.done, self.tasks = {}, []
        self.up = True
        self.epoch += 1
        self.world.spawn(self.name, self.main())

    def crash(self) -> None:
        """Lose the memory: what is durable stays."""
        if not self.up:
            return
        self.up = False
        self.epoch += 1
        if self.store_kind == "lmdb":
            self.kv.close()
        else:
            self.durable = self.kv.durable
        self.kv = self.backend = self.tm = self.fence = None

    def close(self) -> None:
        if self.up and self.store_kind == "lmdb":
            self.kv.close()
        self.up = False
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    # -- requests -----------------------------------------------------------------------
    def handle(self, kind: str, payload: tuple, src: str, epoch: int | None = None):
        if epoch is not None and kind in FENCED:     # a master's order (``EpochFence.check``)
            refusal = self.fence.admit(epoch)
            self._obeyed(src, epoch, refusal is None)
            if refusal is not None:
                raise StaleEpoch(refusal)
        tm = self.tm
        if kind == "store":
            ttid, node, records = payload
            return tm.store(ttid, node, records)
        if kind == "vote":
            ttid, node, meta, expected, sync, records = payload
            return tm.vote(ttid, node, [], meta, expected, sync=sync, records=records)
        if kind == "lock":
            return tm.lock(*payload)
        if kind == "abort":
            return tm.abort(payload[0])
        if kind == "abort_node":
            return tm.abort_node(payload[0], frozenset(payload[1]))
        if kind == "unlock":
            return tm.unlock(list(payload[0]))
        if kind == "load":
            return self.backend.load(payload[0])
        if kind == "recovery_info":
            last_tid, last_oid = self.backend.last_ids()
            return last_tid, last_oid, self.backend.locked(), sorted(self.backend.voted()), self.fence.stamp
        if kind == "replica_keys":
            p, table, min_tid, max_tid, after = payload
            reply = rep.replica_keys(self.backend, KeysQuery(p, table, max_tid, min_tid, after, KEYS_MAX), KEYS_MAX)
            return list(reply.keys), reply.next_after
        if kind == "replica_records":
            p, table, keys = payload
            return rep.replica_records(self.backend, RecordsQuery(p, table, keys, REPLY_BYTES_MAX), KEYS_MAX,
                                       REPLY_BYTES_MAX)
        raise RequestRefused(f"unknown request {kind!r}")

    def record_stamp(self, master: str, stamp: tuple[int, int]) -> str | None:
        """A master's ``RecordStamp`` (``StorageServicer.RecordStamp``): the real
        ``EpochFence.record``; the refusal of a stale epoch, or None."""
        refusal = self.fence.record(*stamp)
        self._obeyed(master, stamp[0], refusal is None)
        return refusal

    def _obeyed(self, master: str, epoch: int, admitted: bool) -> None:
        if self.checker is not None:
            self.checker.order(self.name, master, epoch, self.fence.highest, admitted)

    def _next_master(self) -> bool:
        """Switch to the next address of the master list (``StorageNode._next_master``);
        False with one address, or back at the first (wait a heartbeat interval)."""
        if len(self.masters) < 2:
            return False
        self.master = self.masters[(self.masters.index(self.master) + 1) % len(self.masters)]
        return self.master != self.masters[0]

    # -- the node's own process -----------------------------------------------------------
    def main(self):
        while True:
            last_tid, last_oid = self.backend.last_ids()
            reply = yield Call(self.master, "identify", ("storage", self.nid, last_tid, last_oid, self.fence.stamp),
                               RPC_S)
            if reply is None or not reply.ok:
                if not (reply is not None and isinstance(reply.error, RequestRefused)) and self._next_master():
                    continue                # try the whole list before waiting
                yield Sleep(HEARTBEAT_S)
                continue
            while True:
                yield Sleep(HEARTBEAT_S)
                pending = self.tm.pending(0.0, 64)
                done = sorted(self.done.items())
                reply = yield Call(self.master, "heartbeat", (self.nid, pending, done), RPC_S)
                if reply is None and len(self.masters) < 2:
                    continue
                if reply is None or not reply.ok:
                    if reply is None or not isinstance(reply.error, RequestRefused):
                        self._next_master()     # not answering as primary: the next address
                    break                   # the master does not know us (restarted, or lost us)
                verdicts, tasks, epoch = reply.value
                if not self.fence.obeys(epoch):     # (``StorageNode._master_loop``)
                    self._obeyed(self.master, epoch, False)
                    self._next_master()
                    break
                if verdicts:
                    self._obeyed(self.master, epoch, True)
                for ttid, tid in verdicts:
                    try:
                        self.tm.lock(ttid, tid) if tid else self.tm.abort(ttid)
                    except NeoError:
                        pass                # told again by the next heartbeat
                self.tm.catching_up = {p for p, _, _ in tasks}
                for task in tasks:
                    yield from self.catch_up(*task)

    def catch_up(self, p: int, until: bytes, sources: list[int]):
        """Copy partition ``p`` up to ``until`` from the first source that answers."""
        start = self.done.get(p, Z64)
        if start >= until:
            self.done[p] = start
            return
        for src in sources:
            copied = True
            for table in (rep.TRANSACTIONS, rep.OBJECTS):
                after = b""
                while True:
                    reply = yield Call(f"S{src}", "replica_keys", (p, table, start, until, after), RPC_S)
                    if reply is None or not reply.ok:
                        copied = False
                        break
                    keys, after = reply.value
                    copied = yield from self._copy(src, p, table, rep.missing_keys(self.backend, p, table, keys))
                    if not copied or not after:
                        break
                if not copied:
                    break
            if copied:
                self.done[p] = until
                return

    def _copy(self, src: int, p: int, table: int, missing: list[bytes]):
        """Copy the records of ``missing`` keys; False when the source or the disk failed."""
        while missing:
            got = yield Call(f"S{src}", "replica_records", (p, table, missing), RPC_S)
            if got is None or not got.ok or not got.value.keys_done:
                return False
            try:
                rep.apply_records(self.backend, p, got.value, None)
            except NeoError:
                return False        # full disk: the cell is not reported caught up
            missing = missing[got.value.keys_done:]
        return True
