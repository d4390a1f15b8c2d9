"""gRPC servicer of a storage node: decode, call the manager/backend, encode.

Near-data reductions (``Reduce``): the request is checked, and each chunk reduced,
by ``storage_node/reduce.py`` (no I/O); this servicer reads the records.
"""
from __future__ import annotations

import contextlib
import logging

from neoarray import envelopes
from neoarray.errors import ClusterUnavailable, LimitExceeded, RequestRefused
from neoarray.ids import Z64
from neoarray.ids import checked_id as _id
from neoarray.ids import checked_tid as _tid
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as pb
from neoarray.proto import storage_pb2_grpc as rpc
from neoarray.proto_states import CELL_FROM_PB, transaction_to_pb
from neoarray.records import (
    BlobRef,
    NoBlob,
    NoObject,
    NoRevision,
    TransactionInfo,
    verify_loaded,
)

from . import calls, check, replication
from .backend import Stored
from .manager import BUSY, CONFLICTS, VOTED
from .reduce import check_reduce_request, chunk_state, encode_state
from .summaries import SummaryCache

log = logging.getLogger(__name__)

_VOTE_STATUS = {VOTED: pb.VOTED, CONFLICTS: pb.CONFLICTS, BUSY: pb.BUSY}
_REPAIR_ACTIONS = {check.WRITTEN: pb.RepairOutcome.WRITTEN, check.REPLACED: pb.RepairOutcome.REPLACED,
                   check.UNCHANGED: pb.RepairOutcome.UNCHANGED,
                   check.SKIPPED_BUSY: pb.RepairOutcome.SKIPPED_BUSY,
                   check.SKIPPED_BLOB: pb.RepairOutcome.SKIPPED_BLOB}
_OIDS_PER_READ = 16        # chunks reduced inside one LMDB read transaction (kept short)


def _no_segments(segments, method: str) -> None:
    if segments:
        raise RequestRefused(f"a {method} request carries no data segments ({len(segments)} sent)")


def _check_table(pt, partitions: int | None, ptid: int, node_id: int) -> None:
    """Refuse a partition table the node must not act on (it would drop the data of
    every partition it has no cell of): a row count other than the cluster's
    partitions, a cell of node 0 or of an unknown state, a table older than the
    node's (``ptid`` lower), or one without any cell of this node."""
    if not partitions:
        raise ClusterUnavailable("storage node not yet part of a cluster: no partition table taken")
    if len(pt.rows) != partitions:
        raise RequestRefused(f"partition table with {len(pt.rows)} rows: the cluster has "
                             f"{partitions} partitions")
    for p, row in enumerate(pt.rows):
        for cell in row.cells:
            if cell.node_id == 0 or cell.state not in CELL_FROM_PB:
                raise RequestRefused(f"partition table: partition {p} has a cell of node "
                                     f"{cell.node_id} in unknown state {cell.state}")
    if pt.ptid < ptid:
        raise RequestRefused(f"partition table {pt.ptid} is older than this node's ({ptid})")
    if not any(c.node_id == node_id for row in pt.rows for c in row.cells):
        raise RequestRefused(f"partition table {pt.ptid} has no cell of this node (S{node_id}): "
                             f"the master pushes a table only to nodes given cells")


