"""Replica check and repair on one node: listings to compare copies, and rewrites.

``neoctl check`` compares the copies of a partition held by different nodes.  Each
node lists its keys in bounded batches (``list_objects``, ``list_transactions``):
for an object revision its recorded checksum, deletion flag and data tid, and whether
the data stored here still matches the checksum (``data_ok``: bit rot, a data row
gone); for a transaction row the xxh3_64 of the row and whether it decodes.  Nothing
but the verdict leaves the node, so a check moves keys, not data.

``repair_records`` rewrites records from a good copy, in one LMDB transaction:

- every data is verified against its checksum before anything is written (a mismatch
  refuses the whole request: ``ChecksumError``);
- a record already identical and sound is left alone (``UNCHANGED``);
- revisions of an oid locked by a voted transaction, and revisions or transaction
  rows of a tid locked but not yet unlocked, are skipped (``SKIPPED_BUSY``): a repair
  never changes what a two-phase commit in progress compares or writes;
- a blob record is written only when its chunks are all sound on the node
  (``SKIPPED_BLOB`` otherwise): ``neoctl check --repair`` copies them first, one
  ``RepairBlobChunk`` at a time;
- large data goes to a fresh ``data`` row, never over the row an old record refers
  to: a corrupted record may point at another record's row.  The old row is deleted
  only when no record of the partition and no store in progress refers to it any
  more (one scan of the partition's records, only when such a row exists).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack

from neoarray.errors import ChecksumError
from neoarray.ids import p64, u64
from neoarray.records import (
    CHUNK_HEAD,
    DATA_KEY_BYTES,
    DELETED,
    HAS_BLOB,
    HAS_DATA_TID,
    IN_DATA_TABLE,
    PARTITION,
    RECORD_HEAD,
    VOTED_HEAD,
    BlobRef,
    TransactionInfo,
    checksum,
    pack_meta,
    record_blob,
    record_tail,
)

_KNOWN_FLAGS = DELETED | HAS_DATA_TID | IN_DATA_TABLE | HAS_BLOB
_OID_TID_BYTES = 16
WRITTEN, REPLACED, UNCHANGED, SKIPPED_BUSY = "written", "replaced", "unchanged", "skipped_busy"
SKIPPED_BLOB = "skipped_blob"


@dataclass(frozen=True)
class CheckedRecord:
    """One key of a listing: what a copy holds, and whether its data verifies."""
    oid: bytes              # b"" for transaction rows
    tid: bytes
    checksum: int
    data_ok: bool
    deleted: bool = False
    data_tid: bytes | None = None
    data_bytes: int = 0
    blob_checksum: int = 0      # a blob: xxh3_64 of its key tid and its chunks' checksums


@dataclass(frozen=True)
class RepairRevision:
    """An object revision to write as it is on a good copy (``data`` None: deletion)."""
    oid: bytes
    tid: bytes
    data: bytes | None
    checksum: int
    data_tid: bytes | None = None
    blob: BlobRef | None = None     # written only when its chunks are already sound here


# -- listings --------------------------------------------------------------------------

def _start(pk: bytes, after: bytes | None) -> bytes:
    """First key after the exclusive cursor ``after`` in partition ``pk``."""
    return pk + after + b"\0" if after else pk


def list_objects(backend, partition: int, after: bytes | None, max_tid: bytes | None,
                 keys_max: int, bytes_max: int) -> tuple[list[CheckedRecord], bytes | None]:
    """Revisions of ``partition`` after the cursor ``after`` (oid + tid), with
    ``tid <= max_tid``; at most ``keys_max`` keys scanned and about ``bytes_max``
    bytes of data read.  Returns the records and the next cursor (None: done)."""
    pk = PARTITION.pack(partition)
    out, scanned, read_bytes = [], 0, 0
    with backend.kv.read(buffers=True) as txn:
        for key, value in txn.scan("obj", _start(pk, after), pk + b"\xff" * (_OID_TID_BYTES + 1)):
            scanned += 1
            if max_tid is None or key[12:20] <= max_tid:
                rec = _checked_object(txn, key, value)
                out.append(rec)
                read_bytes += rec.data_bytes
            if scanned >= keys_max or read_bytes >= bytes_max:
                return out, key[4:20]
    return out, None


def lookup_objects(backend, partition: int, keys: list[bytes]) -> list[CheckedRecord]:
    """The revisions among ``keys`` (oid + tid, of ``partition``) that this node holds,
    data not read (``data_ok`` True): whether a transaction's objects are all there."""
    pk = PARTITION.pack(partition)
    out = []
    with backend.kv.read(buffers=True) as txn:
        for key in keys:
            value = txn.get("obj", pk + key)
            if value is None:
                continue
            flags, crc = RECORD_HEAD.unpack_from(value) if len(value) >= RECORD_HEAD.size else (0, 0)
            out.append(CheckedRecord(key[:8], key[8:16], crc, True, bool(flags & DELETED)))
    return out


