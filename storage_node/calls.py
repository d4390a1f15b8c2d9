"""The storage node's calls to the master, at the wire.

The one place where the node's identification, heartbeats and partition-table reads
become messages of the contract (``proto/``), and where their answers' states are
read as the domain's (``neoarray.states``); ``node.py`` imports no protobuf.  Each
call raises the domain exceptions of :func:`neoarray.wire.call`.
"""
from __future__ import annotations

from neoarray import wire
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.proto_states import CELL_TO_PB, CLUSTER_STATE_FROM_PB, NODE_TYPE_TO_PB
from neoarray.states import CellState, ClusterState, NodeType

OUT_OF_DATE_PB = CELL_TO_PB[CellState.OUT_OF_DATE]
MASTER_PB = NODE_TYPE_TO_PB[NodeType.MASTER]


def serve(servicer, server) -> None:
    """Add the Storage service to a gRPC ``server``."""
    srpc.add_StorageServicer_to_server(servicer, server)


def master_stub(channel):
    """The Master service on ``channel``."""
    return mrpc.MasterStub(channel)


def admin_stub(channel):
    """The Admin service on ``channel`` (the storage role may only read the table)."""
    return mrpc.AdminStub(channel)


def partition_table(admin, timeout_s: float):
    """The master's partition table."""
    return wire.call(admin.GetPartitionTable, cpb.Empty(), timeout_s, "partition table from the master")


def identify(stub, node_id: int, address: str, host: str, last_tid: bytes, last_oid: bytes, ptid: int,
             data_path: str, data_address: str, timeout_s: float, stamp: tuple[int, int] = (0, 0)):
    """Identify as a storage node: the master's ``IdentifyReply`` (the node id, the
    partitions, the cluster view).  ``stamp``: the newest master state stamp recorded."""
    request = mpb.IdentifyRequest(type=NODE_TYPE_TO_PB[NodeType.STORAGE], node_id=node_id,
                                  address=address, host=host, last_tid=last_tid, last_oid=last_oid, ptid=ptid,
                                  data_path=data_path, data_address=data_address,
                                  stamp=cpb.Stamp(epoch=stamp[0], version=stamp[1]))
    return wire.call(stub.Identify, request, timeout_s, "identify")


def heartbeat(stub, node_id: int, replicated, pending, timeout_s: float):
    """A heartbeat: ``replicated``, ``(partition, tid)`` the catch-up reached;
    ``pending``, ``(ttid, client node id, voted, age_s)`` of the transactions held.
    The master's ``HeartbeatReply`` (verdicts, state, ptid, catch-up tasks and rate,
    the master's epoch)."""
    request = mpb.HeartbeatRequest(
        node_id=node_id, replicated=[mpb.ReplicaDone(partition=p, tid=tid) for p, tid in replicated],
        pending=[mpb.PendingTransaction(ttid=t, node_id=n, voted=v, age_s=a) for t, n, v, a in pending])
    return wire.call(stub.Heartbeat, request, timeout_s)


def cluster_state(state_pb) -> ClusterState | None:
    """The cluster state an answer of the master carries (None: unset)."""
    return CLUSTER_STATE_FROM_PB.get(state_pb)
