"""Batch reads of chunk payloads.

The array never loads chunk objects one attribute access at a time: it hands
a batch of :class:`~neoarray.array.chunks.Chunk` objects to a
:class:`ChunkFetcher` and gets their payloads back.

Contract of a chunk fetcher
---------------------------
``fetch(chunks) -> list`` where ``chunks`` is a sequence of ``Chunk`` objects
taken from one array's chunk tree (ghosts or not, attached to a connection or
not):

* returns one payload per chunk, in the same order: the bytes-like encoded
  payload (``Chunk.payload``) as the connection sees it: the snapshot of its
  current ZODB transaction, plus changes made in this transaction (including
  savepoints);
* must not grow the connection's pickle cache: chunks that were ghosts are
  left as ghosts (or deactivated after use);
* may load records concurrently, in any order;
* the caller bounds the batch (``config.fetch_limit_bytes()``); the fetcher needs
  no limit of its own beyond its thread count;
* raises what ZODB would raise on a load (``POSKeyError``,
  ``ReadConflictError``); the returned buffers belong to the caller, who only
  reads them.

How the default fetcher loads ghosts
------------------------------------
Through ``conn._storage`` (the connection's MVCC storage instance, bound to the
transaction's snapshot, or the savepoint store):

1. ``storage.load_many(oids)`` if the storage provides it: one call returning
   ``(record, serial)`` pairs in order (an IMVCCStorage may provide this,
   snapshot-consistent like ``load``);
2. when ``storage`` is ZODB's ``MVCCAdapterInstance`` (or its
   ``HistoricalStorageAdapter``, for connections opened ``at``/``before`` a tid)
   over a base storage with
   ``load_many(oids, before) -> {oid: (record, serial, next_serial)}`` (like
   :class:`neoarray.client.NeoStorage`), one such call with the snapshot's
   ``before`` tid (:func:`snapshot_of`); an oid missing from the answer is
   loaded again with ``storage.load``, which raises what ZODB raises
   (``ReadConflictError`` for no revision before the snapshot,
   ``POSKeyError``);
3. otherwise ``storage.prefetch(oids)`` when available, then ``storage.load(oid)``
   for each oid on a bounded thread pool (``config.fetch_threads_max``), so
   ``load`` must be thread-safe (ZODB's storages are; while the transaction
   has savepoints, loads go one after the other through ZODB's savepoint
   store, which is not).

Decoding records without copying the payload
--------------------------------------------
A chunk record is two pickles: the class, then the state, which is the payload
``bytes`` as a single ``SHORT_BINBYTES``/``BINBYTES``/``BINBYTES8`` opcode.
:func:`payload_view` recognises exactly that shape and returns a read-only
``memoryview`` of the record (no copy); any other shape (a tombstone, a
bytearray payload, an unknown pickle) goes through the connection's own reader
(``conn._reader.getState``), like ZODB, so no object state is installed in the
cache either way.  The parsing lives in :mod:`neoarray.payload` (shared with
storage nodes, which reduce chunks where they are stored); its names stay
importable from here.

Computing on records in place
-----------------------------
Consumers that only read each chunk once (reductions, reads into a new
array, read-modify-write) use :func:`map_payloads` instead: when the
connection's storage reads a snapshot (:func:`snapshot_of`) of a base storage
with ``read_views(oids, before)`` (a context manager yielding
``{oid: (record, serial)}`` whose records may be views of the storage's own
pages, valid only inside the block, like
:class:`neoarray.client.NeoStorage`), the records of a small group of ghost
chunks are opened in one ``read_views`` block on a compute thread
(``config.compute_threads_max``), the consumer's function runs on each
payload view there, and only its result leaves the block: numpy arrays in it
that do not own their memory are copied (:func:`detach`).  Groups hold at
most ``config.fetch_limit_bytes() / (2 * threads)`` bytes of records (or one chunk), and
at most two groups per thread are in flight, one when they would exceed that limit.  Chunks
that are not ghosts, and records absent from the answer, go through the
fetcher on the calling thread (which raises what ZODB raises).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from ZODB.mvccadapter import HistoricalStorageAdapter, MVCCAdapterInstance

from ..client import colours
from ..payload import (  # noqa: F401  (names kept here for their callers)
    _bytes_span,
    _class_pickle_end,
    _payload_span,
    payload_offset,
    payload_view,
)
from .chunks import Chunk
from .config import config

_T = TypeVar("_T")

_pool_lock = threading.Lock()
_pools: dict[str, tuple[int, concurrent.futures.ThreadPoolExecutor]] = {}


def _sized_pool(name: str, threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool ``name`` with ``threads`` workers, made anew when the size changes."""
    threads = max(1, threads)
    with _pool_lock:
        size, pool = _pools.get(name, (0, None))
        if pool is None or size != threads:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
            _pools[name] = (threads, pool)
        return pool


