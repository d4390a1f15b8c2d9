"""Catch-up of OUT_OF_DATE cells: a node copies what it missed from a readable copy.

Source side (served by any node, ``ReplicaKeys``/``ReplicaRecords``): the keys of a
partition with ``min_tid < tid <= max_tid`` in bounded batches with a cursor (keys only,
no data), then the records of the keys asked for, checksums verified before sending
(a record failing its checksum fails the request: the receiver tries another copy).

Receiver side (``Replicator``, one thread): the master gives the node, in each
heartbeat reply, one task per OUT_OF_DATE cell: the partition, ``until_tid`` (every
transaction with a tid up to it must be copied; later ones reach the node through
ordinary commits, see ``master/replication.py``) and the nodes holding a readable copy.
For each task the node runs *passes*: a pass lists the source's keys of ``trans`` and
then of ``obj`` with ``done < tid <= pass_until``, asks only for the keys it does not
hold, verifies checksums again and writes each reply in one LMDB write transaction
with the pass's progress (cursor), fsynced before it counts.  Applying is idempotent:
a record or transaction already present is left as is, so a batch replayed after a
crash, or a record that an ordinary commit wrote meanwhile, changes nothing.  When
the pass ends, ``done = pass_until``; the node reports ``done`` in its heartbeats and
the master marks the cell UP_TO_DATE once ``done >= until_tid``.  A record with a
blob has its chunks copied first, one ``LoadBlobChunk`` at a time (bounded memory,
checksums verified), and ``apply_records`` refuses a blob record whose chunks are not
all here.  If the master raised
``until_tid`` meanwhile, another pass copies ``(done, until_tid]``.

Progress lives in the ``config`` database under ``replication.<partition>``:
msgpack ``{"done", "pass_until", "table", "after"}``, so a restarted node resumes its
pass where it stopped; it is kept once the cell is UP_TO_DATE, so that the next
catch-up of that cell (the node was lost again) lists only the keys after ``done``.  Bounds: ``replication_batch_records_max`` keys per listing,
``replication_batch_bytes_max`` data bytes per reply, ``replication_bytes_per_s``
(0: unlimited) paces the copy; an unavailable source makes the node try the next one,
and when none answers it backs off (``replication_retry_delay_s``, doubling up to
``replication_retry_delay_max_s``) and tries again with the sources of the next task.
"""
from __future__ import annotations

import functools
import logging
import threading
import time

import msgpack

from neoarray import wire
from neoarray.errors import ChecksumError, NeoError, RequestRefused, StorageFull
from neoarray.ids import Z64, p64, u64
from neoarray.records import (
    PARTITION,
    RECORD_HEAD,
    checksum,
    pack_meta,
    unpack_meta,
)

from . import calls
from .backend import bulk_data_key
from .replica import (
    OBJECTS,
    TRANSACTIONS,
    KeysBatch,
    KeysQuery,
    RecordsBatch,
    RecordsQuery,
    ReplicaObject,
)
from .space import store_need

log = logging.getLogger("neoarray.storage.replication")

_KEY_BYTES = {TRANSACTIONS: 8, OBJECTS: 16}
_SCANNED_PER_LISTED = 16      # keys scanned per key listed, at most (a reply never stalls)


# -- source side ----------------------------------------------------------------------

def _check_request(backend, partition: int, table: int) -> bytes:
    if partition >= backend.partitions:
        raise RequestRefused(f"partition {partition} out of range (cluster has {backend.partitions})")
    if table not in _KEY_BYTES:
        raise RequestRefused(f"unknown replica table {table}: transactions (1) or objects (2)")
    return PARTITION.pack(partition)


def _tid_arg(value: bytes, name: str, default: bytes | None = None) -> bytes:
    if not value:
        if default is None:
            raise RequestRefused(f"{name} is required")
        return default
    if len(value) != 8:
        raise RequestRefused(f"{name} must be 8 bytes, not {len(value)}")
    return value


