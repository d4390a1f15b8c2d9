"""The one mapping between the domain states (``neoarray.states``) and the protobuf
enums of the wire (``common.proto``).

Servicers and clients that read or build messages convert here, in both directions,
also the values of ``neoarray.views`` (the partition table, nodes, the cluster view)
and transaction rows (``neoarray.records.TransactionInfo``).  Every table is derived
from the four ``*_TO_PB`` maps below.
"""
from __future__ import annotations

from .proto import common_pb2 as cpb
from .records import TransactionInfo
from .states import CellState, ClusterState, NodeState, NodeType
from .views import Cell, CellChange, ClusterView, NodeView, Row, TableView

CELL_TO_PB = {CellState.UP_TO_DATE: cpb.UP_TO_DATE, CellState.OUT_OF_DATE: cpb.OUT_OF_DATE,
              CellState.FEEDING: cpb.FEEDING, CellState.CORRUPTED: cpb.CORRUPTED}
NODE_STATE_TO_PB = {NodeState.RUNNING: cpb.RUNNING, NodeState.PENDING: cpb.PENDING,
                    NodeState.DOWN: cpb.DOWN, NodeState.UNKNOWN: cpb.UNKNOWN}
CLUSTER_STATE_TO_PB = {ClusterState.RECOVERING: cpb.RECOVERING, ClusterState.VERIFYING: cpb.VERIFYING,
                       ClusterState.RUNNING: cpb.CLUSTER_RUNNING, ClusterState.STOPPING: cpb.STOPPING}
NODE_TYPE_TO_PB = {NodeType.STORAGE: cpb.STORAGE, NodeType.CLIENT: cpb.CLIENT,
                   NodeType.ADMIN: cpb.ADMIN, NodeType.MASTER: cpb.MASTER}

CELL_FROM_PB = {v: k for k, v in CELL_TO_PB.items()}
NODE_STATE_FROM_PB = {v: k for k, v in NODE_STATE_TO_PB.items()}
CLUSTER_STATE_FROM_PB = {v: k for k, v in CLUSTER_STATE_TO_PB.items()}
NODE_TYPE_FROM_PB = {v: k for k, v in NODE_TYPE_TO_PB.items()}


def cell_change_pb(old: str, new: str) -> tuple[int, int]:
    """``(old, new)`` protobuf states of a cell change; ``""`` (no cell) is
    ``CELL_STATE_UNSPECIFIED`` before and ``DISCARDED`` after."""
    return (CELL_TO_PB.get(old, cpb.CELL_STATE_UNSPECIFIED), CELL_TO_PB.get(new, cpb.DISCARDED))


# -- the values of neoarray.views ------------------------------------------------------------
def table_to_pb(table: TableView) -> cpb.PartitionTable:
    """The message of a partition table."""
    return cpb.PartitionTable(ptid=table.ptid, replicas=table.replicas, rows=[
        cpb.PartitionRow(cells=[cpb.Cell(node_id=c.node_id, state=CELL_TO_PB[c.state]) for c in row.cells])
        for row in table.rows])


def table_from_pb(table: cpb.PartitionTable) -> TableView:
    """The partition table a message carries (cells of an unknown state left out)."""
    return TableView(table.ptid, table.replicas, tuple(
        Row(tuple(Cell(c.node_id, CELL_FROM_PB[c.state]) for c in row.cells if c.state in CELL_FROM_PB))
        for row in table.rows))


def node_to_pb(node: NodeView) -> cpb.Node:
    """The message of a node."""
    return cpb.Node(node_id=node.node_id, type=NODE_TYPE_TO_PB[node.type], address=node.address,
                    state=NODE_STATE_TO_PB[node.state], host=node.host, state_since=node.state_since,
                    data_path=node.data_path, data_address=node.data_address)


def node_from_pb(node: cpb.Node) -> NodeView:
    """The node a message describes (an unset state is UNKNOWN)."""
    return NodeView(node.node_id, NODE_TYPE_FROM_PB[node.type], node.address,
                    NODE_STATE_FROM_PB.get(node.state, NodeState.UNKNOWN), node.host, node.state_since,
                    node.data_path, node.data_address)


def cluster_info_to_pb(view: ClusterView) -> cpb.ClusterInfo:
    """The message of a cluster view."""
    return cpb.ClusterInfo(state=CLUSTER_STATE_TO_PB[view.state], pt=table_to_pb(view.table),
                           nodes=[node_to_pb(n) for n in view.nodes], last_tid=view.last_tid,
                           last_oid=view.last_oid)


def cluster_info_from_pb(info: cpb.ClusterInfo) -> ClusterView:
    """The cluster view a message carries (the master's events, its answer to a
    client identifying); an unset cluster state is None."""
    return ClusterView(CLUSTER_STATE_FROM_PB.get(info.state), table_from_pb(info.pt),
                       tuple(node_from_pb(n) for n in info.nodes), info.last_tid, info.last_oid)


def cell_change_from_pb(change) -> CellChange:
    """The cell change a ``CellChange`` message describes."""
    return CellChange(change.partition, change.node_id, CELL_FROM_PB.get(change.old_state),
                      CELL_FROM_PB.get(change.new_state))


# -- transaction rows -----------------------------------------------------------------------
def transaction_to_pb(t: TransactionInfo) -> cpb.TransactionMeta:
    """The message of a transaction row (a node's answer, a copy to write elsewhere)."""
    return cpb.TransactionMeta(tid=t.tid, user_raw=t.user, description=t.description, extension=t.extension,
                               oids=t.oids, packed=t.packed, ttid=t.ttid)


def transaction_from_pb(m: cpb.TransactionMeta) -> TransactionInfo:
    """The transaction row a message carries."""
    return TransactionInfo(m.tid, m.user_raw, m.description, m.extension, list(m.oids), m.ttid, m.packed)
