"""The client's calls that are not on the commit or load paths, at the wire.

The one place where the client's history, pack, blob, reduction and id calls become
messages of the contract (``proto/``) and their answers become plain values; the
modules that use them (``history``, ``blobs``, ``reductions``, ``storage``) import no
protobuf.  Each function takes the stub to call (``link.master`` or
``link.storage(nid)``, gRPC or the framed data plane alike) and a time limit, and
raises the domain exceptions of :func:`neoarray.wire.call`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy

from .. import wire
from ..proto import common_pb2 as cpb
from ..proto import master_pb2 as mpb
from ..proto import storage_pb2 as spb

OIDS_SINCE_BATCH_MAX = 10_000      # oids of one ObjectsSince answer


# -- the master ----------------------------------------------------------------------------
def last_tid(master, timeout_s: float, what: str = "sync") -> bytes:
    """The last tid the master acknowledged."""
    return wire.call(master.LastIds, cpb.Empty(), timeout_s, what).last_tid


def new_oids(master, count: int, timeout_s: float) -> list[bytes]:
    """``count`` new oids reserved for this client, in increasing order."""
    return list(wire.call(master.NewOids, mpb.NewOidsRequest(count=count), timeout_s, "new_oid").oids)


def begin_restore(master, session: int, tid: bytes, timeout_s: float) -> bytes:
    """The ttid of a restore of transaction ``tid`` (the master reserves the tid)."""
    return wire.call(master.Begin, mpb.BeginRequest(node_id=session, tid=tid), timeout_s, "tpc_begin").ttid


# -- storage nodes: history and pack ----------------------------------------------------------
def history(storage, oid: bytes, size: int, timeout_s: float) -> list:
    """The revisions of ``oid`` a node holds, newest first (``tid``, ``size``)."""
    return list(wire.call(storage.History, spb.HistoryRequest(oid=oid, size=size), timeout_s, "history").revisions)


def transactions(storage, partitions: Sequence[int], min_tid: bytes, max_tid: bytes, limit: int,
                 timeout_s: float, descending: bool = False) -> list:
    """The metadata of at most ``limit`` transactions of ``partitions`` with ``min_tid
    <= tid <= max_tid`` (empty: unbounded), in tid order."""
    request = spb.TransactionsRequest(partitions=list(partitions), min_tid=min_tid, max_tid=max_tid,
                                      limit=limit, descending=descending)
    return list(wire.call(storage.Transactions, request, timeout_s, "transactions").transactions)


def pack(storage, tid: bytes, gc_oids: Sequence[bytes], prune_history: bool, timeout_s: float) -> int:
    """Pack a node to ``tid``, removing ``gc_oids``: the revisions it removed."""
    request = spb.PackRequest(tid=tid, gc_oids=list(gc_oids), prune_history=prune_history)
    return wire.call(storage.Pack, request, timeout_s, "pack").revisions_removed


def objects_since(storage, partition: int, after_oid: bytes, timeout_s: float) -> list[bytes]:
    """At most ``OIDS_SINCE_BATCH_MAX`` oids of ``partition`` after ``after_oid``, in order."""
    request = spb.ObjectsSinceRequest(partitions=[partition], after_oid=after_oid, limit=OIDS_SINCE_BATCH_MAX)
    return list(wire.call(storage.ObjectsSince, request, timeout_s, "oids").oids)


# -- storage nodes: blobs -------------------------------------------------------------------
def blob_chunk_request(oid: bytes, serial: bytes, index: int) -> spb.LoadBlobChunkRequest:
    """The request of chunk ``index`` of the blob of ``oid`` at ``serial`` (sent as a
    bulk call by ``client/blobs.py``)."""
    return spb.LoadBlobChunkRequest(oid=oid, serial=serial, index=index)


def blob_chunk_found(reply) -> bool:
    """The node holds the blob chunk asked for."""
    return reply.status == spb.FOUND


# -- storage nodes: near-data reductions ------------------------------------------------------
def reduce_template(tid: bytes | None, kernel: str, dtype, acc, chunk_shape, order: str, codec,
                    bins, lo, hi, span=None) -> spb.ReduceRequest:
    """A ``Reduce`` request without its chunks (:func:`reduce`); ``span``: the
    ``(start, stop)`` of the items the envelope kernel's buckets cover (None: not given)."""
    codec_name, codec_arg = ("", 0) if codec is None else codec
    level, config = (0, codec_arg) if codec_name == "numcodecs" else (int(codec_arg), "")
    request = spb.ReduceRequest(
        before=tid or b"", kernel=kernel, dtype=numpy.dtype(dtype).str,
        acc_dtype=numpy.dtype(acc).str, chunk_shape=[int(n) for n in chunk_shape],
        order=order, codec=codec_name, codec_level=level, codec_config=config,
        bins=int(bins or 0), lo=float(lo or 0.0), hi=float(hi or 0.0))
    if span is not None:
        request.span_start, request.span_stop = (int(x) for x in span)
    return request


def reduce(storage, template: spb.ReduceRequest, oids: Sequence[bytes], extent_of, offset_of,
           timeout_s: float, what: str) -> list[tuple[bytes, bytes, bytes]]:
    """Reduce the chunks ``oids`` on a node (``template``: :func:`reduce_template`;
    ``extent_of[oid]``: the sizes of its valid region, ``offset_of``: its first item):
    ``[(oid, encoded state, serial)]`` of those it reduced."""
    request = spb.ReduceRequest()
    request.CopyFrom(template)
    request.oids.extend(oids)
    request.extents.extend(spb.ChunkExtent(sizes=[int(e) for e in extent_of[oid]], offset=offset_of.get(oid, 0))
                           for oid in oids)
    reply = wire.call(storage.Reduce, request, timeout_s, what)
    return [(c.oid, c.state, c.serial) for c in reply.chunks if c.status == spb.ReducedChunk.REDUCED]
