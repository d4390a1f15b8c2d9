"""``NeoStorage``: the ZODB storage of a neoarray cluster.

Implements ``IStorage``, ``IStorageIteration``, ``IStorageUndoable``,
``IStorageRestoreable``, ``IBlobStorageRestoreable`` (``blobs.py``), ``IExternalGC``,
``IPrefetchStorage`` and read-current checks
(``checkCurrentSerialInTransaction``).  ``ZODB.DB(NeoStorage(...))`` wraps it with
ZODB's MVCC adapter.  Thread-safe: several transactions may be in two-phase commit at
once (up to ``transactions_max``), each with its own state.

The ZODB face over objects with explicit dependencies: ``ClusterLink`` (the master,
the event stream, routing), ``Reads`` (``reads.py``: loads, batches, local reads,
views), ``CommitDriver`` (``commit.py``: the network side of two-phase commit),
``Reductions`` (``reductions.py``: near-data reductions) and the coloured cache.
Here: ZODB's methods, the invalidations (the event stream's, and a commit's own) and
undo, iteration and pack.  Errors that ZODB may see only at vote (conflicts, read
conflicts, a commit that could not be finished) are raised from ``tpc_vote``.
"""
from __future__ import annotations

import collections
import collections.abc
import logging
import pickle
import threading
import time
from concurrent import futures

import ZODB.blob
import zope.interface
from ZODB import POSException, interfaces
from ZODB.BaseStorage import DataRecord, TransactionRecord
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.TimeStamp import TimeStamp

from .. import metrics, security, wire
from ..errors import (
    ClusterUnavailable,
    RequestRefused,
)
from ..ids import MAX_TID, Z64, p64, tid_from_time, u64
from ..proto import common_pb2 as cpb
from ..proto import master_pb2 as mpb
from ..proto import storage_pb2 as spb
from . import colours, reads
from .blobs import (
    BLOB_CACHE_BYTES_MAX,
    BLOB_CHUNK_BYTES,
    BLOB_CHUNKS_IN_FLIGHT_MAX,
    BlobCache,
    BlobDownloads,
    BlobStorageMethods,
)
from .cache import ColouredCache
from .commit import TOO_BIG, CommitDriver, CommitLimits, Txn
from .link import ClusterLink
from .local import LocalReaders
from .reductions import Reductions

log = logging.getLogger("neoarray.client")

COMMIT_TIMES_MAX = 10_000
EVENT_WAIT_S = 10.0      # the event stream normally follows replies within milliseconds


