"""What an ingest service keeps in the database, written in the same transaction as
the records it commits: the dedup keys of recent units (so a unit resent after a
restart is stored once) and the recent rejected records with their reasons.

``root["neoarray.ingest"][name]`` is an :class:`IngestState`::

    _batches     IOBTree: group commit number -> KeyBatch (its dedup keys), oldest
                 first, trimmed to the newest ``keys_max`` keys or a little more
    _next_batch  next group commit number
    _keys_held   dedup keys in ``_batches``
    _rejects     IOBTree: sequence number -> (time_s, tag, reason, record repr)
    _next_reject next sequence number
    committed    records committed, ever
    rejected     records rejected, ever
"""
from __future__ import annotations

import time

import persistent
from BTrees.IOBTree import IOBTree
from persistent.mapping import PersistentMapping

ROOT_KEY = "neoarray.ingest"
RECORD_REPR_CHARS_MAX = 256


class IngestState(persistent.Persistent):
    """The dedup keys and rejects of one ingest service (see the module docstring)."""

    def __init__(self):
        self._batches, self._next_batch, self._keys_held = IOBTree(), 0, 0
        self._rejects, self._next_reject = IOBTree(), 0
        self.committed = 0
        self.rejected = 0

    def keys(self) -> list[str]:
        """Every dedup key held, oldest first (read once at start: the service keeps
        them in memory, see ``DedupIndex``)."""
        return [k for batch in self._batches.values() for k in batch.keys]

    def remember(self, keys: list[str], keys_max: int) -> list[str]:
        """Add the dedup ``keys`` of a group commit (one new record, whatever the
        number of keys); forget the oldest group commits while at least ``keys_max``
        keys stay.  Returns the keys forgotten."""
        self._batches[self._next_batch] = KeyBatch(keys)
        self._next_batch += 1
        self._keys_held += len(keys)
        forgotten = []
        while True:
            first = self._batches.minKey()
            oldest = self._batches[first]
            if self._keys_held - len(oldest.keys) < keys_max:
                return forgotten
            del self._batches[first]
            self._keys_held -= len(oldest.keys)
            forgotten.extend(oldest.keys)

    def reject(self, rejects: list, rejects_max: int) -> None:
        """Keep ``[(tag, reason, record)]``, the newest ``rejects_max`` of all."""
        now = time.time()
        for tag, reason, record in rejects[-rejects_max:]:
            self._rejects[self._next_reject] = (now, str(tag)[:RECORD_REPR_CHARS_MAX], reason,
                                                repr(record)[:RECORD_REPR_CHARS_MAX])
            self._next_reject += 1
        self.rejected += len(rejects)
        _trim(self._rejects, self._next_reject - rejects_max)

    def recent_rejects(self, count: int) -> list:
        """The newest ``count`` rejects, oldest first: ``(time_s, tag, reason, record)``."""
        keys = list(self._rejects.keys(min=max(0, self._next_reject - count)))
        return [self._rejects[k] for k in keys]



class KeyBatch(persistent.Persistent):
    """The dedup keys of one group commit (a record of its own, so that the tree
    holding the batches stays small)."""

    def __init__(self, keys):
        self.keys = tuple(keys)


class DedupIndex:
    """The dedup keys of an :class:`IngestState` in memory: loaded once, then told
    what each group commit added and forgot (only after it committed)."""

    def __init__(self, state: IngestState):
        self._keys = set(state.keys())

    def __contains__(self, key) -> bool:
        return key in self._keys

    def committed(self, added, forgotten) -> None:
        self._keys.difference_update(forgotten)
        self._keys.update(added)


def _trim(order, first_kept, index=None):
    """Remove the entries of sequence numbers below ``first_kept`` (a range search:
    nothing is walked when there is nothing to remove)."""
    if first_kept <= 0:
        return
    for seq in list(order.keys(max=first_kept - 1)):
        value = order.pop(seq)
        if index is not None:
            index.pop(value, None)


def state_of(root, name: str) -> IngestState:
    """The ingest state ``name`` of a database root, made when missing."""
    states = root.get(ROOT_KEY)
    if states is None:
        states = root[ROOT_KEY] = PersistentMapping()
    state = states.get(name)
    if state is None:
        state = states[name] = IngestState()
    return state
