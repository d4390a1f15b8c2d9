"""Concurrent appends: many transactions append to one array at once, none conflicts.

``A.append(values, concurrent=True)`` does not touch the array's shape or chunks: it
stores ``values`` in a new :class:`Segment` record (one per append, so two appends never
write the same record) and adds it to the array's :class:`AppendLog`, a small record
whose ``_p_resolveConflict`` merges concurrent additions (ZODB's conflict resolution,
which the neoarray client runs at commit, also across a cluster).  The log lists the
segments in commit order.

Once the append's transaction has committed, an after-commit hook *folds* the log in
a transaction of its own (:func:`fold`): it appends the segments' rows, in log order,
to the array's chunks and shape (an ordinary single-writer append) and drops them from
the log.  Two folds at once conflict on the array; the loser finds its segments folded
by the winner (a fold takes every segment committed before it) and stops, so writers
do not retry in storms.  A segment whose fold did not run (its process died) is
durable and folded by the next fold of the array (any later concurrent append, or
``neoarray.array.streams.fold``).

What readers see: the array's shape and chunks, changed only by whole folds of a
prefix of the log, so a reader at any snapshot sees a prefix of the committed appends
in commit order, each append whole or not at all, never a hole.  An append is visible
once it has been folded, shortly after its commit (not within its own transaction).

Persistent state of :class:`AppendLog`::

    _entries   tuple of Segment, in commit order (not yet folded)
    _folded    int: rows folded into the array so far (along the append axis)

and of :class:`Segment`::

    _axis      the axis appended along
    _shape     shape of the values
    _data      their bytes, C order, in the array's dtype
"""
from __future__ import annotations

import logging
import random
import time

import numpy as np
import persistent
import transaction
from ZODB.POSException import ConflictError

from .config import check_memory, config
from .errors import ArrayValueError

log = logging.getLogger(__name__)

FOLD_ROUNDS_MAX = 40            # conflicting folds tried before leaving it to the next fold
FOLD_BACKOFF_S_MAX = 0.05       # longest random pause between two tries


class Segment(persistent.Persistent):
    """The values of one concurrent append, waiting to be folded into the array."""

    def __init__(self, values: np.ndarray, axis: int):
        self._axis = axis
        self._shape = tuple(values.shape)
        self._data = np.ascontiguousarray(values).tobytes()

    def values(self, dtype: np.dtype) -> np.ndarray:
        """The appended values (a read-only array over the stored bytes)."""
        return np.frombuffer(self._data, dtype=dtype).reshape(self._shape)

    @property
    def rows(self) -> int:
        """Items along the append axis."""
        return self._shape[self._axis]


def _ref_oid(ref):
    """The oid of a reference in a state given to ``_p_resolveConflict`` (ZODB's
    ``PersistentReference``), or of a persistent object."""
    oid = getattr(ref, "oid", None)
    return ref._p_oid if oid is None else oid


class AppendLog(persistent.Persistent):
    """The segments appended concurrently to one array and not yet folded, in commit
    order.  Additions by concurrent transactions merge at commit."""

    def __init__(self):
        self._entries = ()
        self._folded = 0

    def add(self, segment: Segment) -> None:
        self._entries = self._entries + (segment,)

    def entries(self) -> tuple:
        return self._entries

    def drop(self, count: int, rows: int) -> None:
        """Forget the first ``count`` segments, folded into the array (``rows`` rows)."""
        self._entries = self._entries[count:]
        self._folded += rows

    def _p_resolveConflict(self, old, committed, new):
        """Merge two transactions that both changed the log: ``new``'s added segments
        go after ``committed``'s (commit order); segments a fold dropped stay dropped.
        Two folds of the same segments do not merge (they also conflict on the array)."""
        old_ids = {_ref_oid(r) for r in old["_entries"]}
        new_ids = {_ref_oid(r) for r in new["_entries"]}
        committed_ids = {_ref_oid(r) for r in committed["_entries"]}
        dropped_by_new = old_ids - new_ids
        dropped_by_committed = old_ids - committed_ids
        if dropped_by_new and dropped_by_committed:
            raise ConflictError("two folds of one append log")
        added = [r for r in new["_entries"] if _ref_oid(r) not in old_ids]
        entries = [r for r in committed["_entries"] if _ref_oid(r) not in dropped_by_new]
        state = dict(committed)
        state["_entries"] = tuple(entries + added)
        state["_folded"] = committed["_folded"] + new["_folded"] - old["_folded"]
        return state


