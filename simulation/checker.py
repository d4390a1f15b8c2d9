"""The invariants of the simulation.

Checked when they happen (every step): no OID or TID handed out twice (across
master restarts and take-overs); on each storage node the master epoch it remembers
only grows, an order of an older epoch is never obeyed, and the orders of one master
only are obeyed per epoch; the master publishes (acknowledges) commits in strictly
increasing tid order.  Checked on every tick (``WATCH_S``): while the cluster is
RUNNING, every readable cell of a running node holds every commit published so far
that wrote its partition (a client may read any of them).  Checked at the end, once the faults stopped, every node is
back and the cluster is RUNNING with every cell UP_TO_DATE (itself an invariant):

- replicas identical: every cell of a partition holds the same records (checksum);
- no acknowledged commit lost: its data is readable at its tid, its metadata names
  its ttid;
- a commit refused to its client was not committed (no metadata names its ttid);
- a serializable history: each counter's revisions are 1, 2, 3, ... in tid order
  (each increment read the value before it), at least as many as acknowledged
  increments; each revision of the log adds exactly one entry to the one before.
"""
from __future__ import annotations

import zlib

import msgpack

from master.commit import COMPLETE
from neoarray.ids import u64
from neoarray.records import PARTITION
from neoarray.states import READABLE, CellState, ClusterState


class Checker:
    def __init__(self):
        self.violations: list[str] = []
        self.seen = {"oid": set(), "tid": set()}
        self.last_published = b""
        self.acked: dict[bytes, tuple[bytes, dict]] = {}       # ttid -> (tid, {oid: data})
        self.refused: dict[bytes, str] = {}
        self.unknowns: dict[bytes, dict] = {}       # outcome never learnt
        self.complete: list[tuple[bytes, list]] = []    # (tid, oids) published complete
        self.stale_read = False
        self.now = lambda: 0.0
        self.obeyed: dict[int, str] = {}          # epoch -> the master whose orders were obeyed
        self.highest: dict[str, int] = {}         # storage -> the highest epoch it saw

    def violation(self, text: str) -> None:
        self.violations.append(f"t={self.now():.3f}s {text}")

    # -- as it happens ---------------------------------------------------------------------
    def handed_out(self, kind: str, ids) -> None:
        seen = self.seen[kind]
        for i in ids:
            if i in seen:
                self.violation(f"{kind} 0x{i.hex()} handed out twice")
            seen.add(i)

    def published(self, txn) -> None:
        if txn.tid <= self.last_published:
            self.violation(f"tid 0x{txn.tid.hex()} published after 0x{self.last_published.hex()}")
        self.last_published = max(self.last_published, txn.tid)
        if txn.outcome == COMPLETE:
            self.complete.append((txn.tid, sorted(txn.oids)))

    def order(self, storage: str, master: str, epoch: int, highest: int, obeyed: bool) -> None:
        """A storage got an order of ``master`` of ``epoch`` (obeyed or refused), having
        seen ``highest``: epochs only grow on each storage, an order older than the
        newest epoch seen is not obeyed, and one master's orders only are obeyed per
        epoch."""
        if highest < self.highest.get(storage, 0):
            self.violation(f"{storage}'s master epoch went back from {self.highest[storage]} to {highest}")
        self.highest[storage] = max(highest, self.highest.get(storage, 0))
        if not obeyed:
            return
        if epoch < highest:
            self.violation(f"{storage} obeyed an order of {master} of epoch {epoch} after seeing epoch {highest}")
        if self.obeyed.setdefault(epoch, master) != master:
            self.violation(f"{storage} obeyed orders of {master} with epoch {epoch}, "
                           f"those of {self.obeyed[epoch]} were obeyed with it")

    def readable_copies_hold(self, master, storages: dict) -> None:
        """While the cluster is RUNNING, every readable cell of a running node holds
        every commit published so far that wrote its partition (checked on every
        tick of the schedule; the first failure only)."""
        if self.stale_read or not master.up or master.cluster_state != ClusterState.RUNNING:
            return
        pt, parts, running = master.pt, master.partitions, master.running_storages()
        for tid, oids in self.complete:
            wanted = {u64(tid) % parts: [("trans", PARTITION.pack(u64(tid) % parts) + tid)]}
            for oid in oids:
                wanted.setdefault(u64(oid) % parts, []).append(("obj", PARTITION.pack(u64(oid) % parts) + oid + tid))
            for p, keys in sorted(wanted.items()):
                for n, state in sorted(pt.rows[p].items()):
                    s = storages[n]
                    if state not in READABLE or n not in running or not s.up:
                        continue
                    with s.backend.kv.read() as txn:
                        missing = [k for db, k in keys if txn.get(db, k) is None]
                    if missing:
                        self.stale_read = True
                        self.violation(f"S{n}'s readable cell of partition {p} misses published commit "
                                       f"0x{tid.hex()} (table {master.table()})")
                        return

    def acknowledged(self, ttid: bytes, tid: bytes, writes: dict) -> None:
        self.acked[ttid] = (tid, writes)

    def not_committed(self, ttid: bytes, error) -> None:
        self.refused[ttid] = str(error)

    def unknown(self, ttid: bytes, writes: dict) -> None:
        self.unknowns[ttid] = writes

    # -- at the end -------------------------------------------------------------------------
    def final(self, master, storages: dict, counters: list[bytes], log_oid: bytes) -> None:
        if not master.up or master.cluster_state != ClusterState.RUNNING:
            self.violation(f"the cluster is not back to RUNNING: {master.cluster_state if master.up else 'down'}")
            return
        stale = [(p, n, s) for p, row in enumerate(master.pt.rows) for n, s in sorted(row.items())
                 if s != CellState.UP_TO_DATE or not storages[n].up]
        if stale:
            self.violation(f"cells not caught up at the end: {stale}")
            return
        for p, row in enumerate(master.pt.rows):
            sums = {n: partition_digest(storages[n].backend, p) for n in sorted(row)}
            if len(set(sums.values())) > 1:
                self.violation(f"partition {p}: replicas differ: {sums}")
        reader = _Reader(master, storages)
        self._commits(reader)
        for oid in counters:
            self._counter(reader, oid)
        self._log(reader, log_oid)

    def _commits(self, reader) -> None:
        ttids = reader.ttids()
        for ttid, (tid, writes) in sorted(self.acked.items()):
            if ttids.get(ttid) != tid:
                self.violation(f"acknowledged commit 0x{ttid.hex()} as 0x{tid.hex()} lost "
                               f"(metadata: {ttids.get(ttid, b'').hex() or 'none'})")
                continue
            for oid, data in sorted(writes.items()):
                got = reader.revisions(oid).get(tid)
                if got != data:
                    self.violation(f"acknowledged commit 0x{tid.hex()}: oid 0x{oid.hex()} reads {got!r}, "
                                   f"not {data!r}")
        for ttid, why in sorted(self.refused.items()):
            if ttid in ttids:
                self.violation(f"0x{ttid.hex()} committed as 0x{ttids[ttid].hex()} though its client "
                               f"was told it was not ({why})")

    def _counter(self, reader, oid: bytes) -> None:
        values = [int(v) for _, v in sorted(reader.revisions(oid).items())]
        if values != list(range(1, len(values) + 1)):
            self.violation(f"counter 0x{oid.hex()}: revisions {values} are not 1, 2, 3...")
        acked = sum(1 for _, w in self.acked.values() if oid in w)
        if len(values) < acked:
            self.violation(f"counter 0x{oid.hex()}: {len(values)} revisions, {acked} increments acknowledged")

    def _log(self, reader, oid: bytes) -> None:
        previous = b""
        for tid, value in sorted(reader.revisions(oid).items()):
            entry = value[len(previous):]
            if not value.startswith(previous) or entry.count(b";") != 1 or not entry.endswith(b";"):
                self.violation(f"log at 0x{tid.hex()}: {value!r} does not add one entry to {previous!r}")
            previous = value


