"""The calls of the admin client (``neoarray/admin.py``), at the wire.

The one place where the master's Admin service (and the storage nodes' listing of
transactions, read by ``count_transactions``) is called with messages of the
contract (``proto/``) and its answers become the plain values of ``neoarray.views``
and ``neoarray.states``; ``admin.py`` and its callers (``neoctl``, ``LocalCluster``,
the dashboard) import no protobuf.  Each function takes the stub to call, a time
limit and ``where`` (the master's address, for messages), and raises the domain
exceptions of :func:`neoarray.wire.call`.
"""
from __future__ import annotations

from collections.abc import Sequence

from . import wire
from .proto import common_pb2 as cpb
from .proto import master_pb2 as mpb
from .proto import master_pb2_grpc as mrpc
from .proto import storage_pb2 as spb
from .proto import storage_pb2_grpc as srpc
from .proto_states import (
    CLUSTER_STATE_FROM_PB,
    CLUSTER_STATE_TO_PB,
    cell_change_from_pb,
    node_from_pb,
    table_from_pb,
)
from .states import ClusterState
from .views import NodeView, ReplicationRates, TableChange, TableView, Truncated

_EMPTY = cpb.Empty()


def admin_stub(channel):
    """The master's Admin service on ``channel``."""
    return mrpc.AdminStub(channel)


def storage_stub(channel):
    """The Storage service of a storage node on ``channel``."""
    return srpc.StorageStub(channel)


def _call(stub, name: str, request, timeout_s: float, where: str):
    return wire.call(getattr(stub, name), request, timeout_s, f"{name} on {where}")


def ids(stub, timeout_s: float, where: str) -> tuple[bytes, bytes, int]:
    """``(last oid, last tid, ptid)`` of the cluster (empty ids: none yet)."""
    r = _call(stub, "GetIds", _EMPTY, timeout_s, where)
    return r.last_oid, r.last_tid, r.ptid


def partition_table(stub, timeout_s: float, where: str) -> TableView:
    """The partition table."""
    return table_from_pb(_call(stub, "GetPartitionTable", _EMPTY, timeout_s, where))


def nodes(stub, timeout_s: float, where: str) -> list[NodeView]:
    """Every node the master knows (clients and admin connections included)."""
    return [node_from_pb(n) for n in _call(stub, "GetNodes", _EMPTY, timeout_s, where).nodes]


def cluster_state(stub, timeout_s: float, where: str) -> ClusterState:
    """The cluster state."""
    return CLUSTER_STATE_FROM_PB[_call(stub, "GetClusterState", _EMPTY, timeout_s, where).state]


def set_cluster_state(stub, state: ClusterState, timeout_s: float, where: str) -> ClusterState:
    """Ask for ``state`` (RUNNING or STOPPING): the state after the change."""
    request = mpb.SetClusterStateRequest(state=CLUSTER_STATE_TO_PB[state])
    return CLUSTER_STATE_FROM_PB[_call(stub, "SetClusterState", request, timeout_s, where).state]


def add_nodes(stub, node_ids: Sequence[int], everyone: bool, timeout_s: float, where: str) -> list[int]:
    """Let PENDING storage nodes join (``everyone``: all of them): the ids added."""
    request = mpb.AddNodesRequest(node_ids=list(node_ids), all=everyone)
    return list(_call(stub, "AddNodes", request, timeout_s, where).node_ids)


def _table_change(reply) -> TableChange:
    return TableChange(table_from_pb(reply.pt), tuple(cell_change_from_pb(c) for c in reply.changes))


def tweak(stub, exclude: Sequence[int], dry_run: bool, timeout_s: float, where: str) -> TableChange:
    """Spread the cells evenly, emptying the nodes ``exclude`` (``dry_run``: plan only)."""
    request = mpb.TweakRequest(exclude_node_ids=list(exclude), dry_run=dry_run)
    return _table_change(_call(stub, "Tweak", request, timeout_s, where))


def drop_node(stub, node_id: int, timeout_s: float, where: str) -> TableChange:
    """Remove storage node ``node_id`` and its cells from the cluster."""
    return _table_change(_call(stub, "DropNode", mpb.NodeRequest(node_id=node_id), timeout_s, where))


def kill_node(stub, node_id: int, timeout_s: float, where: str) -> None:
    """Ask storage node ``node_id`` to shut down."""
    _call(stub, "KillNode", mpb.NodeRequest(node_id=node_id), timeout_s, where)


def set_replicas(stub, replicas: int, timeout_s: float, where: str) -> TableChange:
    """Set the number of extra copies wanted of each partition (``tweak`` applies it)."""
    return _table_change(_call(stub, "SetReplicas", mpb.SetReplicasRequest(replicas=replicas), timeout_s, where))


def truncate(stub, tid: bytes, timeout_s: float, where: str) -> Truncated:
    """Delete every transaction after ``tid`` on every storage node."""
    r = _call(stub, "Truncate", mpb.TruncateRequest(tid=tid), timeout_s, where)
    return Truncated(r.tid, r.last_tid_before, r.transactions_removed, r.revisions_removed)


def set_replication_rate(stub, bytes_per_s: int, node_ids: Sequence[int], timeout_s: float,
                         where: str) -> ReplicationRates:
    """Set the catch-up rate of ``node_ids`` (none: every node, and those joining later)."""
    request = mpb.SetReplicationRateRequest(bytes_per_s=bytes_per_s, node_ids=list(node_ids))
    r = _call(stub, "SetReplicationRate", request, timeout_s, where)
    return ReplicationRates(dict(r.rates), r.default_bytes_per_s if r.default_set else None)


def transaction_tids(storage, partitions: Sequence[int], min_tid: bytes, max_tid: bytes, limit: int,
                     timeout_s: float, what: str) -> list[bytes]:
    """The tids of at most ``limit`` transactions of ``partitions`` with ``min_tid <=
    tid <= max_tid`` on a storage node, in tid order."""
    request = spb.TransactionsRequest(partitions=list(partitions), min_tid=min_tid, max_tid=max_tid, limit=limit)
    return [t.tid for t in wire.call(storage.Transactions, request, timeout_s, what).transactions]
