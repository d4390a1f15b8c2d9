"""gRPC servicer of a storage node: decode, call the manager/backend, encode."""
from __future__ import annotations

import logging

from neoarray.errors import RequestRefused
from neoarray.ids import Z64
from neoarray.ids import checked_id as _id
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as pb
from neoarray.proto import storage_pb2_grpc as rpc

from .backend import NoObject, NoRevision, Stored, TransactionInfo
from .manager import BUSY, CONFLICTS, VOTED

log = logging.getLogger(__name__)

_VOTE_STATUS = {VOTED: pb.VOTED, CONFLICTS: pb.CONFLICTS, BUSY: pb.BUSY}



class StorageServicer(rpc.StorageServicer):
    def __init__(self, node):
        self.node = node
        self.backend = node.backend
        self.manager = node.manager
        self.limits = node.limits

    # -- reads --------------------------------------------------------------------
    def _load(self, req: pb.LoadRequest) -> pb.LoadReply:
        oid = _id(req.oid, "oid")
        try:
            rec = self.backend.load(oid, before=req.before or None, serial=req.serial or None)
        except NoObject:
            return pb.LoadReply(oid=oid, status=pb.NO_OBJECT)
        except NoRevision:
            return pb.LoadReply(oid=oid, status=pb.NO_REVISION)
        status = pb.DELETED if rec.data is None else pb.FOUND
        return pb.LoadReply(oid=oid, status=status, serial=rec.serial,
                            next_serial=rec.next_serial or b"", data=rec.data or b"",
                            checksum=rec.checksum, data_tid=rec.data_tid or b"")

    def Load(self, request, context):
        self.node.check_readable()
        return self._load(request)

    def LoadMany(self, request, context):
        self.node.check_readable()
        if len(request.loads) > self.limits.loads_per_batch_max:
            raise RequestRefused(f"{len(request.loads)} loads in one batch, "
                                 f"loads_per_batch_max={self.limits.loads_per_batch_max}")
        return pb.LoadManyReply(loads=[self._load(r) for r in request.loads])

    def History(self, request, context):
        try:
            revs = self.backend.history(_id(request.oid, "oid"), max(1, min(request.size, 10_000)))
        except NoObject:
            return pb.HistoryReply()
        return pb.HistoryReply(revisions=[pb.Revision(tid=t, size=s) for t, s in revs])

    def Transactions(self, request, context):
        self._check_partitions(request.partitions)
        limit = max(1, min(request.limit or 1000, self.limits.transactions_per_batch_max))
        found = self.backend.transactions(request.partitions, request.min_tid or None,
                                          request.max_tid or None, limit, request.descending)
        return pb.TransactionsReply(transactions=[
            cpb.TransactionMeta(tid=t.tid, user_raw=t.user, description=t.description,
                                extension=t.extension, oids=t.oids, packed=t.packed, ttid=t.ttid)
            for t in found])

    def ObjectsSince(self, request, context):
        self._check_partitions(request.partitions)
        limit = max(1, min(request.limit or 1000, self.limits.oids_per_batch_max))
        return pb.ObjectsSinceReply(oids=self.backend.oids(request.partitions, request.after_oid or None, limit))

    def _check_partitions(self, partitions):
        n = self.backend.partitions
        bad = [p for p in partitions if p >= n]
        if bad:
            raise RequestRefused(f"partition {bad[0]} out of range (cluster has {n})")

    # -- commit path ------------------------------------------------------------------
    def _store(self, ttid: bytes, node_id: int, objects) -> None:
        if len(objects) > self.limits.objects_per_store_max:
            raise RequestRefused(f"{len(objects)} objects in one store, "
                                 f"objects_per_store_max={self.limits.objects_per_store_max}")
        records = [Stored(_id(o.oid, "oid"), o.serial or Z64, None if o.deleted else o.data,
                          o.checksum, _id(o.data_tid, "data_tid") if o.data_tid else None)
                   for o in objects]
        self.manager.store(ttid, node_id, records)

    def Store(self, request, context):
        self.node.check_writable()
        self._store(_id(request.ttid, "ttid"), request.node_id, request.objects)
        return pb.StoreReply()

    def Vote(self, request, context):
        self.node.check_writable()
        ttid = _id(request.ttid, "ttid")
        if request.objects:
            self._store(ttid, request.node_id, request.objects)
        meta = None
        if request.has_meta:
            m = request.meta
            meta = TransactionInfo(b"", m.user_raw, m.description, m.extension, list(m.oids), ttid)
        checks = [(_id(c.oid, "oid"), _id(c.serial, "serial")) for c in request.checks]
        res = self.manager.vote(ttid, request.node_id, checks, meta, list(request.oids), request.restore)
        return pb.VoteReply(status=_VOTE_STATUS[res.status], busy_with=res.busy_with, conflicts=[
            pb.Conflict(oid=c.oid, committed_serial=c.committed_serial, serial=c.serial,
                        read_conflict=c.read_conflict) for c in res.conflicts])

    def AbortTransaction(self, request, context):
        self.manager.abort(_id(request.ttid, "ttid"))
        return cpb.Empty()

    def Unvote(self, request, context):
        self.manager.unvote(_id(request.ttid, "ttid"))
        return cpb.Empty()

    def AbortNode(self, request, context):
        self.manager.abort_node(request.node_id, keep=set(request.keep_ttids))
        return cpb.Empty()

    def Pack(self, request, context):
        self.node.check_writable()
        removed = self.backend.pack(_id(request.tid, "tid"), [_id(o, "oid") for o in request.gc_oids],
                                    request.prune_history)
        return pb.PackReply(revisions_removed=removed)

    # -- master only ------------------------------------------------------------------
    def Lock(self, request, context):
        self.manager.lock(_id(request.ttid, "ttid"), _id(request.tid, "tid"))
        return cpb.Empty()

    def Unlock(self, request, context):
        self.manager.unlock([_id(t, "ttid") for t in request.ttids])
        return cpb.Empty()

    def RecoveryInfo(self, request, context):
        last_tid, last_oid = self.backend.last_ids()
        return pb.RecoveryInfoReply(
            last_tid=last_tid, last_oid=last_oid, voted_ttids=list(self.backend.voted()),
            locked=[pb.LockedTransaction(ttid=k, tid=v) for k, v in self.backend.locked().items()],
            ptid=self.node.ptid)

    def SetPartitionTable(self, request, context):
        self.node.set_partition_table(request)
        return cpb.Empty()

    def Shutdown(self, request, context):
        self.node.request_shutdown()
        return cpb.Empty()