def _executor():
    """The loading pool, sized by ``config.fetch_threads_max``."""
    return _sized_pool("neoarray-fetch", config.fetch_threads_max)


def _is_loadable_ghost(chunk):
    """True when the chunk is a ghost of a connection we can load through."""
    jar = chunk._p_jar
    return (chunk._p_changed is None and chunk._p_oid is not None
            and hasattr(jar, "_storage") and hasattr(jar, "_reader"))


def snapshot_of(storage: Any) -> tuple[Any, bytes] | None:
    """``(base storage, before tid)`` of a connection's storage reading a snapshot, or None.

    Applies to ZODB's ``MVCCAdapterInstance`` once its snapshot started, and to
    its ``HistoricalStorageAdapter`` (connections opened with ``at=``/``before=``).
    """
    if isinstance(storage, MVCCAdapterInstance) and storage._start is not None:
        return storage._storage, storage._start
    if isinstance(storage, HistoricalStorageAdapter) and storage._before is not None:
        return storage._storage, storage._before
    return None


def _snapshot_loader(storage):
    """Return ``(base load_many, before tid)`` for a snapshot storage (see
    :func:`snapshot_of`) over a base storage offering ``load_many(oids, before)``.
    """
    snapshot = snapshot_of(storage)
    if snapshot is None:
        return None
    load_many = getattr(snapshot[0], "load_many", None)
    if load_many is None:
        return None
    if "align" in inspect.signature(load_many).parameters:      # chunk payloads on 64 bytes
        load_many = functools.partial(load_many, align=payload_offset)
    return load_many, snapshot[1]


def _load_snapshot(storage, load_many, before, oids):
    """Records of ``oids`` from one ``load_many(oids, before)`` call, in order.

    An oid absent from the answer has no revision visible to the snapshot (or
    none at all): ``storage.load`` then raises what ZODB raises, or loads it
    if it appeared meanwhile.
    """
    found = load_many(oids, before)
    records = []
    for oid in oids:
        hit = found.get(oid)
        records.append(storage.load(oid)[0] if hit is None else hit[0])
    return records


def _loader(jar):
    """Return ``load(oids) -> records`` bound to the connection's storage now.

    The storage (and the snapshot's ``before`` tid) is taken when this is
    called, so the loader may run on another thread while the caller goes on.
    While savepoints exist, ``jar._storage`` is ZODB's savepoint store, whose
    ``load`` is not thread-safe: records are then loaded one after the other.
    """
    storage = jar._storage
    sequential = getattr(jar, "_savepoint_storage", None) is not None
    load_many = getattr(storage, "load_many", None)
    if load_many is not None:
        return lambda oids: [record for record, _serial in load_many(oids)]
    snapshot = None if sequential else _snapshot_loader(storage)
    if snapshot is not None:
        return lambda oids: _load_snapshot(storage, *snapshot, oids)
    return lambda oids: _load_each(storage, sequential, oids)


def _load_each(storage, sequential, oids):
    """Records of ``oids`` loaded one ``load`` each (on the pool unless sequential)."""
    prefetch = getattr(storage, "prefetch", None)
    if prefetch is not None and len(oids) > 1:
        try:
            prefetch(oids)
        except AttributeError:
            pass
    if sequential or len(oids) == 1 or config.fetch_threads_max <= 1:
        return [storage.load(oid)[0] for oid in oids]
    futures = [_executor().submit(contextvars.copy_context().run, storage.load, oid) for oid in oids]
    return [f.result()[0] for f in futures]


def decode_record(jar: Any, chunk: Chunk, record: bytes) -> bytes | memoryview:
    """Return the payload of ``chunk`` from its ``record``, without copying it if possible."""
    if type(chunk) is Chunk:
        view = payload_view(record)
        if view is not None:
            return view
    return jar._reader.getState(record)


def _attribute_payload(chunk):
    """Read ``chunk.payload`` through ZODB, deactivating it if it was a ghost."""
    was_ghost = chunk._p_changed is None
    payload = chunk.payload
    if was_ghost:
        chunk._p_deactivate()
    return payload


class ChunkFetcher(Protocol):
    """What :func:`set_fetcher` takes: see the contract in the module docstring."""

    def fetch(self, chunks: Sequence[Chunk]) -> list:
        """Return the encoded payloads of ``chunks``, in order (bytes-like)."""