def replica_keys(backend, req: KeysQuery, keys_max_limit: int) -> KeysBatch:
    """Keys of ``req.table`` in ``req.partition`` with min_tid < tid <= max_tid, after
    ``req.after``: at most ``keys_max`` listed and ``_SCANNED_PER_LISTED`` times as many
    scanned, then a cursor."""
    pk = _check_request(backend, req.partition, req.table)
    min_tid = _tid_arg(req.min_tid, "min_tid", Z64)
    max_tid = _tid_arg(req.max_tid, "max_tid")
    if req.after and len(req.after) != _KEY_BYTES[req.table]:
        raise RequestRefused(f"cursor must be {_KEY_BYTES[req.table]} bytes, not {len(req.after)}")
    keys_max = min(req.keys_max or keys_max_limit, keys_max_limit)
    if req.table == TRANSACTIONS:
        return _transaction_keys(backend, pk, min_tid, max_tid, req.after, keys_max)
    return _object_keys(backend, pk, min_tid, max_tid, req.after, keys_max)


def _transaction_keys(backend, pk, min_tid, max_tid, after, keys_max):
    lowest = max(min_tid, after or Z64)
    if lowest == b"\xff" * 8:
        return KeysBatch([])                # nothing can come after the largest tid
    start = pk + p64(u64(lowest) + 1)
    stop = pk + p64(u64(max_tid) + 1) if max_tid != b"\xff" * 8 else pk + b"\xff" * 9
    keys = []
    with backend.kv.read() as txn:
        for key in txn.keys("trans", start, stop):
            keys.append(key[4:])
            if len(keys) >= keys_max:
                return KeysBatch(keys, keys[-1])
    return KeysBatch(keys)


def _object_keys(backend, pk, min_tid, max_tid, after, keys_max):
    start = pk + after + b"\0" if after else pk
    keys, scanned = [], 0
    with backend.kv.read() as txn:
        for key in txn.keys("obj", start, pk + b"\xff" * 17):
            scanned += 1
            if min_tid < key[12:] <= max_tid:
                keys.append(key[4:])
            if len(keys) >= keys_max or scanned >= keys_max * _SCANNED_PER_LISTED:
                return KeysBatch(keys, key[4:])
    return KeysBatch(keys)


def replica_records(backend, req: RecordsQuery, keys_max_limit: int, bytes_max_limit: int) -> RecordsBatch:
    """The records of ``req.keys`` in order, until ``bytes_max`` of data is reached
    (at least one record); checksums verified (``ChecksumError`` otherwise)."""
    pk = _check_request(backend, req.partition, req.table)
    if len(req.keys) > keys_max_limit:
        raise RequestRefused(f"{len(req.keys)} keys in one request, "
                             f"replication_batch_records_max={keys_max_limit}")
    size = _KEY_BYTES[req.table]
    bad = [k for k in req.keys if len(k) != size]
    if bad:
        raise RequestRefused(f"replica key must be {size} bytes, not {len(bad[0])}")
    bytes_max = min(req.bytes_max or bytes_max_limit, bytes_max_limit)
    reply, sent = RecordsBatch(), 0
    with backend.kv.read() as txn:
        for key in req.keys:
            if reply.keys_done and sent >= bytes_max:
                break
            if req.table == TRANSACTIONS:
                sent += _add_transaction(txn, pk, key, reply)
            else:
                sent += _add_object(backend, txn, pk, key, reply)
            reply.keys_done += 1
    return reply


def _add_transaction(txn, pk, tid, reply) -> int:
    raw = txn.get("trans", pk + tid)
    if raw is None:
        return 0
    reply.transactions.append(unpack_meta(tid, raw))
    return len(raw)


def _add_object(backend, txn, pk, key, reply) -> int:
    oid, tid = key[:8], key[8:]
    if backend.partition(oid) != PARTITION.unpack(pk)[0]:
        raise RequestRefused(f"oid 0x{oid.hex()} is not in partition {PARTITION.unpack(pk)[0]}")
    value = txn.get("obj", pk + key)
    if value is None:
        return 0
    rec = backend._decode(txn, oid, tid, None, value)      # verifies the checksum
    reply.objects.append(ReplicaObject(oid, tid, rec.data, rec.checksum, rec.data_tid or None,
                                       rec.blob if rec.data is not None else None))
    return len(rec.data or b"")


