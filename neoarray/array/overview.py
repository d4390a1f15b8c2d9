"""Envelope overviews: the minimum and maximum of each chunk of a 1-d array, kept as
its chunks are written, so that a plot of a long series reads pages, not chunks.

A plot of ``[start, stop)`` in ``n`` buckets (:func:`neoarray.array.envelope.envelope`)
needs, for each bucket, the minimum and maximum of its items.  Without an overview every
stored chunk of the span is reduced (by the storage nodes, from their per-chunk
summaries): the cost grows with the chunk count, about 0.1 ms a chunk.  With one, the
chunks that lie inside one bucket (all but the at most ``n + 1`` chunks a bucket edge
cuts) come from the overview, whose cost grows with the buckets and the pages read:

* a **page** (:class:`OverviewPage`, tier 0) holds the minimum and maximum of
  :data:`PAGE_ENTRIES` consecutive chunks (chunk ``k`` is entry ``k % PAGE_ENTRIES`` of
  page ``k // PAGE_ENTRIES``); an entry of a chunk never written (or removed) holds the
  fill value, which is what its items read;
* a **top page** (tier 1) holds the minimum and maximum of each of
  :data:`PAGE_ENTRIES` consecutive pages, so that a bucket covering whole pages reads one
  entry per page from a few top pages.  Pages and top pages never written are absent:
  all fill.

Each entry is computed from the whole stored chunk (its items beyond the array's bounds
hold the fill value, see :mod:`neoarray.array.chunks`); an envelope uses an entry only
for a chunk wholly inside its span, so never for the chunk the array's end cuts.

**Concurrent writers.**  The pages are written in the transaction that writes the
chunks, and merged by ZODB's conflict resolution when two transactions wrote the same
page: entries changed by one side are taken from it; a page entry both changed
differently is a conflict (the chunk itself conflicts too).  A top entry both changed
differently (two writers of different chunks of one page each computed the page's
extremes without the other's) is marked *stale*: a reader of a stale entry reads its
page instead, and the next writer of the page sets it again.  Undo merges the same way.  Two transactions that would both *create* one page (or
top page) conflict like two inserts of one key, so the pages of an array's extent are
made when the overview is kept and as the array grows (resizes and appends, which
conflict on the array anyway), up to :data:`PAGES_MADE_AHEAD_MAX` pages; beyond that
(sparse arrays of huge shapes) a page is made by the first write into it, and two first
writers into one page at once see a ``ConflictError`` and retry, as ZODB applications do.

Persistent state of :class:`Overview`::

    _dtype     str: numpy dtype of the array's items
    _fill      bytes: the fill value
    _pages     OOBTree: page index -> OverviewPage (tier 0)
    _tops      OOBTree: top page index -> OverviewPage (tier 1)

and of :class:`OverviewPage` (the state is bytes, so conflict resolution reads no
pickled numpy objects)::

    {"dtype": str, "mins": bytes, "maxs": bytes, "stale": bytes}   (stale: one byte
    per entry, tier 1; empty for tier 0)
"""
from __future__ import annotations

import numpy as np
import persistent
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from .errors import ArrayValueError

PAGE_ENTRIES = 1024         # entries of a page and of a top page
PAGES_MADE_AHEAD_MAX = 256  # pages made as an array grows (not by its chunks' writers: see below)
TOP_CHUNKS = PAGE_ENTRIES * PAGE_ENTRIES    # chunks one top page summarizes
KINDS = "biuf"              # dtype kinds an overview keeps: bool, int, uint, float


def supported(dtype: np.dtype, ndim: int) -> str | None:
    """Why an array of ``dtype`` and ``ndim`` dimensions cannot keep an overview, or None."""
    if ndim != 1:
        return f"an overview is kept for 1-d arrays, not {ndim}-d ones"
    if dtype.kind not in KINDS or dtype.fields is not None:
        return f"an overview is kept for bool, integer and float items, not {dtype}"
    return None


