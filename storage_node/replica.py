"""The values a catch-up exchanges (``storage_node/replication.py``): what a node asks
a readable copy for and what it gets, as plain values; ``storage_node/calls.py`` and the
servicer turn them into messages of the contract (``proto/``) and back."""
from __future__ import annotations

from dataclasses import dataclass, field

from neoarray.records import BlobRef, TransactionInfo

TRANSACTIONS, OBJECTS = 1, 2     # the tables copied: ``trans`` (keys: tids), ``obj`` (oid + tid)


@dataclass(frozen=True, slots=True)
class KeysQuery:
    """Keys of ``table`` in ``partition`` with ``min_tid < tid <= max_tid``, after the
    cursor ``after`` (a key of ``table``), at most ``keys_max`` (0: the node's bound)."""
    partition: int
    table: int
    max_tid: bytes
    min_tid: bytes = b""
    after: bytes = b""
    keys_max: int = 0


@dataclass(frozen=True, slots=True)
class KeysBatch:
    """A batch of keys, ascending; ``next_after`` the cursor of the next one (empty: done)."""
    keys: list[bytes]
    next_after: bytes = b""


@dataclass(frozen=True, slots=True)
class RecordsQuery:
    """The records of ``keys`` (of ``table`` in ``partition``, ascending), up to
    ``bytes_max`` of data (0: the node's bound; at least one record)."""
    partition: int
    table: int
    keys: list[bytes]
    bytes_max: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaObject:
    """One revision copied: its data (None: a deletion), as recorded, and its blob."""
    oid: bytes
    tid: bytes
    data: bytes | None
    checksum: int
    data_tid: bytes | None = None
    blob: BlobRef | None = None


@dataclass(slots=True)
class RecordsBatch:
    """The answer to a :class:`RecordsQuery`: the first ``keys_done`` keys are answered
    (sent, or gone since they were listed: packed)."""
    transactions: list[TransactionInfo] = field(default_factory=list)
    objects: list[ReplicaObject] = field(default_factory=list)
    keys_done: int = 0

    def data_bytes(self) -> int:
        """The bytes of the batch's data and transaction descriptions."""
        return (sum(len(o.data or b"") for o in self.objects)
                + sum(len(t.user) + len(t.description) + len(t.extension) + 8 * (len(t.oids) + 2)
                      for t in self.transactions))