# -- receiver side ----------------------------------------------------------------------

def missing_keys(backend, partition: int, table: int, keys) -> list[bytes]:
    """The ``keys`` this node does not hold."""
    pk, db = PARTITION.pack(partition), "trans" if table == TRANSACTIONS else "obj"
    with backend.kv.read() as txn:
        return [k for k in keys if txn.get(db, pk + k) is None]


def apply_records(backend, partition: int, reply: RecordsBatch, progress: dict | None) -> int:
    """Write the records of a :class:`RecordsBatch` absent here, and ``progress``, in
    one LMDB write transaction, then fsync.  Returns the records written.

    Every record is checked first (partition, checksum): ``ChecksumError`` or
    ``RequestRefused`` and nothing is written; ``StorageFull`` (nothing written, the
    progress stays where it was, so the cell is not reported caught up) when the space
    left would not cover the batch and the space reserved for locks.  The caller
    serialises writes.
    """
    pk = PARTITION.pack(partition)
    for o in reply.objects:
        if len(o.oid) != 8 or len(o.tid) != 8 or backend.partition(o.oid) != partition:
            raise RequestRefused(f"replicated record of oid 0x{o.oid.hex()} is not of partition {partition}")
        if o.data is not None and checksum(o.data) != o.checksum:
            raise ChecksumError(f"replicated record of oid 0x{o.oid.hex()} at tid 0x{o.tid.hex()} "
                                f"fails its checksum (corrupted in transit)")
        if o.blob is not None and len(o.blob.key_tid) != 8:
            raise RequestRefused(f"replicated record of oid 0x{o.oid.hex()}: blob tid of "
                                 f"{len(o.blob.key_tid)} bytes")
    for t in reply.transactions:
        if len(t.tid) != 8 or backend.partition(t.tid) != partition:
            raise RequestRefused(f"replicated transaction 0x{t.tid.hex()} is not of partition {partition}")
    nbytes = reply.data_bytes()
    records = len(reply.objects) + len(reply.transactions)
    backend.space.check_write(store_need(nbytes, records),
                              f"catch-up of partition {partition} ({records} records, {nbytes} bytes)")
    written, next_ids, oids, last, bulk_keys = 0, {}, [], Z64, []
    with backend.kv.write() as txn:
        for t in reply.transactions:
            if txn.get("trans", pk + t.tid) is None:
                txn.put("trans", pk + t.tid, msgpack.packb(pack_meta(t)))
                written, last = written + 1, max(last, t.tid)
        for o in reply.objects:
            if o.blob is not None and not backend.blob_complete(txn, o.oid, o.blob):
                raise RequestRefused(f"replicated record of oid 0x{o.oid.hex()} at tid 0x{o.tid.hex()}: "
                                     f"its blob chunks were not copied first")
            if txn.get("obj", pk + o.oid + o.tid) is None:
                bulk = _put_object(backend, txn, pk, o, next_ids)
                if bulk is not None:
                    bulk_keys.append(bulk)
                written, last = written + 1, max(last, o.tid)
                oids.append(o.oid)
        if written:
            backend._raise_last(txn, last, oids)
        if progress is not None:
            txn.put("config", _progress_key(partition), msgpack.packb(progress))
    backend.kv.sync()
    backend.write_behind(bulk_keys)     # bulk data copied leaves the page cache (kv.py)
    return written


def copy_blob_chunks(backend, load_chunk, o: ReplicaObject, write_mutex) -> int:
    """Copy the chunks of the blob of the replicated record ``o`` that this node lacks,
    one chunk at a time (``load_chunk(oid, serial, index)`` asks the sources: a
    ``neoarray.check_calls.BlobChunk``, None when the source has no such chunk); returns the bytes
    received.  Chunks written before a crash are kept: a replay rewrites the same keys."""
    blob, received = o.blob, 0
    if blob is None:
        return 0
    with backend.kv.read() as txn:
        if backend.blob_complete(txn, o.oid, blob):
            return 0
    for index in range(blob.chunks):
        chunk = load_chunk(o.oid, o.tid, index)
        if chunk is None or chunk.blob_tid != blob.key_tid:
            raise ChecksumError(f"blob chunk {index} of oid 0x{o.oid.hex()} at tid 0x{o.tid.hex()} is not "
                                f"on the source")
        if checksum(chunk.data) != chunk.checksum:
            raise ChecksumError(f"blob chunk {index} of oid 0x{o.oid.hex()} fails its checksum (in transit)")
        with write_mutex:
            backend.put_blob_chunk(o.oid, blob.key_tid, index, chunk.checksum, chunk.data)
        received += len(chunk.data)
    return received