def _check_positive(**values) -> None:
    """``ValueError`` naming the first limit that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, not {value!r}")


@zope.interface.implementer(interfaces.IStorage, interfaces.IStorageIteration,
                            interfaces.IStorageUndoable, interfaces.IStorageRestoreable,
                            interfaces.IExternalGC, interfaces.IMultiCommitStorage,
                            interfaces.IPrefetchStorage, interfaces.IBlobStorageRestoreable)
class NeoStorage(BlobStorageMethods, ConflictResolvingStorage):
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
    blob_cache_dir : str, optional
        The blob cache directory (``IBlobStorage``), shareable between processes;
        default: a temporary one, removed by ``close`` (:mod:`neoarray.client.blobs`).
    blob_cache_bytes_max : int
        Size limit of the blob cache (least recently used blobs are pruned).
    blob_chunk_bytes : int
        Bytes per blob chunk sent to the storage nodes (they accept up to their
        ``--blob-chunk-bytes-max``, 4 MiB by default).
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
                 ca: str | None = None, cert: str | None = None, key: str | None = None,
                 blob_cache_dir: str | None = None, blob_cache_bytes_max: int = BLOB_CACHE_BYTES_MAX,
                 blob_chunk_bytes: int = BLOB_CHUNK_BYTES, blob_chunks_in_flight_max: int = BLOB_CHUNKS_IN_FLIGHT_MAX):
        if metrics_bind is not None:
            metrics.parse_bind(metrics_bind)     # a bad address fails before connecting
        if cache_bytes_max < 0:
            raise ValueError(f"cache_bytes_max must be >= 0 (0: no cache), not {cache_bytes_max}")
        _check_positive(transactions_max=transactions_max,
                        store_batch_bytes_max=store_batch_bytes_max, oids_per_batch=oids_per_batch,
                        loads_per_batch_max=loads_per_batch_max, message_bytes_max=message_bytes_max,
                        objects_per_transaction_max=objects_per_transaction_max,
                        reduce_oids_per_batch_max=reduce_oids_per_batch_max,
                        rpc_timeout_s=rpc_timeout_s, finish_timeout_s=finish_timeout_s,
                        blob_chunk_bytes=blob_chunk_bytes, blob_chunks_in_flight_max=blob_chunks_in_flight_max,
                        blob_cache_bytes_max=blob_cache_bytes_max)
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
        self.blob_chunk_bytes = blob_chunk_bytes
        self.blob_chunks_in_flight_max = blob_chunks_in_flight_max
        self._blob_cache = self._blob_downloads = None      # made once connected
        self._db = None
        self._lock = threading.RLock()           # last tid, finish callbacks, loads order
        self._tid_changed = threading.Condition(self._lock)
        self._oid_lock = threading.Lock()
        self._oids: list[bytes] = []
        self._txns: dict[int, Txn] = {}
        self._commit_times = collections.deque(maxlen=COMMIT_TIMES_MAX)   # (client time, tid)
        self._own: dict[bytes, Txn] = {}         # ttid -> finishing transaction
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
        self._commits = CommitDriver(self._link, CommitLimits(
            objects_per_transaction_max, store_batch_bytes_max, resolvable_bytes_max, busy_wait_s_max,
            conflict_rounds_max, rpc_timeout_s, finish_timeout_s), self.tryToResolveConflict)
        self._reductions = Reductions(self._link, self._pool, rpc_timeout_s, reduce_oids_per_batch_max,
                                      reduce_attempts_max)
        self._local = LocalReaders(self._link.partitions) if local_reads else None
        if self._local is not None:
            self._link.on_info = self._local.update
            self._local.update(self._link.info.nodes)
        self._reads = reads.Reads(self._link, self._cache, self._local, self._pool, rpc_timeout_s,
                                  loads_per_batch_max)
        self._link.wait_running(connect_timeout_s)
        with self._lock:
            self._last_tid = max(self._last_tid, self._link.info.last_tid or Z64)
        try:
            self._blob_cache = BlobCache(blob_cache_dir, blob_cache_bytes_max)
        except OSError as exc:
            self.close()
            raise ValueError(f"blob cache directory {blob_cache_dir!r} cannot be used: {exc}") from exc
        self._blob_downloads = BlobDownloads(self._link, self._blob_cache, rpc_timeout_s,
                                             blob_chunks_in_flight_max)
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
        if self._blob_cache is not None:
            self._blob_cache.close()

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

    # -- loads (neoarray/client/reads.py) ----------------------------------------------
    def _read(self, request: spb.LoadRequest):
        return self._reads.read(request)

    def loadBefore(self, oid, tid):
        with self._lock:   # wait for a finish in progress (its callback) to complete
            pass
        return self._reads.load_before(oid, tid, colours.current())

    def load(self, oid, version=""):
        found = self.loadBefore(oid, MAX_TID)
        if found is None:
            raise POSException.POSKeyError(oid)
        return found[:2]

    def loadSerial(self, oid, serial):
        return self._reads.load_serial(oid, serial, colours.current())

    def getTid(self, oid):
        return self.load(oid)[1]

    def prefetch(self, oids, tid):
        """Load ``oids`` as of ``tid`` into the cache in the background, batched per node."""
        self._reads.prefetch(oids, tid, colours.current())

    def load_many(self, oids, tid, colour: str | None = None) -> dict:
        """``{oid: (data, serial, next_serial)}`` as of ``tid`` (``Reads.load_many``)."""
        return self._reads.load_many(oids, tid, colour or colours.current())

    def read_views(self, oids, tid, colour: str | None = None, align=None):
        """``{oid: (data, serial)}`` as of ``tid`` for bulk readers, in a ``with`` block
        (``Reads.read_views``)."""
        return self._reads.read_views(oids, tid, colour or colours.current(), align)

    def _reader_of(self, partition: int) -> int:
        return self._reads.reader_of(partition)

    def reduce_chunks(self, oids, tid, kernel, **kw) -> dict:
        """Reduce array chunks on the storage nodes holding them
        (:meth:`neoarray.client.reductions.Reductions.reduce_chunks`)."""
        return self._reductions.reduce_chunks(oids, tid, kernel, **kw)

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
    def _txn(self, transaction) -> Txn:
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
                ttid = self._commits.new_ttid(session)
            else:    # restore: the master must reserve the tid
                ttid = wire.call(self._link.master.Begin, mpb.BeginRequest(
                    node_id=session, tid=tid), self.rpc_timeout_s, "tpc_begin").ttid
        except BaseException:
            self._slots.release()
            raise
        txn = Txn(transaction, ttid=ttid, tid=tid, status=status, restore=tid is not None,
                   view_ptid=self._link.info.pt.ptid, session=session)
        self._txns[id(transaction)] = txn

    def store(self, oid, serial, data, version, transaction):
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        self._commits.add(txn, oid, serial or Z64, data)

    def deleteObject(self, oid, oldserial, transaction):
        self._check_writable()
        txn = self._txn(transaction)
        self._commits.add(txn, oid, oldserial, None)

    def restore(self, oid, serial, data, version, prev_txn, transaction):
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        txn.restore = True
        self._commits.add(txn, oid, serial or Z64, data, prev_txn if data is not None else None)

    def checkCurrentSerialInTransaction(self, oid, serial, transaction):
        txn = self._txn(transaction)
        if oid not in txn.serials:
            txn.checks[oid] = serial

    def tpc_vote(self, transaction):
        return self._commits.vote(self._txn(transaction))

    def tpc_finish(self, transaction, func=lambda tid: None):
        txn = self._txn(transaction)
        started = time.time()
        self._own[txn.ttid] = txn
        try:
            tid, prev_tid = self._commits.finish(txn)
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
                self._cache.committed([(oid, None if data is TOO_BIG else data)
                                       for oid, (_serial, data) in txn.data.items()], tid, colour)
                self._blobs_committed(txn, tid)
                func(tid)
                self._last_tid = max(self._last_tid, tid)
                self._tid_changed.notify_all()
                self._commit_times.append((started, tid))
            return tid
        finally:
            txn.done.set()
            self._own.pop(txn.ttid, None)
            self._end(transaction)

    def _wait_own_invalidation(self, txn: Txn, tid: bytes, prev_tid: bytes | None) -> None:
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

    def tpc_abort(self, transaction):
        txn = self._txns.get(id(transaction))
        if txn is None or txn.meta is not transaction:
            return
        try:
            self._commits.abort(txn)
        finally:
            self._end(transaction)

    def _end(self, transaction) -> None:
        txn = self._txns.pop(id(transaction), None)
        if txn is not None:
            self._blobs_dropped(txn)        # not committed: the files go (none left if it was)
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

    def transaction_info(self, tid: bytes):
        """The metadata of transaction ``tid`` as a readable copy of its partition holds
        it (``TransactionMeta``: ``user_raw``, ``description``, ``extension``, ``oids``,
        ``packed``), or None; with :meth:`revisions`, what an import verifies."""
        partition = self._link.partition(tid)
        reply = wire.call(self._link.storage(self._reader_of(partition)).Transactions, spb.TransactionsRequest(
            partitions=[partition], min_tid=tid, max_tid=tid, limit=1), self.rpc_timeout_s, "transactions")
        return reply.transactions[0] if reply.transactions else None

    def revisions(self, tid: bytes, oids) -> dict:
        """``{oid: RevisionDigest}`` (deleted, checksum, data tid, blob bytes) of the
        revisions ``tid`` of ``oids`` on the storage nodes, past the cache
        (``Reads.revisions``)."""
        return self._reads.revisions(list(oids), tid)

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
            serial, data, data_tid, source = self._undo_record(txn, oid, transaction_id)
            if source is not None and data is not None and ZODB.blob.is_blob_record(data):
                self._undo_blob(txn, oid, serial, data, data_tid, source)
            else:
                self._commits.add(txn, oid, serial, data, data_tid)
        return None, list(meta.oids)

    def _undo_record(self, txn: Txn, oid: bytes, tid: bytes):
        """(base serial, data, data tid, revision whose blob goes with the data or
        None) of the record that undoes ``tid`` for ``oid``."""
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
            return (cur_serial, pre_data, (pre_data_tid or pre_serial) if pre_data is not None else None,
                    pre_serial)
        if pre_serial is None:
            raise POSException.UndoError("Can't undo an add transaction followed by conflicting transactions.", oid)
        try:
            return cur_serial, self.tryToResolveConflict(oid, cur_serial, tid, pre_data, committedData=cur_data), None, None
        except POSException.ConflictError:
            raise POSException.UndoError("Some data were modified by a later transaction", oid) from None

    def _load_fresh(self, oid, before):
        """(serial, data or None, data tid) of the newest revision before ``before``, uncached."""
        reply = self._read(spb.LoadRequest(oid=oid, before=before))
        if reply.status in reads.LOAD_NOT_FOUND:
            return None
        return reply.serial, reply.data, reply.data_tid

    # -- iteration --------------------------------------------------------------------
    def iterator(self, start=None, stop=None):
        return _Iterator(self, start, stop)

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
        status = "p" if meta.packed else " "
        return _TransactionRecord(meta.tid, status, meta.user_raw, meta.description,
                                  _extension(meta.extension), lambda: self._records(meta))

    def _records(self, meta):
        """The data records of ``meta``'s transaction, loaded as they are iterated."""
        s = self.storage
        for oid in meta.oids:
            reply = s._read(spb.LoadRequest(oid=oid, serial=meta.tid))
            if reply.status in reads.LOAD_NOT_FOUND:
                continue   # removed by pack
            yield DataRecord(oid, meta.tid, reply.data, reply.data_tid)

    def close(self):
        self._gen.close()


class _TransactionRecord(TransactionRecord):
    """A transaction of the iterator; its records are loaded when iterated (each
    iteration loads them again)."""

    def __init__(self, tid, status, user, description, extension, records):
        TransactionRecord.__init__(self, tid, status, user, description, extension)
        self._records = records

    def __iter__(self):
        return iter(self._records())
