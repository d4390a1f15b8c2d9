"""History, undo, iteration and pack of :class:`~neoarray.client.storage.NeoStorage`
(``IStorageUndoable``, ``IStorageIteration``, ``IExternalGC``'s pack).

A mixin: it uses the storage's ``_link`` (partitions and nodes), ``_reads`` through
``_read`` and ``_reader_of``, ``_txn``, ``_commits``, ``_cache``, ``_lock``,
``_last_tid``, ``_commit_times``, ``rpc_timeout_s`` and ``loads_per_batch_max``.
Transaction metadata is asked of one readable node per partition and merged in TID
order; a pack asks every writable node.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import ZODB.blob
from ZODB import POSException
from ZODB.BaseStorage import DataRecord, TransactionRecord
from ZODB.TimeStamp import TimeStamp

from ..errors import RequestRefused
from ..ids import MAX_TID, Z64, p64, tid_from_time, u64
from . import calls, reads

if TYPE_CHECKING:
    from .commit import Txn

#: ``referencesf(data) -> list of oids``: the oids a record refers to (ZODB's
#: ``ZODB.serialize.referencesf``).
ReferencesFunc = Callable[[bytes], Iterable[bytes]]


class HistoryMethods:
    """Revisions, undo, iteration and pack of a ``NeoStorage`` (see the module docstring)."""

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        """The last ``size`` revisions of ``oid``, newest first (``IStorage.history``).

        Parameters
        ----------
        oid : bytes
            The object.
        size : int
            Revisions wanted at most.

        Returns
        -------
        list of dict
            ``tid``, ``serial``, ``time``, ``size``, ``version``, ``user_name``,
            ``description`` and the transaction's extension keys.

        Raises
        ------
        POSKeyError
            ``oid`` has no revision.
        """
        node = self._reader_of(self._link.partition(oid))
        revisions = calls.history(self._link.storage(node), oid, size, self.rpc_timeout_s)
        if not revisions:
            raise POSException.POSKeyError(oid)
        out = []
        for rev in revisions:
            meta = self.transaction_info(rev.tid)
            entry = {"tid": rev.tid, "serial": rev.tid, "time": TimeStamp(rev.tid).timeTime(),
                     "size": rev.size, "version": ""}
            if meta is not None:
                entry.update(user_name=meta.user_raw, description=meta.description)
                entry.update(_extension(meta.extension))
            out.append(entry)
        return out

    def _transactions(self, min_tid, max_tid, limit: int, descending: bool) -> list:
        """Transaction metadata over all partitions, merged in TID order."""
        by_node: dict[int, list] = {}
        for p in range(self._link.partitions):
            by_node.setdefault(self._reader_of(p), []).append(p)
        runs = []
        for nid, parts in by_node.items():
            runs.append(calls.transactions(self._link.storage(nid), parts, min_tid or b"", max_tid or b"", limit,
                                           self.rpc_timeout_s, descending))
        merged = sorted((t for run in runs for t in run), key=lambda t: t.tid, reverse=descending)
        return merged[:limit]

    def transaction_info(self, tid: bytes) -> Any:
        """The metadata of transaction ``tid`` as a readable copy of its partition (the
        partition of ``tid``, where storage nodes keep it) holds it: one request.

        Parameters
        ----------
        tid : bytes
            The transaction id (8 bytes).

        Returns
        -------
        TransactionMeta or None
            ``user_raw``, ``description``, ``extension``, ``oids``, ``packed``; with
            :meth:`revisions`, what ``neoarray import`` verifies.
        """
        partition = self._link.partition(tid)
        found = calls.transactions(self._link.storage(self._reader_of(partition)), [partition], tid, tid, 1,
                                   self.rpc_timeout_s)
        return found[0] if found else None

    def revisions(self, tid: bytes, oids: Iterable[bytes]) -> dict:
        """The digests of the revisions ``tid`` of ``oids`` on the storage nodes, past
        the client's cache (``Reads.revisions``).

        Parameters
        ----------
        tid : bytes
            The transaction id (8 bytes).
        oids : iterable of bytes
            The objects it wrote.

        Returns
        -------
        dict
            ``{oid: RevisionDigest}``: deleted, checksum, data tid, blob bytes.
        """
        return self._reads.revisions(list(oids), tid)

    def undoLog(self, first: int = 0, last: int = -20,
                filter: Callable[[dict], bool] | None = None) -> list[dict[str, Any]]:
        """Undoable transactions, newest first (``IStorageUndoable.undoLog``).

        Parameters
        ----------
        first, last : int
            The slice of the log (a negative ``last``: ``first - last`` entries).
        filter : callable, optional
            Keeps the entries (dicts) for which it returns true.

        Returns
        -------
        list of dict
            ``id``, ``time``, ``user_name``, ``description`` and the extension keys;
            the log stops at the first packed transaction.
        """
        if last < 0:
            last = first - last
        out, cursor = [], None
        while len(out) < last:
            batch = self._transactions(None, cursor, 500, True)
            for t in batch:
                if t.packed:
                    return out[first:last]
                entry = {"id": t.tid, "time": TimeStamp(t.tid).timeTime(),
                         "user_name": t.user_raw, "description": t.description}
                entry.update(_extension(t.extension))
                if filter is None or filter(entry):
                    out.append(entry)
            if len(batch) < 500:
                break
            cursor = p64(u64(batch[-1].tid) - 1)
        return out[first:last]

    def undoInfo(self, first: int = 0, last: int = -20,
                 specification: dict | None = None) -> list[dict[str, Any]]:
        """:meth:`undoLog` of the entries whose keys match ``specification``.

        Parameters
        ----------
        first, last : int
            As :meth:`undoLog`.
        specification : dict, optional
            Values the entries must have.

        Returns
        -------
        list of dict
            As :meth:`undoLog`.
        """
        def match(entry):
            return all(entry.get(k) == v for k, v in (specification or {}).items())
        return self.undoLog(first, last, match if specification else None)

    def undo(self, transaction_id: bytes, transaction: Any) -> tuple[None, list[bytes]]:
        """Undo the transaction ``transaction_id`` within ``transaction``.

        Parameters
        ----------
        transaction_id : bytes
            The ``id`` of an :meth:`undoLog` entry.
        transaction : transaction.interfaces.ITransaction
            The transaction in two-phase commit that writes the undo.

        Returns
        -------
        tuple
            ``(None, oids)``: the tid is known at ``tpc_finish``.

        Raises
        ------
        UndoError
            The transaction is unknown or packed, or later changes conflict.
        ReadOnlyError
            The storage is read-only.
        """
        self._check_writable()
        txn = self._txn(transaction)
        meta = self.transaction_info(transaction_id)
        if meta is None or meta.packed:
            raise POSException.UndoError("transaction not found or packed", None)
        for oid in meta.oids:
            serial, data, data_tid, source = self._undo_record(txn, oid, transaction_id)
            if source is not None and data is not None and ZODB.blob.is_blob_record(data):
                self._undo_blob(txn, oid, serial, data, data_tid, source)
            else:
                self._commits.add(txn, oid, serial, data, data_tid)
        return None, list(meta.oids)

    def _undo_record(self, txn: Txn, oid: bytes, tid: bytes):
        """(base serial, data, data tid, revision whose blob goes with the data or
        None) of the record that undoes ``tid`` for ``oid``."""
        try:
            undone = self.loadSerial(oid, tid)
        except POSException.POSKeyError:
            undone = None   # the undone record is a deletion
        before = self._load_fresh(oid, tid)
        pre_serial, pre_data, pre_data_tid = before if before else (None, None, None)
        if oid in txn.serials:              # changed earlier in this transaction (multi-undo)
            cur_serial, cur_data = txn.serials[oid], txn.data[oid][1]
            current_is_undone = False
        else:
            current = self._load_fresh(oid, MAX_TID)
            cur_serial, cur_data, _ = current if current else (Z64, None, None)
            current_is_undone = cur_serial == tid
        if current_is_undone or cur_data == undone:
            return (cur_serial, pre_data, (pre_data_tid or pre_serial) if pre_data is not None else None,
                    pre_serial)
        if pre_serial is None:
            raise POSException.UndoError("Can't undo an add transaction followed by conflicting transactions.", oid)
        try:
            return cur_serial, self.tryToResolveConflict(oid, cur_serial, tid, pre_data, committedData=cur_data), None, None
        except POSException.ConflictError:
            raise POSException.UndoError("Some data were modified by a later transaction", oid) from None

    def _load_fresh(self, oid, before):
        """(serial, data or None, data tid) of the newest revision before ``before``, uncached."""
        reply = self._read(oid, before=before)
        if reply.status in reads.LOAD_NOT_FOUND:
            return None
        return reply.serial, reply.data, reply.data_tid

    # -- iteration --------------------------------------------------------------------
    def iterator(self, start: bytes | None = None, stop: bytes | None = None) -> Iterator[TransactionRecord]:
        """The transactions in ``[start, stop]``, in TID order (``IStorageIteration``).

        Parameters
        ----------
        start, stop : bytes, optional
            First and last tid (default: all, up to the last transaction now).

        Returns
        -------
        iterator of ZODB.BaseStorage.TransactionRecord
            Iterable once, fetched in pages; each record iterates its data records.
        """
        return _Iterator(self, start, stop)

    def record_iternext(self, next: Any = None) -> tuple:
        """Not supported: use :meth:`iterator`.

        Raises
        ------
        Unsupported
            Always.
        """
        raise POSException.Unsupported("record_iternext: use iterator()")

    # -- pack ---------------------------------------------------------------------------
    def pack(self, t: float, referencesf: ReferencesFunc, gc: bool = True) -> None:
        """Pack to the time ``t`` of this client's clock (``IStorage.pack``).

        Parameters
        ----------
        t : float
            Seconds since the epoch; revisions not visible after then go (what this
            client committed since ``t`` stays, even with clocks apart).
        referencesf : callable
            ``referencesf(record) -> oids`` (``ZODB.serialize.referencesf``).
        gc : bool
            Also remove the objects unreachable from the root.

        Raises
        ------
        StorageError
            A storage node refused the pack.
        """
        self.pack_to_tid(self._pack_tid(t), referencesf, gc)

    def pack_to_tid(self, packtid: bytes, referencesf: ReferencesFunc, gc: bool = True) -> int:
        """Pack every storage node to ``packtid``: drop the revisions no snapshot at or
        after it can see and, with ``gc``, the objects unreachable from the root then.

        Parameters
        ----------
        packtid : bytes
            The tid packed to.
        referencesf : callable
            ``referencesf(record) -> oids``.
        gc : bool
            Also remove the objects unreachable from the root as of ``packtid``.

        Returns
        -------
        int
            The number of revisions the nodes removed.

        Raises
        ------
        StorageError
            A storage node refused the pack (before its own pack point...).
        ReadOnlyError
            The storage is read-only.
        """
        self._check_writable()
        unreachable = self._unreachable(packtid, referencesf) if gc else set()
        by_node: dict[int, list] = {}
        for p in range(self._link.partitions):
            for nid in self._link.writable(p):
                by_node.setdefault(nid, [])
        for oid in unreachable:
            for nid in self._link.writable(self._link.partition(oid)):
                by_node[nid].append(oid)
        removed = 0
        try:
            for nid, oids in by_node.items():
                stub = self._link.storage(nid)
                for i in range(0, max(len(oids), 1), 10_000):
                    removed += calls.pack(stub, packtid, oids[i:i + 10_000], i == 0, self.rpc_timeout_s * 10)
        except RequestRefused as exc:
            raise POSException.StorageError(str(exc)) from None
        finally:
            self._cache.clear()
        return removed

    def _pack_tid(self, t: float) -> bytes:
        """The tid to pack to for the time ``t`` of this client's clock.

        The tid the master's clock gives for ``t``, but never a transaction this client
        committed after its clock read ``t``: packing "before now" keeps what it
        committed since, even when its clock runs ahead of the master's.
        """
        packtid = tid_from_time(t)
        with self._lock:
            packtid = min(packtid, self._last_tid)
            for started, tid in self._commit_times:
                if started > t:
                    packtid = min(packtid, p64(u64(tid) - 1))
                    break
        return packtid

    def _unreachable(self, packtid: bytes, referencesf) -> set:
        """Oids not reachable from the root as of ``packtid``."""
        before = p64(u64(packtid) + 1)
        reachable, todo = set(), [Z64]
        while todo:
            batch, todo = todo[:self.loads_per_batch_max], todo[self.loads_per_batch_max:]
            for oid in batch:
                reachable.add(oid)
            found = self.load_many(batch, before)
            for data, _, _ in found.values():
                for ref in referencesf(data):
                    if ref not in reachable:
                        reachable.add(ref)
                        todo.append(ref)
        return set(self._all_oids()) - reachable

    def _all_oids(self):
        for p in range(self._link.partitions):
            node = self._reader_of(p)
            after = b""
            while True:
                oids = calls.objects_since(self._link.storage(node), p, after, self.rpc_timeout_s)
                yield from oids
                if len(oids) < calls.OIDS_SINCE_BATCH_MAX:
                    break
                after = oids[-1]


def _extension(raw: bytes) -> dict:
    if not raw:
        return {}
    try:
        return dict(pickle.loads(raw))
    except Exception:       # noqa: BLE001 - a malformed extension reads as none
        return {}


class _Iterator:
    """Transactions in ``[start, stop]`` in TID order, fetched in pages; iterable once."""

    def __init__(self, storage: HistoryMethods, start: bytes | None, stop: bytes | None, page: int = 200):
        self.storage, self.start, self.stop, self.page = storage, start, stop, page
        self._gen = self._generate()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def _generate(self):
        cursor = self.start
        stop = self.stop or self.storage.lastTransaction()
        while True:
            batch = self.storage._transactions(cursor, stop, self.page, False)
            for meta in batch:
                yield self._record(meta)
            if len(batch) < self.page:
                return
            cursor = p64(u64(batch[-1].tid) + 1)

    def _record(self, meta):
        status = "p" if meta.packed else " "
        return _TransactionRecord(meta.tid, status, meta.user_raw, meta.description,
                                  _extension(meta.extension), lambda: self._records(meta))

    def _records(self, meta):
        """The data records of ``meta``'s transaction, loaded as they are iterated."""
        s = self.storage
        for oid in meta.oids:
            reply = s._read(oid, serial=meta.tid)
            if reply.status in reads.LOAD_NOT_FOUND:
                continue   # removed by pack
            yield DataRecord(oid, meta.tid, reply.data, reply.data_tid)

    def close(self):
        self._gen.close()


class _TransactionRecord(TransactionRecord):
    """A transaction of the iterator; its records are loaded when iterated (each
    iteration loads them again)."""

    def __init__(self, tid, status, user, description, extension, records):
        TransactionRecord.__init__(self, tid, status, user, description, extension)
        self._records = records

    def __iter__(self):
        return iter(self._records())
