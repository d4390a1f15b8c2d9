"""Records on disk: the layout of a storage node's databases, and its names.

This module owns the format: the databases, their keys, the record structs and flags
below are defined here and nowhere else; the storage node's backend
(``storage_node/backend.py``: how records are written), its check and repair
(``storage_node/check.py``), its replication and a client on the same host
(``neoarray.client.local``) all use these names.  It also holds what readers share:
key construction, record decoding with checksum verification (data larger than the
inline limit is read where the store wrote it, in the ``data`` database, under the key
that the record holds), and the revision lookup of ``load``.

On-disk layout (one LMDB environment per node, named databases; ``P`` is the
partition as 4 bytes big-endian, oids and tids are 8 bytes big-endian, so every key
of a partition is one contiguous range: replicating, checking and dropping a partition
are range scans):

==============  ======================  ================================================
database        key                     value
==============  ======================  ================================================
``obj``         P + oid + tid           record: 1-byte flags, 8-byte xxh3_64 checksum,
                                        [8-byte data tid], [12-byte data key], then the
                                        raw data when it is inline (zero-copy slices on
                                        load)
``data``        P + data id             the raw data of one record larger than
                                        ``DATA_INLINE_BYTES_MAX`` (backend), written once;
                                        P = oid % partitions, id: 8 bytes
``trans``       P + tid                 msgpack ``[user, description, extension,
                                        oids, ttid, packed]``; P = tid % partitions
``voted_obj``   ttid + oid              1-byte flags, checksum, 8-byte base serial,
                                        [8-byte data tid], [12-byte data key], [inline
                                        data]: stores not yet locked
``voted_txn``   ttid                    msgpack ``{"meta", "oids", "node"}``, written at
                                        vote (the transaction is then durable)
``locked``      ttid                    final tid: locked, not yet unlocked by the master
``blob``        P + oid + key tid       one chunk of a blob: 8-byte xxh3_64 checksum, then
                + 4-byte index          the chunk's bytes (at most the node's
                                        ``blob_chunk_bytes_max``); key tid: the ttid of
                                        the transaction that stored it
``voted_blob``  ttid + oid              empty: ``ttid`` uploaded blob chunks of ``oid``
                                        (what an abort drops; deleted by the lock)
``config``      name (ascii)            msgpack value: cluster, node_id, partitions, ...
==============  ======================  ================================================

Flags: bit 0 = deletion record (undone creation or external GC), no data; bit 1 = an
8-byte data tid follows the header: the revision whose data an undo or a restore
copied (ZODB's ``data_txn``; the data itself is still stored, so a load never chases
revisions); bit 2 = a 12-byte data key follows (after the data tid, if any): the
data is the value of that key in ``data``, not inline; bit 3 = a 20-byte blob
reference follows (after those): key tid, chunk count, blob bytes (ZODB blobs).

Names: ``PARTITION`` packs P; ``RECORD_HEAD`` is the header of an ``obj`` record,
``VOTED_HEAD`` of a ``voted_obj`` one, ``BLOB_REF`` the blob reference,
``CHUNK_HEAD`` the header of a ``blob`` row; ``pack_meta``/``unpack_meta`` write and
read a ``trans`` row (``TransactionInfo``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import msgpack
import xxhash

from .errors import ChecksumError
from .ids import u64

DELETED = 1
HAS_DATA_TID = 2
IN_DATA_TABLE = 4                    # the data is in ``data`` under the key that follows
HAS_BLOB = 8                         # a blob reference follows (chunks in ``blob``)
RECORD_HEAD = struct.Struct(">BQ")   # ``obj`` record: flags, checksum
VOTED_HEAD = struct.Struct(">BQ8s")  # ``voted_obj`` record: RECORD_HEAD's fields, then the base serial
PARTITION = struct.Struct(">I")      # P, the first 4 bytes of every partitioned key
DATA_KEY_BYTES = 12                  # key of ``data``: P + 8-byte id allocated by the node
BLOB_REF = struct.Struct(">8sIQ")    # blob key tid, chunk count, blob bytes
BLOB_REF_BYTES = BLOB_REF.size
CHUNK_HEAD = struct.Struct(">Q")     # a blob chunk row: xxh3_64 checksum, then the bytes
# the fixed part of a record: header, data tid, data key, blob reference (what pack,
# truncate and drops keep of a record to find its data row and blob chunks)
RECORD_HEAD_BYTES_MAX = RECORD_HEAD.size + 8 + DATA_KEY_BYTES + BLOB_REF_BYTES


@dataclass(frozen=True)
class BlobRef:
    """Where the chunks of a revision's blob are: ``blob`` rows
    ``P + oid + key_tid + index`` for index in ``range(chunks)``; ``key_tid`` is the
    (temporary) tid of the transaction that stored them, so a lock moves no blob bytes."""
    key_tid: bytes
    chunks: int
    nbytes: int

    def pack(self) -> bytes:
        return BLOB_REF.pack(self.key_tid, self.chunks, self.nbytes)


def blob_prefix(partition: int, oid: bytes, key_tid: bytes) -> bytes:
    """Key prefix of the chunks of one blob in ``blob``."""
    return PARTITION.pack(partition) + oid + key_tid


def blob_chunk_key(partition: int, oid: bytes, key_tid: bytes, index: int) -> bytes:
    return blob_prefix(partition, oid, key_tid) + PARTITION.pack(index)


def record_blob(flags: int, value, start: int) -> BlobRef | None:
    """The blob reference of a record whose header ends at ``start``, if it has one."""
    if not flags & HAS_BLOB:
        return None
    start += (8 if flags & HAS_DATA_TID else 0) + (DATA_KEY_BYTES if flags & IN_DATA_TABLE else 0)
    key_tid, chunks, nbytes = BLOB_REF.unpack_from(value, start)
    return BlobRef(bytes(key_tid), chunks, nbytes)


@dataclass
class TransactionInfo:
    tid: bytes
    user: bytes
    description: bytes
    extension: bytes
    oids: list[bytes]
    ttid: bytes
    packed: bool = False


def pack_meta(m: TransactionInfo) -> list:
    """The msgpack-able value of a ``trans`` row (``msgpack.packb`` it)."""
    return [m.user, m.description, m.extension, list(m.oids), m.ttid, m.packed]


def unpack_meta(tid: bytes, raw: bytes) -> TransactionInfo:
    """The ``TransactionInfo`` of the ``trans`` row ``raw`` of ``tid``."""
    user, desc, ext, oids, ttid, packed = msgpack.unpackb(raw)
    return TransactionInfo(tid, user, desc, ext, oids, ttid, packed)


class NoBlob(KeyError):
    """The revision exists but has no blob (or not that chunk)."""


def checksum(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


class Loaded(NamedTuple):
    """One revision: ``next_serial`` is ``None`` when it is current (a named tuple: a
    batch of loads makes one per record, and a frozen dataclass costs 0.8 us each)."""
    serial: bytes
    next_serial: bytes | None
    data: bytes | None         # None: deletion record
    checksum: int
    data_tid: bytes | None = None
    blob: BlobRef | None = None


class NoObject(KeyError):
    """The oid has no revision at all on this node."""


class NoRevision(KeyError):
    """The oid exists but no revision matches."""


class RecordReader:
    """Revision lookups over a KV store (see ``neoarray.kv``) of ``partitions`` partitions."""

    def __init__(self, kv, partitions: int):
        self.kv = kv
        self.partitions = partitions

    def partition(self, oid_or_tid: bytes) -> int:
        return u64(oid_or_tid) % self.partitions

    def _okey(self, oid: bytes) -> bytes:
        return PARTITION.pack(self.partition(oid)) + oid

    # -- loads -------------------------------------------------------------------
    def load(self, oid: bytes, before: bytes | None = None, serial: bytes | None = None) -> Loaded:
        """The revision ``serial``, or the newest with tid < ``before`` (default: newest).

        The record is read in place (no copy), its checksum verified there, and only
        its data copied out: one copy per load.
        """
        with self.kv.read(buffers=True) as txn:
            return self.load_in(txn, oid, before, serial, copy=True)

    def load_in(self, txn, oid: bytes, before: bytes | None = None, serial: bytes | None = None,
                copy: bool = True, verify: bool = True) -> Loaded:
        """``load`` inside the read transaction ``txn``; ``copy=False`` returns the data
        as a read-only view of the record, valid until ``txn`` ends.  ``verify=False``
        leaves the checksum to the caller (:func:`verify_loaded`), who may not read
        the data at all."""
        prefix = self._okey(oid)
        end = prefix + b"\xff" * 9
        if serial is not None:
            value = txn.get("obj", prefix + serial)
            found = serial
        else:
            stop = prefix + before if before else prefix + b"\xff" * 8
            key, value = next(txn.scan("obj", prefix, stop, reverse=True), (None, None))
            found = key[12:] if key is not None else None
        if value is None:
            if txn.next_key("obj", prefix, end) is None:
                raise NoObject(oid)
            raise NoRevision(oid)
        nxt = txn.next_key("obj", prefix + found + b"\0", end)
        return self._decode(txn, oid, found, bytes(nxt[12:]) if nxt is not None else None, value, copy,
                            verify)

    @staticmethod
    def _decode(txn, oid, serial, next_serial, value, copy: bool = True, verify: bool = True) -> Loaded:
        flags, crc = RECORD_HEAD.unpack_from(value)
        data_tid, data_key, start = record_tail(flags, value, RECORD_HEAD.size)
        if flags & DELETED:
            return Loaded(serial, next_serial, None, crc, data_tid)
        blob = record_blob(flags, value, RECORD_HEAD.size)
        if data_key is None:
            view = memoryview(value)[start:]
        else:
            data = txn.get("data", data_key)
            if data is None:
                raise ChecksumError(f"record of oid 0x{oid.hex()} at tid 0x{serial.hex()} "
                                    f"refers to data 0x{data_key.hex()} missing on this node")
            view = memoryview(data)
        loaded = Loaded(serial, next_serial, bytes(view) if copy else view.toreadonly(), crc, data_tid, blob)
        if verify:
            verify_loaded(oid, loaded)
        return loaded

    def blob_chunk(self, txn, oid: bytes, blob: BlobRef, index: int, copy: bool = True):
        """``(checksum, bytes)`` of chunk ``index`` of ``blob`` (of ``oid``), checksum
        verified; ``NoBlob`` when the index is out of range, ``ChecksumError`` when the
        chunk is missing or fails its checksum."""
        if not 0 <= index < blob.chunks:
            raise NoBlob(f"blob of oid 0x{oid.hex()} has {blob.chunks} chunks, no chunk {index}")
        value = txn.get("blob", blob_chunk_key(self.partition(oid), oid, blob.key_tid, index))
        if value is None or len(value) < CHUNK_HEAD.size:
            raise ChecksumError(f"chunk {index} of the blob of oid 0x{oid.hex()} (stored by "
                                f"0x{blob.key_tid.hex()}) is missing on this node")
        (crc,) = CHUNK_HEAD.unpack_from(value)
        view = memoryview(value)[CHUNK_HEAD.size:]
        if checksum(view) != crc:
            raise ChecksumError(f"chunk {index} of the blob of oid 0x{oid.hex()} (stored by "
                                f"0x{blob.key_tid.hex()}) fails its checksum on this node")
        return crc, bytes(view) if copy else view.toreadonly()


def verify_loaded(oid: bytes, loaded: Loaded) -> None:
    """``ChecksumError`` unless the data of ``loaded`` (not a deletion) matches the
    checksum its record carries."""
    if loaded.data is not None and checksum(loaded.data) != loaded.checksum:
        raise ChecksumError(f"record of oid 0x{oid.hex()} at tid 0x{loaded.serial.hex()} "
                            f"fails its checksum on this node")


def record_tail(flags: int, value, start: int) -> tuple[bytes | None, bytes | None, int]:
    """``(data tid, data key, offset of inline data)`` of a record whose header ends at
    ``start``: the optional fields that follow the header, in their order on disk
    (the blob reference, last, is read by ``record_blob``)."""
    data_tid = data_key = None
    if flags & HAS_DATA_TID:
        data_tid, start = bytes(value[start:start + 8]), start + 8
    if flags & IN_DATA_TABLE:
        data_key, start = bytes(value[start:start + DATA_KEY_BYTES]), start + DATA_KEY_BYTES
    if flags & HAS_BLOB:
        start += BLOB_REF_BYTES
    return data_tid, data_key, start
