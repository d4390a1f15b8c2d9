"""``NeoStorage``: the ZODB storage of a neoarray cluster.

Implements ``IStorage``, ``IStorageIteration``, ``IStorageUndoable``,
``IStorageRestoreable``, ``IExternalGC``, ``IPrefetchStorage`` and read-current checks
(``checkCurrentSerialInTransaction``).  ``ZODB.DB(NeoStorage(...))`` wraps it with
ZODB's MVCC adapter.  Thread-safe: several transactions may be in two-phase commit at
once (up to ``transactions_max``), each with its own state.

Commit path: ``store`` buffers records per storage node and sends them in batches of
``store_batch_bytes_max``; ``tpc_vote`` sends the rest and votes on every involved
node in parallel; conflicts are resolved here with ZODB's conflict resolution and
voted again; ``tpc_finish`` asks the master for the final TID.  Errors that ZODB may
see only at vote (conflicts, read conflicts) are raised from ``tpc_vote``.
"""
from __future__ import annotations

import collections
import collections.abc
import contextlib
import logging
import pickle
import random
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy
import xxhash
import zope.interface
from ZODB import POSException, interfaces
from ZODB.BaseStorage import DataRecord, TransactionRecord
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.TimeStamp import TimeStamp

from .. import metrics, security, wire
from ..errors import (
    AccessDenied,
    ChecksumError,
    ClusterUnavailable,
    LimitExceeded,
    NotCommitted,
    OutcomeUnknown,
    RequestRefused,
)
from ..ids import MAX_TID, Z64, p64, tid_from_time, u64
from ..proto import common_pb2 as cpb
from ..proto import master_pb2 as mpb
from ..proto import storage_pb2 as spb
from ..records import NoObject, NoRevision, RecordReader
from ..transport import bulk
from . import colours
from .cache import ColouredCache
from .link import READABLE, ClusterLink
from .local import LocalReaders

log = logging.getLogger("neoarray.client")

LOAD_NOT_FOUND = (spb.NO_OBJECT, spb.NO_REVISION)
COMMIT_TIMES_MAX = 10_000
EVENT_WAIT_S = 10.0      # the event stream normally follows replies within milliseconds


class _Rec(NamedTuple):
    """One answer to a load, from the network or from a local LMDB."""
    status: int
    serial: bytes = b""
    next_serial: bytes | None = None
    data: bytes | None = None
    data_tid: bytes | None = None


def _rec_of(reply: spb.LoadReply, data, nid: int) -> _Rec:
    """A load's answer; ``data``: its record's data, which travelled apart (bulk)."""
    if reply.status == spb.FOUND and xxhash.xxh3_64_intdigest(data) != reply.checksum:
        raise ChecksumError(f"oid 0x{reply.oid.hex()} from S{nid} fails its checksum")
    return _Rec(reply.status, reply.serial, reply.next_serial or None,
                data if reply.status == spb.FOUND else None, reply.data_tid or None)


def _local_load(reader: RecordReader, request: spb.LoadRequest) -> _Rec:
    try:
        r = reader.load(request.oid, before=request.before or None, serial=request.serial or None)
    except NoObject:
        return _Rec(spb.NO_OBJECT)
    except NoRevision:
        return _Rec(spb.NO_REVISION)
    return _Rec(spb.FOUND if r.data is not None else spb.DELETED, r.serial, r.next_serial, r.data, r.data_tid)


