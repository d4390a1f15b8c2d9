"""Chunk summaries kept for envelopes: a bounded LRU of ``neoarray.envelopes.summarize``
results by chunk revision.

A plot of a long series asks for its envelope again and again (each refresh, each
zoom), and a chunk revision never changes: its oid and serial name its bytes for
good, so its summary (minima and maxima of its runs) is computed once, on first use,
and kept while ``bytes_max`` allows (least recently used first out).  Appends add new
chunks (and a new revision of the last one), whose summaries are computed as they are
first drawn.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

ENTRY_OVERHEAD_BYTES = 200      # the key, the tuple, the two array headers


class SummaryCache:
    def __init__(self, bytes_max: int):
        self.bytes_max = bytes_max
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict = OrderedDict()
        self._mutex = threading.Lock()

    def peek(self, key):
        """The summary kept for ``key``, or None (counted as neither hit nor miss)."""
        with self._mutex:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def get(self, key, compute):
        """The summary of ``key`` (``(oid, serial, items, dtype)``), from ``compute()``
        when it is not kept."""
        with self._mutex:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        summary = compute()
        size = sum(a.nbytes for a in summary) + ENTRY_OVERHEAD_BYTES
        if size > self.bytes_max:
            return summary
        with self._mutex:
            if key not in self._entries:
                self._entries[key] = summary
                self.bytes += size
            while self.bytes > self.bytes_max:
                _, old = self._entries.popitem(last=False)
                self.bytes -= sum(a.nbytes for a in old) + ENTRY_OVERHEAD_BYTES
        return summary