def _put_object(backend, txn, pk, o: ReplicaObject, next_ids) -> bytes | None:
    """Write the replicated record ``o``; the key of its data row if it is bulk."""
    flags, body = backend.record_body(txn, o.oid, o.data, o.data_tid, next_ids, o.blob)
    txn.put("obj", pk + o.oid + o.tid, RECORD_HEAD.pack(flags, o.checksum) + body)
    return None if o.data is None else bulk_data_key(flags, body, o.data)


def _progress_key(partition: int) -> bytes:
    return f"replication.{partition}".encode()


def load_progress(backend, partition: int) -> dict:
    doc = backend.get_config(_progress_key(partition).decode())
    return doc or {"done": Z64, "pass_until": None, "table": TRANSACTIONS, "after": b""}


def save_progress(backend, partition: int, progress: dict) -> None:
    with backend.kv.write() as txn:
        txn.put("config", _progress_key(partition), msgpack.packb(progress))
    backend.kv.sync()


def drop_progress(backend, partition: int) -> None:
    with backend.kv.write() as txn:
        txn.delete("config", _progress_key(partition))


class SourcesUnavailable(NeoError):
    """No readable copy of a partition answered (or every one failed a checksum)."""


class PartitionLeft(NeoError):
    """The newest table gives this node no cell of the partition being copied."""


class Pacer:
    """Keeps an average rate of at most ``bytes_per_s`` (0: unlimited): each batch of
    ``n`` bytes pushes the earliest next start ``n / bytes_per_s`` seconds later.
    ``set_rate`` applies at once, also to a wait in progress (the operator may raise a
    rate that was set too low: ``neoctl set replication-rate``)."""

    def __init__(self, bytes_per_s: int, stopped: threading.Event):
        self.bytes_per_s = bytes_per_s
        self.stopped = stopped
        self.next_s = time.monotonic()
        self.changed = threading.Condition()

    def set_rate(self, bytes_per_s: int) -> None:
        with self.changed:
            if bytes_per_s != self.bytes_per_s:
                self.bytes_per_s = bytes_per_s
                self.next_s = time.monotonic()
                self.changed.notify_all()

    def spend(self, nbytes: int) -> None:
        with self.changed:
            if self.bytes_per_s <= 0:
                return
            now = time.monotonic()
            self.next_s = max(self.next_s, now) + nbytes / self.bytes_per_s
            while not self.stopped.is_set() and now < self.next_s:
                self.changed.wait(min(self.next_s - now, 0.5))
                now = time.monotonic()