class OverviewPage(persistent.Persistent):
    """:data:`PAGE_ENTRIES` minima and maxima (and, in a top page, stale marks)."""

    def __init__(self, dtype: np.dtype, fill, top: bool):
        self.mins = np.full(PAGE_ENTRIES, fill, dtype=dtype)
        self.maxs = self.mins.copy()
        self.stale = np.zeros(PAGE_ENTRIES, dtype=bool) if top else None

    def __getstate__(self):
        return {"dtype": self.mins.dtype.str, "mins": self.mins.tobytes(), "maxs": self.maxs.tobytes(),
                "stale": b"" if self.stale is None else self.stale.tobytes()}

    def __setstate__(self, state):
        self.mins, self.maxs, self.stale = _arrays(state)

    def set(self, i: int, lo, hi) -> None:
        self.mins[i], self.maxs[i] = lo, hi
        if self.stale is not None:
            self.stale[i] = False
        self._p_changed = True

    def set_range(self, i: int, lows: np.ndarray, highs: np.ndarray) -> None:
        """Entries ``i .. i + len(lows) - 1`` at once."""
        end = i + len(lows)
        self.mins[i:end], self.maxs[i:end] = lows, highs
        if self.stale is not None:
            self.stale[i:end] = False
        self._p_changed = True

    def extremes(self) -> tuple:
        """The minimum and maximum of the page's entries (NaN propagates)."""
        return np.minimum.reduce(self.mins), np.maximum.reduce(self.maxs)

    def _p_resolveConflict(self, old, committed, new):
        """Merge two writers of this page entry by entry (see the module docstring)."""
        o, c, n = (_entry_bytes(s) for s in (old, committed, new))
        if len({len(o), len(c), len(n)}) != 1:
            raise ConflictError("overview pages of different shapes")
        by_c, by_n = (c != o).any(axis=1), (n != o).any(axis=1)
        both = by_c & by_n & (c != n).any(axis=1)
        top = bool(new["stale"])
        if both.any() and not top:
            raise ConflictError("two transactions wrote the overview entry of one chunk")
        merged = np.where(by_c[:, None], c, n)
        state = dict(new)
        mins, maxs, stale = _split_entries(merged, new)
        if top:
            stale = stale | both          # both sides moved a page's extremes: read the page
        state.update(mins=mins.tobytes(), maxs=maxs.tobytes(),
                     stale=b"" if not top else stale.astype(bool).tobytes())
        return state

    def __repr__(self):
        kind = "top" if self.stale is not None else "page"
        return f"<neoarray.array.OverviewPage {kind} oid={self._p_oid!r}>"


def _arrays(state) -> tuple:
    dtype = np.dtype(state["dtype"])
    mins = np.frombuffer(state["mins"], dtype=dtype).copy()
    maxs = np.frombuffer(state["maxs"], dtype=dtype).copy()
    stale = np.frombuffer(state["stale"], dtype=bool).copy() if state["stale"] else None
    return mins, maxs, stale


def _entry_bytes(state) -> np.ndarray:
    """One row of bytes per entry (minimum, maximum, stale mark): compared as bytes, so
    that a NaN entry equals itself."""
    itemsize = np.dtype(state["dtype"]).itemsize
    parts = [np.frombuffer(state["mins"], np.uint8).reshape(-1, itemsize),
             np.frombuffer(state["maxs"], np.uint8).reshape(-1, itemsize)]
    if state["stale"]:
        parts.append(np.frombuffer(state["stale"], np.uint8).reshape(-1, 1))
    return np.concatenate(parts, axis=1)


def _split_entries(rows: np.ndarray, state) -> tuple:
    dtype = np.dtype(state["dtype"])
    size = dtype.itemsize
    mins = np.ascontiguousarray(rows[:, :size]).view(dtype).reshape(-1)
    maxs = np.ascontiguousarray(rows[:, size:2 * size]).view(dtype).reshape(-1)
    stale = rows[:, 2 * size] != 0 if rows.shape[1] > 2 * size else None
    return mins, maxs, stale


