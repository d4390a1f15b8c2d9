"""The cluster as the master shows it: plain values, on both sides of the wire.

The master builds these (``master/node.py``) and its servicers and calls turn them
into messages; the admin client (``neoarray/admin.py``) reads the master's answers
into them, so ``neoctl``, ``LocalCluster`` and the tests work with
``neoarray.states`` members, never protobuf.  The conversions are in one place,
``neoarray.proto_states``.  No I/O; immutable values (a table or a node list is a
snapshot taken under the master's lock).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from .states import READABLE, CellState, ClusterState, NodeState, NodeType


class Cell(NamedTuple):
    """One copy of a partition: the storage node holding it and its state."""
    node_id: int
    state: CellState


class Row(NamedTuple):
    """The cells of one partition, ordered by node id."""
    cells: tuple[Cell, ...]

    def readable(self) -> list[int]:
        """Ids of the nodes whose cell can be read (UP_TO_DATE or FEEDING)."""
        return [c.node_id for c in self.cells if c.state in READABLE]


@dataclass(frozen=True, slots=True)
class TableView:
    """The partition table: ``rows[p]``, the row of partition ``p``; ``ptid``
    increases with every change; ``replicas``: extra copies wanted of each partition."""
    ptid: int
    replicas: int
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node of the cluster: its id, type, gRPC address (``""`` for clients) and
    state; ``state_since`` is the unix time of its last change of state; storages also
    give their LMDB directory (``data_path``) and framed data plane (``data_address``)."""
    node_id: int
    type: NodeType
    address: str = ""
    state: NodeState = NodeState.UNKNOWN
    host: str = ""
    state_since: float = 0.0
    data_path: str = ""
    data_address: str = ""

    @property
    def name(self) -> str:
        """``S3``, ``C7``, ...: the type's letter and the id, as logs and tables show it."""
        return f"{self.type.prefix}{self.node_id}"


def running_storages(nodes: Iterable[NodeView]) -> set[int]:
    """Ids of the RUNNING storage nodes among ``nodes``."""
    return {n.node_id for n in nodes if n.type is NodeType.STORAGE and n.state is NodeState.RUNNING}


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What clients and storage nodes work from: the cluster state, the partition
    table, the storage and master nodes, and the last ids acknowledged."""
    state: ClusterState
    table: TableView
    nodes: tuple[NodeView, ...]
    last_tid: bytes
    last_oid: bytes


class Invalidation(NamedTuple):
    """A transaction committed (``tid``; ``ttid``, its temporary id) changed ``oids``."""
    tid: bytes
    ttid: bytes
    oids: list[bytes]


class ReplicaTask(NamedTuple):
    """A storage node's catch-up of ``partition`` up to ``until_tid``, copied from the
    ``sources``, ``(node id, address)`` of the nodes holding a readable copy."""
    partition: int
    until_tid: bytes
    sources: tuple[tuple[int, str], ...]


class CellChange(NamedTuple):
    """A cell of ``partition`` on ``node_id`` changed from ``old`` to ``new`` (None:
    no cell, before it was added or after it was dropped)."""
    partition: int
    node_id: int
    old: CellState | None
    new: CellState | None


class TableChange(NamedTuple):
    """The partition table after an administrative change and the cells it changed."""
    table: TableView
    changes: tuple[CellChange, ...]


class Truncated(NamedTuple):
    """What ``neoctl truncate`` did: the cluster truncated to ``tid`` (the last tid was
    ``last_tid_before``), and the records removed over all storage nodes."""
    tid: bytes
    last_tid_before: bytes
    transactions_removed: int
    revisions_removed: int


class ReplicationRates(NamedTuple):
    """Catch-up rates in bytes per second (0: unlimited): ``rates``, by storage node id;
    ``default_bytes_per_s``, of nodes joining later (None: not set)."""
    rates: dict[int, int]
    default_bytes_per_s: int | None
