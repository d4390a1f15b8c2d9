"""The cluster's vocabulary: cell, node and cluster states and node types.

One spelling for the whole code base.  The members are strings (``str`` enums whose
``str()`` and ``format()`` give the value): the master persists cell states as the
letters below and node types and states as their names (``master/state.py``), so its
state written before these enums existed loads unchanged, and logs and JSON show the
same text as before.  The protobuf enums of the wire are mapped to these in one place,
``neoarray.proto_states``; nothing else spells a state.

Cells (``docs``: DESIGN.md §2): ``UP_TO_DATE`` (read and written), ``OUT_OF_DATE``
(written, catching up by replication), ``FEEDING`` (readable, dropped once its
replacement is up to date), ``CORRUPTED``.  Cluster states: ``RECOVERING`` ->
``VERIFYING`` -> ``RUNNING``, and ``STOPPING``.  Node states: ``RUNNING``,
``PENDING`` (connected, not yet part of the cluster: ``neoctl add``), ``DOWN``,
``UNKNOWN``.  No I/O, no imports of the project.
"""
from __future__ import annotations

import enum


class _Text(str, enum.Enum):
    """A ``str`` enum that prints as its value on every Python version."""
    __str__ = str.__str__
    __format__ = str.__format__


class CellState(_Text):
    UP_TO_DATE = "U"
    OUT_OF_DATE = "O"
    FEEDING = "F"
    CORRUPTED = "C"

    @property
    def letter(self) -> str:
        """``U``, ``O``, ``F`` or ``C``: how tables show it (``neoctl print``)."""
        return self.value


# cells a transaction's data can be read from
READABLE = frozenset({CellState.UP_TO_DATE, CellState.FEEDING})


class NodeState(_Text):
    RUNNING = "RUNNING"
    PENDING = "PENDING"
    DOWN = "DOWN"
    UNKNOWN = "UNKNOWN"


class ClusterState(_Text):
    RECOVERING = "RECOVERING"
    VERIFYING = "VERIFYING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class NodeType(_Text):
    STORAGE = "STORAGE"
    CLIENT = "CLIENT"
    ADMIN = "ADMIN"
    MASTER = "MASTER"

    @property
    def prefix(self) -> str:
        """``S``, ``C``, ``A`` or ``M``: the letter before a node id (``S3``)."""
        return self.value[0]
