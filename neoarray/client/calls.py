"""The client's calls, at the wire.

The one place where the client's calls become messages of the contract (``proto/``)
and their answers become plain values (``values.py``, ``neoarray.views``):
the link's identification and event stream, loads, the commit's stores, votes,
finish and abort, and the history, pack, blob, reduction and id calls.  The modules
that use them (``link``, ``reads``, ``commit``, ``history``, ``blobs``,
``reductions``, ``storage``) import no protobuf.  Each function takes the stub to
call (``link.master`` or ``link.storage(nid)``, gRPC or the framed data plane alike)
and a time limit, and raises the domain exceptions of :func:`neoarray.wire.call`.
Record data travels beside the messages as bulk segments (``neoarray.transport.bulk``),
never copied into them here.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy
import xxhash

from .. import wire
from ..errors import ChecksumError
from ..proto import common_pb2 as cpb
from ..proto import master_pb2 as mpb
from ..proto import master_pb2_grpc as mrpc
from ..proto import storage_pb2 as spb
from ..proto import storage_pb2_grpc as srpc
from ..proto_states import NODE_TYPE_TO_PB, cluster_info_from_pb
from ..records import TransactionInfo
from ..states import NodeType
from ..transport import bulk
from ..views import ClusterView, Invalidation
from .values import (
    Ballot,
    Conflict,
    FinalTid,
    Identity,
    LoadAnswer,
    LoadStatus,
    RevisionDigest,
    VoteOutcome,
    VoteStatus,
)

OIDS_SINCE_BATCH_MAX = 10_000      # oids of one ObjectsSince answer
CLIENT_PB = NODE_TYPE_TO_PB[NodeType.CLIENT]
_LOAD_STATUS = {spb.FOUND: LoadStatus.FOUND, spb.DELETED: LoadStatus.DELETED,
                spb.NO_OBJECT: LoadStatus.NO_OBJECT, spb.NO_REVISION: LoadStatus.NO_REVISION}
FOUND_PB, _FOUND = spb.FOUND, LoadStatus.FOUND
_VOTE_STATUS = {spb.VOTED: VoteStatus.VOTED, spb.CONFLICTS: VoteStatus.CONFLICTS, spb.BUSY: VoteStatus.BUSY}


# -- the link: stubs, identification, the event stream --------------------------------------
def master_stub(channel):
    """The Master service on the gRPC ``channel``."""
    return mrpc.MasterStub(channel)


def storage_stub(channel):
    """The Storage service on the gRPC ``channel`` (a node without a data plane)."""
    return srpc.StorageStub(channel)


def identify(control, host: str, read_only: bool, timeout_s: float, what: str) -> Identity:
    """Identify as a client of host ``host`` to the master behind ``control``."""
    reply = wire.call(control.Identify, mpb.IdentifyRequest(type=CLIENT_PB, host=host, read_only=read_only),
                      timeout_s, what)
    return Identity(reply.node_id, reply.num_partitions, reply.data_address, cluster_info_from_pb(reply.info))


def subscribe(master, node_id: int):
    """The master's event stream of session ``node_id`` (``cancel()`` ends it; read it
    with :func:`events`)."""
    return master.Subscribe(mpb.SubscribeRequest(node_id=node_id))


def events(stream) -> Iterator[Invalidation | ClusterView]:
    """The events of ``stream`` (:func:`subscribe`): invalidations and cluster views;
    its failure comes as the domain exception of :func:`neoarray.wire.events`."""
    for event in wire.events(stream, "subscribe"):
        if event.HasField("invalidation"):
            inv = event.invalidation
            yield Invalidation(inv.tid, inv.ttid, list(inv.oids))
        elif event.HasField("cluster"):
            yield cluster_info_from_pb(event.cluster)


# -- storage nodes: loads ----------------------------------------------------------------
def _answer(reply, data, nid: int) -> LoadAnswer:
    """A load's answer; ``data``: its record's data, which travelled apart (bulk),
    checked against the node's checksum."""
    status = reply.status
    if status == FOUND_PB:
        if xxhash.xxh3_64_intdigest(data) != reply.checksum:
            raise ChecksumError(f"oid 0x{reply.oid.hex()} from S{nid} fails its checksum")
        return LoadAnswer(_FOUND, reply.serial, reply.next_serial or None, data, reply.data_tid or None)
    return LoadAnswer(_LOAD_STATUS.get(status), reply.serial, reply.next_serial or None, None,
                      reply.data_tid or None)


def load(storage, nid: int, oid: bytes, before: bytes, serial: bytes, timeout_s: float) -> LoadAnswer:
    """The revision of ``oid`` current before ``before``, or the one of ``serial``
    (wins), on node ``nid``."""
    reply, (data,) = bulk.call(storage.Load, spb.LoadRequest(oid=oid, before=before, serial=serial), (),
                               timeout_s, f"load from S{nid}")
    return _answer(reply, data, nid)


def start_loads(storage, oids: Sequence[bytes], before: bytes, timeout_s: float):
    """Send a LoadMany of the revisions of ``oids`` current before ``before``; its
    answers: :func:`finish_loads`."""
    return bulk.start(storage.LoadMany, spb.LoadManyRequest(
        loads=[spb.LoadRequest(oid=o, before=before) for o in oids]), (), timeout_s)


def finish_loads(started, nid: int) -> list[tuple[bytes, LoadAnswer]]:
    """``[(oid, answer)]`` of a LoadMany sent to ``nid`` by :func:`start_loads`."""
    reply, datas = bulk.finish(started, f"load from S{nid}")
    return [(r.oid, _answer(r, d, nid)) for r, d in zip(reply.loads, datas)]


