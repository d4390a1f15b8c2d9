"""Handles: arrays that travel to other processes by reference.

``pickle.dumps(A)`` of an array stored in a neoarray cluster gives an
:class:`ArrayHandle`, a few hundred bytes whatever the array's size: how to reach the
cluster (:meth:`NeoStorage.client_options`: master addresses, cluster name, and
credentials by reference, the paths of the TLS files, never key bytes), the array's
oid and the snapshot its connection reads (the ``before`` tid).  ``pickle.loads`` in
any process (a Dask worker, a ``multiprocessing`` child) opens the same array, read
only, as of the same snapshot: later commits do not change what it reads.

Opening is lazy and shared: one ``ZODB.DB`` per process per cluster
(:func:`neoarray.client.shared.shared_db`, bounded), and per thread one historical
connection per snapshot (``DB.open(before=tid)``; ZODB connections are not
thread-safe), at most :data:`SNAPSHOTS_PER_THREAD_MAX` kept per thread.  A connection
that leaves that cache is not closed: the arrays opened through it keep it, and it
goes when they do.  In the process that made the handle, the array's own database is
used while it is open (no second client).

An array with uncommitted changes in its connection is refused
(:class:`~neoarray.array.errors.ArrayHandleError`: commit or abort first), since
another process would not see them.  Arrays that have no cluster behind them
(detached, or in a FileStorage or MappingStorage) pickle by value as before, up to
``config.memory_bytes_max`` bytes of stored chunks (``ArrayTooLargeError`` beyond).

How this stays apart from ZODB's own pickling: ZODB stores a persistent object with
``__getstate__`` (``ZODB.serialize.ObjectWriter``) and references other persistent
objects through its pickler's ``persistent_id``; it never calls ``__reduce_ex__``.
The array's ``__reduce_ex__`` (bound from :mod:`.core`) is therefore only what
``pickle.dumps``, ``copy`` and Dask see.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import uuid

import persistent
import transaction

from ..client import shared
from . import core, fetch
from .config import config
from .errors import ArrayHandleError, ArrayTooLargeError

SNAPSHOTS_PER_THREAD_MAX = 8        # historical connections a thread keeps open for handles

_local = threading.local()


@dataclasses.dataclass(frozen=True)
class ArrayHandle:
    """A reference to a stored array as of one snapshot (see the module docstring).

    ``source``: the client options of the cluster (plain values, TLS file paths);
    ``oid`` and ``before``: 8-byte ids.  ``open()`` gives the read-only array.
    """

    source: dict
    oid: bytes
    before: bytes

    def __dask_tokenize__(self):
        return self.token

    @property
    def token(self) -> tuple:
        """What identifies the array's contents: cluster, oid and snapshot."""
        return ("neoarray.ndarray", *shared.source_key(self.source), self.oid.hex(),
                self.before.hex())

    def open(self):
        """The array, read only, as of the handle's snapshot, in this thread."""
        db = shared.shared_db(self.source)
        conn = _snapshot_connection(db, self.before)
        try:
            array = conn.get(self.oid)
        except KeyError:
            raise ArrayHandleError(f"no object 0x{self.oid.hex()} in the snapshot "
                                   f"0x{self.before.hex()} of {self.source['cluster']!r}") from None
        if not isinstance(array, core.ndarray):
            raise ArrayHandleError(f"object 0x{self.oid.hex()} is a {type(array).__name__}, "
                                   "not a neoarray.ndarray")
        return array


@dataclasses.dataclass(frozen=True, eq=False)
class Snapshot:
    """A read-only, thread-safe reader of an array as of its handle's snapshot.

    What Dask needs of a source (``shape``, ``dtype``, ``ndim``, ``chunks``,
    ``__getitem__`` returning numpy arrays) and nothing that writes: each read opens
    the array in the calling thread (:meth:`ArrayHandle.open`, cached per thread), so
    threads never share a ZODB connection.  Pickles as its handle.
    """

    handle: ArrayHandle
    shape: tuple
    dtype: object
    chunks: tuple

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        return self.handle.open()[key]

    def copy(self):
        """Itself: it never changes."""
        return self

    def __dask_tokenize__(self):
        return self.handle.token


