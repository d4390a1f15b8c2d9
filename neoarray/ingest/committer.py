"""The group committer of ``neoarray ingest``: a bounded queue of units (``core.Unit``)
that inputs submit to, and one thread that commits them to the database in group
commits (``core.GroupPolicy``) and only then tells each unit its outcome.

Backpressure: the queue holds at most ``queue_records_max`` records; ``submit``
waits for room (an input that waits stops reading its socket) or, with a zero
timeout, says no at once (HTTP answers 503).  A commit that conflicts (another
writer of an array) is retried whole, at most ``commit_attempts_max`` times; one that
fails tells its units so (no acknowledgement: the sender resends).
"""
from __future__ import annotations

import collections
import logging
import random
import threading
import time

import transaction
from ZODB.POSException import ConflictError

from . import core, state
from .stats import Stats

log = logging.getLogger(__name__)


class Committer:
    """Commits the units submitted, in group commits, from one thread (see the module
    docstring).  ``db``: a ``ZODB.DB``; ``routes``: the mapping's; ``name``: the key
    of this service's dedup and reject state in the database."""

    def __init__(self, db, routes, *, name: str = "default", policy: core.GroupPolicy | None = None,
                 queue_records_max: int = 100_000, keys_max: int = 200_000, rejects_max: int = 1000,
                 commit_attempts_max: int = 20, stats: Stats | None = None):
        self.db, self.name = db, name
        self.router = core.Router(routes)
        self.policy = policy or core.GroupPolicy()
        self.queue_records_max = queue_records_max
        self.keys_max, self.rejects_max = keys_max, rejects_max
        self.commit_attempts_max = commit_attempts_max
        self.stats = stats or Stats()
        self._units: collections.deque = collections.deque()
        self._records = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="neoarray-ingest-commit", daemon=True)
        self._tm = transaction.TransactionManager()
        self._conn = db.open(transaction_manager=self._tm)
        self._prepare()

    # ------------------------------------------------------------------ inputs' side

    def submit(self, unit: core.Unit, timeout_s: float | None = None) -> bool:
        """Queue ``unit`` for the next group commit; wait for room up to ``timeout_s``
        (None: as long as it takes).  False: no room in time (or stopping)."""
        return self.submit_many([unit], timeout_s)

    def submit_many(self, units: list, timeout_s: float | None = None) -> bool:
        """Queue ``units`` (what an input read at once) in order, waiting for room as
        ``submit``; all or none are queued."""
        n = sum(len(u.entries) for u in units)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._stopping and self._records and self._records + n > self.queue_records_max:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.stats.backpressure(units[0].source)
                    return False
                self._cond.wait(left)
            if self._stopping:
                return False
            now = time.monotonic()
            was_empty = not self._units
            for unit in units:
                unit.received_s = now
            self._units.extend(units)
            self._records += n
            self.stats.received(units[0].source, n)
            if was_empty or self._records >= self.policy.records_max:
                self._cond.notify_all()     # the committer's timer starts, or a group is due
        return True

    def queued(self) -> tuple[int, float]:
        """``(records queued, age in seconds of the oldest)``: the lag."""
        with self._cond:
            oldest = self._units[0].received_s if self._units else None
            return self._records, 0.0 if oldest is None else time.monotonic() - oldest

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._tm.abort()
        self._conn.close()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            units = self._next_group()
            if units is None:
                return
            self._commit(units)

    def _next_group(self):
        """The units of the next group commit, once due; None when stopping with
        nothing left."""
        with self._cond:
            while True:
                oldest = self._units[0].received_s if self._units else None
                now = time.monotonic()
                if self._units and (self._stopping or self.policy.due(self._records, oldest, now)):
                    break
                if self._stopping:
                    return None
                self._cond.wait(self.policy.wait_s(oldest, now) if self._units else None)
            units, count = [], 0
            while self._units and (not units or count + len(self._units[0].entries) <= self.policy.records_max):
                unit = self._units.popleft()
                units.append(unit)
                count += len(unit.entries)
            self._records -= count
            self._cond.notify_all()
            return units

    def _commit(self, units) -> None:
        started = time.monotonic()
        error, plan = None, None
        for attempt in range(self.commit_attempts_max):
            try:
                plan = self._write(units)
                break
            except ConflictError as exc:
                self._tm.abort()
                error = exc
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** attempt)))
            except Exception as exc:  # noqa: BLE001 - told to every unit: none is acknowledged
                self._tm.abort()
                error = exc
                log.warning("ingest: a group commit of %d units failed: %s", len(units), exc)
                break
        if plan is None:
            self.stats.failed()
            for unit in units:
                _tell(unit, core.Outcome(error=f"not stored: {error}"))
            return
        self.stats.committed_batch(units, plan, time.monotonic() - started)
        for unit, outcome in zip(units, plan.outcomes):
            _tell(unit, outcome)

    def _write(self, units) -> core.Plan:
        self._tm.begin()
        root = self._conn.root()
        st = state.state_of(root, self.name)
        plan = core.plan(units, self.router, self._index.__contains__)
        for index, rows in plan.rows.items():
            _append_rows(root, self.router.routes[index], rows)
        forgotten = st.remember(plan.keys, self.keys_max) if plan.keys else []
        if plan.rejects:
            st.reject(plan.rejects, self.rejects_max)
        st.committed += plan.records
        self._tm.commit()
        self._index.committed(plan.keys, forgotten)
        return plan

    def _prepare(self) -> None:
        """Make the state and the arrays of every route now (one transaction), so that
        the first group commit conflicts with nothing it did not have to."""
        for attempt in range(self.commit_attempts_max):
            self._tm.begin()
            try:
                root = self._conn.root()
                st = state.state_of(root, self.name)
                for route in self.router.routes:
                    for name, dtype in route.arrays():
                        _array(root, name, dtype, route.chunk_items)
                self._tm.commit()
                self._index = state.DedupIndex(st)
                return
            except ConflictError:
                self._tm.abort()
                time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 5)))
        raise ConflictError("neoarray ingest: the arrays could not be made (conflicts)")


def _tell(unit, outcome) -> None:
    try:
        unit.done(outcome)
    except Exception:
        log.warning("ingest: telling a %s unit its outcome failed", unit.source or "?", exc_info=True)


def _array(root, name, dtype, chunk_items):
    """The array ``root[name]``, made empty (1-D, ``dtype``) when missing, keeping an
    envelope overview when its items are numbers (plots of it read pages, not chunks:
    :mod:`neoarray.array.overview`); an existing one of another dtype is refused."""
    import neoarray.array as na
    from neoarray.array import overview
    array = root.get(name)
    if array is None:
        array = root[name] = na.empty((0,), dtype=dtype, chunks=(chunk_items,))
        if overview.supported(array.dtype, 1) is None:
            array.keep_overview()
    elif not isinstance(array, na.ndarray) or array.ndim != 1 or array.dtype != dtype:
        raise ValueError(f"root[{name!r}] is not a 1-D array of dtype {dtype}: give the route "
                         "another array name, or remove that object")
    return array


def _append_rows(root, route, table) -> None:
    """Append ``table`` (a structured array of the route's dtype) to its arrays."""
    if route.layout == "struct":
        root[route.array].append(table)
        return
    for f, (name, _dtype) in zip(route.fields, route.arrays()):
        root[name].append(table[f.name])