class Overview(persistent.Persistent):
    """The overview of one 1-d array (see the module docstring)."""

    def __init__(self, dtype: np.dtype, fill_bytes: bytes):
        self._dtype = np.dtype(dtype).str
        self._fill = bytes(fill_bytes)
        self._pages = OOBTree()
        self._tops = OOBTree()
        self._made = 0          # pages 0 .. _made - 1 exist (made ahead)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    @property
    def fill(self):
        return np.frombuffer(self._fill, dtype=self.dtype)[0]

    # -- writes -------------------------------------------------------------------------
    def cover(self, chunks: int) -> None:
        """Make the pages of chunks ``0 .. chunks - 1`` (the array's extent) that do not
        exist, when they are at most :data:`PAGES_MADE_AHEAD_MAX`."""
        need = -(-chunks // PAGE_ENTRIES)
        if need <= self._made or need > PAGES_MADE_AHEAD_MAX:
            return
        for p in range(self._made, need):
            self._page(p)
        self._made = need

    def _page(self, p: int):
        page = self._pages.get(p)
        if page is None:
            page = self._pages[p] = OverviewPage(self.dtype, self.fill, top=False)
            q = p // PAGE_ENTRIES
            if q not in self._tops:
                self._tops[q] = OverviewPage(self.dtype, self.fill, top=True)
        return page

    def chunk_written(self, k: int, block) -> None:
        """Chunk ``k`` now holds ``block`` (the whole chunk, its items beyond the
        array's bounds at the fill value)."""
        block = np.asarray(block)
        self.set_extremes(k, np.minimum.reduce(block, axis=None), np.maximum.reduce(block, axis=None))

    def chunk_dropped(self, k: int) -> None:
        """Chunk ``k`` was removed: its items read the fill value."""
        if k // PAGE_ENTRIES in self._pages:
            self.set_extremes(k, self.fill, self.fill)

    def set_extremes(self, k: int, lo, hi) -> None:
        """The items of chunk ``k`` range from ``lo`` to ``hi``."""
        self.set_run(k, [lo], [hi])

    def set_run(self, first: int, lows, highs) -> None:
        """Chunks ``first .. first + len(lows) - 1`` range from ``lows[i]`` to
        ``highs[i]``: each page they fall in is written once, and its top entry once
        (``set_extremes`` per chunk would reduce the page again at every chunk)."""
        lows, highs = np.asarray(lows, dtype=self.dtype), np.asarray(highs, dtype=self.dtype)
        if lows.shape != highs.shape or lows.ndim != 1:
            raise ValueError(f"set_run takes two 1-d runs of one length, not {lows.shape} and {highs.shape}")
        k, end = first, first + len(lows)
        while k < end:
            p = k // PAGE_ENTRIES
            stop = min(end, (p + 1) * PAGE_ENTRIES)
            page = self._page(p)
            page.set_range(k % PAGE_ENTRIES, lows[k - first:stop - first], highs[k - first:stop - first])
            self._tops[p // PAGE_ENTRIES].set(p % PAGE_ENTRIES, *page.extremes())
            k = stop

    # -- reads --------------------------------------------------------------------------
    def extremes(self, a: int, b: int) -> tuple:
        """The minimum and maximum of the items of chunks ``a .. b - 1`` (``a < b``)."""
        lows, highs = [], []
        pa, pb = -(-a // PAGE_ENTRIES), b // PAGE_ENTRIES       # whole pages [pa, pb)
        if pa >= pb:
            self._chunk_entries(a, b, lows, highs)
        else:
            if a < pa * PAGE_ENTRIES:
                self._chunk_entries(a, pa * PAGE_ENTRIES, lows, highs)
            self._page_entries(pa, pb, lows, highs)
            if pb * PAGE_ENTRIES < b:
                self._chunk_entries(pb * PAGE_ENTRIES, b, lows, highs)
        dtype = self.dtype
        return (np.minimum.reduce(np.asarray(lows, dtype=dtype)),
                np.maximum.reduce(np.asarray(highs, dtype=dtype)))

    def _chunk_entries(self, a: int, b: int, lows: list, highs: list) -> None:
        """Entries of chunks ``a .. b - 1``, within at most two pages' reach."""
        fill = self.fill
        for p in range(a // PAGE_ENTRIES, (b - 1) // PAGE_ENTRIES + 1):
            lo, hi = max(a, p * PAGE_ENTRIES) - p * PAGE_ENTRIES, min(b, (p + 1) * PAGE_ENTRIES) - p * PAGE_ENTRIES
            page = self._pages.get(p)
            if page is None:
                lows.append(fill)
                highs.append(fill)
            else:
                lows.append(np.minimum.reduce(page.mins[lo:hi]))
                highs.append(np.maximum.reduce(page.maxs[lo:hi]))

    def _page_entries(self, pa: int, pb: int, lows: list, highs: list) -> None:
        """Extremes of the whole pages ``pa .. pb - 1``, from the top pages (a stale top
        entry: from its page); the fill value where a page was never written."""
        covered = 0
        for q, top in self._tops.items(pa // PAGE_ENTRIES, (pb - 1) // PAGE_ENTRIES):
            lo = max(pa, q * PAGE_ENTRIES) - q * PAGE_ENTRIES
            hi = min(pb, (q + 1) * PAGE_ENTRIES) - q * PAGE_ENTRIES
            covered += hi - lo
            stale = np.flatnonzero(top.stale[lo:hi])
            if len(stale) == 0:
                lows.append(np.minimum.reduce(top.mins[lo:hi]))
                highs.append(np.maximum.reduce(top.maxs[lo:hi]))
                continue
            fresh = np.ones(hi - lo, dtype=bool)
            fresh[stale] = False
            if fresh.any():
                lows.append(np.minimum.reduce(top.mins[lo:hi][fresh]))
                highs.append(np.maximum.reduce(top.maxs[lo:hi][fresh]))
            for i in stale:
                self._chunk_entries((q * PAGE_ENTRIES + lo + int(i)) * PAGE_ENTRIES,
                                    (q * PAGE_ENTRIES + lo + int(i) + 1) * PAGE_ENTRIES, lows, highs)
        if covered < pb - pa:
            lows.append(self.fill)
            highs.append(self.fill)

    def pages(self) -> int:
        """Pages kept (tier 0)."""
        return len(self._pages)


def check_keepable(array) -> None:
    why = supported(array.dtype, array.ndim)
    if why is not None:
        raise ArrayValueError(why)
