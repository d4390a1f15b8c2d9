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
* the caller bounds the batch (``config.fetch_bytes_max``); the fetcher needs
  no limit of its own beyond its thread count;
* raises what ZODB would raise on a load (``POSKeyError``,
  ``ReadConflictError``); the returned buffers belong to the caller, who only
  reads them.

How the default fetcher loads ghosts
------------------------------------
Through ``conn._storage`` (the connection's MVCC storage instance, bound to the
transaction's snapshot, or the savepoint store):

1. ``storage.load_many(oids)`` if the storage provides it: one call returning
   ``(record, serial)`` pairs in order (a cluster storage should provide this,
   snapshot-consistent like ``load``);
2. otherwise ``storage.prefetch(oids)`` when available, then ``storage.load(oid)``
   for each oid on a bounded thread pool (``config.fetch_threads_max``), so
   ``load`` must be thread-safe (ZODB's storages are; while the transaction
   has savepoints, loads go one after the other through ZODB's savepoint
   store, which is not).

Records are unpickled with the connection's own reader (``conn._reader``), so
no object state is installed in the cache.
"""

import concurrent.futures
import threading

from .config import config

_pool_lock = threading.Lock()
_pool = None
_pool_threads = 0


def _executor():
    """Return the shared thread pool, sized by ``config.fetch_threads_max``."""
    global _pool, _pool_threads
    with _pool_lock:
        if _pool is None or _pool_threads != config.fetch_threads_max:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, config.fetch_threads_max),
                thread_name_prefix="neoarray-fetch")
            _pool_threads = config.fetch_threads_max
        return _pool


def _is_loadable_ghost(chunk):
    """True when the chunk is a ghost of a connection we can load through."""
    jar = chunk._p_jar
    return (chunk._p_changed is None and chunk._p_oid is not None
            and hasattr(jar, "_storage") and hasattr(jar, "_reader"))


def _load_records(jar, oids):
    """Return the records of ``oids`` loaded through the connection's storage.

    While savepoints exist, ``jar._storage`` is ZODB's savepoint store, whose
    ``load`` is not thread-safe: records are then loaded one after the other.
    """
    storage = jar._storage
    sequential = getattr(jar, "_savepoint_storage", None) is not None
    load_many = getattr(storage, "load_many", None)
    if load_many is not None:
        return [record for record, _serial in load_many(oids)]
    prefetch = getattr(storage, "prefetch", None)
    if prefetch is not None and len(oids) > 1:
        try:
            prefetch(oids)
        except AttributeError:
            pass
    if sequential or len(oids) == 1 or config.fetch_threads_max <= 1:
        return [storage.load(oid)[0] for oid in oids]
    futures = [_executor().submit(storage.load, oid) for oid in oids]
    return [f.result()[0] for f in futures]


def _attribute_payload(chunk):
    """Read ``chunk.payload`` through ZODB, deactivating it if it was a ghost."""
    was_ghost = chunk._p_changed is None
    payload = chunk.payload
    if was_ghost:
        chunk._p_deactivate()
    return payload


class StorageChunkFetcher:
    """Default fetcher: parallel record loads through the connection's storage.

    See the module docstring for the contract and the storage methods used.
    """

    def fetch(self, chunks):
        """Return the payloads of ``chunks``, in order."""
        payloads = [None] * len(chunks)
        by_jar = {}
        for i, chunk in enumerate(chunks):
            if _is_loadable_ghost(chunk):
                by_jar.setdefault(id(chunk._p_jar), []).append(i)
            else:
                payloads[i] = _attribute_payload(chunk)
        for positions in by_jar.values():
            jar = chunks[positions[0]]._p_jar
            records = _load_records(jar, [chunks[i]._p_oid for i in positions])
            for i, record in zip(positions, records):
                payloads[i] = jar._reader.getState(record)
        return payloads


class AttributeChunkFetcher:
    """Reference fetcher: plain attribute access, one chunk after the other."""

    def fetch(self, chunks):
        """Return the payloads of ``chunks``, in order."""
        return [_attribute_payload(chunk) for chunk in chunks]


_fetcher = StorageChunkFetcher()


def get_fetcher():
    """Return the chunk fetcher used by every array of the process."""
    return _fetcher


def set_fetcher(fetcher):
    """Install ``fetcher`` (an object with ``fetch(chunks)``); return the old one."""
    global _fetcher
    old, _fetcher = _fetcher, fetcher
    return old


def iter_batches(items, nbytes_of, bytes_max):
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