def snapshot(array) -> Snapshot:
    """The :class:`Snapshot` reader of a committed array of a cluster (see :func:`handle_of`)."""
    handle = handle_of(array)
    if handle is None:
        raise ArrayHandleError("only an array stored in a neoarray cluster has a snapshot "
                               "that other processes can open")
    return Snapshot(handle, array.shape, array.dtype, array.chunks)


def frozen_for_dask(array, caller) -> Snapshot | None:
    """What ``array.copy()`` gives when ``caller`` (a frame) is ``dask.array.from_array``:
    the array's :class:`Snapshot` when it has a handle; None for a real copy."""
    if (caller.f_code.co_name != "from_array"
            or not caller.f_globals.get("__name__", "").startswith("dask.")):
        return None
    try:
        handle = handle_of(array)
    except ArrayHandleError:        # uncommitted changes: a real copy holds them
        return None
    return None if handle is None else Snapshot(handle, array.shape, array.dtype, array.chunks)


def _snapshot_connection(db, before: bytes):
    """This thread's historical connection of ``db`` as of ``before`` (kept, bounded)."""
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = collections.OrderedDict()
    key = (id(db), before)
    conn = conns.get(key)
    if conn is not None and conn.db() is db and conn.opened is not None:
        conns.move_to_end(key)
        return conn
    last = int.from_bytes(db.lastTransaction(), "big")
    if last + 1 < int.from_bytes(before, "big"):      # a new client may lag its cluster
        sync = getattr(db.storage, "sync", None)
        if sync is not None:
            sync()
    conn = conns[key] = db.open(transaction.TransactionManager(), before=before)
    while len(conns) > SNAPSHOTS_PER_THREAD_MAX:
        conns.popitem(last=False)        # not closed: arrays opened through it keep it
    return conn


def _uncommitted(conn) -> bool:
    return bool(getattr(conn, "_registered_objects", None) or getattr(conn, "_added", None)
                or getattr(conn, "_savepoint_storage", None) is not None)


def _before_of(conn) -> bytes:
    """The ``before`` tid of the snapshot that ``conn`` reads."""
    snapshot = fetch.snapshot_of(conn._storage)
    if snapshot is not None:
        return snapshot[1]
    last = conn.db().storage.lastTransaction()
    return (int.from_bytes(last, "big") + 1).to_bytes(8, "big")


def handle_of(array) -> ArrayHandle | None:
    """The handle of ``array``, or None when no cluster stands behind it.

    ArrayHandleError when its connection has uncommitted changes.
    """
    conn = array._p_jar
    if conn is None:
        return None
    options = getattr(conn.db().storage, "client_options", None)
    if options is None:
        return None
    if array._p_oid is None or array._p_changed or _uncommitted(conn):
        raise ArrayHandleError(
            "this array's connection has uncommitted changes, which another process "
            "would not see: commit (or abort) the transaction before pickling the array "
            "or giving it to Dask")
    source = options()
    shared.remember(conn.db(), source)       # handles opened in this process use it
    return ArrayHandle(source, array._p_oid, _before_of(conn))


def _by_value(array, protocol):
    """``persistent``'s own reduction (the whole state), within ``memory_bytes_max``."""
    stored = len(array._tree)
    nbytes = stored * math.prod(array.chunks) * array.itemsize
    limit = config.memory_limit_bytes()
    if nbytes > limit:
        raise ArrayTooLargeError(
            f"pickling this array copies its {stored} stored chunks (up to {nbytes} bytes), "
            f"more than memory_bytes_max ({limit} bytes): store it in a neoarray cluster and "
            "commit, then it pickles as a small handle")
    return persistent.Persistent.__reduce__(array)


def reduce_ex(array, protocol):
    """``ndarray.__reduce_ex__``: a handle when a cluster stands behind it, else by value."""
    handle = handle_of(array)
    if handle is None:
        return _by_value(array, protocol)
    return (open_handle, (handle,))


def open_handle(handle: ArrayHandle):
    """Unpickling of a handle: the array it names (:meth:`ArrayHandle.open`)."""
    return handle.open()


def dask_token(array):
    """``ndarray.__dask_tokenize__``: oid and snapshot when it has a handle, else unique."""
    try:
        handle = handle_of(array)
    except ArrayHandleError:
        handle = None
    if handle is None:
        return ("neoarray.ndarray", uuid.uuid4().hex)     # contents not named: never reused
    return handle.token