def done(started, what: str = "") -> None:
    """Wait for the end of a call started without an answer to read (a store, an
    unvote, a blob chunk, a load given up); its failure as a domain exception."""
    bulk.finish(started, what)


def digests(storage, nid: int, oids: Sequence[bytes], serial: bytes, timeout_s: float) -> dict:
    """``{oid: RevisionDigest}`` of revision ``serial`` of ``oids`` on node ``nid``,
    each record's data checked against its checksum; an oid without it is absent."""
    reply, datas = bulk.finish(bulk.start(storage.LoadMany, spb.LoadManyRequest(
        loads=[spb.LoadRequest(oid=o, serial=serial) for o in oids]), (), timeout_s), f"load from S{nid}")
    out = {}
    for r, data in zip(reply.loads, datas):
        _answer(r, data, nid)           # the data matches the node's checksum
        if r.status in (spb.FOUND, spb.DELETED):
            out[r.oid] = RevisionDigest(r.status == spb.DELETED, r.checksum if r.status == spb.FOUND else 0,
                                        r.data_tid or None, r.blob_bytes if r.blob_tid else None)
    return out


# -- storage nodes: the commit's stores and votes -------------------------------------------
def _add_records(objects, stores: Sequence) -> None:
    """Add the ``ObjectRecord`` of each ``(StoreRecord, data)`` of ``stores`` to the
    repeated field ``objects`` (made in place: no message copied).  A plain record
    names only its three fields: each keyword costs (0.54 against 0.98 ms per 1,000)."""
    add = objects.add
    for record, _ in stores:
        blob = record.blob
        if blob is None and not record.deleted and not record.data_tid:
            add(oid=record.oid, serial=record.serial, checksum=record.checksum)
        else:
            add(oid=record.oid, serial=record.serial, deleted=record.deleted, checksum=record.checksum,
                data_tid=record.data_tid, has_blob=blob is not None, blob_chunks=blob[0] if blob else 0,
                blob_bytes=blob[1] if blob else 0)


def start_store(storage, ttid: bytes, session: int, stores: Sequence, timeout_s: float):
    """Send a Store of ``stores`` (``[(StoreRecord, data)]``) of transaction ``ttid``;
    :func:`done` waits for its end."""
    request = spb.StoreRequest(ttid=ttid, node_id=session)
    _add_records(request.objects, stores)
    return bulk.start(storage.Store, request, [d for _, d in stores], timeout_s)


def start_blob_chunk(storage, ttid: bytes, session: int, oid: bytes, index: int, checksum: int, data: bytes,
                     timeout_s: float):
    """Send chunk ``index`` of the blob of ``oid`` (``checksum``: its xxh3_64);
    :func:`done` waits for its end."""
    request = spb.StoreBlobChunkRequest(ttid=ttid, node_id=session, oid=oid, index=index, checksum=checksum)
    return bulk.start(storage.StoreBlobChunk, request, [data], timeout_s)


def _meta(meta: TransactionInfo) -> cpb.TransactionMeta:
    return cpb.TransactionMeta(user_raw=meta.user, description=meta.description, extension=meta.extension,
                               oids=meta.oids)


def start_vote(storage, ballot: Ballot, timeout_s: float):
    """Send the vote ``ballot``; its answer: :func:`finish_vote`."""
    request = spb.VoteRequest(
        ttid=ballot.ttid, node_id=ballot.session, checks=[spb.ObjectCheck(oid=o, serial=s) for o, s in ballot.checks],
        has_meta=ballot.meta is not None, meta=None if ballot.meta is None else _meta(ballot.meta),
        oids=ballot.oids, restore=ballot.restore, only_voter=ballot.only_voter)
    _add_records(request.objects, ballot.stores)
    return bulk.start(storage.Vote, request, [d for _, d in ballot.stores], timeout_s)


def finish_vote(started, what: str) -> VoteOutcome:
    """The answer to a vote sent by :func:`start_vote`."""
    reply, _ = bulk.finish(started, what)
    return VoteOutcome(_VOTE_STATUS.get(reply.status), tuple(
        Conflict(c.oid, c.committed_serial, c.serial, c.read_conflict) for c in reply.conflicts), reply.busy_with)


def start_unvote(storage, ttid: bytes, timeout_s: float):
    """Send an Unvote of ``ttid`` (its vote taken back); :func:`done` waits for its end."""
    return bulk.start(storage.Unvote, spb.AbortTransactionRequest(ttid=ttid), (), timeout_s)


# -- the master: the end of a commit ----------------------------------------------------------
def finish(master, session: int, ttid: bytes, oids: Sequence[bytes], storage_ids: Sequence[int], view_ptid: int,
           timeout_s: float) -> tuple[bytes, bytes]:
    """Ask the master to finish ``ttid``: ``(tid, the tid published before it)``."""
    request = mpb.FinishRequest(node_id=session, ttid=ttid, oids=list(oids), storage_ids=list(storage_ids),
                                view_ptid=view_ptid)
    reply = wire.call(master.Finish, request, timeout_s, "tpc_finish")
    return reply.tid, reply.prev_tid


def final_tid(master, ttid: bytes, timeout_s: float) -> FinalTid:
    """What the master decided of ``ttid`` (after a finish without an answer)."""
    reply = wire.call(master.FinalTid, mpb.FinalTidRequest(ttid=ttid), timeout_s, "final tid")
    return FinalTid(reply.tid, reply.status == mpb.NOT_COMMITTED)


def abort(master, session: int, ttid: bytes, storage_ids: Sequence[int], timeout_s: float) -> None:
    """Abort ``ttid`` through the master, on ``storage_ids``."""
    wire.call(master.Abort, mpb.AbortRequest(node_id=session, ttid=ttid, storage_ids=list(storage_ids)),
              timeout_s, "tpc_abort")


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
