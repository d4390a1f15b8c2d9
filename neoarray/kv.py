"""Ordered key-value stores under the storage backend: LMDB, and a memory reference.

Contract (both implementations pass ``tests/storage_node/test_backend.py``):

- ``read()`` and ``write()`` return transactions usable as context managers; a write
  transaction commits on a clean exit and aborts on an exception.  Reads see a
  consistent snapshot; one writer at a time.
- ``get(db, key)`` returns ``bytes`` or ``None``; ``put``/``delete`` only on writes;
  ``put_many(db, items)`` is ``put`` of each ``(key, value)`` (one call into LMDB).
- ``read(buffers=True)`` may hand out keys and values as memoryviews valid only until
  the transaction ends (LMDB: no copy); callers copy what they keep.
- ``keys(db, start, stop)`` yields the keys of ``scan`` without reading values;
  ``last_key(db, start, stop)`` is the last of them, or ``None``;
  ``last_keys(db, ranges)`` the list of ``last_key`` of each ``(start, stop)``.
- ``next_key(db, start, stop)`` is the first key with ``start <= key < stop``, or
  ``None``, without reading its value.
- ``pop_range(db, start, stop)`` (writes only) deletes the entries with
  ``start <= key < stop`` and returns their ``(key, value)`` in key order.
- ``scan(db, start, stop=None, reverse=False)`` yields ``(key, value)`` for
  ``start <= key < stop`` in key order (reverse: descending, from the last key below
  ``stop``, down to ``start``).  Keys and values are ``bytes``.
- ``sync()`` makes every committed write durable (fsync).
- ``snapshot_reads_lock_free``: a read transaction holds no lock (LMDB: an MVCC
  snapshot), so a reader may keep one open while it sends what it read.
- ``syncs`` and ``write_transactions`` count the calls of ``sync()`` and the write
  transactions begun since the store was opened (for metrics and
  ``benchmarks/commit_costs.py``); ``dropped_bytes`` the bytes ``write_behind`` let
  leave the OS page cache (0 where nothing is cached).
- ``write_behind(db, keys)`` may start writing committed pages to disk without
  waiting, so that a later ``sync()`` is shorter, and drop the committed values of
  ``keys`` in ``db`` (large, written once) from the OS page cache once they are on
  disk; it promises nothing.
- ``usage()`` is ``{"map_bytes", "used_bytes", "entries": {database: count}}`` (for
  metrics: sizes as the store sees them, counts of committed entries).
- ``space()`` is ``(used_bytes, capacity_bytes)``: bytes the stored keys and values
  take (LMDB: pages in use by the databases; pages merely free, pinned by a reader or
  not yet reusable are not counted) and the most the store can hold now (LMDB: the
  map size, or less when the filesystem has less room than that).  An estimate, for
  refusing writes before they fail (``storage_node/space.py``).
- ``settle()`` after a write transaction that freed much (an abort, a pack) makes
  the freed space usable by the next write (LMDB reuses a page only two commits
  after the one that freed it: ``settle`` commits a small marker in ``config``).
- A write that does not fit (LMDB map full, or the filesystem out of space while
  committing) raises ``StorageFull`` and leaves nothing of the transaction behind;
  the store stays usable.
"""
from __future__ import annotations

import bisect
import collections
import ctypes
import mmap
import os
import threading

import lmdb
import numpy as np

from .errors import StorageFull

_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4     # wait before, write, wait after
_MADV_DONTNEED = 4
DROP_BEHIND_WINDOW_BYTES = 64 << 20         # large values written and left in the page cache (``_WriteBehind``)
SETTLE_KEY = b"kv.settle"
FS_FULL_FREE_BYTES_MAX = 1 << 20    # a failed commit with less free space than this: ENOSPC

DATABASES = ("obj", "data", "trans", "voted_obj", "voted_txn", "locked", "config", "blob", "voted_blob")


