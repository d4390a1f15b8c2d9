"""Storage backend: object revisions, transactions and votes on an ordered KV store.

On-disk layout: the databases, keys and record formats are described (and their
names and structs defined) in ``neoarray/records.py``, which local readers share.

Blobs (``IBlobStorage``) are written once, like large data: a client uploads a blob
chunk by chunk (``store_blob_chunk``) before it stores the record that names it; the
chunks go straight to ``blob`` under the transaction's ttid, and the record's
``store_voted`` checks that every chunk is there.  ``lock`` moves only the record; the
chunks belong to the one record that refers to them and are deleted with it (pack,
truncate, a dropped partition), or by ``abort`` (found through ``voted_blob``).

Large data is written once.  A store puts it in ``data`` under a fresh key and its
``voted_obj`` record only refers to it; ``lock`` turns the small ``voted_obj`` record
into the ``obj`` record, copying the reference, never the data.  The key is the oid's
partition, then one more than the largest id of that partition: a partition's data
is one contiguous range too, appended in key order (an id freed by a delete may come
again, as nothing refers to it any more).  A data row belongs to exactly one record
(``voted_obj`` or ``obj``) and is deleted in the same LMDB transaction as it: when an
abort drops the stores of a transaction, when a store replaces an earlier store of
the same oid in the same transaction, and when pack drops the revision.  A store, its
data and its reference are written in one LMDB transaction, so a crash never leaves
a reference without data or data without a reference.  Data of at most
``DATA_INLINE_BYTES_MAX`` bytes stays inline: it fits in a B-tree leaf (no overflow
pages), and a load then needs one lookup, not two.

Object records are a fixed binary header rather than msgpack so that a load can hand
out the payload without copying it; everything else is msgpack.  Data checksums are
verified when stored and when loaded; a record that fails (or whose data row is
missing) is reported, never returned.

Durability: LMDB commits do not fsync; the backend syncs where it promises
durability: at ``vote`` (the stores and the vote) and at ``lock`` (the revisions, and
with them everything written before).  The vote's fsync is skipped for the only voter
of a transaction (``sync=False``, which the client asks when no other node votes it)
and on a node started with ``vote_sync=False``: see ``Backend.vote``.  A store of large data asks the kernel to start writing it
out (``write_behind``, no waiting), so that the vote's fsync finds little left to
write.  A killed process loses nothing LMDB committed (the pages are in the page
cache).

Space (``storage_node/space.py``): stores are refused with ``StorageFull`` before
they would eat into the space reserved for locks, a vote reserves what its lock will
write, and lock, abort and pack write unchecked, so a voted transaction can always be
locked or aborted on a full disk.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

import msgpack

from neoarray.errors import RequestRefused
from neoarray.ids import Z64, p64, u64
from neoarray.records import (  # noqa: F401 (Loaded, NoBlob, NoObject: part of the backend's interface)
    CHUNK_HEAD,
    DATA_KEY_BYTES,
    DELETED,
    HAS_BLOB,
    HAS_DATA_TID,
    IN_DATA_TABLE,
    PARTITION,
    RECORD_HEAD,
    RECORD_HEAD_BYTES_MAX,
    VOTED_HEAD,
    BlobRef,
    Loaded,
    NoBlob,
    NoObject,
    NoRevision,
    RecordReader,
    TransactionInfo,
    blob_chunk_key,
    blob_prefix,
    checksum,
    pack_meta,
    record_blob,
    record_tail,
    unpack_meta,
)

from .space import SpaceGuard, lock_need, store_need

DATA_INLINE_BYTES_MAX = 1024    # larger data goes to ``data``: written once, never copied
DROP_BEHIND_BYTES_MIN = 256 << 10   # data rows and blob chunks this large leave the page cache once written

class Stored(NamedTuple):
    """A store of a transaction in progress (a named tuple: a vote of 1,000 objects
    makes 1,000, and a frozen dataclass took 0.8 us each)."""
    oid: bytes
    serial: bytes
    data: bytes | None
    checksum: int
    data_tid: bytes | None = None
    blob: BlobRef | None = None


def bulk_data_key(flags: int, body: bytes, data) -> bytes | None:
    """The key of the ``data`` row that ``record_body`` wrote for ``data`` (``flags``,
    ``body`` its answer) when the data is bulk (``DROP_BEHIND_BYTES_MIN`` or more:
    ``write_behind`` drops it from the page cache once written), else None."""
    if not flags & IN_DATA_TABLE or len(data) < DROP_BEHIND_BYTES_MIN:
        return None
    start = 8 if flags & HAS_DATA_TID else 0        # the data key follows the data tid
    return bytes(body[start:start + DATA_KEY_BYTES])


class Backend(RecordReader):
    """Record logic over a ``kv`` store (``LMDBStore`` or ``MemoryStore``).

    Not thread-safe for writes by itself: the node's transaction manager serialises
    ``store_voted``/``vote``/``lock``/``abort``; reads may run concurrently.
    """

    def __init__(self, kv, partitions: int | None = None, vote_sync: bool = True,
                 space_reserve_bytes: int = 0):
        RecordReader.__init__(self, kv, partitions or 0)
        self.vote_sync = vote_sync
        self.space = SpaceGuard(kv, space_reserve_bytes)
        self.partitions = partitions or self.get_config("partitions")

    # -- config ------------------------------------------------------------------
    def get_config(self, name: str, default=None):
        with self.kv.read() as txn:
            raw = txn.get("config", name.encode())
        return default if raw is None else msgpack.unpackb(raw)

    def set_config(self, **values) -> None:
        with self.kv.write() as txn:
            for name, value in values.items():
                txn.put("config", name.encode(), msgpack.packb(value))
        self.kv.sync()
        if "partitions" in values:
            self.partitions = values["partitions"]

    def last_serial(self, oid: bytes, txn=None) -> bytes | None:
        """The tid of the newest revision of ``oid`` (deletions included), or None."""
        if txn is not None:
            return self.last_serials([oid], txn)[0]
        with self.kv.read() as own:
            return self.last_serials([oid], own)[0]

    def last_serials(self, oids: list[bytes], txn) -> list[bytes | None]:
        """``last_serial`` of each of ``oids`` (sorted or not), inside ``txn``, with one
        cursor (``kv.last_keys``): a vote of 1,000 objects checks 1,000."""
        n, pack = self.partitions, PARTITION.pack
        ranges = []
        for oid in oids:
            prefix = pack(int.from_bytes(oid, "big") % n) + oid
            ranges.append((prefix, prefix + b"\xff" * 8))
        return [None if key is None else key[12:] for key in txn.last_keys("obj", ranges)]

    def history(self, oid: bytes, size: int) -> list[tuple[bytes, int]]:
        prefix = self._okey(oid)
        out = []
        with self.kv.read(buffers=True) as txn:     # sizes only: no value is copied
            for key, value in txn.scan("obj", prefix, prefix + b"\xff" * 8, reverse=True):
                _, data_key, start = record_tail(value[0], value, RECORD_HEAD.size)
                out.append((key[12:], len(value) - start if data_key is None
                            else len(txn.get("data", data_key) or b"")))
                if len(out) >= size:
                    break
        if not out:
            raise NoObject(oid)
        return out

    # -- transactions in progress -----------------------------------------------
    def store_voted(self, ttid: bytes, records: list[Stored]) -> list[bytes]:
        """Keep the stores of ``ttid`` (not durable until ``vote``).

        Data larger than ``DATA_INLINE_BYTES_MAX`` is written to ``data``, once; a
        store of an oid already stored by ``ttid`` replaces it (and its data row).
        ``StorageFull`` (nothing written) when the space left would not cover it and
        the locks of voted transactions.  Returns the keys of the ``data`` rows of at
        least ``DROP_BEHIND_BYTES_MIN`` written, for ``write_behind`` (which the caller
        calls outside its write mutex: it may wait for the disk).
        """
        self._check_store_space(ttid, records)
        with self.kv.write() as txn:
            return self._store_rows(txn, ttid, records)

    def _check_store_space(self, ttid: bytes, records: list[Stored]) -> None:
        nbytes = sum(len(r.data or b"") for r in records)
        self.space.check_write(store_need(nbytes, len(records)),
                               f"a store of {len(records)} objects ({nbytes} bytes) of 0x{ttid.hex()}")

    def _store_rows(self, txn, ttid: bytes, records: list[Stored]) -> list[bytes]:
        """The rows of ``store_voted``, written in ``txn``."""
        next_ids: dict[bytes, int] = {}     # partition prefix -> next free data id
        large: list[bytes] = []
        # one probe, not a lookup per record: a store without blobs, in a transaction
        # that uploaded none, has nothing to check
        uploaded = txn.last_key("voted_blob", ttid, ttid + b"\xff" * 9) is not None
        for r in records:
            if uploaded or (r.blob is not None and r.data is not None):
                self._check_blob_uploaded(txn, ttid, r)
        # likewise: the first store of a transaction replaces nothing but an oid
        # it names twice (its earlier row is still in ``rows``)
        earlier = txn.next_key("voted_obj", ttid, ttid + b"\xff" * 9) is not None
        rows: dict[bytes, bytes] = {}
        head = VOTED_HEAD.pack
        for r in records:
            key = ttid + r.oid
            if key in rows:
                self._drop_data_of(txn, rows[key], VOTED_HEAD.size)
            elif earlier:
                self._drop_data_of(txn, txn.get("voted_obj", key), VOTED_HEAD.size)
            flags, body = self.record_body(txn, r.oid, r.data, r.data_tid, next_ids, r.blob)
            rows[key] = head(flags, r.checksum, r.serial) + body
            bulk = bulk_data_key(flags, body, r.data)
            if bulk is not None:
                large.append(bulk)
        txn.put_many("voted_obj", list(rows.items()))
        return large

    def write_behind(self, data_keys=(), blob_keys=()) -> None:
        """After large stores: start writing them out (the vote's fsync then finds most
        of the data on disk) and let the page cache drop them once written
        (``LMDBStore.write_behind``).  ``blob_keys``: chunks of ``store_blob_chunk``."""
        if data_keys:
            self.kv.write_behind("data", data_keys)
        if blob_keys:
            self.kv.write_behind("blob", blob_keys)

    def record_body(self, txn, oid: bytes, data: bytes | None, data_tid: bytes | None,
                    next_ids: dict[bytes, int], blob: BlobRef | None = None) -> tuple[int, bytes]:
        """``(flags, what follows the header)`` of a record of ``data`` (None: a deletion):
        the data tid if any, then the key of a ``data`` row that large data is written
        to now (inside ``txn``), then the blob reference if any, then inline data."""
        flags = (DELETED if data is None else 0) | (HAS_DATA_TID if data_tid else 0)
        tail, inline = data_tid or b"", data or b""
        if len(inline) > DATA_INLINE_BYTES_MAX:
            data_key = self._new_data_key(txn, oid, next_ids)
            txn.put("data", data_key, inline)
            flags, tail, inline = flags | IN_DATA_TABLE, tail + data_key, b""
        if blob is not None and data is not None:
            flags, tail = flags | HAS_BLOB, tail + blob.pack()
        return flags, tail + inline

    # -- blobs ----------------------------------------------------------------------
    def store_blob_chunk(self, ttid: bytes, oid: bytes, index: int, crc: int, data) -> list[bytes]:
        """Keep chunk ``index`` of the blob ``ttid`` uploads for ``oid`` (checksum
        checked by the caller); chunks may come in any order (a client sends several
        at once), and a chunk sent again replaces the earlier one.  ``StorageFull`` as
        ``store_voted``.  Returns the chunk's key in ``blob`` if it is large, for
        ``write_behind(blob_keys=...)``."""
        self.space.check_write(store_need(len(data), 1),
                               f"blob chunk {index} of oid 0x{oid.hex()} ({len(data)} bytes) of 0x{ttid.hex()}")
        p = self.partition(oid)
        key = blob_chunk_key(p, oid, ttid, index)
        with self.kv.write() as txn:
            txn.put("voted_blob", ttid + oid, b"")
            txn.put("blob", key, CHUNK_HEAD.pack(crc) + bytes(data))
        return [key] if len(data) >= DROP_BEHIND_BYTES_MIN else []

    def _check_blob_uploaded(self, txn, ttid: bytes, r: Stored) -> None:
        """A record naming a blob finds all its chunks, stored by this transaction
        (chunks past its count, left by an earlier upload of the oid in this
        transaction, are dropped); a record without one drops what this transaction
        uploaded for the oid."""
        prefix = blob_prefix(self.partition(r.oid), r.oid, ttid)
        if r.blob is None or r.data is None:
            if txn.get("voted_blob", ttid + r.oid) is not None:
                self._drop_chunks(txn, prefix)
                txn.delete("voted_blob", ttid + r.oid)
            return
        if r.blob.key_tid != ttid:
            raise RequestRefused(f"store of oid 0x{r.oid.hex()}: its blob must be uploaded by the "
                                 f"storing transaction 0x{ttid.hex()}, not 0x{r.blob.key_tid.hex()}")
        extra = prefix + PARTITION.pack(r.blob.chunks)
        for key in [bytes(k) for k in txn.keys("blob", extra, prefix + b"\xff" * 5)]:
            txn.delete("blob", key)
        count, nbytes = self.chunks_held(txn, prefix)
        if count != r.blob.chunks or nbytes != r.blob.nbytes:
            raise RequestRefused(f"store of oid 0x{r.oid.hex()} refused: its blob has {r.blob.chunks} chunks "
                                 f"({r.blob.nbytes} bytes) but {count} chunks ({nbytes} bytes) were uploaded "
                                 f"to this node by 0x{ttid.hex()}: upload every chunk before the record")

    @staticmethod
    def chunks_held(txn, prefix: bytes) -> tuple[int, int]:
        """``(chunks, bytes)`` of the blob chunks under ``prefix`` (``blob_prefix``)."""
        count = nbytes = 0
        for _, value in txn.scan("blob", prefix, prefix + b"\xff" * 5):
            count, nbytes = count + 1, nbytes + len(value) - CHUNK_HEAD.size
        return count, nbytes

    def blob_complete(self, txn, oid: bytes, blob: BlobRef) -> bool:
        """Whether every chunk of ``blob`` (of ``oid``) is here (sizes, not checksums)."""
        held = self.chunks_held(txn, blob_prefix(self.partition(oid), oid, blob.key_tid))
        return held == (blob.chunks, blob.nbytes)

    def put_blob_chunk(self, oid: bytes, key_tid: bytes, index: int, crc: int, data) -> None:
        """Write one chunk of a committed blob copied from another node (catch-up),
        checksum checked by the caller; ``StorageFull`` as ``store_voted``."""
        self.space.check_write(store_need(len(data), 1), f"catch-up of blob chunk {index} of oid 0x{oid.hex()}")
        with self.kv.write() as txn:
            txn.put("blob", blob_chunk_key(self.partition(oid), oid, key_tid, index), CHUNK_HEAD.pack(crc) + bytes(data))

    @staticmethod
    def _drop_chunks(txn, prefix: bytes) -> int:
        keys = [bytes(k) for k in txn.keys("blob", prefix, prefix + b"\xff" * 5)]
        for key in keys:
            txn.delete("blob", key)
        return len(keys)

    def _drop_blob_of(self, txn, key: bytes, value) -> None:
        """Delete the chunks of the blob the ``obj`` record ``key: value`` refers to."""
        blob = record_blob(value[0], value, RECORD_HEAD.size) if len(value) > RECORD_HEAD.size else None
        if blob is not None:
            self._drop_chunks(txn, blob_prefix(self.partition(key[4:12]), key[4:12], blob.key_tid))

    def load_blob_chunk(self, oid: bytes, serial: bytes, index: int):
        """``(Loaded record, chunk checksum, chunk bytes)`` of chunk ``index`` of the
        blob of revision ``serial``; ``NoObject``/``NoRevision`` as ``load``,
        ``NoBlob`` when it is a deletion or has no blob or no such chunk."""
        with self.kv.read(buffers=True) as txn:
            rec = self.load_in(txn, oid, serial=serial, copy=False)
            if rec.blob is None:
                raise NoBlob(f"revision 0x{serial.hex()} of oid 0x{oid.hex()} has no blob")
            crc, data = self.blob_chunk(txn, oid, rec.blob, index)
        return rec, crc, data

    def _new_data_key(self, txn, oid: bytes, next_ids: dict[bytes, int]) -> bytes:
        """A key of ``data`` free in ``txn``: the oid's partition, then a fresh id."""
        pk = PARTITION.pack(self.partition(oid))
        data_id = next_ids.get(pk)
        if data_id is None:
            last = txn.last_key("data", pk, pk + b"\xff" * 9)
            data_id = 1 if last is None else u64(last[4:]) + 1
        next_ids[pk] = data_id + 1
        return pk + p64(data_id)

    @staticmethod
    def _drop_data_of(txn, value, start: int) -> None:
        """Delete the data row that the record ``value`` (header ending at ``start``)
        refers to, if any: the record is being deleted or replaced."""
        if value is not None and value[0] & IN_DATA_TABLE:
            txn.delete("data", record_tail(value[0], value, start)[1])

    def stored(self, ttid: bytes) -> list[Stored]:
        out = []
        with self.kv.read() as txn:
            for key, value in txn.scan("voted_obj", ttid, ttid + b"\xff" * 9):
                flags, crc, serial = VOTED_HEAD.unpack_from(value)
                data_tid, data_key, start = record_tail(flags, value, VOTED_HEAD.size)
                data = None if flags & DELETED else (
                    bytes(value[start:]) if data_key is None else txn.get("data", data_key))
                out.append(Stored(key[8:], serial, data, crc, data_tid, record_blob(flags, value, VOTED_HEAD.size)))
        return out

    def stored_serials(self, ttid: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """``(oid, base serial)`` of the stores of ``ttid``, without reading their data,
        and the bytes of their rows (keys and values: what ``vote`` reserves for the
        lock, as ``lock_need``, found by the same scan)."""
        out, nbytes = [], 0
        with self.kv.read(buffers=True) as txn:     # values stay in place: only 8 bytes read
            for key, value in txn.scan("voted_obj", ttid, ttid + b"\xff" * 9):
                out.append((key[8:], bytes(value[9:17])))
                nbytes += len(key) + len(value)
        return out, nbytes

    def vote(self, ttid: bytes, meta: TransactionInfo | None, oids: list[bytes], node: int,
             sync: bool = True, stored: tuple[int, int] | None = None, records: list[Stored] = ()) -> list[bytes]:
        """Record the vote of ``ttid`` (its stores stay invisible), durable on return
        when ``sync``.

        Why a vote is fsynced: a transaction is committed once one voter locks it
        durably (``master/commit.py``), so a voter that lost its vote to a machine
        crash while another locked it would leave its copies without the transaction
        (torn, if it held the only copy of a partition).  With a single voter there is
        no other one: if its machine crashes before the Lock, the vote is gone and the
        transaction is not committed (its ``tpc_finish`` fails, as when the node dies),
        and the Lock's fsync makes the stores and the vote durable with the revisions.
        So ``sync=False`` (the client's ``only_voter``) saves one of the two fsyncs of
        a commit on a single-copy cluster.  A killed process loses nothing either way
        (LMDB's pages are in the page cache).  ``vote_sync=False`` (``--no-vote-sync``)
        skips the fsync for every vote: then a node that lost a vote while the master
        also restarted is not detected (no per-transaction list of involved nodes is
        kept), so it is off only by explicit choice.

        The vote first reserves the space its lock will write (``StorageFull`` when
        it is not there: nothing is voted, the stores stay for the abort to drop).
        ``stored``: ``(bytes, rows)`` of the stores when the caller scanned them
        (``stored_serials``), else they are scanned here.

        ``records``: stores that come with the vote (a Vote carrying its transaction's
        last ones), written as ``store_voted`` writes them but in the vote's write
        transaction: one LMDB commit, and fewer pages for the fsync, than a store then
        a vote.  ``StorageFull`` as ``store_voted``, and then nothing is written.  The
        lock's space is reserved for them too, each counted at its largest (a row that
        replaces an earlier one is counted twice: more, never less).  Returns what
        ``store_voted`` returns for them.
        """
        if records:
            self._check_store_space(ttid, records)
        raw = msgpack.packb({"meta": None if meta is None else pack_meta(meta), "oids": oids, "node": node})
        if stored is None:
            pairs, nbytes = self.stored_serials(ttid)
            stored = (nbytes, len(pairs))
        carried = sum(8 + len(r.oid) + VOTED_HEAD.size + RECORD_HEAD_BYTES_MAX
                      + min(len(r.data or b""), DATA_INLINE_BYTES_MAX) for r in records)
        self.space.reserve(ttid, lock_need(stored[0] + carried + len(raw), stored[1] + len(records) + 1))
        try:
            with self.kv.write() as txn:
                large = self._store_rows(txn, ttid, records) if records else []
                txn.put("voted_txn", ttid, raw)
            if sync:
                self.sync_votes()
        except BaseException:
            self.space.release(ttid)
            raise
        return large

    def lock_need(self, ttid: bytes, meta_bytes: int) -> int:
        """Bytes the lock of ``ttid`` may write (``space.lock_need`` of its stores)."""
        pairs, nbytes = self.stored_serials(ttid)
        return lock_need(nbytes + meta_bytes, len(pairs) + 1)

    def keep_reservations(self) -> None:
        """After a restart: reserve again (unchecked) for every vote found on disk."""
        for ttid, doc in self.voted().items():
            self.space.keep(ttid, self.lock_need(ttid, 256 + 8 * len(doc["oids"])))

    def unvote(self, ttid: bytes) -> None:
        """Take a vote back: the stores stay, the transaction is no longer durable-voted."""
        with self.kv.write() as txn:
            txn.delete("voted_txn", ttid)
        self.space.release(ttid)

    def voted(self) -> dict[bytes, dict]:
        with self.kv.read() as txn:
            return {k: msgpack.unpackb(v) for k, v in txn.scan("voted_txn", b"")}

    def sync_votes(self) -> None:
        """Make the votes recorded so far durable: ``vote(..., sync=False)`` under the
        node's write mutex, then this outside it, so that concurrent votes (and locks)
        share one fsync (``LMDBStore.sync``).  Nothing with ``vote_sync=False``."""
        if self.vote_sync:
            self.kv.sync()

    def lock(self, ttid: bytes, tid: bytes, sync: bool = True) -> list[bytes]:
        """Commit ``ttid`` as ``tid``: records become revisions; durable on return
        (``sync=False``: once the caller's ``kv.sync()`` returned).

        Idempotent: locking again a transaction already locked does nothing.
        Returns the oids written.
        """
        with self.kv.write() as txn:
            raw = txn.get("voted_txn", ttid)
            if raw is None:
                if txn.get("locked", ttid) == tid:
                    return []
                raise RequestRefused(f"lock of unknown transaction 0x{ttid.hex()}")
            doc = msgpack.unpackb(raw)
            written, rows = [], []
            n, pack, keep = self.partitions, PARTITION.pack, RECORD_HEAD.size
            for key, value in txn.pop_range("voted_obj", ttid, ttid + b"\xff" * 9):
                oid = key[8:]
                # the record's header is the vote's without the base serial; the optional
                # data tid, data key and inline data keep their place after it: large
                # data stays where the store wrote it
                rows.append((pack(int.from_bytes(oid, "big") % n) + oid + tid,
                             value[:keep] + value[VOTED_HEAD.size:]))
                written.append(oid)
            txn.put_many("obj", rows)
            for key in [bytes(k) for k in txn.keys("voted_blob", ttid, ttid + b"\xff" * 9)]:
                txn.delete("voted_blob", key)       # the records own their chunks now
            if doc["meta"] is not None:
                meta = list(doc["meta"])
                txn.put("trans", PARTITION.pack(self.partition(tid)) + tid, msgpack.packb(meta))
            txn.delete("voted_txn", ttid)
            txn.put("locked", ttid, tid)
            self._raise_last(txn, tid, written)
        if sync:
            self.kv.sync()
        self.space.release(ttid)
        return written

    def _raise_last(self, txn, tid, oids):
        last = txn.get("config", b"last_tid")
        if last is None or msgpack.unpackb(last) < tid:
            txn.put("config", b"last_tid", msgpack.packb(tid))
        if oids:
            top = max(oids)
            last_oid = txn.get("config", b"last_oid")
            if last_oid is None or msgpack.unpackb(last_oid) < top:
                txn.put("config", b"last_oid", msgpack.packb(top))

    def unlock(self, ttids: list[bytes]) -> None:
        with self.kv.write() as txn:
            for ttid in ttids:
                txn.delete("locked", ttid)

    def locked(self) -> dict[bytes, bytes]:
        with self.kv.read() as txn:
            return dict(txn.scan("locked", b""))

    def abort(self, ttid: bytes) -> None:
        with self.kv.write() as txn:
            for key, value in list(txn.scan("voted_obj", ttid, ttid + b"\xff" * 9)):
                self._drop_data_of(txn, value, VOTED_HEAD.size)
                txn.delete("voted_obj", key)
            for key in [bytes(k) for k in txn.keys("voted_blob", ttid, ttid + b"\xff" * 9)]:
                self._drop_chunks(txn, blob_prefix(self.partition(key[8:]), key[8:], ttid))
                txn.delete("voted_blob", key)
            txn.delete("voted_txn", ttid)
        self.space.release(ttid)
        self.kv.settle()            # what the abort freed is usable by the next store

    def pending_ttids(self) -> set[bytes]:
        """ttids with stores or votes on disk (found again after a restart)."""
        with self.kv.read() as txn:
            ttids = {k[:8] for k in txn.keys("voted_obj", b"")}
            ttids.update(k[:8] for k in txn.keys("voted_blob", b""))
            ttids.update(k for k, _ in txn.scan("voted_txn", b""))
        return ttids

    # -- iteration, undo log ----------------------------------------------------
    def transactions(self, partitions, min_tid: bytes | None, max_tid: bytes | None,
                     limit: int, descending: bool = False) -> list[TransactionInfo]:
        """Transaction metadata of ``partitions`` with ``min_tid <= tid <= max_tid``."""
        runs = []
        with self.kv.read() as txn:
            for p in partitions:
                pk = PARTITION.pack(p)
                stop = pk + p64(u64(max_tid) + 1) if max_tid and max_tid != b"\xff" * 8 else pk + b"\xff" * 9
                run = []
                for key, value in txn.scan("trans", pk + (min_tid or b""), stop, reverse=descending):
                    run.append(unpack_meta(key[4:], value))
                    if len(run) >= limit:
                        break
                runs.append(run)
        merged = heapq.merge(*runs, key=lambda t: t.tid, reverse=descending)
        return [t for _, t in zip(range(limit), merged)]

    def oids(self, partitions, after: bytes | None, limit: int) -> list[bytes]:
        """Distinct oids held in ``partitions``, ascending, after ``after``."""
        if after == b"\xff" * 8:
            return []               # nothing can come after the largest oid
        runs = []
        with self.kv.read() as txn:
            for p in partitions:
                pk = PARTITION.pack(p)
                start = pk + (p64(u64(after) + 1) if after else b"")
                run = []
                for key in txn.keys("obj", start, pk + b"\xff" * 9):
                    oid = key[4:12]
                    if not run or run[-1] != oid:
                        run.append(oid)
                        if len(run) >= limit:
                            break
                runs.append(run)
        return list(heapq.merge(*runs))[:limit]

    # -- pack ---------------------------------------------------------------------
    def pack(self, tid: bytes, gc_oids, prune_history: bool) -> int:
        """Drop what no snapshot at or after ``tid`` can see; returns revisions removed.

        ``prune_history``: every object keeps its revision current at ``tid`` and
        all later ones (a deletion current at ``tid`` goes too).  ``gc_oids``
        (unreachable at ``tid``) lose every revision unless changed after ``tid``.
        Transactions at or before ``tid`` are marked packed (out of the undo log).
        A pack to a tid earlier than the last one is refused.
        """
        removed = 0
        with self.kv.write() as txn:
            last = self._packed_to(txn)
            if tid < last:
                raise RequestRefused(f"pack to 0x{tid.hex()} refused: this node was already packed "
                                     f"to the later 0x{last.hex()}, revisions a traversal needs are gone")
            txn.put("config", b"pack_tid", msgpack.packb(tid))
            for oid in gc_oids:
                prefix = self._okey(oid)
                revisions = list(txn.scan("obj", prefix, prefix + b"\xff" * 8))
                if revisions and revisions[-1][0][12:] <= tid:
                    self._delete_revisions(txn, revisions)
                    removed += len(revisions)
            if prune_history:
                removed += self._prune(txn, tid)
                self._pack_transactions(txn, tid)
        self.kv.settle()
        self.kv.sync()
        return removed

    @staticmethod
    def _packed_to(txn) -> bytes:
        """The tid of the last pack (``Z64``: never packed)."""
        raw = txn.get("config", b"pack_tid")
        return msgpack.unpackb(raw) if raw else Z64

    def _delete_revisions(self, txn, revisions) -> None:
        """Delete the ``obj`` records ``[(key, value)]`` and their data rows."""
        for key, value in revisions:
            self._drop_data_of(txn, value, RECORD_HEAD.size)
            self._drop_blob_of(txn, key, value)
            txn.delete("obj", key)

    def _prune(self, txn, tid: bytes) -> int:
        doomed, current, prefix = [], None, None
        for key, value in txn.scan("obj", b""):
            if key[:12] != prefix:
                self._prune_object(current, doomed)
                prefix, current = key[:12], []
            if key[12:] <= tid:
                # enough for the header, data tid, data key and blob ref: inline data is not kept
                current.append((key, bytes(value[:RECORD_HEAD_BYTES_MAX])))
        self._prune_object(current, doomed)
        self._delete_revisions(txn, doomed)
        return len(doomed)

    @staticmethod
    def _prune_object(old_revisions, doomed):
        if not old_revisions:
            return
        doomed.extend(old_revisions[:-1])
        key, value = old_revisions[-1]
        if value[0] & DELETED:
            doomed.append((key, value))

    def _pack_transactions(self, txn, tid):
        # The oids of a transaction may live on other nodes: records stay listed,
        # readers skip the revisions that are gone.
        for key, value in list(txn.scan("trans", b"")):
            if key[4:] <= tid:
                meta = unpack_meta(key[4:], value)
                if not meta.packed:
                    meta.packed = True
                    txn.put("trans", key, msgpack.packb(pack_meta(meta)))

    # -- partitions no longer held -------------------------------------------------------
    def drop_partition(self, p: int, rows_max: int) -> int:
        """Delete up to ``rows_max`` rows of partition ``p`` (revisions with their data
        rows and blob chunks, then transaction records, then chunks no record refers
        to); returns how many (0: nothing is left)."""
        pk = PARTITION.pack(p)
        head = RECORD_HEAD_BYTES_MAX
        with self.kv.write() as txn:
            doomed = []
            for key, value in txn.scan("obj", pk, pk + b"\xff" * 17):
                doomed.append((bytes(key), bytes(value[:head])))
                if len(doomed) >= rows_max:
                    break
            self._delete_revisions(txn, doomed)
            removed = len(doomed)
            for db, end in (("trans", 9), ("blob", 21)):    # blob: chunks of an unfinished catch-up
                if removed < rows_max:
                    keys = [bytes(k) for _, k in zip(range(rows_max - removed), txn.keys(db, pk, pk + b"\xff" * end))]
                    for key in keys:
                        txn.delete(db, key)
                    removed += len(keys)
        return removed

    # -- truncate (neoctl truncate) ---------------------------------------------------
    def truncate(self, tid: bytes, until: bytes, check_only: bool = False) -> tuple[int, int]:
        """Delete the transactions with ``tid < t <= until`` and their revisions.

        Refused (``RequestRefused``) when this node was packed after ``tid``: the
        revisions current at ``tid`` may be gone, so what is left would not be the
        database as of ``tid``.  Revisions after ``until`` (committed after the
        truncation, e.g. copied by a node catching up before a truncation order that
        was pending reached it) are never touched, so a repeated order is harmless.
        Returns ``(transactions, revisions)`` removed.  Stored and voted transactions
        are the caller's to drop (``TransactionManager.truncate``).
        """
        with self.kv.read() as txn:
            packed = self._packed_to(txn)
        if tid < packed:
            raise RequestRefused(f"truncate to 0x{tid.hex()} refused: this node was packed to the later "
                                 f"0x{packed.hex()}, the revisions current at 0x{tid.hex()} may be gone")
        if check_only or until <= tid:
            return 0, 0
        low = p64(u64(tid) + 1)
        with self.kv.write() as txn:
            doomed = [bytes(k) for k in txn.keys("obj", b"") if low <= bytes(k[12:]) <= until]
            # header, data tid and data key: enough to find a data row (copied: the
            # deletions below move LMDB pages)
            head = RECORD_HEAD_BYTES_MAX
            self._delete_revisions(txn, [(k, bytes(txn.get("obj", k)[:head])) for k in doomed])
            stop = p64(u64(until) + 1)
            removed = 0
            for p in range(self.partitions or 0):
                pk = PARTITION.pack(p)
                for key in [bytes(k) for k in txn.keys("trans", pk + low, pk + stop)]:
                    txn.delete("trans", key)
                    removed += 1
            for ttid, locked_tid in list(txn.scan("locked", b"")):
                if low <= bytes(locked_tid) <= until:
                    txn.delete("locked", bytes(ttid))
            last = txn.get("config", b"last_tid")
            if last is not None and low <= msgpack.unpackb(last) <= until:
                txn.put("config", b"last_tid", msgpack.packb(tid))
        self.kv.sync()
        return removed, len(doomed)

    # -- recovery ----------------------------------------------------------------
    def last_ids(self) -> tuple[bytes, bytes]:
        return self.get_config("last_tid", Z64), self.get_config("last_oid", Z64)

