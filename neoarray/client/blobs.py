"""The client's blobs (ZODB ``IBlobStorage``): the blob cache and the downloads.

Blob bytes live on the storage nodes, in chunks of at most ``blob_chunk_bytes`` on the
object's partition (``storage_node/backend.py``).  A client keeps the blobs it read or
wrote in a *blob cache directory* laid out by ZODB's ``FilesystemHelper`` (ZODB's
public API: ``<dir>/<oid path>/<tid>.blob``, read-only files), bounded by
``blob_cache_bytes_max``:

- a download writes the chunks one after another into a temporary file of the cache
  (at most ``chunks_in_flight_max`` chunk requests on their way, so memory holds that
  many chunks, never the whole blob), verifies each chunk's checksum and the size,
  then renames the file into place: a reader sees a whole blob or none;
- several processes may share one cache directory (as ZEO's clients do): files
  appear only by rename, so no lock is needed to read or download (two processes
  downloading one blob write the same bytes); *pruning* takes the cache's lock file
  (``.lock``, a non-blocking ``flock``: a process finding it taken leaves the work to
  the holder), walks the directory and removes the least recently used blobs (a
  cache hit touches the file's mtime) until the cache holds at most
  ``PRUNE_TARGET_FRACTION`` of its limit.  A process prunes in a background thread
  once it has added a tenth of the limit since its last pruning (and once at start);
  a blob removed while open stays readable through its open file (POSIX);
- with no directory configured, a temporary one belongs to the storage instance and
  is removed by ``close``.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from typing import IO, Any

import xxhash
import ZODB.BaseStorage
import ZODB.blob
from ZODB import POSException

from ..errors import ChecksumError, ClusterUnavailable
from ..transport import bulk
from . import calls

log = logging.getLogger("neoarray.client")

BLOB_CHUNK_BYTES = 1 << 20           # bytes per chunk a client sends (nodes accept up to 4 MiB)
BLOB_CHUNKS_IN_FLIGHT_MAX = 4        # chunk requests on their way per node, each direction
BLOB_CACHE_BYTES_MAX = 1 << 30       # default size limit of a blob cache directory
PRUNE_TARGET_FRACTION = 0.9          # pruning brings the cache down to this share of its limit
PRUNE_CHECK_FRACTION = 0.1           # a process prunes after adding this share of the limit


class BlobCache:
    """A blob cache directory (see the module docstring); thread-safe."""

    def __init__(self, path: str | None, bytes_max: int = BLOB_CACHE_BYTES_MAX):
        if bytes_max <= 0:
            raise ValueError(f"blob_cache_bytes_max must be > 0, not {bytes_max}")
        self.owned = path is None
        self.path = tempfile.mkdtemp(prefix="neoarray-blobs-") if path is None else os.path.abspath(path)
        self.bytes_max = bytes_max
        self.fshelper = ZODB.blob.FilesystemHelper(self.path)
        try:
            self.fshelper.create()
        except FileExistsError:     # another process made it between the test and the mkdir
            self.fshelper.create()
        self._lock = threading.Lock()
        self._added_bytes = 0
        self._pruner: threading.Thread | None = None
        self._closed = False
        self.prune_soon()

    @property
    def temp_dir(self) -> str:
        """Where uncommitted blobs are written: on the cache's file system (renames)."""
        return self.fshelper.temp_dir

    def filename(self, oid: bytes, tid: bytes) -> str:
        return self.fshelper.getBlobFilename(oid, tid)

    def lookup(self, oid: bytes, tid: bytes) -> str | None:
        """The path of the cached blob of ``(oid, tid)``, marked used; None if absent."""
        path = self.filename(oid, tid)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        except PermissionError:     # a file of another user: readable, not touchable
            pass
        return path

    def put(self, oid: bytes, tid: bytes, source: str) -> str:
        """Move the whole file ``source`` (of this cache's file system) into place as the
        blob of ``(oid, tid)``, read-only; returns its path."""
        self.fshelper.getPathForOID(oid, create=True)
        target = self.filename(oid, tid)
        nbytes = os.path.getsize(source)
        ZODB.blob.rename_or_copy_blob(source, target, chmod=True)
        self.added(nbytes)
        return target

    def added(self, nbytes: int) -> None:
        with self._lock:
            self._added_bytes += nbytes
            due = self._added_bytes >= self.bytes_max * PRUNE_CHECK_FRACTION
        if due:
            self.prune_soon()

    def prune_soon(self) -> None:
        """Prune in a background thread, unless one of this process runs already."""
        with self._lock:
            if self._closed or (self._pruner is not None and self._pruner.is_alive()):
                return
            self._added_bytes = 0
            self._pruner = threading.Thread(target=self._prune_logged, daemon=True, name="neoarray-blob-prune")
            self._pruner.start()

    def _prune_logged(self) -> None:
        try:
            self.prune()
        except Exception:
            log.exception("pruning the blob cache %s failed", self.path)

    def prune(self) -> int | None:
        """Remove the least recently used blobs until the cache holds at most
        ``PRUNE_TARGET_FRACTION`` of its limit; returns the bytes it holds then, or
        None when another process is pruning this directory."""
        with open(os.path.join(self.path, ".lock"), "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return self._prune_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _prune_locked(self) -> int:
        files, total = [], 0
        for root, dirs, names in os.walk(self.path):
            if root == self.path:
                dirs[:] = [d for d in dirs if d != os.path.basename(self.temp_dir)]
            for name in names:
                if name.endswith(ZODB.blob.BLOB_SUFFIX):
                    path = os.path.join(root, name)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        continue
                    files.append((st.st_mtime, st.st_size, path))
                    total += st.st_size
        if total <= self.bytes_max:
            return total
        target = self.bytes_max * PRUNE_TARGET_FRACTION
        for _, size, path in sorted(files):
            if total <= target:
                break
            try:
                os.remove(path)
                total -= size
            except FileNotFoundError:
                total -= size
            except OSError as exc:
                log.warning("blob cache: cannot remove %s: %s", path, exc)
        return total

    def cached_bytes(self) -> int:
        """Bytes of blobs in the directory (a walk: for tests and tools)."""
        return sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(self.path)
                   for n in names if n.endswith(ZODB.blob.BLOB_SUFFIX))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pruner = self._pruner
        if pruner is not None:
            pruner.join(30.0)
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


