"""The source of ``neoarray import``: a FileStorage file or any ZODB storage of a ZConfig
file, read through ZODB's iteration API (``IStorageIteration``) and ``loadBlob``.

A FileStorage is opened read-only (no lock: the application may keep writing it, and
``--follow`` sees what it appends, since every iterator opens the file anew).  A
ZConfig file holds one storage section (``<filestorage>``, ``<zeoclient>``,
``<neoarray>`` after ``%import neoarray``...).
"""
from __future__ import annotations

import os

import ZODB.blob
import ZODB.config
from ZODB import POSException

from ..errors import NeoError
from ..ids import p64, u64
from .core import RecordDigest, TransactionDigest


def open_source(path: str | None = None, config: str | None = None, blob_dir: str | None = None):
    """The source storage: the FileStorage at ``path`` (with its blob directory
    ``blob_dir``), or the storage of the ZConfig file ``config``."""
    if (path is None) == (config is None):
        raise NeoError("give the source: a FileStorage file (PATH) or a ZConfig file (--source-config FILE), "
                       "one of them")
    if config is not None:
        if not os.path.isfile(config):
            raise NeoError(f"no ZConfig file {config!r} (--source-config)")
        try:
            with open(config) as f:
                return ZODB.config.storageFromFile(f)
        except Exception as exc:     # ZConfig and storage errors: the file is what is wrong
            raise NeoError(f"cannot open the source storage of {config!r}: {exc}") from exc
    if not os.path.isfile(path):
        raise NeoError(f"no FileStorage file {path!r} (give the path of a Data.fs, or --source-config FILE "
                       f"for another storage)")
    if blob_dir is not None and not os.path.isdir(blob_dir):
        raise NeoError(f"no blob directory {blob_dir!r} (--blob-dir: the FileStorage's blob-dir)")
    from ZODB.FileStorage import FileStorage
    try:
        return FileStorage(path, read_only=True, blob_dir=blob_dir)
    except Exception as exc:
        raise NeoError(f"cannot open the FileStorage {path!r}: {exc}") from exc


def transactions(storage, after: bytes | None, stop: bytes | None = None):
    """The source's transactions after ``after`` (None: all), up to ``stop``; a new
    iterator, closed when the generator ends."""
    it = storage.iterator(None if after is None else p64(u64(after) + 1), stop)
    try:
        yield from it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def has_transaction(storage, tid: bytes) -> bool:
    """Whether the source has a transaction with exactly ``tid``."""
    it = storage.iterator(tid, tid)
    try:
        return any(t.tid == tid for t in it)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def digest_of_tid(storage, tid: bytes, checksum) -> TransactionDigest:
    """The digest of the source's transaction ``tid`` (:func:`digest_of`)."""
    for txn in transactions(storage, p64(u64(tid) - 1), tid):
        if txn.tid == tid:
            return digest_of(storage, txn, checksum)
    raise NeoError(f"the source has no transaction 0x{tid.hex()}")


def blob_path(storage, oid: bytes, tid: bytes) -> str | None:
    """The source's blob file of revision ``tid`` of ``oid``; None when the source
    has no blob for it (a storage without blobs, or a blob lost there)."""
    load = getattr(storage, "loadBlob", None)
    if load is None:
        return None
    try:
        return load(oid, tid)
    except (POSException.POSKeyError, POSException.Unsupported):
        return None


def is_blob_record(data: bytes | None) -> bool:
    return data is not None and ZODB.blob.is_blob_record(data)


def metadata(txn) -> tuple[bytes, bytes, bytes]:
    """(user, description, extension bytes) of a source transaction record."""
    def raw(value):
        return value if isinstance(value, bytes) else (value or "").encode("utf-8")
    return raw(txn.user), raw(txn.description), getattr(txn, "extension_bytes", b"") or b""


def digest_of(storage, txn, checksum) -> TransactionDigest:
    """The digest of a source transaction, from its records (for the transaction a
    resumed import verifies before it goes on; ``checksum``: xxh3_64 of bytes)."""
    records = []
    for r in txn:
        path = blob_path(storage, r.oid, r.tid) if is_blob_record(r.data) else None
        records.append(RecordDigest(r.oid, r.data is None, 0 if r.data is None else checksum(r.data),
                                    r.data_txn, os.path.getsize(path) if path else None))
    return TransactionDigest(txn.tid, *metadata(txn), tuple(records))
