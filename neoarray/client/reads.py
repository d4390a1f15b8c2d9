"""The client's reads: routing, batches, local reads and in-place views.

``Reads`` asks one readable cell of an object's partition (rotating over them to
spread the load, trying the others and waiting for the cluster on failure); a cell of
a storage node on this host is read in its LMDB directly (``local.LocalReaders``,
read-only, the same checksum checks); others over the data plane (``calls.py``, the
wire), record data as a bulk segment (``neoarray.transport.bulk``).  Batches go per node, in parallel; bulk
readers (array chunks) get records in place (``read_views``).  Everything read goes
through the coloured cache (``cache.ColouredCache``).
"""
from __future__ import annotations

import contextlib
import logging
import time

import numpy
from ZODB import POSException

from ..errors import ChecksumError, ClusterUnavailable
from ..payload import _payload_span
from ..records import NoObject, NoRevision, RecordReader
from ..transport import conn
from . import calls
from .values import LoadAnswer, LoadStatus, RevisionDigest

log = logging.getLogger("neoarray.client")

FOUND, DELETED = LoadStatus.FOUND, LoadStatus.DELETED
LOAD_NOT_FOUND = (LoadStatus.NO_OBJECT, LoadStatus.NO_REVISION)


BULK_LOADS_IN_FLIGHT = 4     # LoadMany requests per node at once for a bulk read (load_bulk)


def _local_load(reader: RecordReader, oid: bytes, before: bytes = b"", serial: bytes = b"") -> LoadAnswer:
    try:
        r = reader.load(oid, before=before or None, serial=serial or None)
    except NoObject:
        return LoadAnswer(LoadStatus.NO_OBJECT)
    except NoRevision:
        return LoadAnswer(LoadStatus.NO_REVISION)
    return LoadAnswer(FOUND if r.data is not None else DELETED, r.serial, r.next_serial, r.data, r.data_tid)


def as_bytes(data) -> bytes:
    """ZODB wants ``bytes``: cached chunk records may be read-only aligned buffers."""
    return data if type(data) is bytes else bytes(data)


ALIGN_BYTES = 64


def page_block(view) -> memoryview | None:
    """A read-only copy of the chunk record ``view`` in a ``neoarray._vmem.Block``, its
    payload on pages of its own (2 MiB aligned when that large: huge pages), or None
    when ``view`` is no chunk record of whole pages of at least
    ``conn.BLOCK_PAYLOAD_BYTES_MIN`` (:func:`neoarray.transport.conn.new_page_block`).  A mapped view moves such a payload's pages into its
    window instead of copying them (``neoarray.vm``); its first touch also costs less
    than that of fresh 4 KiB pages (a fresh 2 MiB block, copy included: ~0.2 ms here,
    against 2-3 ms)."""
    if len(view) < conn.BLOCK_PAYLOAD_BYTES_MIN:
        return None
    block = conn.new_page_block(len(view), _payload_span(view))
    if block is None:
        return None
    out = memoryview(block)
    out[:] = view
    out.release()
    block.freeze()          # read-only pages from here (none is written into any more)
    return memoryview(block).toreadonly()


def _aligned_copy(view, align=None) -> memoryview:
    """A read-only copy of ``view`` placed so that ``align(view)`` is 64-byte aligned.

    Array chunks hand their payload offset: numpy then reduces the payload in place,
    without copying misaligned items into buffers first.  A chunk record of whole
    pages is copied into a page block instead (:func:`page_block`: its payload is
    page aligned).
    """
    block = page_block(view)
    if block is not None:
        return block
    offset = (align(view) if align is not None else None) or 0
    size = len(view)
    buf = numpy.empty(size + ALIGN_BYTES, dtype=numpy.uint8)
    start = -(buf.ctypes.data + offset) % ALIGN_BYTES
    out = buf[start:start + size]
    out[:] = numpy.frombuffer(view, dtype=numpy.uint8)
    return memoryview(out).toreadonly()


def _aligned(data, align):
    """``data`` itself when ``align(data)`` already falls on a 64-byte boundary (or
    ``align`` is None), else :func:`_aligned_copy`."""
    if align is None or data is None:
        return data
    address = numpy.frombuffer(data, dtype=numpy.uint8).ctypes.data if len(data) else 0
    if (address + ((align(data) or 0))) % ALIGN_BYTES == 0:
        return data
    return _aligned_copy(data, align)



COMMITTED_WAIT_S_MAX = 5.0     # how long a committed revision may take to reach the cell read