class _Reader:
    """Reads of the final state from the first cell of each partition."""

    def __init__(self, master, storages):
        self.master, self.storages = master, storages

    def backend(self, p: int):
        return self.storages[min(self.master.pt.rows[p])].backend

    def ttids(self) -> dict[bytes, bytes]:
        out = {}
        for p in range(self.master.partitions):
            with self.backend(p).kv.read() as txn:
                for key, raw in txn.scan("trans", PARTITION.pack(p), PARTITION.pack(p + 1)):
                    out[msgpack.unpackb(raw)[4]] = bytes(key[4:])
        return out

    def revisions(self, oid: bytes) -> dict[bytes, bytes]:
        backend = self.backend(u64(oid) % self.master.partitions)
        prefix = backend._okey(oid)
        with backend.kv.read() as txn:
            tids = [bytes(k[len(prefix):]) for k in txn.keys("obj", prefix, prefix + b"\xff" * 9)]
        return {tid: backend.load(oid, serial=tid).data for tid in tids}


def partition_digest(backend, p: int) -> int:
    """A checksum of partition ``p``'s transactions and object revisions (their data
    read through the backend, so that where a node keeps large data does not count)."""
    crc = 0
    start, stop = PARTITION.pack(p), PARTITION.pack(p + 1)
    with backend.kv.read() as txn:
        for key, raw in txn.scan("trans", start, stop):
            crc = zlib.crc32(bytes(key) + bytes(raw), crc)
        keys = [bytes(k) for k in txn.keys("obj", start, stop)]
    for key in keys:
        oid, tid = key[4:12], key[12:]
        crc = zlib.crc32(key + (backend.load(oid, serial=tid).data or b"-"), crc)
    return crc