@dataclass
class _Txn:
    """State of one transaction in two-phase commit."""
    meta: object
    ttid: bytes = b""
    tid: bytes | None = None             # restore: the tid asked for
    status: str = " "
    data: dict = field(default_factory=dict)        # oid -> (serial, data or None) kept for resolution
    serials: dict = field(default_factory=dict)     # oid -> base serial
    checks: dict = field(default_factory=dict)      # oid -> serial (readCurrent)
    buffers: dict = field(default_factory=dict)     # node -> [(ObjectRecord without data, data)]
    buffered_bytes: int = 0
    sent: dict = field(default_factory=dict)        # node -> set of oids sent
    inflight: dict = field(default_factory=dict)    # node -> its store on the way (bulk.start)
    resolved: set = field(default_factory=set)
    voted: set = field(default_factory=set)         # nodes
    failed: set = field(default_factory=set)        # nodes that did not answer a Store or Vote
    meta_nodes: set = field(default_factory=set)    # nodes asked to write the metadata
    asked: set = field(default_factory=set)         # nodes sent a Vote (it may have voted)
    restore: bool = False
    view_ptid: int = 0                  # ptid of the partition table seen at tpc_begin
    session: int = 0                    # this client's node id at tpc_begin (master/commit.py)
    outcome_unknown: bool = False       # tpc_finish ended without knowing whether it committed
    finishing: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def _check_positive(**values) -> None:
    """``ValueError`` naming the first limit that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, not {value!r}")


def _as_bytes(data) -> bytes:
    """ZODB wants ``bytes``: cached chunk records may be read-only aligned buffers."""
    return data if type(data) is bytes else bytes(data)


ALIGN_BYTES = 64


def _aligned_copy(view, align=None) -> memoryview:
    """A read-only copy of ``view`` placed so that ``align(view)`` is 64-byte aligned.

    Array chunks hand their payload offset: numpy then reduces the payload in place,
    without copying misaligned items into buffers first.
    """
    offset = (align(view) if align is not None else None) or 0
    size = len(view)
    buf = numpy.empty(size + ALIGN_BYTES, dtype=numpy.uint8)
    start = -(buf.ctypes.data + offset) % ALIGN_BYTES
    out = buf[start:start + size]
    out[:] = numpy.frombuffer(view, dtype=numpy.uint8)
    return memoryview(out).toreadonly()


@zope.interface.implementer(interfaces.IStorage, interfaces.IStorageIteration,
                            interfaces.IStorageUndoable, interfaces.IStorageRestoreable,
                            interfaces.IExternalGC, interfaces.IMultiCommitStorage,
                            interfaces.IPrefetchStorage)
class NeoStorage(ConflictResolvingStorage):
    """A ZODB storage backed by a neoarray cluster.

    Parameters
    ----------
    master : str
        ``host:port`` of the master, or ``host:port,host:port...`` of the primary
        master and its standbys (on losing the primary, each is tried in turn).
    cluster : str
        Cluster name; a master or node of another cluster refuses us.
    name : str, optional
        Storage name shown by ZODB (default ``neoarray://master/cluster``).
    read_only : bool
        Refuse every write (the master refuses this client's commits too).
    ca, cert, key : str, optional
        Paths of the cluster's CA certificate, this client's certificate and its key
        (PEM): mutual TLS to every node.  A certificate with the ``reader`` role can
        only read, whatever ``read_only`` says (see :mod:`neoarray.security`).
    cache_bytes_max : int
        Budget of the client's storage cache, shared by its colours.
    cache_colours : str or list of (name, share, policy), optional
        The cache's colours (see :mod:`neoarray.client.cache`); default
        ``"meta:0.1:lru,hot:0.6:s3fifo,scan:0.3:fifo"``.  Loads that name no colour
        (:func:`neoarray.cache_colour`, an array's colour) use ``meta``.
    cache_colour_aliases : dict, optional
        Names read as another colour (``{"scan": "hot"}``).
    rpc_timeout_s : float
        Time limit of one call to a node.
    transactions_max : int
        Transactions of this client in two-phase commit at once.
    local_reads : bool
        Read the LMDB of storage nodes on this host directly instead of over gRPC.
    finish_timeout_s : float
        Time limit of ``tpc_finish``: storages lock whole transactions (GiBs for arrays).
    reduce_oids_per_batch_max : int
        Chunks in one near-data reduction request (:meth:`reduce_chunks`); storage
        nodes refuse more than their own limit (256 by default).
    reduce_attempts_max : int
        Nodes tried for one chunk by :meth:`reduce_chunks` when a node is unavailable.
    metrics_bind : str, optional
        ``host:port`` to serve Prometheus metrics on, at ``/metrics`` (port 0: a free
        one, see :attr:`metrics_address`): cache figures per colour and this
        process's gRPC traffic (:mod:`neoarray.metrics`).  Default: none.
    objects_per_transaction_max : int
        Objects one transaction may store (``LimitExceeded`` from ``store`` beyond);
        storage nodes and the master have their own limit.
    store_batch_bytes_max : int
        Data bytes buffered per transaction before they are sent in a Store request.
    message_bytes_max : int
        Largest gRPC request or reply this client sends or takes.
    """

    def __init__(self, master: str, cluster: str, name: str | None = None, read_only: bool = False,
                 cache_bytes_max: int = 64 << 20, rpc_timeout_s: float = 30.0,
                 connect_timeout_s: float = 30.0, transactions_max: int = 16,
                 store_batch_bytes_max: int = 4 << 20, oids_per_batch: int = 100,
                 resolvable_bytes_max: int = 1 << 20, busy_wait_s_max: float = 60.0,
                 conflict_rounds_max: int = 16, loads_per_batch_max: int = 1000,
                 message_bytes_max: int = wire.MESSAGE_BYTES_MAX, local_reads: bool = True,
                 finish_timeout_s: float = 660.0, cache_colours=None, cache_colour_aliases=None,
                 reduce_oids_per_batch_max: int = 256, reduce_attempts_max: int = 3,
                 metrics_bind: str | None = None, objects_per_transaction_max: int = 1_000_000,
                 ca: str | None = None, cert: str | None = None, key: str | None = None):
        if metrics_bind is not None:
            metrics.parse_bind(metrics_bind)     # a bad address fails before connecting
        if cache_bytes_max < 0:
            raise ValueError(f"cache_bytes_max must be >= 0 (0: no cache), not {cache_bytes_max}")
        _check_positive(transactions_max=transactions_max,
                        store_batch_bytes_max=store_batch_bytes_max, oids_per_batch=oids_per_batch,
                        loads_per_batch_max=loads_per_batch_max, message_bytes_max=message_bytes_max,
                        objects_per_transaction_max=objects_per_transaction_max,
                        reduce_oids_per_batch_max=reduce_oids_per_batch_max,
                        rpc_timeout_s=rpc_timeout_s, finish_timeout_s=finish_timeout_s)
        if message_bytes_max > wire.GRPC_MESSAGE_BYTES_MAX:
            raise ValueError(f"message_bytes_max must be <= {wire.GRPC_MESSAGE_BYTES_MAX}, "
                             f"not {message_bytes_max}")
        self.objects_per_transaction_max = objects_per_transaction_max
        self._tls = security.TLSConfig.of(ca, cert, key)
        self._name = name or f"neoarray://{master}/{cluster}"
        self._is_read_only = read_only
        self.rpc_timeout_s = rpc_timeout_s
        self.finish_timeout_s = finish_timeout_s
        self.store_batch_bytes_max = store_batch_bytes_max
        self.oids_per_batch = oids_per_batch
        self.resolvable_bytes_max = resolvable_bytes_max
        self.busy_wait_s_max = busy_wait_s_max
        self.conflict_rounds_max = conflict_rounds_max
        self.loads_per_batch_max = loads_per_batch_max
        self.reduce_oids_per_batch_max = reduce_oids_per_batch_max
        self.reduce_attempts_max = reduce_attempts_max
        self._cache = ColouredCache(cache_bytes_max, cache_colours, aliases=cache_colour_aliases)
        self._db = None
        self._lock = threading.RLock()           # last tid, finish callbacks, loads order
        self._tid_changed = threading.Condition(self._lock)
        self._oid_lock = threading.Lock()
        self._oids: list[bytes] = []
        self._txns: dict[int, _Txn] = {}
        self._ttid_counter = 0
        self._commit_times = collections.deque(maxlen=COMMIT_TIMES_MAX)   # (client time, tid)
        self._own: dict[bytes, _Txn] = {}         # ttid -> finishing transaction
        self._finished_own: dict[bytes, None] = {}  # own commits whose invalidation is still to come
        self._slots = threading.BoundedSemaphore(transactions_max)
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="neoarray-io")
        self._last_tid = Z64
        self._closed = False
        self._local = None
        self._metrics = None
        self._link = ClusterLink(master, cluster, self._invalidated, self._reconnected,
                                 rpc_timeout_s, connect_timeout_s, read_only, message_bytes_max,
                                 tls=self._tls)
        self._local = LocalReaders(self._link.partitions) if local_reads else None
        if self._local is not None:
            self._link.on_info = self._local.update
            self._local.update(self._link.info.nodes)
        self._link.wait_running(connect_timeout_s)
        with self._lock:
            self._last_tid = max(self._last_tid, self._link.info.last_tid or Z64)
        if metrics_bind is not None:
            self._serve_metrics(metrics_bind)

    def _serve_metrics(self, bind: str) -> None:
        """Serve the cache and traffic figures on ``bind``; close the storage if it fails."""
        exporter = metrics.MetricsExporter("client", self._link.cluster, lambda: f"C{self._link.node_id}")
        exporter.register(metrics.CacheCollector(self._cache.stats))
        try:
            exporter.serve(bind)
        except OSError:
            self.close()
            raise
        self._metrics = exporter

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of this client's ``/metrics`` (None: not served)."""
        return self._metrics.address if self._metrics is not None else None

    # -- naming and sizes --------------------------------------------------------------
    def getName(self):
        return self._name

    def sortKey(self):
        return self._name

    def __repr__(self):
        return f"<NeoStorage {self._name}>"

    def getSize(self):
        """An estimate: the bytes this client has cached (clusters report sizes via neoctl)."""
        return self._cache.stats()["bytes"]

    def __len__(self):
        return u64(self._link.info.last_oid or Z64) if self._link.info else 0

    def isReadOnly(self):
        return self._is_read_only

    def supportsUndo(self):
        return True

    def cache_stats(self) -> dict:
        """Totals (hits, misses, evictions, bytes, bytes_max, objects) and ``colours``."""
        return self._cache.stats()

    def client_options(self) -> dict:
        """Arguments that open an equivalent client in another process (jobs' workers)."""
        return {"master": ",".join(self._link.master_addresses), "cluster": self._link.cluster,
                "cache_bytes_max": self._cache.bytes_max, "rpc_timeout_s": self.rpc_timeout_s,
                "read_only": self._is_read_only, "local_reads": self._local is not None,
                **(self._tls.options() if self._tls else {})}

    def add_cache_colour(self, name: str, share: float, policy: str = "lru") -> None:
        """Add a cache colour (policies: lru, s3fifo, fifo); quotas are shares of the budget."""
        self._cache.add_colour(name, share, policy)

    @property
    def node_id(self) -> int:
        return self._link.node_id

    # -- ZODB wiring ------------------------------------------------------------------
    def registerDB(self, db):
        self._db = db

    def lastTransaction(self):
        with self._lock:
            return self._last_tid

    def _invalidated(self, tid: bytes, ttid: bytes, oids: list[bytes]) -> None:
        """Event stream thread: invalidations arrive here in TID order."""
        own = self._own.get(ttid)
        if own is not None:
            own.tid = tid
            own.reached.set()
            if not own.done.wait(EVENT_WAIT_S):
                log.warning("finish of 0x%s did not complete within %s s", tid.hex(), EVENT_WAIT_S)
            return
        with self._lock:
            if ttid in self._finished_own:
                del self._finished_own[ttid]
                return      # a commit of this client whose finish did not wait for it
            self._cache.invalidate(oids, tid)
            self._last_tid = max(self._last_tid, tid)
            if self._db is not None:
                self._db.invalidate(tid, set(oids))
            self._tid_changed.notify_all()

    def _reconnected(self, info) -> None:
        """Events may have been missed while the master was away: forget everything."""
        with self._lock:
            self._cache.clear()
            if info.last_tid and info.last_tid > self._last_tid:
                self._last_tid = info.last_tid
            self._tid_changed.notify_all()
            if self._db is not None:
                self._db.invalidateCache()

    def close(self):
        with self._lock:    # an invalidation being delivered ends first; none after
            if self._closed:
                return
            self._closed = True
            self._db = None   # ZODB's MVCCAdapter drops its instances once this returns
        if self._metrics is not None:
            self._metrics.stop()
        self._link.close()
        if self._local is not None:
            self._local.close()
        self._pool.shutdown(wait=False)

    def release(self):
        pass

    def sync(self, force=True):
        """Catch up with the cluster: see every transaction committed before this call.

        Invalidations stream in asynchronously; ZODB calls ``sync`` when a transaction
        begins, so one round trip to the master for its last tid, then a wait for the
        stream to deliver up to it, makes a commit of another client that finished before
        this transaction began visible to it (as NEO does; ZEO only hopes the stream is
        ahead).
        """
        if self._closed or not self._link.connected.is_set():
            return
        try:
            target = wire.call(self._link.master.LastIds, cpb.Empty(),
                               self.rpc_timeout_s, "sync").last_tid
        except ClusterUnavailable:
            return          # reconnecting: the cache is dropped when the master is back
        with self._tid_changed:
            if not self._tid_changed.wait_for(lambda: self._last_tid >= target or self._closed,
                                              timeout=EVENT_WAIT_S):
                log.warning("sync: invalidations up to 0x%s not seen within %s s", target.hex(), EVENT_WAIT_S)

    def new_oid(self):
        self._check_writable()
        with self._oid_lock:
            if not self._oids:
                self._link.wait_running(self.rpc_timeout_s)
                reply = wire.call(self._link.master.NewOids, mpb.NewOidsRequest(count=self.oids_per_batch),
                                  self.rpc_timeout_s, "new_oid")
                self._oids = list(reversed(reply.oids))
            return self._oids.pop()

    def _check_writable(self):
        if self._is_read_only:
            raise POSException.ReadOnlyError("this neoarray storage is read-only")

    # -- loads ------------------------------------------------------------------------
    def _read(self, request: spb.LoadRequest) -> _Rec:
        """Ask one readable cell, trying the others (and waiting for the cluster) on failure.

        A cell on this host is read directly from its LMDB directory.
        """
        deadline = time.monotonic() + self.rpc_timeout_s
        errors = []
        while True:
            for nid in self._link.readable(self._link.partition(request.oid)):
                local = self._local.get(nid) if self._local else None
                try:
                    if local is not None:
                        return _local_load(local, request)
                    reply, (data,) = bulk.call(self._link.storage(nid).Load, request, (),
                                               self.rpc_timeout_s, f"load from S{nid}")
                    return _rec_of(reply, data, nid)
                except (ClusterUnavailable, ChecksumError) as exc:
                    errors.append(exc)
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"no readable copy of oid 0x{request.oid.hex()} answered"
                                         f"{': ' + str(errors[-1]) if errors else ''}")
            self._link.wait_running(max(0.1, deadline - time.monotonic()))
            time.sleep(0.05)

    def loadBefore(self, oid, tid):
        with self._lock:   # wait for a finish in progress (its callback) to complete
            pass
        colour = colours.current()
        hit = self._cache.get(oid, tid, colour)
        if hit is not None:
            return _as_bytes(hit[0]), hit[1], hit[2]
        token = self._cache.start_load()
        reply = self._read(spb.LoadRequest(oid=oid, before=tid))
        if reply.status == spb.NO_OBJECT:
            raise POSException.POSKeyError(oid)
        if reply.status in LOAD_NOT_FOUND:
            return None
        if reply.status == spb.DELETED:
            raise POSException.POSKeyError(oid)
        self._cache.put(oid, reply.data, reply.serial, reply.next_serial, token, colour)
        return reply.data, reply.serial, reply.next_serial

    def load(self, oid, version=""):
        found = self.loadBefore(oid, MAX_TID)
        if found is None:
            raise POSException.POSKeyError(oid)
        return found[:2]

    def loadSerial(self, oid, serial):
        colour = colours.current()
        hit = self._cache.get_serial(oid, serial, colour)
        if hit is not None:
            return _as_bytes(hit[0])
        reply = self._read(spb.LoadRequest(oid=oid, serial=serial))
        if reply.status != spb.FOUND:
            raise POSException.POSKeyError(oid, serial)
        self._cache.put(oid, reply.data, reply.serial, reply.next_serial, None, colour)
        return reply.data

    def getTid(self, oid):
        return self.load(oid)[1]

    def prefetch(self, oids, tid):
        """Load ``oids`` as of ``tid`` into the cache in the background, batched per node."""
        colour = colours.current()
        wanted = [oid for oid in oids if self._cache.get(oid, tid, colour) is None]
        for batch in self._by_node(wanted):
            self._pool.submit(self._prefetch_batch, *batch, tid, colour)

    def _by_node(self, oids):
        groups: dict[int, list] = {}
        for oid in oids:
            cells = self._link.readable(self._link.partition(oid))
            if cells:
                groups.setdefault(cells[0], []).append(oid)
        for nid, group in groups.items():
            for i in range(0, len(group), self.loads_per_batch_max):
                yield nid, group[i:i + self.loads_per_batch_max]

    def _reader_of(self, partition: int) -> int:
        """A node with a readable cell of ``partition`` (rotating), or ClusterUnavailable."""
        cells = self._link.readable(partition)
        if not cells:
            raise ClusterUnavailable(f"no readable copy of partition {partition}")
        return cells[0]

    def _prefetch_batch(self, nid, oids, tid, colour):
        try:
            self._load_batch(nid, oids, tid, colour)
        except Exception as exc:  # prefetch is a hint: loads will ask again
            log.debug("prefetch from S%d failed: %s", nid, exc)

    def load_many(self, oids, tid, colour: str | None = None) -> dict:
        """``{oid: (data, serial, next_serial)}`` as of ``tid``, batched per node, in parallel.

        Missing or deleted objects are absent from the result.  ``data`` is ``bytes`` or
        a read-only buffer.  ``colour``: the cache colour (default: :func:`colours.current`).
        """
        colour = colour or colours.current()
        out, todo = {}, []
        for oid in oids:
            hit = self._cache.get(oid, tid, colour)
            if hit is None:
                todo.append(oid)
            else:
                out[oid] = hit
        batches = list(self._by_node(todo))
        if len(batches) == 1:
            out.update(self._load_batch(*batches[0], tid, colour))
            return out
        jobs = [self._pool.submit(self._load_batch, nid, batch, tid, colour) for nid, batch in batches]
        for job in jobs:
            out.update(job.result())
        return out

    @contextlib.contextmanager
    def read_views(self, oids, tid, colour: str | None = None, align=None):
        """``{oid: (data, serial)}`` as of ``tid``, for bulk readers (array chunks).

        ``data`` is a read-only buffer valid only inside the ``with`` block.  Records in
        the cache are handed out as they are (checked when they entered it).  Records of
        storage nodes on this host are read in place, in their LMDB pages (no copy,
        checksum verified); when the colour keeps local copies (``meta``, ``hot``: not
        ``scan``) they are copied into the cache, aligned so that ``align(record)``
        (an offset, or None) falls on a 64-byte boundary.  The others are loaded (one
        copy) through the cache.  Missing or deleted objects are absent.  Keep blocks
        short: an open LMDB read transaction holds its snapshot's pages.
        """
        colour = colour or colours.current()
        cache = self._cache
        keep = cache.keeps_local_copies(colour)
        out, remote = {}, []
        with contextlib.ExitStack() as stack:
            txns = {}
            token = cache.start_load()
            for oid in oids:
                hit = cache.get(oid, tid, colour)
                if hit is not None:
                    out[oid] = hit[:2]
                    continue
                nid = next(iter(self._link.readable(self._link.partition(oid))), None)
                reader = self._local.get(nid) if self._local is not None and nid is not None else None
                if reader is None:
                    remote.append(oid)
                    continue
                if nid not in txns:
                    txns[nid] = stack.enter_context(reader.kv.read(buffers=True))
                try:
                    rec = reader.load_in(txns[nid], oid, before=tid, copy=False)
                except (NoObject, NoRevision):
                    continue
                if rec.data is None:
                    continue
                data = rec.data
                if keep:
                    data = _aligned_copy(data, align)
                    cache.put(oid, data, rec.serial, rec.next_serial, token, colour)
                out[oid] = (data, rec.serial)
            for oid, (data, serial, _) in self.load_many(remote, tid, colour).items():
                out[oid] = (data, serial)
            yield out

    def _load_batch(self, nid, oids, tid, colour=None):
        """Load ``oids`` as of ``tid`` from one node (locally when it is on this host)."""
        token = self._cache.start_load()
        local = self._local.get(nid) if self._local else None
        if local is not None:
            recs = [(oid, _local_load(local, spb.LoadRequest(oid=oid, before=tid))) for oid in oids]
        else:
            reply, datas = bulk.call(self._link.storage(nid).LoadMany, spb.LoadManyRequest(
                loads=[spb.LoadRequest(oid=o, before=tid) for o in oids]), (), self.rpc_timeout_s, f"load from S{nid}")
            recs = [(r.oid, _rec_of(r, d, nid)) for r, d in zip(reply.loads, datas)]
        out = {}
        for oid, r in recs:
            if r.status == spb.FOUND:
                self._cache.put(oid, r.data, r.serial, r.next_serial, token, colour)
                out[oid] = (r.data, r.serial, r.next_serial)
        return out

    # -- near-data reductions ---------------------------------------------------------
    def reduce_chunks(self, oids, tid, kernel, *, dtype, acc, chunk_shape, order, extents,
                      codec=None, bins=None, lo=None, hi=None) -> dict:
        """Reduce array chunks on the storage nodes holding them: ``{oid: (state, serial)}``.

        ``state`` is ``neoarray.kernels.block_state(kernel, block, acc, bins, lo, hi)``
        of ``block``, the in-bounds part (``extents[i]``, one size per axis) of the
        chunk ``oids[i]`` as of ``tid`` (its newest revision with a tid below ``tid``,
        like :meth:`load_many`; None: the newest), its items of ``dtype`` laid out as
        ``chunk_shape`` in ``order`` ('C'/'F') and encoded with ``codec`` (None or
        ``('zlib', level)``); ``serial`` is the revision reduced.  ``kernel`` is one of
        ``neoarray.kernels.BLOCK_STATES`` (``bins``, ``lo`` and ``hi`` for
        ``histogram``); ``extents`` may also be a mapping from oid to extent.

        Oids absent from the result were not reduced (no revision before ``tid``,
        deleted, not a raw chunk record of that shape, no readable copy answered):
        the caller computes them itself, and its loads raise what ZODB raises.
        Always over gRPC, for nodes on this host too (no local reads): only the
        partial states cross the network.  Oids go in batches of at most
        ``reduce_oids_per_batch_max`` to one node with a readable cell of their
        partition, batches to different nodes in parallel; the oids of a batch whose
        node is unavailable (or failed a checksum) are sent to another readable cell,
        up to ``reduce_attempts_max`` nodes per oid.  ``RequestRefused`` for a request
        the nodes refuse (the message says why).
        """
        oids = list(oids)
        if isinstance(extents, collections.abc.Mapping):
            extent_of = {oid: extents[oid] for oid in oids}
        elif len(extents) != len(oids):
            raise ValueError(f"{len(extents)} extents for {len(oids)} oids: one extent per oid")
        else:
            extent_of = dict(zip(oids, extents))
        oids = list(extent_of)          # each oid once
        template = self._reduce_template(tid, kernel, dtype, acc, chunk_shape, order,
                                         codec, bins, lo, hi)
        out: dict = {}
        tried: dict[bytes, set] = {oid: set() for oid in oids}
        todo = oids
        for _ in range(self.reduce_attempts_max):
            batches = self._reduce_batches(todo, tried)
            if not batches:
                break
            jobs = [(batch, self._pool.submit(self._reduce_batch, nid, batch, template, extent_of))
                    for nid, batch in batches]
            todo = []
            for batch, job in jobs:
                try:
                    out.update(job.result())
                except (ClusterUnavailable, ChecksumError) as exc:
                    log.debug("reduce of %d chunks failed: %s", len(batch), exc)
                    todo.extend(batch)
        return out

    @staticmethod
    def _reduce_template(tid, kernel, dtype, acc, chunk_shape, order, codec, bins, lo, hi):
        """The ``ReduceRequest`` of :meth:`reduce_chunks`, without oids and extents."""
        codec_name, codec_level = ("", 0) if codec is None else codec
        return spb.ReduceRequest(
            before=tid or b"", kernel=kernel, dtype=numpy.dtype(dtype).str,
            acc_dtype=numpy.dtype(acc).str, chunk_shape=[int(n) for n in chunk_shape],
            order=order, codec=codec_name, codec_level=int(codec_level), bins=int(bins or 0),
            lo=float(lo or 0.0), hi=float(hi or 0.0))

    def _reduce_batches(self, oids, tried) -> list:
        """``[(node, oids)]``: each oid to a readable cell not tried yet, in batches."""
        groups: dict[int, list] = {}
        for oid in oids:
            cells = [nid for nid in self._link.readable(self._link.partition(oid))
                     if nid not in tried[oid]]
            if cells:
                tried[oid].add(cells[0])
                groups.setdefault(cells[0], []).append(oid)
        size = max(1, self.reduce_oids_per_batch_max)
        return [(nid, group[i:i + size]) for nid, group in groups.items()
                for i in range(0, len(group), size)]

    def _reduce_batch(self, nid, oids, template, extent_of) -> dict:
        """``{oid: (state, serial)}`` of the chunks that node ``nid`` reduced."""
        from .. import kernels  # Numba: imported by the first reduction only

        request = spb.ReduceRequest()
        request.CopyFrom(template)
        request.oids.extend(oids)
        request.extents.extend(spb.ChunkExtent(sizes=[int(e) for e in extent_of[oid]])
                               for oid in oids)
        reply = wire.call(self._link.storage(nid).Reduce, request, self.rpc_timeout_s,
                          f"reduce on S{nid}")
        wanted, out = set(oids), {}
        for chunk in reply.chunks:
            if chunk.status != spb.ReducedChunk.REDUCED or chunk.oid not in wanted:
                continue
            try:
                out[chunk.oid] = (kernels.decode_state(chunk.state), chunk.serial)
            except ValueError as exc:     # left to the caller, who computes it
                log.warning("S%d sent a malformed state for oid 0x%s: %s", nid, chunk.oid.hex(), exc)
        return out

    def history(self, oid, size=1):
        node = self._reader_of(self._link.partition(oid))
        reply = wire.call(self._link.storage(node).History, spb.HistoryRequest(oid=oid, size=size),
                          self.rpc_timeout_s, "history")
        if not reply.revisions:
            raise POSException.POSKeyError(oid)
        out = []
        for rev in reply.revisions:
            meta = self._transaction_meta(rev.tid)
            entry = {"tid": rev.tid, "serial": rev.tid, "time": TimeStamp(rev.tid).timeTime(),
                     "size": rev.size, "version": ""}
            if meta is not None:
                entry.update(user_name=meta.user_raw, description=meta.description)
                entry.update(_extension(meta.extension))
            out.append(entry)
        return out

    # -- two-phase commit ---------------------------------------------------------------
    def _txn(self, transaction) -> _Txn:
        txn = self._txns.get(id(transaction))
        if txn is None or txn.meta is not transaction:
            raise POSException.StorageTransactionError(self, transaction)
        return txn

    def tpc_begin(self, transaction, tid=None, status=" "):
        self._check_writable()
        if id(transaction) in self._txns and self._txns[id(transaction)].meta is transaction:
            raise POSException.StorageTransactionError("Duplicate tpc_begin calls for same transaction")
        if not self._slots.acquire(timeout=self.rpc_timeout_s * 4):
            raise ClusterUnavailable("too many transactions in progress in this client")
        try:
            self._link.wait_running(self.rpc_timeout_s)
            session = self._link.node_id
            if tid is None:
                ttid = self._new_ttid(session)
            else:    # restore: the master must reserve the tid
                ttid = wire.call(self._link.master.Begin, mpb.BeginRequest(
                    node_id=session, tid=tid), self.rpc_timeout_s, "tpc_begin").ttid
        except BaseException:
            self._slots.release()
            raise
        txn = _Txn(transaction, ttid=ttid, tid=tid, status=status, restore=tid is not None,
                   view_ptid=self._link.info.pt.ptid, session=session)
        self._txns[id(transaction)] = txn

    def _new_ttid(self, session: int) -> bytes:
        """A temporary tid unique in the cluster: this client's node id and a counter."""
        with self._oid_lock:
            self._ttid_counter = (self._ttid_counter + 1) % (1 << 32)
            return p64((session << 32) | self._ttid_counter)

    def store(self, oid, serial, data, version, transaction):
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        self._add(txn, oid, serial or Z64, data)

    def deleteObject(self, oid, oldserial, transaction):
        self._check_writable()
        txn = self._txn(transaction)
        self._add(txn, oid, oldserial, None)

    def restore(self, oid, serial, data, version, prev_txn, transaction):
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        txn.restore = True
        self._add(txn, oid, serial or Z64, data, prev_txn if data is not None else None)

    def checkCurrentSerialInTransaction(self, oid, serial, transaction):
        txn = self._txn(transaction)
        if oid not in txn.serials:
            txn.checks[oid] = serial

    def _add(self, txn: _Txn, oid: bytes, serial: bytes, data: bytes | None, data_tid: bytes | None = None) -> None:
        if oid not in txn.serials and len(txn.serials) >= self.objects_per_transaction_max:
            raise LimitExceeded(f"transaction stores more than objects_per_transaction_max="
                                f"{self.objects_per_transaction_max} objects")
        txn.serials[oid] = serial
        txn.checks.pop(oid, None)
        keep = data is None or len(data) <= self.resolvable_bytes_max
        txn.data[oid] = (serial, data if keep else _TOO_BIG)
        record = spb.ObjectRecord(oid=oid, serial=serial, deleted=data is None,
                                  checksum=0 if data is None else xxhash.xxh3_64_intdigest(data),
                                  data_tid=data_tid or b"")
        nodes = self._link.writable(self._link.partition(oid))
        if not nodes:
            raise ClusterUnavailable(f"no writable copy of the partition of oid 0x{oid.hex()}")
        for nid in nodes:
            txn.buffers.setdefault(nid, []).append((record, data or b""))
        txn.buffered_bytes += len(data or b"")
        if txn.buffered_bytes >= self.store_batch_bytes_max:
            self._flush(txn)

    @staticmethod
    def _take_buffers(txn: _Txn) -> dict:
        """The buffered ``[(record, data)]`` by node, now counted as sent (by a Store or
        inside a Vote)."""
        buffers, txn.buffers, txn.buffered_bytes = txn.buffers, {}, 0
        for nid, records in buffers.items():
            txn.sent.setdefault(nid, set()).update(r.oid for r, _ in records)
        return buffers

    def _flush(self, txn: _Txn) -> None:
        """Send the buffered records: one Store on its way per node (its reply is read
        before the next one to that node is sent), nodes in parallel."""
        for nid, records in self._take_buffers(txn).items():
            if nid in txn.inflight:
                self._wait_store(txn, nid)
            if nid in txn.failed:
                continue
            request = spb.StoreRequest(ttid=txn.ttid, node_id=txn.session, objects=[r for r, _ in records])
            txn.inflight[nid] = bulk.start(self._link.storage(nid).Store, request, [d for _, d in records],
                                           self.rpc_timeout_s)

    def _wait_store(self, txn: _Txn, nid: int) -> None:
        try:
            bulk.finish(txn.inflight.pop(nid), f"store to S{nid}")
        except ClusterUnavailable as exc:
            self._node_failed(txn, nid, exc)

    def _wait_stores(self, txn: _Txn) -> None:
        for nid in list(txn.inflight):
            self._wait_store(txn, nid)

    def _node_failed(self, txn: _Txn, nid: int, exc: Exception) -> None:
        """``nid`` did not answer: the transaction goes on without it if every
        partition it writes keeps another copy (checked before finishing,
        ``_require_copies``); the master then marks the cells it missed OUT_OF_DATE,
        so they copy it and no one reads them stale (``master/replication.py``)."""
        log.warning("S%d failed during commit of 0x%s (%s): going on with the other copies",
                    nid, txn.ttid.hex(), exc)
        txn.failed.add(nid)
        txn.voted.discard(nid)
        self._link.suspect(nid)

    def _left_out(self, txn: _Txn | None, nid: int, exc: Exception) -> bool:
        """Whether the failed call of ``nid`` leaves it out of ``txn`` (it did not
        answer, during a transaction) rather than failing the caller."""
        if txn is None or not isinstance(exc, ClusterUnavailable):
            return False
        self._node_failed(txn, nid, exc)
        return True

    def _require_copies(self, txn: _Txn) -> None:
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

    def _require_readable_voters(self, txn: _Txn) -> None:
        """Each written partition has a voter whose cell is readable in this client's
        view: the copies still catching up (OUT_OF_DATE) may miss earlier commits, so
        the master refuses a transaction only they took (``Master._view_covers``)."""
        rows = self._link.info.pt.rows
        written = {self._link.partition(oid) for oid in txn.serials} | {u64(txn.ttid) % self._link.partitions}
        for p in sorted(written):
            if not any(c.node_id in txn.voted and c.state in READABLE for c in rows[p].cells):
                raise ClusterUnavailable(
                    f"no readable copy of partition {p} voted transaction 0x{txn.ttid.hex()} (voted on "
                    f"S{', S'.join(map(str, sorted(txn.voted))) or '-'}): it cannot be committed now; retry it")

    def _require_session(self, txn: _Txn) -> None:
        """The master still knows this client as it did at tpc_begin: a transaction of
        an ended session (the master restarted, a standby took over, the connection
        was lost) can never be finished (``master/commit.py``), so it is refused here,
        at vote, not at finish."""
        if self._link.node_id != txn.session or not self._link.connected.is_set():
            raise ClusterUnavailable(f"the connection to the master was lost during transaction 0x{txn.ttid.hex()} "
                                     f"(a master restart or take-over): it cannot be committed; retry it")

    def tpc_vote(self, transaction):
        txn = self._txn(transaction)
        self._require_session(txn)
        for _ in range(self.conflict_rounds_max):
            self._wait_stores(txn)
            conflicts = self._vote_all(txn)
            if not conflicts:
                self._require_copies(txn)
                self._require_session(txn)
                return list(txn.resolved)
            for c in conflicts:
                self._resolve(txn, c)
        raise POSException.ConflictError(f"transaction still conflicting after "
                                         f"{self.conflict_rounds_max} rounds of resolution")

    def _vote_targets(self, txn: _Txn) -> dict[int, tuple]:
        """``{node: (VoteRequest, data segments of the stores it carries)}``."""
        meta_nodes = set(self._link.writable(u64(txn.ttid) % self._link.partitions))
        check_nodes: dict[int, list] = {}
        for oid, serial in txn.checks.items():
            for nid in self._link.readable(self._link.partition(oid))[:1] or self._link.writable(self._link.partition(oid)):
                check_nodes.setdefault(nid, []).append(spb.ObjectCheck(oid=oid, serial=serial))
        buffers = self._take_buffers(txn)
        nodes = (set(txn.sent) | meta_nodes | set(check_nodes)) - txn.failed
        txn.meta_nodes = meta_nodes - txn.failed
        if not txn.meta_nodes:
            raise ClusterUnavailable("no writable copy of the partition of the transaction's metadata")
        txn.asked |= nodes
        meta = _meta_pb(txn)
        targets = {}
        for nid in nodes:
            records = buffers.get(nid, ())
            targets[nid] = (spb.VoteRequest(
                ttid=txn.ttid, node_id=txn.session, checks=check_nodes.get(nid, ()),
                has_meta=nid in meta_nodes, meta=meta if nid in meta_nodes else None,
                oids=sorted(txn.sent.get(nid, ())), restore=txn.restore, objects=[r for r, _ in records]),
                [d for _, d in records])
        return targets

    def _vote_all(self, txn: _Txn) -> list:
        """Vote on every involved node; returns the conflicts to resolve.

        First in parallel.  If a node answers BUSY, the votes taken elsewhere are taken
        back and the nodes are voted one by one in node-id order, waiting on each: a
        transaction then only waits while holding locks of lower-numbered nodes, so no
        two transactions can wait for each other.
        """
        targets = self._vote_targets(txn)
        replies = self._call_each("Vote", targets, txn)
        for nid in txn.failed:
            targets.pop(nid, None)
        for req, _ in targets.values():
            req.ClearField("objects")           # stored already
        targets = {nid: (req, ()) for nid, (req, _) in targets.items()}
        conflicts = [c for r in replies.values() if r.status == spb.CONFLICTS for c in r.conflicts]
        txn.voted.update(nid for nid, r in replies.items() if r.status == spb.VOTED)
        if any(r.status == spb.BUSY for r in replies.values()) and not conflicts:
            taken = sorted(nid for nid, r in replies.items() if r.status == spb.VOTED)
            if taken:
                self._call_each("Unvote", {nid: (spb.AbortTransactionRequest(ttid=txn.ttid), ()) for nid in taken})
                txn.voted.difference_update(taken)
            for nid in sorted(targets):
                reply = self._vote_waiting(nid, targets[nid])
                if reply.status == spb.CONFLICTS:
                    conflicts.extend(reply.conflicts)
                    break
                txn.voted.add(nid)
        unique = {}
        for c in conflicts:
            unique.setdefault((c.oid, c.read_conflict), c)
        return list(unique.values())

    def _vote_waiting(self, nid: int, target):
        """Vote on one node, waiting (bounded) while another transaction holds a lock."""
        deadline = time.monotonic() + self.busy_wait_s_max
        delay = 0.001
        while True:
            reply = self._call_each("Vote", {nid: target})[nid]
            if reply.status != spb.BUSY:
                return reply
            if time.monotonic() > deadline:
                raise POSException.ConflictError(
                    f"objects stayed locked by transaction 0x{reply.busy_with.hex()} on S{nid} for "
                    f"more than busy_wait_s_max={self.busy_wait_s_max} s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    def _call_each(self, method: str, requests: dict, txn: _Txn | None = None) -> dict:
        """Call ``method`` on each node with its ``(request, data segments)``; replies by
        node.  The requests are all sent, then the replies read (over the framed data
        plane: in parallel, from this thread).  With ``txn``, a node that does not answer
        is left out (``_node_failed``)."""
        started = {}
        for nid, (req, segments) in requests.items():
            try:
                started[nid] = bulk.start(getattr(self._link.storage(nid), method), req, segments,
                                          self.rpc_timeout_s)
            except ClusterUnavailable as exc:
                started[nid] = exc
        out, error = {}, None
        for nid, handle in started.items():     # every call ends before an error is raised: an
            try:                                # abort then never overtakes a vote still on its way
                if isinstance(handle, Exception):
                    raise handle
                out[nid] = bulk.finish(handle, f"{method} on S{nid}")[0]
            except Exception as exc:  # noqa: BLE001 - raised below, once every call ended
                if not self._left_out(txn, nid, exc):
                    error = error or exc
        if error is not None:
            raise error
        return out

    def _resolve(self, txn: _Txn, c) -> None:
        oid = c.oid
        if c.read_conflict:
            raise POSException.ReadConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        serial, data = txn.data[oid]
        if data is _TOO_BIG or data is None:
            raise POSException.ConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        if c.committed_serial == Z64:
            raise POSException.ConflictError(oid=oid, serials=(c.committed_serial, c.serial))
        resolved = self.tryToResolveConflict(oid, c.committed_serial, serial, data)
        self._add(txn, oid, c.committed_serial, resolved)
        txn.resolved.add(oid)

    def tpc_finish(self, transaction, func=lambda tid: None):
        txn = self._txn(transaction)
        oids = list(txn.serials)
        request = mpb.FinishRequest(node_id=txn.session, ttid=txn.ttid, oids=oids,
                                    storage_ids=sorted(txn.voted), view_ptid=txn.view_ptid)
        started = time.time()
        self._own[txn.ttid] = txn
        try:
            tid, prev_tid = self._finish(txn, request)
        except BaseException:
            txn.done.set()
            self._own.pop(txn.ttid, None)
            if txn.outcome_unknown:
                self._end(transaction)      # nothing to abort: the master decides alone
            raise                           # not committed: tpc_abort drops the votes
        try:
            self._wait_own_invalidation(txn, tid, prev_tid)
            colour = colours.current()
            with self._lock:
                for oid, (serial, data) in txn.data.items():
                    self._cache.invalidate((oid,), tid)
                    if data is not None and data is not _TOO_BIG:
                        self._cache.put(oid, data, tid, None, None, colour)
                func(tid)
                self._last_tid = max(self._last_tid, tid)
                self._tid_changed.notify_all()
                self._commit_times.append((started, tid))
            return tid
        finally:
            txn.done.set()
            self._own.pop(txn.ttid, None)
            self._end(transaction)

    def _wait_own_invalidation(self, txn: _Txn, tid: bytes, prev_tid: bytes | None) -> None:
        """Before tpc_finish returns, every invalidation before ``tid`` must have been
        delivered.  When the event stream already reached ``prev_tid`` (the commit
        published just before this one), it has: the stream's copy of this commit's
        own invalidation is then dropped when it comes.  Otherwise wait for it."""
        with self._lock:
            if prev_tid is not None and self._last_tid >= prev_tid and not txn.reached.is_set():
                self._finished_own[txn.ttid] = None
                while len(self._finished_own) > COMMIT_TIMES_MAX:
                    self._finished_own.pop(next(iter(self._finished_own)))
                return
        if self._link.connected.is_set() and not txn.reached.wait(EVENT_WAIT_S):
            log.warning("own invalidation of 0x%s not seen within %s s", tid.hex(), EVENT_WAIT_S)

    def _finish(self, txn: _Txn, request) -> tuple[bytes, bytes | None]:
        """``(tid, the tid published before it or None)``, once the master acknowledged
        the transaction as committed and complete; ``NotCommitted`` when it says it
        never will be; ``OutcomeUnknown`` when no master could tell within
        ``rpc_timeout_s``."""
        try:
            reply = wire.call(self._link.master.Finish, request, self.finish_timeout_s, "tpc_finish")
            return reply.tid, reply.prev_tid
        except RequestRefused as exc:
            raise NotCommitted(f"tpc_finish refused: {exc}") from exc
        except ClusterUnavailable as exc:
            return self._final_tid(txn, exc), None

    def _final_tid(self, txn: _Txn, why: Exception) -> bytes:
        """Finish ended without an answer (``why``): ask the master, the only one that
        decides, until it knows (``master/commit.py``), instead of guessing."""
        deadline = time.monotonic() + self.rpc_timeout_s
        while True:
            try:
                reply = wire.call(self._link.master.FinalTid, mpb.FinalTidRequest(ttid=txn.ttid),
                                  self.rpc_timeout_s, "final tid")
            except ClusterUnavailable:
                reply = None
            if reply is not None and reply.tid:
                return reply.tid
            if reply is not None and reply.status == mpb.NOT_COMMITTED:
                raise NotCommitted(f"tpc_finish failed and the transaction was not committed: {why}") from why
            if time.monotonic() > deadline:
                txn.outcome_unknown = True
                raise OutcomeUnknown(f"tpc_finish of 0x{txn.ttid.hex()}: no master could tell within "
                                     f"{self.rpc_timeout_s:g} s whether it committed ({why}); it is "
                                     f"decided by the master, a read of what it wrote tells") from why
            time.sleep(0.2)

    def tpc_abort(self, transaction):
        txn = self._txns.get(id(transaction))
        if txn is None or txn.meta is not transaction:
            return
        try:
            for nid in list(txn.inflight):    # stores end before their abort
                try:
                    bulk.finish(txn.inflight.pop(nid))
                except Exception as exc:  # noqa: BLE001 - aborted anyway
                    log.debug("store of 0x%s to S%d before its abort: %s", txn.ttid.hex(), nid, exc)
            nodes = set(txn.sent) | txn.voted | txn.asked   # a vote may succeed where another failed
            if not (nodes or txn.restore):
                return          # nothing reached any node
            wire.call(self._link.master.Abort, mpb.AbortRequest(
                node_id=txn.session, ttid=txn.ttid, storage_ids=sorted(nodes)),
                self.rpc_timeout_s, "tpc_abort")
        except (POSException.ReadOnlyError, AccessDenied) as exc:   # the commit said it already
            log.debug("tpc_abort of 0x%s: %s", txn.ttid.hex(), exc)
        except Exception as exc:  # the master aborts it anyway when we go away
            log.warning("tpc_abort of 0x%s: %s", txn.ttid.hex(), exc)
        finally:
            self._end(transaction)

    def _end(self, transaction) -> None:
        if self._txns.pop(id(transaction), None) is not None:
            self._slots.release()

    def tpc_transaction(self):
        return None

    # -- undo ---------------------------------------------------------------------------
    def _transactions(self, min_tid, max_tid, limit, descending):
        """Transaction metadata over all partitions, merged in TID order."""
        by_node: dict[int, list] = {}
        for p in range(self._link.partitions):
            by_node.setdefault(self._reader_of(p), []).append(p)
        runs = []
        for nid, parts in by_node.items():
            reply = wire.call(self._link.storage(nid).Transactions, spb.TransactionsRequest(
                partitions=parts, min_tid=min_tid or b"", max_tid=max_tid or b"", limit=limit,
                descending=descending), self.rpc_timeout_s, "transactions")
            runs.append(list(reply.transactions))
        merged = sorted((t for run in runs for t in run), key=lambda t: t.tid, reverse=descending)
        return merged[:limit]

    def _transaction_meta(self, tid):
        found = self._transactions(tid, tid, 1, False)
        return found[0] if found else None

    def undoLog(self, first=0, last=-20, filter=None):
        if last < 0:
            last = first - last
        out, cursor = [], None
        while len(out) < last:
            batch = self._transactions(None, cursor, 500, True)
            for t in batch:
                if t.packed:
                    return out[first:last]
                entry = {"id": t.tid, "time": TimeStamp(t.tid).timeTime(),
                         "user_name": t.user_raw, "description": t.description}
                entry.update(_extension(t.extension))
                if filter is None or filter(entry):
                    out.append(entry)
            if len(batch) < 500:
                break
            cursor = p64(u64(batch[-1].tid) - 1)
        return out[first:last]

    def undoInfo(self, first=0, last=-20, specification=None):
        def match(entry):
            return all(entry.get(k) == v for k, v in (specification or {}).items())
        return self.undoLog(first, last, match if specification else None)

    def undo(self, transaction_id, transaction):
        self._check_writable()
        txn = self._txn(transaction)
        meta = self._transaction_meta(transaction_id)
        if meta is None or meta.packed:
            raise POSException.UndoError("transaction not found or packed", None)
        for oid in meta.oids:
            self._add(txn, oid, *self._undo_record(txn, oid, transaction_id))
        return None, list(meta.oids)

    def _undo_record(self, txn: _Txn, oid: bytes, tid: bytes):
        """(base serial, data, data tid) of the record that undoes ``tid`` for ``oid``."""
        try:
            undone = self.loadSerial(oid, tid)
        except POSException.POSKeyError:
            undone = None   # the undone record is a deletion
        before = self._load_fresh(oid, tid)
        pre_serial, pre_data, pre_data_tid = before if before else (None, None, None)
        if oid in txn.serials:              # changed earlier in this transaction (multi-undo)
            cur_serial, cur_data = txn.serials[oid], txn.data[oid][1]
            current_is_undone = False
        else:
            current = self._load_fresh(oid, MAX_TID)
            cur_serial, cur_data, _ = current if current else (Z64, None, None)
            current_is_undone = cur_serial == tid
        if current_is_undone or cur_data == undone:
            return cur_serial, pre_data, (pre_data_tid or pre_serial) if pre_data is not None else None
        if pre_serial is None:
            raise POSException.UndoError("Can't undo an add transaction followed by conflicting transactions.", oid)
        try:
            return cur_serial, self.tryToResolveConflict(oid, cur_serial, tid, pre_data, committedData=cur_data), None
        except POSException.ConflictError:
            raise POSException.UndoError("Some data were modified by a later transaction", oid) from None

    def _load_fresh(self, oid, before):
        """(serial, data or None, data tid) of the newest revision before ``before``, uncached."""
        reply = self._read(spb.LoadRequest(oid=oid, before=before))
        if reply.status in LOAD_NOT_FOUND:
            return None
        return reply.serial, reply.data, reply.data_tid

    # -- iteration --------------------------------------------------------------------
    def iterator(self, start=None, stop=None):
        return _Iterator(self, start, stop)

    def copyTransactionsFrom(self, other, verbose=0):
        from ZODB.BaseStorage import copy
        copy(other, self, verbose)

    def record_iternext(self, next=None):
        raise POSException.Unsupported("record_iternext: use iterator()")

    # -- pack ---------------------------------------------------------------------------
    def pack(self, t, referencesf, gc=True):
        self.pack_to_tid(self._pack_tid(t), referencesf, gc)

    def pack_to_tid(self, packtid: bytes, referencesf, gc: bool = True) -> int:
        """Pack every storage node to ``packtid``: drop the revisions no snapshot at or
        after it can see and, with ``gc``, the objects unreachable from the root then.
        Returns the number of revisions the nodes removed."""
        self._check_writable()
        unreachable = self._unreachable(packtid, referencesf) if gc else set()
        by_node: dict[int, list] = {}
        for p in range(self._link.partitions):
            for nid in self._link.writable(p):
                by_node.setdefault(nid, [])
        for oid in unreachable:
            for nid in self._link.writable(self._link.partition(oid)):
                by_node[nid].append(oid)
        removed = 0
        try:
            for nid, oids in by_node.items():
                stub = self._link.storage(nid)
                for i in range(0, max(len(oids), 1), 10_000):
                    removed += wire.call(stub.Pack, spb.PackRequest(
                        tid=packtid, gc_oids=oids[i:i + 10_000], prune_history=i == 0),
                        self.rpc_timeout_s * 10, "pack").revisions_removed
        except RequestRefused as exc:
            raise POSException.StorageError(str(exc)) from None
        finally:
            self._cache.clear()
        return removed

    def _pack_tid(self, t: float) -> bytes:
        """The tid to pack to for the time ``t`` of this client's clock.

        The tid the master's clock gives for ``t``, but never a transaction this client
        committed after its clock read ``t``: packing "before now" keeps what it
        committed since, even when its clock runs ahead of the master's.
        """
        packtid = tid_from_time(t)
        with self._lock:
            packtid = min(packtid, self._last_tid)
            for started, tid in self._commit_times:
                if started > t:
                    packtid = min(packtid, p64(u64(tid) - 1))
                    break
        return packtid

    def _unreachable(self, packtid: bytes, referencesf) -> set:
        """Oids not reachable from the root as of ``packtid``."""
        before = p64(u64(packtid) + 1)
        reachable, todo = set(), [Z64]
        while todo:
            batch, todo = todo[:self.loads_per_batch_max], todo[self.loads_per_batch_max:]
            for oid in batch:
                reachable.add(oid)
            found = self.load_many(batch, before)
            for data, _, _ in found.values():
                for ref in referencesf(data):
                    if ref not in reachable:
                        reachable.add(ref)
                        todo.append(ref)
        return set(self._all_oids()) - reachable

    def _all_oids(self):
        for p in range(self._link.partitions):
            node = self._reader_of(p)
            after = b""
            while True:
                reply = wire.call(self._link.storage(node).ObjectsSince, spb.ObjectsSinceRequest(
                    partitions=[p], after_oid=after, limit=10_000), self.rpc_timeout_s, "oids")
                yield from reply.oids
                if len(reply.oids) < 10_000:
                    break
                after = reply.oids[-1]


class _TooBig:
    def __repr__(self):
        return "<data not kept: larger than resolvable_bytes_max>"


_TOO_BIG = _TooBig()


def _meta_pb(txn: _Txn):
    m = txn.meta
    user = m.user if isinstance(m.user, bytes) else m.user.encode("utf-8")
    desc = m.description if isinstance(m.description, bytes) else m.description.encode("utf-8")
    ext = getattr(m, "extension_bytes", None)
    if ext is None:
        ext = pickle.dumps(getattr(m, "extension", {}) or {}, 3) if getattr(m, "extension", None) else b""
    return cpb.TransactionMeta(user_raw=user, description=desc, extension=ext or b"",
                               oids=sorted(txn.serials))


def _extension(raw: bytes) -> dict:
    if not raw:
        return {}
    try:
        return dict(pickle.loads(raw))
    except Exception:
        return {}


class _Iterator:
    """Transactions in ``[start, stop]`` in TID order, fetched in pages; iterable once."""

    def __init__(self, storage: NeoStorage, start, stop, page: int = 200):
        self.storage, self.start, self.stop, self.page = storage, start, stop, page
        self._gen = self._generate()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def _generate(self):
        cursor = self.start
        stop = self.stop or self.storage.lastTransaction()
        while True:
            batch = self.storage._transactions(cursor, stop, self.page, False)
            for meta in batch:
                yield self._record(meta)
            if len(batch) < self.page:
                return
            cursor = p64(u64(batch[-1].tid) + 1)

    def _record(self, meta):
        s = self.storage
        records = []
        for oid in meta.oids:
            reply = s._read(spb.LoadRequest(oid=oid, serial=meta.tid))
            if reply.status in LOAD_NOT_FOUND:
                continue   # removed by pack
            records.append(DataRecord(oid, meta.tid, reply.data, reply.data_tid))
        status = "p" if meta.packed else " "
        return _TransactionRecord(meta.tid, status, meta.user_raw, meta.description,
                                  _extension(meta.extension), records)

    def close(self):
        self._gen.close()


class _TransactionRecord(TransactionRecord):
    def __init__(self, tid, status, user, description, extension, records):
        TransactionRecord.__init__(self, tid, status, user, description, extension)
        self._records = records

    def __iter__(self):
        return iter(self._records)