class Replicator:
    """Runs the catch-up tasks the master gives a node (see the module docstring)."""

    def __init__(self, node):
        self.node = node
        self.backend = node.backend
        self.limits = node.limits
        self.stopped = node.stopped
        self.tasks: dict[int, object] = {}          # partition -> ReplicaTask
        self.done: dict[int, bytes] = {}            # partition -> tid copied up to
        self.mutex = threading.Lock()
        self.wakeup = threading.Event()
        self.pacer = Pacer(self.limits.replication_bytes_per_s, self.stopped)
        self.stubs: dict[str, object] = {}
        self.bytes_copied = 0                       # since start, for metrics: bytes received
        self.records_copied = 0                     # and records written
        self.thread = None

    # -- link with the heartbeat ----------------------------------------------------
    def set_tasks(self, tasks) -> None:
        """The tasks of a heartbeat reply: every OUT_OF_DATE cell of this node."""
        new = {t.partition: t for t in tasks}
        with self.mutex:
            gone = set(self.tasks) - set(new)
            self.tasks = new
            for p in gone:
                self.done.pop(p, None)
        self.node.manager.catching_up = set(new)
        for p in gone:
            self._settled(p)
        if new:
            self.wakeup.set()

    def _settled(self, p: int) -> None:
        """The task of ``p`` is over: its cell is UP_TO_DATE, or no longer ours.

        UP_TO_DATE: every transaction up to ``done`` is here, and later ones reach the
        node by commit until it is lost again (the master then marks the cell
        OUT_OF_DATE), so a later catch-up lists only what is after ``done``, not the
        partition's whole history.  Anything else starts over from the beginning: a
        pass cut short, or a partition the node no longer holds (the dropper deletes
        its data, and drops this progress first, under the same mutex).
        """
        with self.node.manager.write_mutex:
            st = load_progress(self.backend, p)
            if st["pass_until"] is not None or st["done"] == Z64 or self.node.dropper.still_orphan(p):
                drop_progress(self.backend, p)
            else:
                save_progress(self.backend, p, {"done": st["done"], "pass_until": None,
                                                "table": TRANSACTIONS, "after": b""})

    def reports(self) -> list[tuple[int, bytes]]:
        with self.mutex:
            # Z64 counts once it is the target (nothing was ever committed to copy)
            return [(p, tid) for p, tid in self.done.items()
                    if p in self.tasks and (tid != Z64 or self.tasks[p].until_tid == Z64)]

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True, name="replicator")
        self.thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait for the thread to see ``stopped`` (it writes to the store)."""
        self.wakeup.set()
        if self.thread is not None:
            self.thread.join(timeout_s)

    # -- the copy ---------------------------------------------------------------------
    def _loop(self) -> None:
        delays: dict[int, float] = {}
        retry_at: dict[int, float] = {}
        while not self.stopped.is_set():
            with self.mutex:
                todo = sorted(self.tasks.items())
            ran = False
            for p, task in todo:
                if self.stopped.is_set() or time.monotonic() < retry_at.get(p, 0.0):
                    continue
                try:
                    self._catch_up(p, task)
                    delays.pop(p, None)
                except PartitionLeft as exc:    # its task goes with the next heartbeat reply
                    log.info("%s", exc)
                    retry_at[p] = time.monotonic() + self.limits.replication_retry_delay_s
                except SourcesUnavailable as exc:
                    delay = min(delays.get(p, self.limits.replication_retry_delay_s / 2) * 2,
                                self.limits.replication_retry_delay_max_s)
                    delays[p], retry_at[p] = delay, time.monotonic() + delay
                    log.warning("partition %d: catch-up paused for %.1f s: %s", p, delay, exc)
                except StorageFull as exc:      # not caught up: retried when space comes back
                    log.warning("partition %d: catch-up paused, this node is full: %s", p, exc)
                    retry_at[p] = time.monotonic() + self.limits.replication_retry_delay_max_s
                except Exception:       # never let the thread die: log and retry later
                    log.exception("partition %d: catch-up failed", p)
                    retry_at[p] = time.monotonic() + self.limits.replication_retry_delay_max_s
                ran = True
            self.wakeup.wait(0.2 if ran and retry_at else 1.0)
            self.wakeup.clear()

    def _current(self, p: int):
        with self.mutex:
            return self.tasks.get(p)

    def _catch_up(self, p: int, task) -> None:
        st = load_progress(self.backend, p)
        with self.mutex:
            self.done[p] = st["done"]
        while not self.stopped.is_set():
            task = self._current(p)
            if task is None or st["done"] >= task.until_tid:
                return
            if st["pass_until"] is None:
                st.update(pass_until=task.until_tid, table=TRANSACTIONS, after=b"")
                save_progress(self.backend, p, st)
            self._run_pass(p, st)
            if self._current(p) is None:
                return
            st.update(done=st["pass_until"], pass_until=None, table=TRANSACTIONS, after=b"")
            save_progress(self.backend, p, st)
            with self.mutex:
                self.done[p] = st["done"]
            log.info("partition %d: caught up to tid 0x%s", p, st["done"].hex())

    def _run_pass(self, p: int, st: dict) -> None:
        started, copied, nbytes, last_log = time.monotonic(), 0, 0, time.monotonic()
        log.info("partition %d: catch-up from tid 0x%s to 0x%s starts (%s)", p, st["done"].hex(),
                 st["pass_until"].hex(), "resuming" if st["after"] or st["table"] != TRANSACTIONS else "new")
        while st["table"] is not None:
            if self._current(p) is None or self.stopped.is_set():
                return
            query = KeysQuery(p, st["table"], st["pass_until"], st["done"], st["after"],
                              self.limits.replication_batch_records_max)
            keys = self._ask(p, calls.replica_keys, query)
            records, size = self._fetch(p, st["table"], missing_keys(self.backend, p, st["table"], keys.keys))
            copied, nbytes = copied + records, nbytes + size
            if keys.next_after:
                st["after"] = keys.next_after
            else:
                st["table"] = OBJECTS if st["table"] == TRANSACTIONS else None
                st["after"] = b""
            save_progress(self.backend, p, st)
            if time.monotonic() - last_log >= self.limits.replication_log_interval_s:
                last_log = time.monotonic()
                log.info("partition %d: catch-up in progress: %d records (%d bytes) copied, cursor %s",
                         p, copied, nbytes, st["after"].hex() or "start of the next table")
        log.info("partition %d: catch-up to tid 0x%s ends: %d records (%d bytes) copied in %.3f s",
                 p, st["pass_until"].hex(), copied, nbytes, time.monotonic() - started)

    def _fetch(self, p: int, table: int, keys: list[bytes]) -> tuple[int, int]:
        """Copy the records of ``keys``; returns (records written, bytes received)."""
        copied = received = 0
        while keys:
            query = RecordsQuery(p, table, keys, self.limits.replication_batch_bytes_max)
            reply = self._ask(p, calls.replica_records, query, check=self._verify)
            if not reply.keys_done:
                raise SourcesUnavailable(f"partition {p}: a source answered no key")
            for o in reply.objects:     # a blob's chunks before its record, one by one
                blob_bytes = copy_blob_chunks(self.backend, functools.partial(self._ask, p, calls.load_blob_chunk),
                                              o, self.node.manager.write_mutex)
                self.bytes_copied += blob_bytes
                self.pacer.spend(blob_bytes)
            with self.node.manager.write_mutex:
                if self.node.dropper.still_orphan(p):   # the dropper may have emptied it
                    raise PartitionLeft(f"partition {p} is no longer held here: catch-up stopped")
                written = apply_records(self.backend, p, reply, None)
            copied += written
            nbytes = reply.data_bytes()
            self.records_copied += written
            self.bytes_copied += nbytes
            received += nbytes
            self.pacer.spend(nbytes)
            keys = keys[reply.keys_done:]
        return copied, received

    @staticmethod
    def _verify(batch: RecordsBatch) -> None:
        """``ChecksumError`` when a record's data does not match its checksum."""
        for o in batch.objects:
            if o.data is not None and checksum(o.data) != o.checksum:
                raise ChecksumError(f"record of oid 0x{o.oid.hex()} at tid 0x{o.tid.hex()} fails its checksum")

    def _ask(self, p: int, call, *args, check=None):
        """``call(stub, *args, timeout_s)`` (a function of ``calls``) of the sources of
        ``p``'s task in turn, until one answers and its answer passes ``check`` (a bad
        copy: the next one is asked); ``SourcesUnavailable`` if none does."""
        task = self._current(p)
        errors = []
        for source in (task.sources if task is not None else ()):
            if source.node_id == self.node.node_id:
                continue
            try:
                reply = call(self._stub(source.address), *args, self.limits.rpc_timeout_s)
                if check is not None:
                    check(reply)
                return reply
            except NeoError as exc:
                errors.append(f"S{source.node_id}: {exc}")
        raise SourcesUnavailable(f"no readable copy answered ({'; '.join(errors) or 'no source'})")

    def _stub(self, address: str):
        stub = self.stubs.get(address)
        if stub is None:
            channel = wire.open_channel(address, self.node.cluster, tls=self.node.tls)
            stub = self.stubs[address] = calls.storage_stub(channel)
        return stub
