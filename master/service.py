"""gRPC servicers of the master: the Master (control) and Admin (neoctl) services, and
the handlers a primary serves (``primary_handlers``)."""
from __future__ import annotations

import queue

from neoarray import security
from neoarray.errors import RequestRefused
from neoarray.ids import checked_id, p64
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as pb
from neoarray.proto import master_pb2_grpc as rpc
from neoarray.proto import standby_pb2 as sbpb
from neoarray.proto import standby_pb2_grpc as sbrpc
from neoarray.proto_states import (
    CLUSTER_STATE_FROM_PB,
    CLUSTER_STATE_TO_PB,
    NODE_TYPE_FROM_PB,
    cell_change_pb,
    cluster_info_to_pb,
    node_to_pb,
    table_to_pb,
)
from neoarray.views import ClusterView, Invalidation

from . import standby
from .cluster import Identity, Pending
from .node import Master
from .table_admin import NODE_IDS_PER_REQUEST_MAX

# calls that last, on threads of their own (``wire.make_server``): a client's event
# stream, and a standby's long poll
SUBSCRIBE = f"/{pb.DESCRIPTOR.services_by_name['Master'].full_name}/Subscribe"
FOLLOW_STATE = f"/{sbpb.DESCRIPTOR.services_by_name['Standby'].full_name}/FollowState"


def identity(request) -> Identity:
    """Who an ``IdentifyRequest`` says it is."""
    typ = NODE_TYPE_FROM_PB.get(request.type)
    if typ is None:
        raise RequestRefused(f"unknown node type {request.type}")
    return Identity(typ, request.node_id, request.address, request.host, request.read_only, request.data_path,
                    request.data_address, request.last_oid, request.last_tid,
                    (request.stamp.epoch, request.stamp.version))


def event_pb(event: ClusterView | Invalidation) -> pb.Event:
    """The message of an event of the stream a client follows (``Subscribe``)."""
    if isinstance(event, Invalidation):
        return pb.Event(invalidation=pb.Invalidation(tid=event.tid, ttid=event.ttid, oids=event.oids))
    return pb.Event(cluster=cluster_info_to_pb(event))


class MasterServicer(rpc.MasterServicer):
    def __init__(self, master: Master, keepalive_s: float = 1.0):
        self.m = master
        self.keepalive_s = keepalive_s

    def Identify(self, request, context):
        if request.type == cpb.STORAGE:
            security.require_role(context, "storage", "Identify as a storage node")
        nid = self.m.identify(identity(request))
        return pb.IdentifyReply(node_id=nid, num_partitions=self.m.partitions,
                                info=cluster_info_to_pb(self.m.cluster_view()),
                                data_address=self.m.data_address)

    def Subscribe(self, request, context):
        nid = request.node_id
        q = self.m.subscribe(nid)
        context.add_callback(lambda: self.m.unsubscribe(nid, q))
        yield event_pb(self.m.cluster_view())
        while context.is_active() and not self.m.stopped.is_set():
            try:
                event = q.get(timeout=self.keepalive_s)
            except queue.Empty:
                continue
            if event is None:
                return
            yield event_pb(event)

    def NewOids(self, request, context):
        return pb.NewOidsReply(oids=self.m.new_oids(request.count))

    def Begin(self, request, context):
        return pb.BeginReply(ttid=self.m.begin(request.node_id, request.tid))

    def Finish(self, request, context):
        tid, prev_tid = self.m.finish(request.node_id, checked_id(request.ttid, "ttid"), list(request.oids),
                                      list(request.storage_ids), request.view_ptid)
        return pb.FinishReply(tid=tid, prev_tid=prev_tid)

    def Abort(self, request, context):
        self.m.abort(request.node_id, checked_id(request.ttid, "ttid"), list(request.storage_ids))
        return cpb.Empty()

    def FinalTid(self, request, context):
        tid, not_committed = self.m.final_status(checked_id(request.ttid, "ttid"))
        status = pb.COMMITTED if tid else pb.NOT_COMMITTED if not_committed else pb.FINAL_UNKNOWN
        return pb.FinalTidReply(tid=tid or b"", status=status)

    def LastIds(self, request, context):
        return self._last_ids()

    def _last_ids(self):
        with self.m.lock:
            return pb.LastIdsReply(last_oid=p64(self.m.ids.last_oid), last_tid=self.m.last_committed,
                                   ptid=self.m.pt.ptid)

    def Heartbeat(self, request, context):
        if not self.m.heartbeat(request.node_id):
            context.abort(__import__("grpc").StatusCode.NOT_FOUND, f"node {request.node_id} must identify again")
        tasks = self.m.replication_report(request.node_id, [(d.partition, d.tid) for d in request.replicated])
        verdicts = self.m.pending_verdicts(request.node_id, [Pending(p.ttid, p.node_id, p.voted, p.age_s)
                                                             for p in request.pending])
        reply = pb.HeartbeatReply(
            state=CLUSTER_STATE_TO_PB[self.m.cluster_state], ptid=self.m.pt.ptid,
            replicate=[pb.ReplicaTask(partition=t.partition, until_tid=t.until_tid, sources=[
                pb.ReplicaSource(node_id=n, address=a) for n, a in t.sources]) for t in tasks],
            verdicts=[pb.PendingVerdict(ttid=ttid, lock_tid=lock_tid or b"") for ttid, lock_tid in verdicts],
            epoch=self.m.epoch)
        rate = self.m.rates.replication_rate(request.node_id)
        if rate is not None:
            reply.replication_bytes_per_s = rate
        return reply