class Reads:
    """Reads over ``link`` (routing, stubs), ``cache``, ``local`` (``LocalReaders`` or
    None) and ``pool`` (parallel batches)."""

    def __init__(self, link, cache, local, pool, rpc_timeout_s: float, loads_per_batch_max: int):
        self.link, self.cache, self.local, self.pool = link, cache, local, pool
        self.rpc_timeout_s = rpc_timeout_s
        self.loads_per_batch_max = loads_per_batch_max

    def load_before(self, oid, tid, colour: str):
        """ZODB's ``loadBefore`` through the cache: ``(data, serial, next serial)``,
        None when nothing is before ``tid``; ``POSKeyError`` for no such object."""
        hit = self.cache.get(oid, tid, colour)
        if hit is not None:
            return as_bytes(hit[0]), hit[1], hit[2]
        token = self.cache.start_load()
        reply = self.read_revision(oid, before=tid)
        if reply.status is LoadStatus.NO_OBJECT:
            raise POSException.POSKeyError(oid)
        if reply.status in LOAD_NOT_FOUND:
            return None
        if reply.status is DELETED:
            raise POSException.POSKeyError(oid)
        self.cache.put(oid, reply.data, reply.serial, reply.next_serial, token, colour)
        return reply.data, reply.serial, reply.next_serial

    def load_serial(self, oid, serial, colour: str) -> bytes:
        hit = self.cache.get_serial(oid, serial, colour)
        if hit is not None:
            return as_bytes(hit[0])
        reply = self.read_revision(oid, serial=serial)
        if reply.status is not FOUND:
            raise POSException.POSKeyError(oid, serial)
        self.cache.put(oid, reply.data, reply.serial, reply.next_serial, None, colour)
        return reply.data

    def load_committed(self, oid, serial, colour: str) -> bytes:
        """``load_serial`` of a revision known to be committed (a conflict reported it):
        a cell that has not yet locked its transaction answers no revision for a moment,
        so ask again for up to ``COMMITTED_WAIT_S_MAX`` (or ``rpc_timeout_s`` if shorter)."""
        deadline = time.monotonic() + min(self.rpc_timeout_s, COMMITTED_WAIT_S_MAX)
        while True:
            try:
                return self.load_serial(oid, serial, colour)
            except POSException.POSKeyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def prefetch(self, oids, tid, colour: str) -> None:
        wanted = [oid for oid in oids if self.cache.get(oid, tid, colour) is None]
        for batch in self.by_node(wanted):
            self.pool.submit(self._prefetch_batch, *batch, tid, colour)

    def read_revision(self, oid: bytes, before: bytes = b"", serial: bytes = b"") -> LoadAnswer:
        """The revision of ``oid`` current before ``before``, or the one of ``serial``
        (wins), uncached.

        Asks one readable cell, trying the others (and waiting for the cluster) on
        failure; a cell on this host is read directly from its LMDB directory.
        """
        deadline = time.monotonic() + self.rpc_timeout_s
        errors = []
        while True:
            for nid in self.link.readable(self.link.partition(oid)):
                local = self.local.get(nid) if self.local else None
                try:
                    if local is not None:
                        return _local_load(local, oid, before, serial)
                    return calls.load(self.link.storage(nid), nid, oid, before, serial, self.rpc_timeout_s)
                except (ClusterUnavailable, ChecksumError) as exc:
                    errors.append(exc)
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"no readable copy of oid 0x{oid.hex()} answered"
                                         f"{': ' + str(errors[-1]) if errors else ''}")
            self.link.wait_running(max(0.1, deadline - time.monotonic()))
            time.sleep(0.05)

    def by_node(self, oids):
        groups: dict[int, list] = {}
        for oid in oids:
            cells = self.link.readable(self.link.partition(oid))
            if cells:
                groups.setdefault(cells[0], []).append(oid)
        for nid, group in groups.items():
            for i in range(0, len(group), self.loads_per_batch_max):
                yield nid, group[i:i + self.loads_per_batch_max]

    def revisions(self, oids, serial: bytes) -> dict:
        """``{oid: RevisionDigest}`` of revision ``serial`` of each of ``oids``, as one
        readable cell holds it, past the cache (a local cell's data checked against its
        checksum in place, a remote one's on arrival); an oid without that revision is
        absent."""
        out = {}
        for nid, batch in self.by_node(oids):
            local = self.local.get(nid) if self.local else None
            if local is not None:
                for oid in batch:
                    try:
                        r = local.load(oid, serial=serial)
                    except (NoObject, NoRevision):
                        continue
                    out[oid] = RevisionDigest(r.data is None, 0 if r.data is None else r.checksum,
                                              r.data_tid, r.blob.nbytes if r.blob else None)
                continue
            out.update(calls.digests(self.link.storage(nid), nid, batch, serial, self.rpc_timeout_s))
        return out

    def reader_of(self, partition: int) -> int:
        """A node with a readable cell of ``partition`` (rotating), or ClusterUnavailable."""
        cells = self.link.readable(partition)
        if not cells:
            raise ClusterUnavailable(f"no readable copy of partition {partition}")
        return cells[0]

    def _prefetch_batch(self, nid, oids, tid, colour):
        try:
            self.load_batch(nid, oids, tid, colour)
        except Exception as exc:  # prefetch is a hint: loads will ask again
            log.debug("prefetch from S%d failed: %s", nid, exc)

    def load_many(self, oids, tid, colour: str, align=None) -> dict:
        """``{oid: (data, serial, next_serial)}`` as of ``tid``, batched per node, in parallel.

        Missing or deleted objects are absent from the result.  ``data`` is ``bytes`` or
        a read-only buffer.  ``colour``: the cache colour (default: :func:`colours.current`).
        ``align``: as in :meth:`read_views`, for the records loaded now.
        """
        out, todo = self._cached_hits(oids, tid, colour)
        batches = list(self.by_node(todo))
        if len(batches) == 1:
            out.update(self.load_batch(*batches[0], tid, colour, align))
            return out
        jobs = [self.pool.submit(self.load_batch, nid, batch, tid, colour, align) for nid, batch in batches]
        for job in jobs:
            out.update(job.result())
        return out

    def _cached_hits(self, oids, tid, colour) -> tuple[dict, list]:
        """``({oid: cached (data, serial, next_serial)}, [oids not in the cache])``."""
        out, todo = {}, []
        for oid in oids:
            hit = self.cache.get(oid, tid, colour)
            if hit is None:
                todo.append(oid)
            else:
                out[oid] = hit
        return out, todo

    @contextlib.contextmanager
    def read_views(self, oids, tid, colour: str, align=None):
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
        cache = self.cache
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
                nid = next(iter(self.link.readable(self.link.partition(oid))), None)
                reader = self.local.get(nid) if self.local is not None and nid is not None else None
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
            for oid, (data, serial, _) in self.load_bulk(remote, tid, colour, align).items():
                out[oid] = (data, serial)
            yield out

    def load_bulk(self, oids, tid, colour: str, align=None) -> dict:
        """Like :meth:`load_many`, for large records (array chunks): each node's oids go
        in up to ``BULK_LOADS_IN_FLIGHT`` LoadMany requests sent at once from this
        thread, so that the node reads them from disk and sends them on as many
        connections in parallel (one request would read its records one after the
        other).  Local nodes are read as by ``load_many``."""
        out, todo = self._cached_hits(oids, tid, colour)
        local, started = [], []
        for nid, batch in self.by_node(todo):
            if self.local is not None and self.local.get(nid) is not None:
                local.append((nid, batch))
                continue
            step = -(-len(batch) // BULK_LOADS_IN_FLIGHT)
            for i in range(0, len(batch), step):
                started.append(self._start_load(nid, batch[i:i + step], tid))
        try:
            for nid, batch in local:
                out.update(self.load_batch(nid, batch, tid, colour, align))
            while started:
                out.update(self._finish_load(*started.pop(0), colour, align))
        finally:
            for _nid, _token, call in started:      # after a failure: their connections back
                with contextlib.suppress(Exception):
                    calls.done(call)
        return out

    def load_batch(self, nid, oids, tid, colour=None, align=None):
        """Load ``oids`` as of ``tid`` from one node (locally when it is on this host)."""
        local = self.local.get(nid) if self.local else None
        if local is None:
            return self._finish_load(*self._start_load(nid, oids, tid), colour, align)
        token = self.cache.start_load()
        recs = [(oid, _local_load(local, oid, before=tid)) for oid in oids]
        return self._cached(recs, token, colour, align)

    def _start_load(self, nid, oids, tid):
        """``(nid, cache token, call)``: a LoadMany of ``oids`` sent to ``nid``."""
        token = self.cache.start_load()
        return nid, token, calls.start_loads(self.link.storage(nid), oids, tid, self.rpc_timeout_s)

    def _finish_load(self, nid, token, call, colour, align=None) -> dict:
        return self._cached(calls.finish_loads(call, nid), token, colour, align)

    def _cached(self, recs, token, colour, align=None) -> dict:
        """The found records of ``recs`` (``[(oid, LoadAnswer)]``), put into the cache
        (placed as ``align`` asks: :meth:`read_views`)."""
        out = {}
        for oid, r in recs:
            if r.status is FOUND:
                data = _aligned(r.data, align)
                self.cache.put(oid, data, r.serial, r.next_serial, token, colour)
                out[oid] = (data, r.serial, r.next_serial)
        return out