class BlobDownloads:
    """Fetches the blob of a revision chunk by chunk into the cache."""

    def __init__(self, link, cache: BlobCache, rpc_timeout_s: float,
                 chunks_in_flight_max: int = BLOB_CHUNKS_IN_FLIGHT_MAX):
        self.link = link
        self.cache = cache
        self.rpc_timeout_s = rpc_timeout_s
        self.chunks_in_flight_max = chunks_in_flight_max

    def load(self, oid: bytes, serial: bytes) -> str:
        """The path of the blob of revision ``serial`` of ``oid`` in the cache,
        downloaded if absent; ``POSKeyError`` when the revision has no blob."""
        path = self.cache.lookup(oid, serial)
        if path is not None:
            return path
        nodes = self.link.readable(self.link.partition(oid))
        errors = []
        for nid in nodes:
            try:
                return self._download(nid, oid, serial)
            except (ClusterUnavailable, ChecksumError) as exc:
                errors.append(f"S{nid}: {exc}")
        raise ClusterUnavailable(f"no readable copy gave the blob of oid 0x{oid.hex()} at 0x{serial.hex()} "
                                 f"({'; '.join(errors) or 'no readable cell'})")

    def _download(self, nid: int, oid: bytes, serial: bytes) -> str:
        stub = self.link.storage(nid).LoadBlobChunk
        fd, tmp = tempfile.mkstemp(suffix=".download", dir=self.cache.temp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                first, data = self._chunk(bulk.start(stub, calls.blob_chunk_request(oid, serial, 0), (), self.rpc_timeout_s),
                                          nid, oid, serial, 0)
                out.write(data)
                pending, index = deque(), 1
                while index < first.blob_chunks or pending:
                    while index < first.blob_chunks and len(pending) < self.chunks_in_flight_max:
                        pending.append((index, bulk.start(stub, calls.blob_chunk_request(oid, serial, index), (),
                                                          self.rpc_timeout_s)))
                        index += 1
                    i, started = pending.popleft()
                    _, data = self._chunk(started, nid, oid, serial, i)
                    out.write(data)
                written = out.tell()
            if written != first.blob_bytes:
                raise ChecksumError(f"blob of oid 0x{oid.hex()} at 0x{serial.hex()} from S{nid}: "
                                    f"{written} bytes received, {first.blob_bytes} recorded")
            return self.cache.put(oid, serial, tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @staticmethod
    def _chunk(started, nid: int, oid: bytes, serial: bytes, index: int):
        reply, segments = bulk.finish(started, f"blob chunk {index} of oid 0x{oid.hex()} from S{nid}")
        if not calls.blob_chunk_found(reply):
            raise POSException.POSKeyError("No blob file", oid, serial)
        data = segments[0] if segments else b""
        if xxhash.xxh3_64_intdigest(data) != reply.checksum:
            raise ChecksumError(f"blob chunk {index} of oid 0x{oid.hex()} at 0x{serial.hex()} from S{nid} "
                                f"fails its checksum")
        return reply, data


def private_copy(source: str, temp_dir: str) -> str:
    """A file of ``temp_dir`` with the bytes of ``source``, which stays untouched (a
    hard link when the file system allows, a copy otherwise)."""
    fd, path = tempfile.mkstemp(suffix=".blob", dir=temp_dir)
    os.close(fd)
    os.remove(path)
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)
    return path


class BlobStorageMethods:
    """``IBlobStorage`` and ``IBlobStorageRestoreable`` of ``NeoStorage`` (a mixin: it
    uses the storage's ``_txn``, ``_commits``, ``_blob_cache``, ``_blob_downloads``,
    ``blob_chunk_bytes`` and ``blob_chunks_in_flight_max``).

    ``storeBlob`` uploads the file at once (the chunks reach every node before the
    record) and owns it until the end of the transaction: ``tpc_finish`` moves it
    into the cache as the committed blob, ``tpc_abort`` removes it.
    """

    def temporaryDirectory(self) -> str:
        """Where ZODB writes new blob files before :meth:`storeBlob` takes them."""
        return self._blob_cache.temp_dir

    def storeBlob(self, oid: bytes, oldserial: bytes | str | None, data: bytes, blobfilename: str,
                  version: str, transaction: Any) -> None:
        """Store a blob revision: upload the file now, its record with the transaction.

        Parameters
        ----------
        oid, oldserial : bytes
            The object and the serial the change is based on.
        data : bytes
            The object's record.
        blobfilename : str
            The blob's file, which this storage takes (moves) at once.
        version : str
            Must be empty (versions are not supported).
        transaction : transaction.interfaces.ITransaction
            The transaction in two-phase commit.

        Raises
        ------
        ReadOnlyError, Unsupported
            A read-only storage, or a version.
        """
        self._check_writable()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction)
        if isinstance(oldserial, str):      # ZODB's own tests pass '\0' * 8
            oldserial = oldserial.encode("latin-1")
        self._add_blob(txn, oid, oldserial or b"\0" * 8, data, blobfilename)

    def restoreBlob(self, oid: bytes, serial: bytes, data: bytes | None, blobfilename: str,
                    prev_txn: bytes | None, transaction: Any) -> None:
        """Write a blob revision as it was (``IBlobStorageRestoreable``)."""
        self._check_writable()
        txn = self._txn(transaction)
        txn.restore = True
        self._add_blob(txn, oid, serial or b"\0" * 8, data, blobfilename, prev_txn if data is not None else None)

    def _add_blob(self, txn, oid, serial, data, path, data_tid=None) -> None:
        """Take the blob file ``path`` (moved into this storage's temporary directory:
        the caller may remove its directory, a savepoint's, before the transaction
        ends), upload it and buffer its record."""
        earlier = txn.blobs.pop(oid, None)
        if earlier is not None and os.path.exists(earlier):
            ZODB.blob.remove_committed(earlier)
        fd, owned = tempfile.mkstemp(suffix=".uncommitted", dir=self._blob_cache.temp_dir)
        os.close(fd)
        ZODB.blob.rename_or_copy_blob(path, owned, chmod=False)
        path = txn.blobs[oid] = owned
        blob = self._commits.send_blob(txn, oid, path, self.blob_chunk_bytes, self.blob_chunks_in_flight_max)
        self._commits.add(txn, oid, serial, data, data_tid, blob=blob)

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        """The path of the committed blob file of ``oid`` at ``serial``, downloaded if needed.

        Raises
        ------
        POSKeyError
            No such blob.
        ChecksumError
            A downloaded chunk does not match its checksum.
        """
        return self._blob_downloads.load(oid, serial)

    def openCommittedBlobFile(self, oid: bytes, serial: bytes, blob: Any = None) -> IO[bytes]:
        """The committed blob file of ``oid`` at ``serial``, open for reading
        (a ``ZODB.blob.BlobFile`` when ``blob`` is given)."""
        for attempt in range(2):       # the cache may be pruned between the two steps
            path = self.loadBlob(oid, serial)
            try:
                return open(path, "rb") if blob is None else ZODB.blob.BlobFile(path, "r", blob)
            except FileNotFoundError:
                if attempt:
                    raise

    def prune_blob_cache(self) -> int | None:
        """Prune the blob cache now (see ``neoarray.client.blobs``)."""
        return self._blob_cache.prune()

    def _blobs_committed(self, txn, tid: bytes) -> None:
        for oid, path in txn.blobs.items():
            try:
                self._blob_cache.put(oid, tid, path)
            except OSError as exc:   # committed anyway: the blob is downloaded when read
                log.warning("blob of oid 0x%s not kept in the cache: %s", oid.hex(), exc)
        txn.blobs.clear()

    @staticmethod
    def _blobs_dropped(txn) -> None:
        for path in txn.blobs.values():
            if os.path.exists(path):
                ZODB.blob.remove_committed(path)
        txn.blobs.clear()

    def _undo_blob(self, txn, oid: bytes, serial: bytes, data: bytes, data_tid, source: bytes) -> None:
        """Undo to a blob record: the blob of revision ``source`` is uploaded again
        as this transaction's (each revision owns its chunks)."""
        path = private_copy(self.loadBlob(oid, source), self._blob_cache.temp_dir)
        self._add_blob(txn, oid, serial, data, path, data_tid)

    def copyTransactionsFrom(self, other: Any, verbose: int = 0) -> None:
        """ZODB's ``copy``, blobs included: a blob record of ``other`` is restored with
        a copy of its blob file (``other``'s file stays untouched)."""
        ZODB.BaseStorage.copy(other, _BlobCopyTarget(self, other), verbose)


class _BlobCopyTarget:
    """The target of ``ZODB.BaseStorage.copy``: ``restore`` of a blob record becomes
    ``restoreBlob`` with the source's blob; everything else is the storage's."""

    def __init__(self, storage, source):
        self._storage, self._source = storage, source

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def restore(self, oid, serial, data, version, prev_txn, transaction):
        path = None
        if data is not None and ZODB.blob.is_blob_record(data) and hasattr(self._source, "loadBlob"):
            try:
                path = self._source.loadBlob(oid, serial)
            except POSException.POSKeyError:
                path = None
        if path is None:
            return self._storage.restore(oid, serial, data, version, prev_txn, transaction)
        return self._storage.restoreBlob(oid, serial, data, private_copy(path, self._storage.temporaryDirectory()),
                                         prev_txn, transaction)
