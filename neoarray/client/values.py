"""The plain values the client's calls take and hand back.

``calls.py`` turns them into the messages of the contract (``proto/``) and the
answers back into them; the link, the reads and the commit driver deal only in
these.  Loads answer a ``LoadAnswer`` (``LoadStatus``); stores carry ``StoreRecord``
(record data travels beside them, as bulk segments); a vote takes a ``Ballot`` and
answers a ``VoteOutcome`` (``VoteStatus``, ``Conflict``); the master's answer to
``FinalTid`` is a ``FinalTid``, to ``Identify`` an ``Identity``.  No I/O.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from ..records import TransactionInfo
from ..views import ClusterView


class LoadStatus(enum.Enum):
    """What a load found: the revision (``FOUND``), a deletion (``DELETED``), no such
    object (``NO_OBJECT``), or none matching the tid asked (``NO_REVISION``)."""
    FOUND = "found"
    DELETED = "deleted"
    NO_OBJECT = "no object"
    NO_REVISION = "no revision"


class LoadAnswer(NamedTuple):
    """One answer to a load, from the network or from a local LMDB (``status`` None:
    a node answered without one)."""
    status: LoadStatus | None
    serial: bytes = b""
    next_serial: bytes | None = None
    data: bytes | None = None
    data_tid: bytes | None = None


class RevisionDigest(NamedTuple):
    """What a storage node holds of one revision, as its checksum: ``checksum`` is the
    xxh3_64 of the data (0 for a deletion), ``blob_bytes`` None when it has no blob."""
    deleted: bool
    checksum: int
    data_tid: bytes | None
    blob_bytes: int | None


class StoreRecord(NamedTuple):
    """A store of ``oid`` based on revision ``serial`` (its data travels beside it):
    ``checksum`` the xxh3_64 of the data; ``data_tid``: the revision whose data an
    undo or restore copies (b"": none); ``blob``: ``(chunks, bytes)`` of the blob
    uploaded for it, or None."""
    oid: bytes
    serial: bytes
    deleted: bool
    checksum: int
    data_tid: bytes = b""
    blob: tuple[int, int] | None = None


@dataclass(slots=True)
class Ballot:
    """A vote of transaction ``ttid`` (of client session ``session``) on one node:
    readCurrent ``checks`` (``(oid, serial)``), the transaction's metadata when the
    node writes it (``meta``), the ``oids`` it must have stored, the last ``stores``
    (``[(StoreRecord, data)]``) it carries, and whether it is the ``only_voter``."""
    ttid: bytes
    session: int
    checks: list[tuple[bytes, bytes]]
    meta: TransactionInfo | None
    oids: list[bytes]
    restore: bool
    stores: list
    only_voter: bool


class VoteStatus(enum.Enum):
    """A node's answer to a vote: voted, conflicts found, or busy (another voted
    transaction holds a lock: retry later)."""
    VOTED = "voted"
    CONFLICTS = "conflicts"
    BUSY = "busy"


class Conflict(NamedTuple):
    """``oid`` was stored (or read, ``read_conflict``) at ``serial`` but ``committed_serial``
    is committed."""
    oid: bytes
    committed_serial: bytes
    serial: bytes
    read_conflict: bool


class VoteOutcome(NamedTuple):
    """A node's answer to a vote: its ``status`` (None: unset), the conflicts, and the
    ttid of the transaction holding the lock when BUSY."""
    status: VoteStatus | None
    conflicts: tuple[Conflict, ...] = ()
    busy_with: bytes = b""


class FinalTid(NamedTuple):
    """The master's word on a transaction: its ``tid`` once committed (b"": not known
    so far), ``not_committed`` when it never will be."""
    tid: bytes
    not_committed: bool


class Identity(NamedTuple):
    """The master's answer to a client identifying: its node id (the session), the
    number of partitions, the master's data plane ("": none) and the cluster view."""
    node_id: int
    partitions: int
    data_address: str
    view: ClusterView