class StorageChunkFetcher:
    """Default fetcher: parallel record loads through the connection's storage.

    See the module docstring for the contract and the storage methods used.
    Besides ``fetch``, it offers ``submit(chunks)``, which starts the storage
    loads on a background thread and returns a callable giving the payloads:
    the array uses it to load the next batch while it processes the current
    one.  Persistent objects are only touched by the calling thread.
    """

    def fetch(self, chunks: Sequence[Chunk]) -> list:
        """Return the payloads of ``chunks``, in order."""
        return self.submit(chunks, background=False)()

    def submit(self, chunks: Sequence[Chunk], background: bool = True) -> Callable[[], list]:
        """Start loading ``chunks``; return a callable returning their payloads.

        The callable must be called from the thread that called ``submit``.
        """
        payloads = [None] * len(chunks)
        by_jar = {}
        for i, chunk in enumerate(chunks):
            if _is_loadable_ghost(chunk):
                by_jar.setdefault(id(chunk._p_jar), []).append(i)
            else:
                payloads[i] = _attribute_payload(chunk)
        jobs = []
        for positions in by_jar.values():
            jar = chunks[positions[0]]._p_jar
            oids = [chunks[i]._p_oid for i in positions]
            load = _loader(jar)
            if background and getattr(jar, "_savepoint_storage", None) is None:
                job = _readahead().submit(contextvars.copy_context().run, load, oids)
                jobs.append((jar, positions, job))
            else:
                jobs.append((jar, positions, _done(load(oids))))

        def result():
            for jar, positions, job in jobs:
                for i, record in zip(positions, job.result()):
                    payloads[i] = decode_record(jar, chunks[i], record)
            return payloads
        return result


def _done(value):
    future = concurrent.futures.Future()
    future.set_result(value)
    return future


def _readahead():
    """The single thread that loads the next batch of a read ahead of time."""
    return _sized_pool("neoarray-readahead", 1)


def submit(chunks: Sequence[Chunk], colour: str | None = None) -> Callable[[], list]:
    """Start fetching ``chunks`` with the process's fetcher; return a result callable.

    Loads use the cache colour ``colour`` unless :func:`neoarray.cache_colour`
    overrides it.  Fetchers without ``submit`` fetch synchronously here.
    """
    fetcher = get_fetcher()
    start = getattr(fetcher, "submit", None)
    with colours.reading_as(colour):
        if start is not None:
            return start(chunks)
        payloads = fetcher.fetch(chunks)
    return lambda: payloads


class AttributeChunkFetcher:
    """Reference fetcher: plain attribute access, one chunk after the other."""

    def fetch(self, chunks: Sequence[Chunk]) -> list:
        """Return the payloads of ``chunks``, in order."""
        return [_attribute_payload(chunk) for chunk in chunks]


_fetcher = StorageChunkFetcher()


def get_fetcher() -> ChunkFetcher:
    """Return the chunk fetcher used by every array of the process.

    Returns
    -------
    ChunkFetcher
        By default a :class:`~neoarray.array.fetch.StorageChunkFetcher`.
    """
    return _fetcher


def set_fetcher(fetcher: ChunkFetcher) -> ChunkFetcher:
    """Install the chunk fetcher of every array of the process.

    Parameters
    ----------
    fetcher : ChunkFetcher
        An object with ``fetch(chunks)`` keeping the contract of the module
        docstring (:class:`~neoarray.array.fetch.AttributeChunkFetcher` is the plain
        reference).

    Returns
    -------
    ChunkFetcher
        The fetcher it replaces (install it back to undo).
    """
    global _fetcher
    old, _fetcher = _fetcher, fetcher
    return old


def iter_batches(items: Iterable[_T], nbytes_of: Callable[[_T], int],
                 bytes_max: int) -> Iterator[list[_T]]:
    """Yield lists of ``items`` whose ``nbytes_of`` sum stays within ``bytes_max``.

    A single item larger than ``bytes_max`` forms a batch of its own.
    """
    batch, total = [], 0
    for item in items:
        nbytes = nbytes_of(item)
        if batch and total + nbytes > bytes_max:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += nbytes
    if batch:
        yield batch


# ---------------------------------------------------------------------- in place

def _compute_executor():
    """The pool running :func:`map_payloads` groups, sized by ``config.compute_threads_max``."""
    return _sized_pool("neoarray-compute", config.compute_threads_max)