class AdminServicer(rpc.AdminServicer):
    def __init__(self, master: Master, control: MasterServicer):
        self.m = master
        self.control = control

    def GetIds(self, request, context):
        return self.control._last_ids()

    def GetPartitionTable(self, request, context):
        with self.m.lock:
            table = self.m.table_view()
        return table_to_pb(table)

    def GetNodes(self, request, context):
        with self.m.lock:
            nodes = [self.m.node_view(n) for n in self.m.nodes.values()]
        return pb.NodesReply(nodes=[node_to_pb(n) for n in nodes])

    def GetClusterState(self, request, context):
        return pb.ClusterStateReply(state=CLUSTER_STATE_TO_PB[self.m.cluster_state])

    def SetClusterState(self, request, context):
        state = CLUSTER_STATE_FROM_PB.get(request.state)
        if state is None:
            raise RequestRefused(f"unknown cluster state {request.state}")
        return pb.ClusterStateReply(state=CLUSTER_STATE_TO_PB[self.m.set_cluster_state(state)])

    # -- partition-table administration --------------------------------------------------
    def AddNodes(self, request, context):
        return pb.AddNodesReply(node_ids=self.m.admin.add_nodes(list(request.node_ids), request.all))

    def Tweak(self, request, context):
        return self._changes(self.m.admin.tweak(list(request.exclude_node_ids), request.dry_run))

    def DropNode(self, request, context):
        return self._changes(self.m.admin.drop_node(request.node_id))

    def KillNode(self, request, context):
        self.m.admin.kill_node(request.node_id)
        return cpb.Empty()

    def SetReplicas(self, request, context):
        self.m.admin.set_replicas(request.replicas)
        return self._changes([])

    def _changes(self, diff):
        with self.m.lock:
            table = self.m.table_view()
        return pb.TableChangeReply(pt=table_to_pb(table), changes=[
            pb.CellChange(partition=p, node_id=n, old_state=old_pb, new_state=new_pb)
            for p, n, old, new in diff for old_pb, new_pb in [cell_change_pb(old, new)]])

    # -- operations ---------------------------------------------------------------------
    def Truncate(self, request, context):
        done = self.m.truncation.truncate(checked_id(request.tid, "tid"))
        return pb.TruncateReply(tid=done["tid"], last_tid_before=done["until"],
                                transactions_removed=done["transactions"],
                                revisions_removed=done["revisions"])

    def SetReplicationRate(self, request, context):
        if len(request.node_ids) > NODE_IDS_PER_REQUEST_MAX:
            raise RequestRefused(f"more than {NODE_IDS_PER_REQUEST_MAX} node ids")
        done = self.m.rates.set_replication_rate(request.bytes_per_s, list(request.node_ids))
        return pb.SetReplicationRateReply(rates=done["rates"], default_set=done["default"] is not None,
                                          default_bytes_per_s=done["default"] or 0)


def primary_handlers(master: Master, control: MasterServicer, publisher: standby.StatePublisher) -> list:
    """The gRPC handlers of a primary master: its Master and Admin services, and the
    state it publishes to standbys (``standby.RoleRouter.switch``)."""
    return standby.handlers_of((rpc.add_MasterServicer_to_server, control),
                               (rpc.add_AdminServicer_to_server, AdminServicer(master, control)),
                               (sbrpc.add_StandbyServicer_to_server, publisher))
