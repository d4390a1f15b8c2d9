"""The one mapping between the domain states (``neoarray.states``) and the protobuf
enums of the wire (``common.proto``).

Servicers and clients that read or build messages convert here, in both directions,
also the values of ``neoarray.views`` (the partition table, nodes, the cluster view);
the protobuf-keyed tables (``CELL_LETTERS``, ``READABLE_PB``, ...) serve the code
that reads protobuf cells and nodes as they arrive (``neoctl``, the dashboard, the
client's routing).  Every table is derived from the four ``*_TO_PB`` maps below.
"""
from __future__ import annotations

from .proto import common_pb2 as cpb
from .states import READABLE, CellState, ClusterState, NodeState, NodeType
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

# protobuf-keyed views, for code reading messages as they arrive
READABLE_PB = frozenset(CELL_TO_PB[s] for s in READABLE)
CELL_LETTERS = {pb: s.letter for pb, s in CELL_FROM_PB.items()}          # cpb.UP_TO_DATE -> "U"
NODE_STATES = {pb: s.value for pb, s in NODE_STATE_FROM_PB.items()}      # cpb.DOWN -> "DOWN"
CLUSTER_NAMES = {pb: s.value for pb, s in CLUSTER_STATE_FROM_PB.items()}  # cpb.CLUSTER_RUNNING -> "RUNNING"
NODE_TYPES = {pb: t.value for pb, t in NODE_TYPE_FROM_PB.items()}       # cpb.STORAGE -> "STORAGE"
NODE_PREFIX = {pb: t.prefix for pb, t in NODE_TYPE_FROM_PB.items()}     # cpb.STORAGE -> "S"
# a cell change's states for people: a cell that is not there (DISCARDED, unset) is "-"
CHANGE_LETTERS = {**CELL_LETTERS, cpb.DISCARDED: "-", cpb.CELL_STATE_UNSPECIFIED: "-"}


def cell_change_pb(old: str, new: str) -> tuple[int, int]:
    """``(old, new)`` protobuf states of a cell change; ``""`` (no cell) is
    ``CELL_STATE_UNSPECIFIED`` before and ``DISCARDED`` after."""
    return (CELL_TO_PB.get(old, cpb.CELL_STATE_UNSPECIFIED), CELL_TO_PB.get(new, cpb.DISCARDED))


def running_storages(nodes) -> set[int]:
    """Ids of the RUNNING storage nodes among protobuf ``nodes`` (a cluster view)."""
    return {n.node_id for n in nodes if NODE_TYPE_FROM_PB.get(n.type) is NodeType.STORAGE
            and NODE_STATE_FROM_PB.get(n.state) is NodeState.RUNNING}


def is_storage(node) -> bool:
    """A protobuf node of type STORAGE."""
    return NODE_TYPE_FROM_PB.get(node.type) is NodeType.STORAGE


def cell_state(cell) -> CellState | None:
    """The state of a protobuf cell (None: not a cell state, e.g. DISCARDED)."""
    return CELL_FROM_PB.get(cell.state)


def is_master(node) -> bool:
    """A protobuf node of type MASTER."""
    return NODE_TYPE_FROM_PB.get(node.type) is NodeType.MASTER


def node_state(node) -> NodeState | None:
    """The state of a protobuf node (None: unset)."""
    return NODE_STATE_FROM_PB.get(node.state)


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


def cell_change_from_pb(change) -> CellChange:
    """The cell change a ``CellChange`` message describes."""
    return CellChange(change.partition, change.node_id, CELL_FROM_PB.get(change.old_state),
                      CELL_FROM_PB.get(change.new_state))
