"""The calls of replica check and repair (``neoctl check``), at the wire.

The one place where ``neoarray.check`` becomes messages of the contract (``proto/``)
and their answers plain values: the records a copy lists (``CheckedRecord``),
the revisions and blob chunks read from a sound copy (``RecordCopy``,
``BlobChunk``) and transaction rows (``neoarray.records.TransactionInfo``), and what
a repair did to each record (words, ``REPAIR_ACTIONS``); ``check.py`` imports no
protobuf.  Each call takes a storage stub (``AdminClient.storage_stub``), a time
limit and what it is for (named in errors), and raises the domain exceptions of
:func:`neoarray.wire.call`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from . import wire
from .proto import storage_pb2 as spb
from .proto_states import transaction_from_pb, transaction_to_pb
from .records import TransactionInfo

OBJECTS, TRANSACTIONS = "object", "transaction"          # the two tables a copy lists
_TABLES = {OBJECTS: spb.CHECK_OBJECTS, TRANSACTIONS: spb.CHECK_TRANSACTIONS}
# what a repair did to one record, in words
REPAIR_ACTIONS = {spb.RepairOutcome.WRITTEN: "written", spb.RepairOutcome.REPLACED: "replaced",
                  spb.RepairOutcome.UNCHANGED: "unchanged", spb.RepairOutcome.SKIPPED_BUSY: "skipped_busy",
                  spb.RepairOutcome.SKIPPED_BLOB: "skipped: its blob chunks are not sound on this node"}


class CheckedRecord(NamedTuple):
    """A key a copy lists: an object revision (``oid``, ``tid``) or a transaction row
    (``oid`` b""), with its recorded checksum, whether the data on that node matches it
    (``data_ok``), its deletion flag, data tid, size and blob checksum (0: none)."""
    oid: bytes
    tid: bytes
    checksum: int
    data_ok: bool
    deleted: bool
    data_tid: bytes
    data_bytes: int
    blob_checksum: int


class RecordCopy(NamedTuple):
    """Revision ``tid`` of ``oid`` as a sound copy holds it, to write to another: its
    data, checksum, deletion flag, data tid and blob reference (``blob_tid`` b"": none)."""
    oid: bytes
    tid: bytes
    data: bytes
    checksum: int
    deleted: bool
    data_tid: bytes
    blob_tid: bytes
    blob_chunks: int
    blob_bytes: int


class BlobChunk(NamedTuple):
    """A chunk of a blob as a copy holds it (``found`` False: it does not)."""
    found: bool
    blob_tid: bytes
    checksum: int
    data: bytes


def check_records(stub, partition: int, table: str, after: bytes, max_tid: bytes, limit: int,
                  timeout_s: float, what: str) -> tuple[list[CheckedRecord], bytes]:
    """``(at most limit keys of table after after, with tid <= max_tid, in key order;
    the cursor of the next batch, b"" when the partition is done)``."""
    reply = wire.call(stub.CheckRecords, spb.CheckRecordsRequest(
        partition=partition, table=_TABLES[table], after=after, max_tid=max_tid, limit=limit), timeout_s, what)
    return [_checked(r) for r in reply.records], reply.next_after


def held_keys(stub, partition: int, keys: Sequence[bytes], timeout_s: float, what: str) -> set[bytes]:
    """Which object ``keys`` (oid + tid) of ``partition`` the copy holds."""
    reply = wire.call(stub.CheckRecords, spb.CheckRecordsRequest(
        partition=partition, table=spb.CHECK_OBJECTS, keys=keys), timeout_s, what)
    return {r.oid + r.tid for r in reply.records}


def _checked(r) -> CheckedRecord:
    return CheckedRecord(r.oid, r.tid, r.checksum, r.data_ok, r.deleted, r.data_tid, r.data_bytes, r.blob_checksum)


def transactions(stub, partition: int, min_tid: bytes, max_tid: bytes, limit: int, timeout_s: float,
                 what: str) -> list[TransactionInfo]:
    """At most ``limit`` transaction rows of ``partition`` with ``min_tid <= tid <=
    max_tid``, in tid order."""
    reply = wire.call(stub.Transactions, spb.TransactionsRequest(
        partitions=[partition], min_tid=min_tid, max_tid=max_tid, limit=limit), timeout_s, what)
    return [transaction_from_pb(t) for t in reply.transactions]


def revisions(stub, keys: Sequence[tuple[bytes, bytes]], timeout_s: float, what: str) -> list[RecordCopy | None]:
    """Each revision ``(oid, tid)`` of ``keys`` as the copy holds it (a copy of the
    revision the node answered, which may not be ``tid``), or None where it has none."""
    reply = wire.call(stub.LoadMany, spb.LoadManyRequest(
        loads=[spb.LoadRequest(oid=oid, serial=tid) for oid, tid in keys]), timeout_s, what)
    return [RecordCopy(oid, r.serial, r.data, r.checksum, r.status == spb.DELETED, r.data_tid, r.blob_tid,
                       r.blob_chunks, r.blob_bytes) if r.status in (spb.FOUND, spb.DELETED) else None
            for (oid, _), r in zip(keys, reply.loads)]


def blob_chunk(stub, oid: bytes, serial: bytes, index: int, timeout_s: float, what: str) -> BlobChunk:
    """Chunk ``index`` of the blob of revision ``serial`` of ``oid``."""
    chunk = wire.call(stub.LoadBlobChunk, spb.LoadBlobChunkRequest(oid=oid, serial=serial, index=index),
                      timeout_s, what)
    return BlobChunk(chunk.status == spb.FOUND, chunk.blob_tid, chunk.checksum, chunk.data)


def repair_blob_chunk(stub, oid: bytes, blob_tid: bytes, index: int, checksum: int, data: bytes,
                      timeout_s: float, what: str) -> None:
    """Write chunk ``index`` of the blob ``blob_tid`` of ``oid`` (checked against ``checksum``)."""
    wire.call(stub.RepairBlobChunk, spb.RepairBlobChunkRequest(
        oid=oid, blob_tid=blob_tid, index=index, checksum=checksum, data=data), timeout_s, what)


def repair_records(stub, objects: Sequence[RecordCopy], transactions: Sequence[TransactionInfo],
                   timeout_s: float, what: str) -> list[str]:
    """Write ``objects`` and ``transactions`` (one LMDB transaction on the node): what
    it did to each, objects first, in order (``REPAIR_ACTIONS``, "unknown" for an
    action not known here)."""
    request = spb.RepairRecordsRequest(
        objects=[spb.RepairObject(oid=r.oid, tid=r.tid, data=r.data, checksum=r.checksum, deleted=r.deleted,
                                  data_tid=r.data_tid, blob_tid=r.blob_tid, blob_chunks=r.blob_chunks,
                                  blob_bytes=r.blob_bytes) for r in objects],
        transactions=[transaction_to_pb(t) for t in transactions])
    reply = wire.call(stub.RepairRecords, request, timeout_s, what)
    return [REPAIR_ACTIONS.get(outcome.action, "unknown") for outcome in reply.outcomes]