class StorageServicer(rpc.StorageServicer):
    def __init__(self, node):
        self.node = node
        self.backend = node.backend
        self.manager = node.manager
        self.limits = node.limits
        self.summaries = SummaryCache(self.limits.envelope_summary_bytes_max)

    # -- reads --------------------------------------------------------------------
    # Each read method has a ``_segments`` twin for the framed data plane, where record
    # data travels as raw bulk segments, never inside protobuf (transport/server.py).
    def _loaded(self, req: pb.LoadRequest, txn=None) -> tuple[pb.LoadReply, bytes]:
        """The reply of a load, its data apart: a copy, or a view valid while the read
        transaction ``txn`` (given) lasts."""
        oid = _id(req.oid, "oid")
        try:
            if txn is None:
                rec = self.backend.load(oid, before=req.before or None, serial=req.serial or None)
            else:
                rec = self.backend.load_in(txn, oid, before=req.before or None, serial=req.serial or None,
                                           copy=False)
        except NoObject:
            return pb.LoadReply(oid=oid, status=pb.NO_OBJECT), b""
        except NoRevision:
            return pb.LoadReply(oid=oid, status=pb.NO_REVISION), b""
        status = pb.DELETED if rec.data is None else pb.FOUND
        blob = rec.blob
        return pb.LoadReply(oid=oid, status=status, serial=rec.serial, next_serial=rec.next_serial or b"",
                            checksum=rec.checksum, data_tid=rec.data_tid or b"",
                            blob_tid=blob.key_tid if blob else b"", blob_chunks=blob.chunks if blob else 0,
                            blob_bytes=blob.nbytes if blob else 0), rec.data or b""

    def _load(self, req: pb.LoadRequest) -> pb.LoadReply:
        reply, data = self._loaded(req)
        reply.data = data
        return reply

    def Load(self, request, context):
        self.node.check_readable()
        return self._load(request)

    def Load_segments(self, request, segments, context):
        self.node.check_readable()
        _no_segments(segments, "Load")
        reply, data = self._loaded(request)
        return reply, [data]

    def _check_batch(self, request) -> None:
        self.node.check_readable()
        if len(request.loads) > self.limits.loads_per_batch_max:
            raise LimitExceeded(f"{len(request.loads)} loads in one batch, "
                                 f"loads_per_batch_max={self.limits.loads_per_batch_max}")

    def LoadMany(self, request, context):
        self._check_batch(request)
        return pb.LoadManyReply(loads=[self._load(r) for r in request.loads])

    def LoadMany_segments(self, request, segments, context):
        """One segment per load (empty when it found no data).  On a store whose
        snapshot reads take no lock (LMDB), the segments are the records in their pages,
        sent from there: the read transaction ends once the reply is written."""
        _no_segments(segments, "LoadMany")
        self._check_batch(request)
        kv = self.backend.kv
        with contextlib.ExitStack() as stack:
            txn = stack.enter_context(kv.read(buffers=True)) if kv.snapshot_reads_lock_free else None
            done = [self._loaded(r, txn) for r in request.loads]
            release = stack.pop_all().close     # the read ends once the reply is written
        return pb.LoadManyReply(loads=[reply for reply, _ in done]), [data for _, data in done], release

    def History(self, request, context):
        try:
            revs = self.backend.history(_id(request.oid, "oid"), max(1, min(request.size, 10_000)))
        except NoObject:
            return pb.HistoryReply()
        return pb.HistoryReply(revisions=[pb.Revision(tid=t, size=s) for t, s in revs])

    def Transactions(self, request, context):
        self._check_partitions(request.partitions)
        limit = max(1, min(request.limit or 1000, self.limits.transactions_per_batch_max))
        min_tid = _id(request.min_tid, "min_tid") if request.min_tid else None
        max_tid = _id(request.max_tid, "max_tid") if request.max_tid else None
        found = self.backend.transactions(request.partitions, min_tid, max_tid, limit, request.descending)
        return pb.TransactionsReply(transactions=[transaction_to_pb(t) for t in found])

    def ObjectsSince(self, request, context):
        self._check_partitions(request.partitions)
        limit = max(1, min(request.limit or 1000, self.limits.oids_per_batch_max))
        after = _id(request.after_oid, "after_oid") if request.after_oid else None
        return pb.ObjectsSinceReply(oids=self.backend.oids(request.partitions, after, limit))

    # -- near-data reductions (see the module docstring) -------------------------------
    def Reduce(self, request, context):
        self.node.check_readable()
        order = check_reduce_request(request, self.limits)
        oids, before, spec, extents, offsets = order.oids, order.before, order.spec, order.extents, order.offsets
        chunks = []
        for i in range(0, len(oids), _OIDS_PER_READ):
            with self.backend.kv.read(buffers=True) as txn:
                chunks.extend(self._reduce_one(txn, oid, extent, before, spec, offset)
                              for oid, extent, offset
                              in zip(oids[i:i + _OIDS_PER_READ], extents[i:i + _OIDS_PER_READ],
                                     offsets[i:i + _OIDS_PER_READ]))
        return pb.ReduceReply(chunks=chunks)

    def _reduce_one(self, txn, oid: bytes, extent: tuple, before, spec, offset=0) -> pb.ReducedChunk:
        envelope = spec.kernel == envelopes.KERNEL
        try:        # an envelope verifies the data below, when it reads it
            rec = self.backend.load_in(txn, oid, before=before, copy=False, verify=not envelope)
        except NoObject:
            return pb.ReducedChunk(oid=oid, status=pb.ReducedChunk.NO_OBJECT)
        except NoRevision:
            return pb.ReducedChunk(oid=oid, status=pb.ReducedChunk.NO_REVISION)
        if rec.data is None:
            return pb.ReducedChunk(oid=oid, status=pb.ReducedChunk.DELETED, serial=rec.serial)
        summary = state = None
        if envelope:
            key = (oid, rec.serial, extent, spec.dtype.str, spec.codec)
            kept = self.summaries.peek(key)
            if kept is not None:        # a chunk inside one bucket: its summary alone
                state = envelopes.whole_chunk_state(kept, extent[0], offset, *spec.span, spec.bins)
            if state is None:
                summary = self._envelope_summary(oid, rec, key, kept, extent, spec, offset)
        if state is None:
            state = chunk_state(rec.data, extent, spec, offset, summary)
        if state is None:
            return pb.ReducedChunk(oid=oid, status=pb.ReducedChunk.NOT_A_CHUNK, serial=rec.serial)
        return pb.ReducedChunk(oid=oid, status=pb.ReducedChunk.REDUCED, serial=rec.serial,
                               state=encode_state(state))

    def _envelope_summary(self, oid: bytes, rec, key, kept, extent: tuple, spec, offset: int):
        """``summary(block)`` for ``chunk_state``: the summary kept for this chunk
        revision (``SummaryCache``: redraws, zooms and refreshes read only the runs at
        their buckets' edges), else made now.  The revision's checksum is verified
        before any summary of it is made and whenever the whole block is read; reading
        the edge runs of a revision summarized before does not verify it again (its
        bytes were verified then; ``neoctl check`` finds bit rot)."""
        if kept is None or not envelopes.summary_helps(extent[0], offset, *spec.span, spec.bins):
            verify_loaded(oid, rec)
        if kept is not None:
            return lambda block: kept
        return lambda block: self.summaries.get(key, lambda: envelopes.summarize(block))

    def _check_partitions(self, partitions):
        n = self.backend.partitions
        if len(partitions) > n:     # each is scanned: duplicates would multiply the work
            raise RequestRefused(f"{len(partitions)} partitions in one request, the cluster has {n}")
        bad = [p for p in partitions if p >= n]
        if bad:
            raise RequestRefused(f"partition {bad[0]} out of range (cluster has {n})")

    # -- replica check and repair (storage_node/check.py) -------------------------------
    def CheckRecords(self, request, context):
        self.node.check_readable()
        self._check_partitions([request.partition])
        limit = self.limits.check_records_per_batch_max
        limit = min(request.limit, limit) if request.limit else limit
        max_tid = _id(request.max_tid, "max_tid") if request.max_tid else None
        if request.keys:
            return self._lookup_records(request, limit)
        if request.table == pb.CHECK_OBJECTS:
            after = request.after or None
            if after is not None and len(after) != 16:
                raise RequestRefused(f"an objects cursor is oid + tid (16 bytes), got {len(after)}")
            found, nxt = check.list_objects(self.backend, request.partition, after, max_tid,
                                            limit, self.limits.check_bytes_per_batch_max)
        elif request.table == pb.CHECK_TRANSACTIONS:
            after = _id(request.after, "transactions cursor") if request.after else None
            found, nxt = check.list_transactions(self.backend, request.partition, after, max_tid, limit)
        else:
            raise RequestRefused(f"unknown check table {request.table}: CHECK_OBJECTS or CHECK_TRANSACTIONS")
        return pb.CheckRecordsReply(next_after=nxt or b"", records=[
            pb.CheckedRecord(oid=r.oid, tid=r.tid, checksum=r.checksum, data_ok=r.data_ok,
                             deleted=r.deleted, data_tid=r.data_tid or b"", data_bytes=r.data_bytes,
                             blob_checksum=r.blob_checksum)
            for r in found])

    def _lookup_records(self, request, limit: int):
        if request.table != pb.CHECK_OBJECTS:
            raise RequestRefused("keys are looked up in CHECK_OBJECTS only")
        if len(request.keys) > limit:
            raise LimitExceeded(f"{len(request.keys)} keys to look up, check_records_per_batch_max={limit}")
        for key in request.keys:
            if len(key) != 16:
                raise RequestRefused(f"a key is oid + tid (16 bytes), got {len(key)}")
            if self.backend.partition(key[:8]) != request.partition:
                raise RequestRefused(f"oid 0x{key[:8].hex()} is not in partition {request.partition}")
        found = check.lookup_objects(self.backend, request.partition, list(request.keys))
        return pb.CheckRecordsReply(records=[pb.CheckedRecord(oid=r.oid, tid=r.tid, checksum=r.checksum,
                                                              data_ok=True, deleted=r.deleted) for r in found])

    def RepairRecords(self, request, context):
        self.node.check_writable()
        count, limit = len(request.objects) + len(request.transactions), self.limits.repair_records_per_batch_max
        if count > limit:
            raise LimitExceeded(f"{count} records in one repair, repair_records_per_batch_max={limit}")
        objects = [check.RepairRevision(_id(o.oid, "oid"), _id(o.tid, "tid"), None if o.deleted else o.data,
                                        o.checksum, _id(o.data_tid, "data_tid") if o.data_tid else None,
                                        BlobRef(_id(o.blob_tid, "blob_tid"), o.blob_chunks, o.blob_bytes)
                                        if o.blob_tid and not o.deleted else None)
                   for o in request.objects]
        check.verify(objects)       # before asking the master anything
        transactions = [TransactionInfo(_id(m.tid, "tid"), m.user_raw, m.description, m.extension,
                                        [_id(o, "oid") for o in m.oids], m.ttid, m.packed)
                        for m in request.transactions]
        outcomes, dropped = self.manager.repair(objects, transactions, self.node.held_partitions())
        return pb.RepairRecordsReply(data_rows_dropped=dropped, outcomes=[
            pb.RepairOutcome(oid=oid, tid=tid, action=_REPAIR_ACTIONS[action]) for oid, tid, action in outcomes])

    def RepairBlobChunk(self, request, context):
        self.node.check_writable()
        self.manager.repair_blob_chunk(_id(request.oid, "oid"), _id(request.blob_tid, "blob_tid"), request.index,
                                       request.checksum, request.data, self.node.held_partitions(),
                                       self.limits.blob_chunk_bytes_max)
        return cpb.Empty()

    # -- replication: a catching-up node copies from this one (storage_node/replication.py)
    def ReplicaKeys(self, request, context):
        self.node.check_readable()
        return calls.keys_batch_to_pb(replication.replica_keys(
            self.backend, calls.keys_query_from_pb(request), self.limits.replication_batch_records_max))

    def ReplicaRecords(self, request, context):
        self.node.check_readable()
        return calls.records_batch_to_pb(replication.replica_records(
            self.backend, calls.records_query_from_pb(request), self.limits.replication_batch_records_max,
            self.limits.replication_batch_bytes_max))

    # -- commit path ------------------------------------------------------------------
    def _store(self, ttid: bytes, node_id: int, objects, segments=None) -> None:
        """Store ``objects``; their data in the objects, or one bulk segment each."""
        self.manager.store(ttid, node_id, self._records(ttid, objects, segments))

    def _records(self, ttid: bytes, objects, segments=None) -> list[Stored]:
        """The records of a Store or Vote request: ``objects``, their data in the
        objects or one bulk segment each."""
        if len(objects) > self.limits.objects_per_store_max:
            raise LimitExceeded(f"{len(objects)} objects in one store, "
                                 f"objects_per_store_max={self.limits.objects_per_store_max}")
        if segments and len(segments) != len(objects):
            raise RequestRefused(f"{len(segments)} data segments for {len(objects)} objects: one per object")
        datas = segments or [o.data for o in objects]     # framed: segments; gRPC: in the records
        return [Stored(_id(o.oid, "oid"), o.serial or Z64, None if o.deleted else data,
                       o.checksum, _id(o.data_tid, "data_tid") if o.data_tid else None,
                       BlobRef(ttid, o.blob_chunks, o.blob_bytes) if o.has_blob else None)
                for o, data in zip(objects, datas)]

    # -- blobs: chunks of bounded size, stored before their record, loaded one by one ----
    def _store_blob_chunk(self, request, data) -> pb.StoreReply:
        self.node.check_writable()
        self.manager.store_blob_chunk(_tid(request.ttid, "ttid"), request.node_id, _id(request.oid, "oid"),
                                      request.index, request.checksum, data, self.limits.blob_chunk_bytes_max)
        return pb.StoreReply()

    def StoreBlobChunk(self, request, context):
        return self._store_blob_chunk(request, request.data)

    def StoreBlobChunk_segments(self, request, segments, context):
        if len(segments) != 1 or request.data:
            raise RequestRefused(f"a StoreBlobChunk request carries its chunk as one data segment "
                                 f"({len(segments)} sent)")
        return self._store_blob_chunk(request, segments[0]), []

    def _blob_chunk(self, req) -> tuple[pb.LoadBlobChunkReply, bytes]:
        self.node.check_readable()
        oid, serial = _id(req.oid, "oid"), _id(req.serial, "serial")
        try:
            rec, crc, data = self.backend.load_blob_chunk(oid, serial, req.index)
        except NoObject:
            return pb.LoadBlobChunkReply(status=pb.NO_OBJECT), b""
        except NoRevision:
            return pb.LoadBlobChunkReply(status=pb.NO_REVISION), b""
        except NoBlob:
            return pb.LoadBlobChunkReply(status=pb.DELETED, no_blob=True), b""
        return pb.LoadBlobChunkReply(status=pb.FOUND, blob_chunks=rec.blob.chunks, blob_bytes=rec.blob.nbytes,
                                     checksum=crc, blob_tid=rec.blob.key_tid), data

    def LoadBlobChunk(self, request, context):
        reply, data = self._blob_chunk(request)
        reply.data = data
        return reply

    def LoadBlobChunk_segments(self, request, segments, context):
        _no_segments(segments, "LoadBlobChunk")
        reply, data = self._blob_chunk(request)
        return reply, [data]

    def Store(self, request, context):
        self.node.check_writable()
        self._store(_tid(request.ttid, "ttid"), request.node_id, request.objects)
        return pb.StoreReply()

    def Store_segments(self, request, segments, context):
        self.node.check_writable()
        self._store(_tid(request.ttid, "ttid"), request.node_id, request.objects, segments)
        return pb.StoreReply(), []

    def Vote(self, request, context):
        return self._vote(request)

    def Vote_segments(self, request, segments, context):
        return self._vote(request, segments), []

    def _vote(self, request, segments=None):
        self.node.check_writable()
        ttid = _tid(request.ttid, "ttid")
        if not request.objects and segments:
            raise RequestRefused(f"{len(segments)} data segments for no object")
        records = self._records(ttid, request.objects, segments) if request.objects else []
        meta = None
        if request.has_meta:
            m = request.meta
            meta = TransactionInfo(b"", m.user_raw, m.description, m.extension, list(m.oids), ttid)
        checks = [(_id(c.oid, "oid"), _id(c.serial, "serial")) for c in request.checks]
        res = self.manager.vote(ttid, request.node_id, checks, meta, list(request.oids), request.restore,
                                sync=not request.only_voter, records=records)
        return pb.VoteReply(status=_VOTE_STATUS[res.status], busy_with=res.busy_with, conflicts=[
            pb.Conflict(oid=c.oid, committed_serial=c.committed_serial, serial=c.serial,
                        read_conflict=c.read_conflict) for c in res.conflicts])

    def AbortTransaction(self, request, context):
        self.node.fence.check(context)
        self.manager.abort(_id(request.ttid, "ttid"))
        return cpb.Empty()

    def Unvote(self, request, context):
        self.node.fence.check(context)
        self.manager.unvote(_id(request.ttid, "ttid"))
        return cpb.Empty()

    def AbortNode(self, request, context):
        self.node.fence.check(context)
        self.manager.abort_node(request.node_id, keep=set(request.keep_ttids))
        return cpb.Empty()

    def Pack(self, request, context):
        self.node.check_writable()
        removed = self.backend.pack(_id(request.tid, "tid"), [_id(o, "oid") for o in request.gc_oids],
                                    request.prune_history)
        return pb.PackReply(revisions_removed=removed)

    # -- master only ------------------------------------------------------------------
    def Lock(self, request, context):
        self.node.fence.check(context)
        self.manager.lock(_tid(request.ttid, "ttid"), _tid(request.tid, "tid"))
        return cpb.Empty()

    def Unlock(self, request, context):
        self.node.fence.check(context)
        if len(request.ttids) > self.limits.transactions_per_batch_max:
            raise LimitExceeded(f"{len(request.ttids)} transactions in one unlock, "
                                f"transactions_per_batch_max={self.limits.transactions_per_batch_max}")
        self.manager.unlock([_id(t, "ttid") for t in request.ttids])
        return cpb.Empty()

    def RecoveryInfo(self, request, context):
        self.node.fence.check(context)
        last_tid, last_oid = self.backend.last_ids()
        return pb.RecoveryInfoReply(
            last_tid=last_tid, last_oid=last_oid, voted_ttids=list(self.backend.voted()),
            locked=[pb.LockedTransaction(ttid=k, tid=v) for k, v in self.backend.locked().items()],
            ptid=self.node.ptid, stamp=cpb.Stamp(epoch=self.node.fence.stamp[0], version=self.node.fence.stamp[1]))

    def RecordStamp(self, request, context):
        self.node.fence.check_record(context, request.epoch, request.version)
        return cpb.Empty()

    def SetPartitionTable(self, request, context):
        self.node.fence.check(context)
        _check_table(request, self.backend.partitions, self.node.ptid, self.node.node_id)
        self.node.set_partition_table(request)
        return cpb.Empty()

    def Truncate(self, request, context):
        self.node.check_writable()
        tid, until = _id(request.tid, "tid"), _id(request.until_tid, "until_tid")
        if until < tid:
            raise RequestRefused(f"truncate: until_tid 0x{until.hex()} is before tid 0x{tid.hex()}")
        transactions, revisions, aborted = self.manager.truncate(tid, until, request.check_only)
        if not request.check_only:
            log.warning("truncated to 0x%s: %d transactions and %d revisions up to 0x%s removed, "
                        "%d transactions in progress dropped", tid.hex(), transactions, revisions,
                        until.hex(), aborted)
        return pb.StorageTruncateReply(transactions_removed=transactions, revisions_removed=revisions,
                                       aborted=aborted)

    def Shutdown(self, request, context):
        self.node.fence.check(context)
        self.node.request_shutdown()
        return cpb.Empty()