def append(array, values: np.ndarray, axis: int) -> None:
    """Add ``values`` (already checked and cast by ``ndarray.append``) to ``array``'s
    log; fold them after the transaction commits (see the module docstring)."""
    if array._p_jar is None:
        raise ArrayValueError("a concurrent append needs an array stored in a database "
                              "(add it to a connection's root and commit first)")
    values = np.asarray(values, dtype=array.dtype)      # stored as the array's items
    log_ = array._log
    if log_ is None:
        log_ = array._log = AppendLog()     # arrays made before logs existed: once
    segment = Segment(values, axis)
    log_.add(segment)
    txn = array._p_jar.transaction_manager.get()
    try:
        mine = txn.data(log_)
    except KeyError:
        mine = []
        txn.set_data(log_, mine)
        txn.addAfterCommitHook(_fold_after_commit, args=(array._p_jar.db(), array._p_oid, mine))
    mine.append(segment)


def fold(array, bytes_max: int | None = None) -> int:
    """Fold the segments of ``array``'s log into its chunks and shape, in the current
    transaction (the caller commits); at most ``bytes_max`` bytes of segments (default
    the memory limit), at least one segment.  Returns the rows folded."""
    log_ = array._log
    if log_ is None or not log_.entries():
        return 0
    budget = bytes_max if bytes_max is not None else _memory_limit()
    taken, rows, nbytes = 0, 0, 0
    for segment in log_.entries():
        size = len(segment._data)
        if taken and nbytes + size > budget:
            break
        check_memory(size, f"an appended segment of shape {segment._shape}")
        array.append(segment.values(array.dtype), segment._axis)
        taken, rows, nbytes = taken + 1, rows + segment.rows, nbytes + size
    log_.drop(taken, rows)
    return rows


def pending(array) -> int:
    """Segments of ``array`` appended (committed) but not yet folded, at this snapshot."""
    return 0 if array._log is None else len(array._log.entries())


def _memory_limit():
    return config.memory_limit_bytes() // 4


def _fold_after_commit(committed, db, oid, segments):
    """After-commit hook of a concurrent append: fold the log until this
    transaction's ``segments`` are in the array (another fold may have taken them)."""
    if not committed:
        return
    try:
        settle(db, oid, {s._p_oid for s in segments})
    except Exception:
        log.warning("folding the append log of array 0x%s failed; the next fold will", oid.hex(),
                    exc_info=True)


def settle(db, oid: bytes, segment_oids=None, rounds_max: int = FOLD_ROUNDS_MAX) -> bool:
    """Fold the append log of the array ``oid`` of ``db``, in transactions of a
    connection of its own, until none of ``segment_oids`` is left in it at a snapshot
    (None: until the log is empty).  Returns False when folds kept conflicting
    ``rounds_max`` times (the segments stay in the log, durable, for the next fold)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for _ in range(rounds_max):
            tm.begin()
            try:
                array = conn.get(oid)
                left = {s._p_oid for s in array._log.entries()} if array._log is not None else set()
                if not (left if segment_oids is None else left & segment_oids):
                    tm.abort()
                    return True
                fold(array)
                tm.commit()
            except ConflictError:
                tm.abort()
                time.sleep(random.uniform(0, FOLD_BACKOFF_S_MAX))
            except BaseException:
                tm.abort()
                raise
        return False
    finally:
        conn.close()