class LMDBStore:
    """One LMDB environment with the named databases of ``DATABASES``.

    ``readonly``: another process (a client on the same host) reading a storage
    node's environment; LMDB lets readers of several processes share it safely.

    Commits do not fsync by themselves (``sync=False``); the backend calls ``sync()``
    at the points where durability is promised (vote, lock), so a burst of stores
    costs one fsync, and ``sync()`` is a group commit: votes and locks of transactions
    arriving together share fsyncs.  A killed process loses nothing: written pages are in the OS
    page cache.
    """

    snapshot_reads_lock_free = True

    def __init__(self, path: str, map_bytes_max: int = 1 << 40, readonly: bool = False,
                 drop_behind_window_bytes: int = DROP_BEHIND_WINDOW_BYTES):
        if not readonly:
            os.makedirs(path, exist_ok=True)
        self.path = path
        self.env = lmdb.open(path, map_size=map_bytes_max, max_dbs=len(DATABASES) + 1,
                             sync=False, metasync=False, readahead=True, max_readers=512,
                             readonly=readonly, create=not readonly)
        self.dbs = {name: self.env.open_db(name.encode(), create=not readonly) for name in DATABASES}
        self._write_behind = None if readonly else _WriteBehind(os.path.join(path, "data.mdb"),
                                                                drop_behind_window_bytes)
        self.syncs = self.write_transactions = 0
        self.committed_writes = 0           # write transactions committed (their sequence)
        self._synced_writes = 0             # those that an fsync finished since covered
        self._syncing = False
        self._sync_done = threading.Condition(threading.Lock())

    def read(self, buffers: bool = False):
        return _LMDBTxn(self, write=False, buffers=buffers)

    def write(self):
        return _LMDBTxn(self, write=True)

    def sync(self) -> None:
        """Make every write transaction committed before this call durable (group
        commit): an fsync that started after the caller's write covers it, so threads
        that sync at once share fsyncs instead of queueing one each.  Call it outside
        any mutex that other writers take, or nothing can be shared."""
        with self._sync_done:
            wanted = self.committed_writes
            while self._synced_writes < wanted:
                if not self._syncing:
                    self._syncing = True
                    covered = self.committed_writes
                    break
                self._sync_done.wait()
            else:
                return
        try:
            self.env.sync(True)
        finally:
            with self._sync_done:
                self._syncing = False
                self.syncs += 1
                self._synced_writes = max(self._synced_writes, covered)
                self._sync_done.notify_all()

    def write_behind(self, db: str | None = None, keys=()) -> None:
        """Start writing committed pages out; the values of ``keys`` in ``db``
        (committed, large) leave the page cache once written (``_WriteBehind``)."""
        if self._write_behind is None:
            return
        ranges = []
        base = self._write_behind.map_base
        if keys and base is not None:
            with self.env.begin(buffers=True) as txn:      # addresses in the map: nothing read
                for key in keys:
                    value = txn.get(key, db=self.dbs[db])
                    if value is not None and len(value):
                        address = np.frombuffer(value, dtype=np.uint8).ctypes.data
                        ranges.append((address - base, len(value)))
        self._write_behind.start(ranges)

    @property
    def dropped_bytes(self) -> int:
        """Bytes of large values dropped from the page cache once written."""
        return 0 if self._write_behind is None else self._write_behind.dropped_bytes

    def usage(self) -> dict:
        """``{"map_bytes", "used_bytes", "entries": {database: count}}``: the map size,
        the bytes of the pages in use (up to the last one written) and the entries of
        each database (LMDB keeps the counts: no scan)."""
        info, page_bytes = self.env.info(), self.env.stat()["psize"]
        with self.env.begin() as txn:
            entries = {name: txn.stat(db)["entries"] for name, db in self.dbs.items()}
        return {"map_bytes": info["map_size"], "used_bytes": (info["last_pgno"] + 1) * page_bytes,
                "entries": entries}

    def settle(self) -> None:
        with self.write() as txn:
            txn.put("config", SETTLE_KEY, b"")

    def fs_free_bytes(self) -> int:
        """Bytes the filesystem of the environment still grants (``statvfs``)."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def space(self) -> tuple[int, int]:
        """``(used_bytes, capacity_bytes)``, see the module docstring."""
        info = self.env.info()
        with self.env.begin() as txn:
            stats = [txn.stat(db) for db in self.dbs.values()] + [self.env.stat()]
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        psize = stats[-1]["psize"]
        file_bytes = (info["last_pgno"] + 1) * psize
        try:
            file_bytes = max(file_bytes, os.path.getsize(os.path.join(self.path, "data.mdb")))
        except OSError:
            pass
        capacity = min(info["map_size"], file_bytes + self.fs_free_bytes())
        return (pages + 2) * psize, capacity        # + the two meta pages

    def full_error(self, exc: Exception) -> StorageFull | None:
        """The ``StorageFull`` that a failed LMDB call ``exc`` means, or None.

        LMDB reports a full filesystem at commit as a failed write (EIO, short write):
        it counts as full when the filesystem has almost no room left."""
        if isinstance(exc, lmdb.MapFullError):
            return StorageFull(f"LMDB map is full (map_bytes_max={self.env.info()['map_size']}) in {self.path}")
        if isinstance(exc, lmdb.Error) or (isinstance(exc, OSError) and exc.errno == 28):
            free = self.fs_free_bytes()
            if free < FS_FULL_FREE_BYTES_MAX:
                return StorageFull(f"no space left on the filesystem of {self.path} "
                                   f"({free} bytes free): {exc}")
        return None

    def close(self) -> None:
        if self._write_behind is not None:
            self._write_behind.close()
        self.env.close()


class _WriteBehind:
    """Starts the kernel writing a file's dirty pages to disk, without waiting for it
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; elsewhere nothing), so that the
    next ``sync`` finds less to write; and drops large values from the page cache once
    they are on disk (drop-behind): the byte ranges of the values given to ``start``
    wait in a queue of at most ``window_bytes``; the oldest leave it
    through ``sync_file_range`` waiting on their range, then
    ``posix_fadvise(DONTNEED)``.  A hint only: durability still comes from ``sync``.

    Why drop: bulk data (array chunks, blob chunks) is written once and read later, if
    at all, by a client that caches it; left in the page cache, every GiB written takes
    a GiB of fresh memory, and on this machine (a VM) writing into fresh page-cache
    memory costs 3-5 s of kernel CPU per GiB where writing into recycled pages costs
    0.5 s (``benchmarks/array_bench.py``: the ``disk`` and ``disk-dropbehind`` rows;
    a node's CPU per GiB of array written went from 2.7-3.7 s to 0.8-1.0 s, and
    neoarray's write of 1 GiB from 0.27-0.30 to 0.71-0.98 GB/s, best of 2 writes
    each).  Only the pages of the values themselves are
    dropped (LMDB's overflow pages: they hold nothing else), never B-tree pages, and
    the kernel keeps pages that a reader has mapped."""

    def __init__(self, path: str, window_bytes: int = DROP_BEHIND_WINDOW_BYTES):
        self.window_bytes = window_bytes
        self.fd, self.call, self.map_base = None, None, None
        self.queue: collections.deque = collections.deque()     # (offset, bytes), oldest first
        self.queued_bytes = self.dropped_bytes = 0
        self._queue_lock = threading.Lock()
        self._dropping = threading.Lock()
        try:
            call = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (OSError, AttributeError):
            return
        call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        self.fd, self.call = os.open(path, os.O_RDONLY), call
        self.map_base = _map_base(path)
        self.madvise = ctypes.CDLL(None, use_errno=True).madvise
        self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def start(self, ranges=()) -> None:
        """Start writing what is dirty; queue ``ranges`` (file offset, bytes) to drop."""
        if self.call is None:
            return
        self.call(self.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
        if not hasattr(os, "posix_fadvise"):
            return
        with self._queue_lock:
            for offset, nbytes in ranges:
                self.queue.append((offset, nbytes))
                self.queued_bytes += nbytes
        if not self._dropping.acquire(blocking=False):
            return          # another thread is dropping: this one goes on
        try:
            while True:
                with self._queue_lock:
                    if self.queued_bytes <= self.window_bytes:
                        return
                    offset, nbytes = self.queue.popleft()
                    self.queued_bytes -= nbytes
                self.call(self.fd, offset, nbytes, _SYNC_FILE_RANGE_WAIT_ALL)
                # finding a value's place mapped its pages here (a lookup maps whole large
                # folios): unmapped first, or the page cache keeps them
                first = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
                last = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
                if last > first:
                    self.madvise(self.map_base + first, last - first, _MADV_DONTNEED)
                os.posix_fadvise(self.fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
                self.dropped_bytes += nbytes
        finally:
            self._dropping.release()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = self.call = None


def _map_base(path: str) -> int | None:
    """The address where this process mapped ``path`` from its start (``/proc/self/maps``),
    or None (not Linux, not mapped)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == real and int(fields[2], 16) == 0:
                    return int(fields[0].split("-")[0], 16)
    except OSError:
        pass
    return None


class _LMDBTxn:
    def __init__(self, store: LMDBStore, write: bool, buffers: bool = False):
        self.store = store
        self.dbs = store.dbs
        self.txn = store.env.begin(write=write, buffers=buffers)
        self.write = write
        self._probes: dict[str, lmdb.Cursor] = {}     # db -> the cursor of last_key / next_key
        if write:       # counted while this thread holds LMDB's one writer lock
            store.write_transactions += 1

    def _probe(self, db: str):
        """One cursor per database for point probes (``last_key``, ``next_key``): a
        commit of 1,000 objects probes 1,000 times, and a cursor made for each costs
        as much as the probe."""
        cur = self._probes.get(db)
        if cur is None:
            cur = self._probes[db] = self.txn.cursor(db=self.dbs[db])
        return cur

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Commit or abort; a write that did not fit raises ``StorageFull`` (nothing
        of it is kept: LMDB aborted it)."""
        if exc_type is None:
            try:
                self.txn.commit()
            except lmdb.Error as err:
                full = self.store.full_error(err)
                if full is not None:
                    raise full from err
                raise
            if self.write:
                with self.store._sync_done:
                    self.store.committed_writes += 1
            return
        self.txn.abort()
        full = self.store.full_error(exc) if isinstance(exc, lmdb.MapFullError) else None
        if full is not None:
            raise full from exc

    def get(self, db: str, key: bytes):
        return self.txn.get(key, db=self.dbs[db])

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def put_many(self, db: str, items: list[tuple[bytes, bytes]]) -> None:
        """``put`` of every ``(key, value)``, in one call into LMDB (a commit of 1,000
        objects writes 1,000 revisions: a Python call per row costs as much as the row)."""
        if items:
            self.txn.cursor(db=self.dbs[db]).putmulti(items)

    def delete(self, db: str, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[db])

    def pop_range(self, db: str, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        """Delete the entries with ``start <= key < stop``; their ``(key, value)`` in
        key order (values copied).  One cursor walks and deletes: no lookup per key."""
        cur = self.txn.cursor(db=self.dbs[db])
        out = []
        if not cur.set_range(start):
            return out
        while True:
            key = bytes(cur.key())
            if key >= stop:
                return out
            out.append((key, bytes(cur.value())))
            if not cur.delete():        # the cursor moves to the next entry
                return out
            if not cur.key():           # deleted the last entry of the database
                return out

    def keys(self, db: str, start: bytes, stop: bytes | None = None):
        cur = self.txn.cursor(db=self.dbs[db])
        if not cur.set_range(start):
            return
        for key in cur.iternext(keys=True, values=False):
            key = bytes(key)
            if stop is not None and key >= stop:
                return
            yield key

    def last_key(self, db: str, start: bytes, stop: bytes):
        return self.last_keys(db, ((start, stop),))[0]

    def last_keys(self, db: str, ranges) -> list:
        """``last_key`` of each ``(start, stop)`` of ``ranges``, with one cursor and no
        call per range (a vote of 1,000 objects looks up 1,000 last revisions)."""
        cur = self._probe(db)
        set_range, prev, last, key_of = cur.set_range, cur.prev, cur.last, cur.key
        out = []
        append = out.append
        for start, stop in ranges:
            if (prev() if set_range(stop) else last()):
                key = bytes(key_of())
                append(key if start <= key < stop else None)
            else:
                append(None)
        return out

    def next_key(self, db: str, start: bytes, stop: bytes):
        cur = self._probe(db)
        if cur.set_range(start):
            key = bytes(cur.key())
            if key < stop:
                return key
        return None

    def scan(self, db: str, start: bytes, stop: bytes | None = None, reverse: bool = False):
        cur = self.txn.cursor(db=self.dbs[db])
        if not reverse:
            if not cur.set_range(start):
                return
            for key, value in cur:
                key = bytes(key)        # keys are small: always bytes; values may be views
                if stop is not None and key >= stop:
                    return
                yield key, value
            return
        positioned = cur.set_range(stop) if stop is not None else cur.last()
        if positioned and stop is not None:
            positioned = cur.prev()
        elif not positioned and stop is not None:
            positioned = cur.last()
        while positioned:
            key = bytes(cur.key())
            if key < start:
                return
            yield key, cur.value()
            positioned = cur.prev()


class MemoryStore:
    """The executable specification of the store: sorted key lists and dicts.

    Transactions are serialised by one lock and writes are buffered until commit, so
    an aborted write transaction leaves nothing behind.
    """

    snapshot_reads_lock_free = False

    def __init__(self, bytes_max: int = 1 << 62):
        self.bytes_max = bytes_max
        self.used_bytes = 0
        self.lock = threading.RLock()
        self.keys = {name: [] for name in DATABASES}
        self.values = {name: {} for name in DATABASES}
        self.syncs = self.write_transactions = 0
        self.write_behinds = 0
        self.dropped_bytes = 0          # nothing of it is in an OS page cache

    def read(self, buffers: bool = False):
        return _MemoryTxn(self, write=False)

    def write(self):
        return _MemoryTxn(self, write=True)

    def sync(self) -> None:
        self.syncs += 1

    def write_behind(self, db: str | None = None, keys=()) -> None:
        self.write_behinds += 1

    def usage(self) -> dict:
        """Like ``LMDBStore.usage``: no map (0), the bytes of keys and values held."""
        with self.lock:
            used = sum(len(k) + len(v) for values in self.values.values() for k, v in values.items())
            return {"map_bytes": 0, "used_bytes": used,
                    "entries": {name: len(keys) for name, keys in self.keys.items()}}

    def settle(self) -> None:
        pass

    def space(self) -> tuple[int, int]:
        """``(bytes of keys and values, bytes_max)``."""
        return self.used_bytes, self.bytes_max

    def close(self) -> None:
        pass


class _MemoryTxn:
    def __init__(self, store: MemoryStore, write: bool):
        self.store = store
        self.write = write
        self.pending: dict[tuple[str, bytes], bytes | None] = {}

    def __enter__(self):
        self.store.lock.acquire()
        if self.write:
            self.store.write_transactions += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._check_fits()
                for (db, key), value in self.pending.items():
                    self._apply(db, key, value)
        finally:
            self.store.lock.release()

    def _check_fits(self) -> None:
        """``StorageFull`` when the pending writes would take the store past ``bytes_max``."""
        used, bytes_max = self.store.space()
        old = self.store.values
        delta = sum((0 if v is None else len(k) + len(v)) - (len(k) + len(old[db][k]) if k in old[db] else 0)
                    for (db, k), v in self.pending.items())
        if used + delta > bytes_max:
            raise StorageFull(f"memory store full: {used + delta} bytes > bytes_max={bytes_max}")

    def _apply(self, db, key, value):
        keys, values = self.store.keys[db], self.store.values[db]
        if key in values:
            self.store.used_bytes -= len(key) + len(values[key])
        if value is not None:
            self.store.used_bytes += len(key) + len(value)
        if value is None:
            if key in values:
                del values[key]
                keys.pop(bisect.bisect_left(keys, key))
        else:
            if key not in values:
                bisect.insort(keys, key)
            values[key] = value

    def get(self, db, key):
        if (db, key) in self.pending:
            return self.pending[(db, key)]
        return self.store.values[db].get(key)

    def put(self, db, key, value):
        assert self.write, "put in a read transaction"
        self.pending[(db, key)] = bytes(value)

    def put_many(self, db, items):
        for key, value in items:
            self.put(db, key, value)

    def delete(self, db, key):
        assert self.write, "delete in a read transaction"
        self.pending[(db, key)] = None

    def keys(self, db, start, stop=None):
        return [k for k, _ in self.scan(db, start, stop)]

    def last_key(self, db, start, stop):
        return next((k for k, _ in self.scan(db, start, stop, reverse=True)), None)

    def last_keys(self, db, ranges):
        return [self.last_key(db, start, stop) for start, stop in ranges]

    def pop_range(self, db, start, stop):
        out = list(self.scan(db, start, stop))
        for key, _ in out:
            self.delete(db, key)
        return out

    def next_key(self, db, start, stop):
        return next((k for k, _ in self.scan(db, start, stop)), None)

    def scan(self, db, start, stop=None, reverse=False):
        keys = list(self.store.keys[db])
        extra = [k for (d, k), v in self.pending.items() if d == db and v is not None]
        keys = sorted(set(keys).union(extra))
        lo = bisect.bisect_left(keys, start)
        hi = len(keys) if stop is None else bisect.bisect_left(keys, stop)
        picked = keys[lo:hi]
        for key in (reversed(picked) if reverse else picked):
            value = self.get(db, key)
            if value is not None:
                yield key, value
