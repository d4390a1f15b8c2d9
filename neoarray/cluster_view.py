"""The cluster as the master shows it, in domain values.

A ``ClusterView`` is what a client (``neoarray.client.link``) or ``neoctl check``
reads of the cluster: its state, the partition table (a row of ``Cell`` per
partition, index = partition) and its nodes (``Node``); an ``Invalidation`` is the
other event of the master's stream, a committed transaction's oids.  The states are
``neoarray.states`` members, None for one the wire carries unset (or a cell the master
discards).  Plain values, no I/O: the wire's messages become these in one place,
``neoarray.proto_states``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .states import CellState, ClusterState, NodeState, NodeType


class Node(NamedTuple):
    """A node of the cluster: its id, type, state and addresses (``address``: its
    gRPC server, ``data_address``: its framed data plane, "" if none), the host it
    reports and, for a storage node, its LMDB directory (``data_path``)."""
    node_id: int
    type: NodeType | None
    state: NodeState | None
    address: str = ""
    data_address: str = ""
    host: str = ""
    data_path: str = ""


class Cell(NamedTuple):
    """A copy of a partition: the node holding it and its state."""
    node_id: int
    state: CellState | None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster's state, partition table (``rows[partition]``: its cells; ``ptid``
    increases with every change), nodes, and the last tid and oid the master gave."""
    state: ClusterState | None
    ptid: int
    rows: tuple[tuple[Cell, ...], ...]
    nodes: tuple[Node, ...]
    last_tid: bytes = b""
    last_oid: bytes = b""

    def storage_nodes(self) -> dict[int, Node]:
        """The storage nodes, by id."""
        return {n.node_id: n for n in self.nodes if n.type is NodeType.STORAGE}

    def running_storages(self) -> set[int]:
        """Ids of the RUNNING storage nodes."""
        return {n.node_id for n in self.nodes if n.type is NodeType.STORAGE and n.state is NodeState.RUNNING}


class Invalidation(NamedTuple):
    """Transaction ``tid`` (temporary id ``ttid``) committed: ``oids`` changed."""
    tid: bytes
    ttid: bytes
    oids: list[bytes]
