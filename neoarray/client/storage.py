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
Here: ZODB's methods and the invalidations (the event stream's, and a commit's own);
in mixins, undo, iteration and pack (``history.py``), blobs (``blobs.py``) and the bulk
reads that arrays use (``bulk_reads.py``).  Errors that ZODB may see only at vote (conflicts, read
conflicts, a commit that could not be finished) are raised from ``tpc_vote``.
"""
from __future__ import annotations

import collections
import collections.abc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

import zope.interface
from ZODB import POSException, interfaces
from ZODB.ConflictResolution import ConflictResolvingStorage

from .. import metrics, security, wire
from ..errors import (
    ClusterUnavailable,
)
from ..ids import MAX_TID, Z64, u64
from . import calls, colours, reads
from .blobs import (
    BLOB_CACHE_BYTES_MAX,
    BLOB_CHUNK_BYTES,
    BLOB_CHUNKS_IN_FLIGHT_MAX,
    BlobCache,
    BlobDownloads,
    BlobStorageMethods,
)
from .bulk_reads import BulkReadMethods
from .cache import ColouredCache
from .commit import TOO_BIG, CommitDriver, CommitLimits, Txn
from .history import HistoryMethods
from .link import ClusterLink
from .local import LocalReaders
from .reductions import Reductions
from .staging import ChunkStaging

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
class NeoStorage(BulkReadMethods, HistoryMethods, BlobStorageMethods, ConflictResolvingStorage):
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
    cache_colours : str or list of tuple, optional
        The cache's colours, as ``(name, share, policy)`` tuples or their text form (see :mod:`neoarray.client.cache`); default
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

    Raises
    ------
    ValueError
        A limit is out of range, or ``metrics_bind`` is not ``host:port``.
    ClusterUnavailable
        No master answered within the connection timeout (the error says why:
        nothing listening, TLS mismatch, another CA...).
    ClusterNameMismatch
        The master serves another cluster.
    """

    def __init__(self, master: str, cluster: str, name: str | None = None, read_only: bool = False,
                 cache_bytes_max: int = 64 << 20, rpc_timeout_s: float = 30.0,
                 connect_timeout_s: float = 30.0, transactions_max: int = 16,
                 store_batch_bytes_max: int = 4 << 20, oids_per_batch: int = 100,
                 resolvable_bytes_max: int = 1 << 20, busy_wait_s_max: float = 60.0,
                 conflict_rounds_max: int = 16, loads_per_batch_max: int = 1000,
                 message_bytes_max: int = wire.MESSAGE_BYTES_MAX, local_reads: bool = True,
                 finish_timeout_s: float = 660.0, cache_colours: str | list[tuple[str, float, str]] | None = None,
                 cache_colour_aliases: dict[str, str] | None = None,
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
        self._staging = ChunkStaging(resolvable_bytes_max)
        self.busy_wait_s_max = busy_wait_s_max
        self.conflict_rounds_max = conflict_rounds_max
        self.loads_per_batch_max = loads_per_batch_max
        self.reduce_oids_per_batch_max = reduce_oids_per_batch_max
        self.reduce_attempts_max = reduce_attempts_max
        self._cache = ColouredCache(cache_bytes_max, cache_colours, aliases=cache_colour_aliases)
        self.blob_chunk_bytes = blob_chunk_bytes
        self.blob_chunks_in_flight_max = blob_chunks_in_flight_max
        self._init_state(transactions_max)
        self._link = ClusterLink(master, cluster, self._invalidated, self._reconnected,
                                 rpc_timeout_s, connect_timeout_s, read_only, message_bytes_max,
                                 tls=self._tls)
        self._commits = CommitDriver(self._link, CommitLimits(
            objects_per_transaction_max, store_batch_bytes_max, resolvable_bytes_max, busy_wait_s_max,
            conflict_rounds_max, rpc_timeout_s, finish_timeout_s), self._resolve_conflict)
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

    def _init_state(self, transactions_max: int) -> None:
        """What the storage holds before it connects: locks, its transactions, the pool."""
        self._blob_cache = self._blob_downloads = None      # made once connected
        self._db = None
        self._lock = threading.RLock()           # last tid, finish callbacks, loads order
        self._tid_changed = threading.Condition(self._lock)
        self._oid_lock = threading.Lock()
        self._oids: list[bytes] = []
        self._txns: dict[int, Txn] = {}
        self._commit_times = collections.deque(maxlen=COMMIT_TIMES_MAX)   # (client time, tid)
        self._slots = threading.BoundedSemaphore(transactions_max)
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="neoarray-io")
        self._last_tid = Z64
        self._closed = False
        self._local = None
        self._metrics = None

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
    def getName(self) -> str:
        """The storage's name (``neoarray://master/cluster`` unless given) (``ZODB.interfaces.IStorage``)."""
        return self._name

    def sortKey(self) -> str:
        """The key ordering storages in a transaction (``ZODB.interfaces.IStorage``): the name."""
        return self._name

    def __repr__(self):
        return f"<NeoStorage {self._name}>"

    def getSize(self) -> int:
        """An estimate: the bytes this client has cached (clusters report sizes via neoctl)."""
        return self._cache.stats()["bytes"]

    def __len__(self):
        return u64(self._link.info.last_oid or Z64) if self._link.info else 0

    def isReadOnly(self) -> bool:
        """Whether the storage refuses writes (``read_only``, or a ``reader`` certificate)."""
        return self._is_read_only

    def supportsUndo(self) -> bool:
        """True: transactions can be undone (:meth:`undo`)."""
        return True

    def cache_stats(self) -> dict:
        """The client cache's figures.

        Returns
        -------
        dict
            Totals (``hits``, ``misses``, ``evictions``, ``bytes``, ``bytes_max``,
            ``objects``) and ``colours``: the same per cache colour.
        """
        return self._cache.stats()

    def client_options(self) -> dict:
        """Arguments that open an equivalent client in another process (jobs' workers).

        Returns
        -------
        dict
            ``NeoStorage`` keyword arguments: master addresses, cluster, cache size,
            timeouts, read-only, local reads and the paths of the TLS files (never key
            bytes).
        """
        return {"master": ",".join(self._link.master_addresses), "cluster": self._link.cluster,
                "cache_bytes_max": self._cache.bytes_max, "rpc_timeout_s": self.rpc_timeout_s,
                "read_only": self._is_read_only, "local_reads": self._local is not None,
                **(self._tls.options() if self._tls else {})}

    def add_cache_colour(self, name: str, share: float, policy: str = "lru") -> None:
        """Add a cache colour.

        Parameters
        ----------
        name : str
            The colour's name (what :func:`neoarray.cache_colour` and ``A.colour`` name).
        share : float
            Its quota, a share of ``cache_bytes_max``.
        policy : str
            ``lru``, ``s3fifo`` or ``fifo``.

        Raises
        ------
        ValueError
            The name is taken, the shares exceed 1, or the policy is unknown.
        """
        self._cache.add_colour(name, share, policy)

    @property
    def node_id(self) -> int:
        """The id the master gave this client (``C<id>`` in ``neoctl print node``)."""
        return self._link.node_id

    # -- ZODB wiring ------------------------------------------------------------------
    def registerDB(self, db: Any) -> None:
        """Remember the ``ZODB.DB`` to send invalidations to (called by ZODB)."""
        self._db = db

    def lastTransaction(self) -> bytes:
        """The tid of the last transaction this client saw committed."""
        with self._lock:
            return self._last_tid

    def _invalidated(self, tid: bytes, ttid: bytes, oids: list[bytes]) -> None:
        """Event stream thread: invalidations of the other clients' commits arrive here
        in TID order (the master does not send a client its own: ``tpc_finish``)."""
        with self._lock:
            self._cache.invalidate(oids, tid)
            self._last_tid = max(self._last_tid, tid)
            if self._db is not None:
                self._db.invalidate(tid, set(oids))
            self._tid_changed.notify_all()

    def _reconnected(self, info) -> None:
        """Events may have been missed while the master was away: forget everything."""
        self._forget_all(info.last_tid)

    def _forget_all(self, last_tid: bytes | None) -> None:
        """Drop every cached object (the client's and the ZODB connections'): what was
        committed up to ``last_tid`` may not have been seen."""
        with self._lock:
            self._cache.clear()
            if last_tid and last_tid > self._last_tid:
                self._last_tid = last_tid
            self._tid_changed.notify_all()
            if self._db is not None:
                self._db.invalidateCache()

    def close(self) -> None:
        """Disconnect, stop the metrics server and remove a temporary blob cache (idempotent)."""
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

    def release(self) -> None:
        """Nothing to release: instances are shared by ZODB's MVCC adapter."""

    def sync(self, force: bool = True) -> None:
        """Catch up with the cluster: see every transaction committed before this call.

        Invalidations stream in asynchronously; ZODB calls ``sync`` when a transaction
        begins, so one round trip to the master for its last tid, then a wait for the
        stream to deliver up to it, makes a commit of another client that finished before
        this transaction began visible to it (as NEO does; ZEO only hopes the stream is
        ahead).

        Parameters
        ----------
        force : bool
            Ignored (ZODB's argument): every call asks the master.
        """
        if self._closed or not self._link.connected.is_set():
            return
        try:
            target = calls.last_tid(self._link.master, self.rpc_timeout_s)
        except ClusterUnavailable:
            return          # reconnecting: the cache is dropped when the master is back
        with self._tid_changed:
            if not self._tid_changed.wait_for(lambda: self._last_tid >= target or self._closed,
                                              timeout=EVENT_WAIT_S):
                log.warning("sync: invalidations up to 0x%s not seen within %s s", target.hex(), EVENT_WAIT_S)

    def new_oid(self) -> bytes:
        """A new oid, from a batch the master reserves for this client.

        Raises
        ------
        ReadOnlyError
            The storage is read-only.
        """
        self._check_writable()
        with self._oid_lock:
            if not self._oids:
                self._link.wait_running(self.rpc_timeout_s)
                self._oids = calls.new_oids(self._link.master, self.oids_per_batch, self.rpc_timeout_s)[::-1]
            return self._oids.pop()

    def _check_writable(self):
        if self._is_read_only:
            raise POSException.ReadOnlyError("this neoarray storage is read-only")

    # -- loads (neoarray/client/reads.py) ----------------------------------------------
    def _read(self, oid: bytes, before: bytes = b"", serial: bytes = b""):
        return self._reads.read_revision(oid, before, serial)

    def loadBefore(self, oid: bytes, tid: bytes) -> tuple[bytes, bytes, bytes | None] | None:
        """The revision of ``oid`` current before ``tid``.

        Parameters
        ----------
        oid, tid : bytes
            The object and the first tid not to see.

        Returns
        -------
        tuple or None
            ``(data, serial, next serial or None)``; None when ``oid`` had no revision
            then.

        Raises
        ------
        POSKeyError
            ``oid`` does not exist.
        """
        with self._lock:   # wait for a finish in progress (its callback) to complete
            pass
        return self._reads.load_before(oid, tid, colours.current())

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        """``(data, serial)`` of the newest revision of ``oid``.

        Raises
        ------
        POSKeyError
            ``oid`` does not exist.
        """
        found = self.loadBefore(oid, MAX_TID)
        if found is None:
            raise POSException.POSKeyError(oid)
        return found[:2]

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        """The data of revision ``serial`` of ``oid``.

        Raises
        ------
        POSKeyError
            No such revision (or packed away).
        """
        return self._reads.load_serial(oid, serial, colours.current())

    def _resolve_conflict(self, oid: bytes, committed_serial: bytes, old_serial: bytes, data: bytes) -> bytes:
        """ZODB's ``tryToResolveConflict``, given the committed revision read from a cell
        that has it (a conflict can be reported before every cell has locked the
        transaction that made it: ``Reads.load_committed``)."""
        try:
            committed = self._reads.load_committed(oid, committed_serial, colours.current())
        except POSException.POSKeyError:
            committed = b""
        return self.tryToResolveConflict(oid, committed_serial, old_serial, data, committedData=committed)

    def getTid(self, oid: bytes) -> bytes:
        """The serial of the newest revision of ``oid`` (``POSKeyError`` if none)."""
        return self.load(oid)[1]

    def prefetch(self, oids: Iterable[bytes], tid: bytes) -> None:
        """Load ``oids`` as of ``tid`` into the cache in the background, batched per node."""
        self._reads.prefetch(oids, tid, colours.current())

    def _reader_of(self, partition: int) -> int:
        return self._reads.reader_of(partition)

    # -- two-phase commit ---------------------------------------------------------------
    def _txn(self, transaction) -> Txn:
        txn = self._txns.get(id(transaction))
        if txn is None or txn.meta is not transaction:
            raise POSException.StorageTransactionError(self, transaction)
        return txn

    def tpc_begin(self, transaction: Any, tid: bytes | None = None, status: str = " ") -> None:
        """Begin the two-phase commit of ``transaction`` (``tid``: a restore's own tid).

        Raises
        ------
        ReadOnlyError
            The storage is read-only.
        StorageTransactionError
            ``transaction`` already began.
        ClusterUnavailable
            Too many transactions of this client in progress, or no cluster.
        """
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
                ttid = calls.begin_restore(self._link.master, session, tid, self.rpc_timeout_s)
        except BaseException:
            self._slots.release()
            raise
        txn = Txn(transaction, ttid=ttid, tid=tid, status=status, restore=tid is not None,
                   view_ptid=self._link.info.table.ptid, session=session)
        self._txns[id(transaction)] = txn

    def store(self, oid: bytes, serial: bytes | None, data: bytes, version: str, transaction: Any) -> None:
        """Store a revision of ``oid`` based on ``serial`` (conflicts are raised at vote).

        Raises
        ------
        ReadOnlyError, Unsupported, StorageTransactionError
            A read-only storage, a version, or a transaction that did not begin here.
        LimitExceeded
            More objects than ``objects_per_transaction_max``.
        """
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        spliced = self._staging.take(oid, data)
        self._commits.add(txn, oid, serial or Z64, data if spliced is None else spliced)

    def stage_chunk_payload(self, oid: bytes, payload: Any, large_record_bytes: int) -> bytes | None:
        """The placeholder state a chunk gives ZODB while its payload waits for
        ``store`` here (:mod:`neoarray.client.staging`).

        Parameters
        ----------
        oid : bytes
            The chunk's oid.
        payload : bytes-like
            The chunk's state, C-contiguous: spliced into its record by ``store``.
        large_record_bytes : int
            ZODB's ``large_record_size`` of the connection: larger payloads are pickled
            the classic way (ZODB warns of them).

        Returns
        -------
        bytes or None
            The placeholder state to pickle; None: pickle ``payload`` itself.
        """
        return self._staging.stage(oid, payload, large_record_bytes)

    def deleteObject(self, oid: bytes, oldserial: bytes, transaction: Any) -> None:
        """Delete ``oid`` (``IExternalGC``), if its serial is still ``oldserial`` at vote."""
        self._check_writable()
        txn = self._txn(transaction)
        self._commits.add(txn, oid, oldserial, None)

    def restore(self, oid: bytes, serial: bytes, data: bytes | None, version: str,
                prev_txn: bytes | None, transaction: Any) -> None:
        """Write a revision as it was (``IStorageRestoreable``: copying a storage)."""
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        txn.restore = True
        self._commits.add(txn, oid, serial or Z64, data, prev_txn if data is not None else None)

    def checkCurrentSerialInTransaction(self, oid: bytes, serial: bytes, transaction: Any) -> None:
        """Make the vote fail (``ReadConflictError``) unless ``oid``'s serial is still ``serial``."""
        txn = self._txn(transaction)
        if oid not in txn.serials:
            txn.checks[oid] = serial

    def tpc_vote(self, transaction: Any) -> list | None:
        """Send what is left and vote on every storage node.

        Returns
        -------
        list or None
            The oids whose conflicts were resolved (ZODB reloads them).

        Raises
        ------
        ConflictError
            A stored object changed since it was read (``ReadConflictError`` for
            :meth:`checkCurrentSerialInTransaction`).
        ClusterUnavailable
            The commit could not be sent to a node holding a partition.
        """
        return self._commits.vote(self._txn(transaction))

    def tpc_finish(self, transaction: Any, func: Callable[[bytes], None] = lambda tid: None) -> bytes:
        """Commit a voted transaction; ``func(tid)`` runs before anyone sees it here.
        After a failure, call :meth:`tpc_abort` (ZODB does): it releases the votes'
        locks of a transaction that was not committed.

        Returns
        -------
        bytes
            The transaction's tid.

        Raises
        ------
        NotCommitted
            The master says it was not committed, and never will be.
        OutcomeUnknown
            No master could tell within ``rpc_timeout_s`` (it decides alone; a read of
            what the transaction wrote tells).
        """
        txn = self._txn(transaction)
        started = time.time()
        # not committed, or not known (OutcomeUnknown): tpc_abort, which ZODB calls
        # next, drops the votes (an Abort of a transaction the master is finishing or
        # finished is refused, and does nothing)
        tid, prev_tid = self._commits.finish(txn)
        try:
            self._wait_earlier_commits(tid, prev_tid)
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
            self._end(transaction)

    def _wait_earlier_commits(self, tid: bytes, prev_tid: bytes | None) -> None:
        """Before tpc_finish returns ``tid``, the invalidations of every commit published
        before it must have been applied.  The event stream delivers them in tid order
        (not this client's own commits: their finish sets the last tid), so once it has
        reached ``prev_tid``, the commit published just before this one, they all
        have.  When that is not known (the outcome came from ``FinalTid``, the Finish
        answer was lost) or not seen within ``EVENT_WAIT_S``, the whole cache is dropped
        instead, as on a reconnection: nothing stale can be read."""
        if prev_tid is not None:
            with self._tid_changed:
                if self._tid_changed.wait_for(lambda: self._last_tid >= prev_tid or self._closed,
                                              timeout=EVENT_WAIT_S):
                    return
            log.warning("invalidations up to 0x%s not seen within %s s: the cache is dropped",
                        prev_tid.hex(), EVENT_WAIT_S)
        self._forget_all(tid)

    def tpc_abort(self, transaction: Any) -> None:
        """Abort ``transaction`` on every node it reached (nothing if it never began)."""
        txn = self._txns.get(id(transaction))
        if txn is None or txn.meta is not transaction:
            return
        try:
            self._commits.abort(txn)
        finally:
            self._end(transaction)

    def _end(self, transaction) -> None:
        self._staging.clear()
        txn = self._txns.pop(id(transaction), None)
        if txn is not None:
            self._blobs_dropped(txn)        # not committed: the files go (none left if it was)
            self._slots.release()

    def tpc_transaction(self) -> None:
        """None: several transactions may be in two-phase commit at once."""
        return