def _checked_object(txn, key: bytes, value) -> CheckedRecord:
    oid, tid = key[4:12], key[12:20]
    try:
        flags, crc = RECORD_HEAD.unpack_from(value)
    except struct.error:
        return CheckedRecord(oid, tid, 0, False)
    data_tid, data_key, start = record_tail(flags, value, RECORD_HEAD.size)
    deleted = bool(flags & DELETED)
    if flags & ~_KNOWN_FLAGS or start > len(value) or (deleted and len(value) != start):
        return CheckedRecord(oid, tid, crc, False, deleted, data_tid)
    if deleted:
        return CheckedRecord(oid, tid, crc, True, True, data_tid)
    data = value[start:] if data_key is None else txn.get("data", data_key)
    if data is None:
        return CheckedRecord(oid, tid, crc, False, False, data_tid)
    blob_ok, blob_crc, blob_bytes = _checked_blob(txn, bytes(key[:4]), oid, record_blob(flags, value, RECORD_HEAD.size))
    return CheckedRecord(oid, tid, crc, checksum(data) == crc and blob_ok, False, data_tid,
                         len(data) + blob_bytes, blob_crc)


def _checked_blob(txn, pk: bytes, oid: bytes, blob: BlobRef | None) -> tuple[bool, int, int]:
    """``(sound, blob checksum, bytes)`` of the chunks of ``blob`` (partition key ``pk``):
    every chunk there, in order, matching its checksum, and the sizes the record says."""
    if blob is None:
        return True, 0, 0
    sums, nbytes, sound = [blob.key_tid], 0, True
    prefix = pk + oid + blob.key_tid
    for index, (key, value) in enumerate(txn.scan("blob", prefix, prefix + b"\xff" * 5)):
        (crc,) = CHUNK_HEAD.unpack_from(value)
        sound = sound and int.from_bytes(key[-4:], "big") == index and checksum(value[CHUNK_HEAD.size:]) == crc
        sums.append(bytes(value[:CHUNK_HEAD.size]))
        nbytes += len(value) - CHUNK_HEAD.size
    sound = sound and len(sums) - 1 == blob.chunks and nbytes == blob.nbytes
    return sound, checksum(b"".join(sums)), nbytes


def list_transactions(backend, partition: int, after: bytes | None, max_tid: bytes | None,
                      keys_max: int) -> tuple[list[CheckedRecord], bytes | None]:
    """Transaction rows of ``partition`` after the cursor ``after`` (a tid), with
    ``tid <= max_tid``, at most ``keys_max``; returns them and the next cursor."""
    pk = PARTITION.pack(partition)
    stop = pk + p64(u64(max_tid) + 1) if max_tid and max_tid != b"\xff" * 8 else pk + b"\xff" * 9
    out = []
    with backend.kv.read() as txn:
        for key, value in txn.scan("trans", _start(pk, after), stop):
            out.append(CheckedRecord(b"", key[4:12], checksum(value), _meta_decodes(value),
                                     data_bytes=len(value)))
            if len(out) >= keys_max:
                return out, key[4:12]
    return out, None


def _meta_decodes(raw: bytes) -> bool:
    try:
        doc = msgpack.unpackb(raw)
    except Exception:  # noqa: BLE001 (msgpack raises several kinds on garbage)
        return False
    return isinstance(doc, list) and len(doc) == 6


# -- repair ----------------------------------------------------------------------------

def verify(objects: list[RepairRevision]) -> None:
    """ChecksumError naming the first revision whose data does not match its checksum."""
    for r in objects:
        if r.data is not None and checksum(r.data) != r.checksum:
            raise ChecksumError(f"repair of oid 0x{r.oid.hex()} at tid 0x{r.tid.hex()} refused: "
                                f"its data does not match its checksum")


