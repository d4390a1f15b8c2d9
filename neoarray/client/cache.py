"""The client's storage cache: several revisions per object, within a byte budget.

Contract (the ``RevisionCache`` interface that the coloured cache will also honour):

- ``get(oid, before)``: the cached revision visible to a snapshot ending before
  ``before`` (``serial < before`` and ``next_serial`` unknown-or-``>= before``), as
  ``(data, serial, next_serial)``, or ``None``.  ``get_serial(oid, serial)`` likewise.
- ``start_load()`` returns a token to pass to ``put`` for an answer fetched after it:
  if ``oid`` was invalidated meanwhile, a "current" answer (``next_serial`` None) is
  not cached, since it may already be stale.
- ``invalidate(oids, tid)``: the current revision of each oid ends at ``tid``.
- The cache owns nothing it returns: data are immutable ``bytes``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

REVISIONS_PER_OID_MAX = 8
RECENT_INVALIDATIONS_MAX = 100_000


class RevisionCache:
    def __init__(self, bytes_max: int):
        self.bytes_max = bytes_max
        self.bytes = 0
        self.lock = threading.Lock()
        self.entries: OrderedDict[bytes, list] = OrderedDict()  # oid -> [[serial, next, data]]
        self.seq = 0
        self.recent: OrderedDict[bytes, int] = OrderedDict()    # oid -> seq of last invalidation
        self.floor = 0    # loads started before this seq cannot tell: not cached as current
        self.hits = self.misses = self.evictions = 0

    def get(self, oid: bytes, before: bytes):
        with self.lock:
            for serial, nxt, data in reversed(self.entries.get(oid, ())):
                if serial < before and (nxt is None or nxt >= before):
                    return self._hit(oid, (data, serial, nxt))
            self.misses += 1
            return None

    def get_serial(self, oid: bytes, serial: bytes):
        with self.lock:
            for s, nxt, data in self.entries.get(oid, ()):
                if s == serial:
                    return self._hit(oid, (data, s, nxt))
            self.misses += 1
            return None

    def _hit(self, oid, found):
        self.hits += 1
        self.entries.move_to_end(oid)
        return found

    def start_load(self) -> int:
        with self.lock:
            return self.seq

    def put(self, oid: bytes, data: bytes, serial: bytes, next_serial: bytes | None, token: int | None = None) -> None:
        size = len(data) + 64
        if size > self.bytes_max // 4:
            return
        with self.lock:
            if next_serial is None and token is not None and self._invalidated_since(oid, token):
                return
            revs = self.entries.setdefault(oid, [])
            self.entries.move_to_end(oid)
            for rev in revs:
                if rev[0] == serial:
                    if next_serial is not None:
                        rev[1] = next_serial
                    return
            revs.append([serial, next_serial, data])
            revs.sort(key=lambda r: r[0])
            self.bytes += size
            while len(revs) > REVISIONS_PER_OID_MAX:
                self.bytes -= len(revs.pop(0)[2]) + 64
            self._evict()

    def _invalidated_since(self, oid, token) -> bool:
        return token < self.floor or self.recent.get(oid, -1) > token

    def _evict(self) -> None:
        while self.bytes > self.bytes_max and self.entries:
            _, revs = self.entries.popitem(last=False)
            self.bytes -= sum(len(r[2]) + 64 for r in revs)
            self.evictions += 1

    def invalidate(self, oids, tid: bytes) -> None:
        with self.lock:
            self.seq += 1
            for oid in oids:
                self.recent[oid] = self.seq
                self.recent.move_to_end(oid)
                for rev in self.entries.get(oid, ()):
                    if rev[1] is None and rev[0] < tid:
                        rev[1] = tid
            while len(self.recent) > RECENT_INVALIDATIONS_MAX:
                self.floor = self.recent.popitem(last=False)[1]

    def forget(self, oid: bytes) -> None:
        with self.lock:
            revs = self.entries.pop(oid, None)
            if revs:
                self.bytes -= sum(len(r[2]) + 64 for r in revs)

    def clear(self) -> None:
        with self.lock:
            self.seq += 1
            self.entries.clear()
            self.recent.clear()
            self.bytes = 0
            self.floor = self.seq

    def stats(self) -> dict:
        with self.lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "bytes": self.bytes, "bytes_max": self.bytes_max, "objects": len(self.entries)}
