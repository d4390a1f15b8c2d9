"""The decisions of ``neoarray import``, without I/O: where an import starts, what a
copied transaction must look like on the target, and the figures it reports.

Where it starts (:func:`start_after`).  An empty target (last tid z64) gets the
source from its first transaction.  A target that holds transactions continues only
its own earlier import of this source: its first and last tids must be transactions
of the source (the shell also compares the last one record by record, it may have
been committed by a run killed before it verified it); then the import goes on
after the last one.  Anything else is refused, saying what is there and what to do.

What is verified (:class:`TransactionDigest`, :func:`differences`).  For each source
transaction the shell builds a digest while it restores it: user, description and
extension bytes, and per record the oid, whether it is a deletion, the xxh3_64 of its
data (the checksum the storage nodes record and verify on every store and load),
the tid its data comes from (``data_txn``: undo and restore back-pointers) and the
size of its blob.  After ``tpc_finish`` it reads the transaction's metadata and its
revisions back from the storage nodes, past the client's cache (a node's record data
checked against its checksum on the way), and compares: a digest is a few dozen
bytes per record, and the read back costs one request per node per transaction.
Blob bytes are checked chunk by chunk by the nodes as they arrive (each chunk's
xxh3_64, computed by the client from the bytes it read from the source file), and
their total size here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ZODB.TimeStamp import TimeStamp

from ..errors import NeoError
from ..ids import Z64


class ImportRefused(NeoError):
    """The target cannot take this import: it says what is there and what to do."""


class VerificationFailed(NeoError):
    """A transaction on the target differs from the source's."""


@dataclass(frozen=True)
class RecordDigest:
    oid: bytes
    deleted: bool
    checksum: int               # xxh3_64 of the data; 0 for a deletion
    data_tid: bytes | None      # the revision the data comes from (undo, restore)
    blob_bytes: int | None      # None: no blob


@dataclass(frozen=True)
class TransactionDigest:
    tid: bytes
    user: bytes
    description: bytes
    extension: bytes
    records: tuple[RecordDigest, ...]

    @property
    def oids(self) -> list[bytes]:
        return [r.oid for r in self.records]


def tid_text(tid: bytes | None) -> str:
    """``0x<16 hex digits> (date UTC)``, as an operator reads a tid."""
    if tid is None or tid == Z64:
        return "none"
    return f"0x{tid.hex()} ({TimeStamp(tid)} UTC)"


def start_after(target_last: bytes, target_first: bytes | None, source_has_last: bool,
                source_has_first: bool) -> bytes | None:
    """The tid after which the import starts (None: from the source's first
    transaction), or ``ImportRefused``.

    ``target_last``: the target's last committed tid (z64: empty); ``target_first``
    its first one; ``source_has_last`` / ``source_has_first``: whether the source has
    a transaction with exactly those tids."""
    if target_last == Z64:
        return None
    if not source_has_last:
        raise ImportRefused(
            f"the target cluster is not empty: its last transaction is {tid_text(target_last)}, and the source "
            f"has no transaction with that tid, so the target is not an earlier import of this source. "
            f"Import into an empty cluster (a new directory: neoarray cluster up NEWDIR), or give the source "
            f"this cluster was imported from")
    if not source_has_first:
        raise ImportRefused(
            f"the target cluster is not empty and its first transaction {tid_text(target_first)} is not in the "
            f"source (its last one {tid_text(target_last)} is): it holds transactions of its own besides an "
            f"import of this source. Import into an empty cluster (neoarray cluster up NEWDIR)")
    return target_last


def differences(expected: TransactionDigest, meta, revisions: dict, shown_max: int = 5) -> list[str]:
    """What differs between ``expected`` and what the target holds: ``meta`` its
    transaction metadata (``user_raw``, ``description``, ``extension``, ``oids``;
    None: absent), ``revisions`` ``{oid: RevisionDigest}``.  Empty: identical.  At
    most ``shown_max`` record differences are listed, then a count."""
    if meta is None:
        return [f"transaction {tid_text(expected.tid)} is not on the target"]
    out = []
    for name, mine, theirs in (("user", expected.user, meta.user_raw),
                               ("description", expected.description, meta.description),
                               ("extension", expected.extension, meta.extension)):
        if mine != theirs:
            out.append(f"{name}: source {mine[:60]!r}, target {theirs[:60]!r}")
    if set(meta.oids) != set(expected.oids):
        out.append(f"objects: the source's transaction has {len(expected.oids)}, the target's "
                   f"{len(meta.oids)} ({len(set(expected.oids) ^ set(meta.oids))} differ)")
    bad = [line for r in expected.records if (line := _record_difference(r, revisions.get(r.oid)))]
    out += bad[:shown_max]
    if len(bad) > shown_max:
        out.append(f"... and {len(bad) - shown_max} more records")
    return out


def _record_difference(mine: RecordDigest, theirs) -> str | None:
    where = f"oid 0x{mine.oid.hex()}"
    if theirs is None:
        return f"{where}: no revision on the target"
    if mine.deleted != theirs.deleted:
        return f"{where}: {'a deletion' if mine.deleted else 'data'} in the source, " \
               f"{'a deletion' if theirs.deleted else 'data'} on the target"
    if mine.checksum != theirs.checksum:
        return f"{where}: data checksum {mine.checksum:016x} in the source, {theirs.checksum:016x} on the target"
    if (mine.data_tid or None) != (theirs.data_tid or None):
        return f"{where}: data of {tid_text(mine.data_tid)} in the source, of {tid_text(theirs.data_tid)} on the target"
    if mine.blob_bytes != theirs.blob_bytes:
        return f"{where}: a blob of {mine.blob_bytes} bytes in the source, {theirs.blob_bytes} on the target"
    return None


def lag_s(tid: bytes, now_s: float | None = None) -> float:
    """Seconds between the commit of ``tid`` in the source and ``now_s``: how far
    behind the source an import is while it copies ``tid`` (never negative)."""
    return max(0.0, (time.time() if now_s is None else now_s) - TimeStamp(tid).timeTime())


@dataclass
class Totals:
    """What an import copied: counts, bytes (record data and blobs) and its time."""
    transactions: int = 0
    records: int = 0
    data_bytes: int = 0
    blobs: int = 0
    blobs_missing: int = 0      # blob records whose blob file the source lacks (copied without)
    elapsed_s: float = 0.0

    def add(self, digest: TransactionDigest, nbytes: int) -> None:
        self.transactions += 1
        self.records += len(digest.records)
        self.data_bytes += nbytes
        self.blobs += sum(1 for r in digest.records if r.blob_bytes is not None)

    def rates(self) -> tuple[float, float]:
        """(transactions/s, MB/s)."""
        if self.elapsed_s <= 0:
            return 0.0, 0.0
        return self.transactions / self.elapsed_s, self.data_bytes / 1e6 / self.elapsed_s

    def summary(self) -> str:
        tps, mbps = self.rates()
        missing = f", {self.blobs_missing} blob records without their blob in the source" if self.blobs_missing else ""
        return (f"{self.transactions} transactions, {self.records} records, {self.blobs} blobs, "
                f"{self.data_bytes / 1e6:.1f} MB in {self.elapsed_s:.1f} s ({tps:.1f} transactions/s, "
                f"{mbps:.2f} MB/s){missing}")