def repair_records(backend, objects: list[RepairRevision], transactions: list[TransactionInfo],
                   busy_oids: set, locked_tids: set) -> tuple[list[tuple[bytes, bytes, str]], int]:
    """Write ``objects`` and ``transactions`` in one LMDB transaction (see the module
    docstring); returns ``[(oid or b"", tid, action)]`` in request order, objects first,
    and the number of data rows dropped.  Durable on return."""
    verify(objects)
    outcomes, old_rows, next_ids = [], set(), {}
    with backend.kv.write() as txn:
        for r in objects:
            if r.oid in busy_oids or r.tid in locked_tids:
                outcomes.append((r.oid, r.tid, SKIPPED_BUSY))
                continue
            outcomes.append((r.oid, r.tid, _write_revision(backend, txn, r, old_rows, next_ids)))
        for t in transactions:
            outcomes.append((b"", t.tid, SKIPPED_BUSY if t.tid in locked_tids
                             else _write_transaction(backend, txn, t)))
        dropped = _drop_unreferenced(txn, old_rows)
        written = [(oid, tid) for oid, tid, action in outcomes if action in (WRITTEN, REPLACED)]
        if written:
            backend._raise_last(txn, max(tid for _, tid in written), [o for o, _ in written if o])
    backend.kv.sync()
    return outcomes, dropped


def _write_revision(backend, txn, r: RepairRevision, old_rows: set, next_ids: dict) -> str:
    key = backend._okey(r.oid) + r.tid
    old = txn.get("obj", key)
    if old is not None and _same_and_sound(txn, key, old, r):
        return UNCHANGED
    if r.blob is not None and not _checked_blob(txn, key[:4], r.oid, r.blob)[0]:
        return SKIPPED_BLOB         # its chunks would have to come too: not carried yet
    flags, body = backend.record_body(txn, r.oid, r.data, r.data_tid, next_ids, r.blob)
    txn.put("obj", key, RECORD_HEAD.pack(flags, r.checksum) + body)
    if old is None:
        return WRITTEN
    old_key = _data_key_of(old)
    if old_key is not None and old_key[:4] == key[:4]:
        old_rows.add(old_key)
    return REPLACED


def _data_key_of(value) -> bytes | None:
    """The data key a record (possibly corrupted) refers to, if it holds a whole one."""
    if len(value) < RECORD_HEAD.size or not value[0] & IN_DATA_TABLE:
        return None
    _, data_key, start = record_tail(value[0], value, RECORD_HEAD.size)
    return data_key if start <= len(value) and len(data_key) == DATA_KEY_BYTES else None


def _same_and_sound(txn, key: bytes, old, r: RepairRevision) -> bool:
    rec = _checked_object(txn, key, old)
    if not rec.data_ok or rec.deleted != (r.data is None) or rec.checksum != r.checksum:
        return False
    if rec.data_tid != r.data_tid:
        return False
    if (record_blob(old[0], old, RECORD_HEAD.size) if len(old) > RECORD_HEAD.size else None) != r.blob:
        return False
    if r.data is None:
        return True
    _, data_key, start = record_tail(old[0], old, RECORD_HEAD.size)
    data = old[start:] if data_key is None else txn.get("data", data_key)
    return bytes(data) == r.data


def _write_transaction(backend, txn, t: TransactionInfo) -> str:
    key = PARTITION.pack(backend.partition(t.tid)) + t.tid
    row = msgpack.packb(pack_meta(t))
    old = txn.get("trans", key)
    if old == row:
        return UNCHANGED
    txn.put("trans", key, row)
    return WRITTEN if old is None else REPLACED


def _drop_unreferenced(txn, old_rows: set) -> int:
    """Delete the data rows of ``old_rows`` that nothing refers to any more."""
    if not old_rows:
        return 0
    referenced = set()
    for pk in {k[:4] for k in old_rows}:
        for _, value in txn.scan("obj", pk, pk + b"\xff" * (_OID_TID_BYTES + 1)):
            referenced.add(_data_key_of(value))
    for _, value in txn.scan("voted_obj", b""):
        if value[0] & IN_DATA_TABLE:
            referenced.add(record_tail(value[0], value, VOTED_HEAD.size)[1])
    dropped = 0
    for data_key in old_rows - referenced:
        if txn.get("data", data_key) is not None:
            txn.delete("data", data_key)
            dropped += 1
    return dropped