def view_source(jar: Any) -> tuple[Any, Callable, bytes] | None:
    """``(jar, read_views, before)`` when ``jar``'s chunk records can be read in place.

    None unless ``config.read_in_place``, the default fetcher is installed,
    the connection has no savepoint and its storage reads a snapshot
    (:func:`snapshot_of`) of a base storage with ``read_views``.
    """
    if not config.read_in_place or type(_fetcher) is not StorageChunkFetcher:
        return None
    if jar is None or getattr(jar, "_savepoint_storage", None) is not None:
        return None
    snapshot = snapshot_of(getattr(jar, "_storage", None))
    if snapshot is None:
        return None
    read_views = getattr(snapshot[0], "read_views", None)
    return None if read_views is None else (jar, read_views, snapshot[1])


def detach(value: _T) -> _T:
    """Return ``value`` with no numpy array sharing memory it does not own.

    Tuples and lists are walked; arrays that are views (``base`` set) are
    copied; memoryviews are refused: results of :func:`map_payloads` must
    outlive the record buffers.
    """
    if isinstance(value, np.ndarray):
        return value if value.base is None else value.copy()
    if isinstance(value, tuple):
        return tuple(detach(v) for v in value)
    if isinstance(value, list):
        return [detach(v) for v in value]
    if isinstance(value, memoryview):
        raise TypeError("a map_payloads function returned a memoryview")
    return value


_MISSING = object()


def _run_group(read_views, before, group, func):
    """Results of ``func(item, payload view)`` for ``group``, inside one ``read_views`` block."""
    results = []
    with read_views([oid for _item, _chunk, oid in group], before, align=payload_offset) as views:
        for item, _chunk, oid in group:
            hit = views.get(oid)
            view = None if hit is None else payload_view(hit[0])
            results.append(_MISSING if view is None else detach(func(item, view)))
            del view, hit
    return results


def map_payloads(pairs: Iterable[tuple[_T, Chunk]], func: Callable[[_T, Any], Any],
                 source: tuple[Any, Callable, bytes], chunk_nbytes: int,
                 colour: str | None = None) -> Iterator[tuple[_T, Any]]:
    """Yield ``(item, func(item, payload))`` for ``(item, Chunk)`` pairs, in order.

    ``source`` comes from :func:`view_source`; ``colour`` is the cache colour of the
    reads (unless :func:`neoarray.cache_colour` overrides it).  ``payload`` may be a view of
    the storage's buffers, valid only during the call, and ``func`` may run on
    a compute thread: it must not touch persistent objects, and its result
    goes through :func:`detach`.
    """
    jar, read_views, before = source
    threads = max(1, config.compute_threads_max)
    limit_bytes, chunk_nbytes = config.fetch_limit_bytes(), max(1, chunk_nbytes)
    per_group = max(1, limit_bytes // (2 * threads) // chunk_nbytes)
    # groups started and not yet consumed: two per thread, fewer when the chunks are
    # large, down to one per thread
    window = max(threads, min(2 * threads, limit_bytes // (per_group * chunk_nbytes)))
    pending = collections.deque()   # (kind, entries, future or None)
    started = [False]

    with colours.reading_as(colour):
        context = contextvars.copy_context()     # the colour, for the compute threads

    def run(group):
        return context.copy().run(_run_group, read_views, before, group, func)

    def start(group):
        if threads > 1:
            started[0] = True
            return _compute_executor().submit(run, group)
        return _done(run(group))

    def finish(kind, entries, job):
        if job is None and kind == "views":      # the only group: run it here
            job = _done(run(entries))
        results = job.result() if job is not None else [_MISSING] * len(entries)
        for (item, chunk, _oid), result in zip(entries, results):
            if result is _MISSING:
                with colours.reading_as(colour):
                    result = func(item, _fetcher.fetch([chunk])[0])
            yield item, result

    group = []
    try:
        for item, chunk in pairs:
            if _is_loadable_ghost(chunk) and chunk._p_jar is jar and type(chunk) is Chunk:
                group.append((item, chunk, chunk._p_oid))
                if len(group) < per_group:
                    continue
                entry = ("views", group, None)
                group = []
            else:
                entry = ("direct", [(item, chunk, None)], None)
            if pending and pending[-1][0] == "views" and pending[-1][2] is None:
                kind, entries, _ = pending.pop()
                pending.append((kind, entries, start(entries)))
            pending.append(entry)
            while len(pending) > window:
                yield from finish(*pending.popleft())
        if group:
            pending.append(("views", group, None))
        for i, (kind, entries, job) in enumerate(pending):
            if kind == "views" and job is None and (started[0] or i > 0):
                pending[i] = (kind, entries, start(entries))
        while pending:
            yield from finish(*pending.popleft())
    finally:
        for _kind, _entries, job in pending:
            if job is not None:
                job.cancel()
