"""Min/max envelopes of 1-d arrays: what a plot of a long series draws.

The envelope of ``[start, stop)`` in ``n`` buckets is, for each bucket, the minimum
and the maximum of its items.  Bucket ``b`` holds the items ``i`` with
``(i - start) * n // span == b`` (``span = stop - start``; ``n`` is at most ``span``,
so no bucket is empty): its first item is ``start + ceil(b * span / n)``
(:func:`bucket_starts`), numpy's answer is ``np.minimum.reduceat(a[start:stop],
bucket_starts(...) - start)`` (:func:`reference`).

Storage nodes compute the part of the envelope of each chunk they hold (kernel
:data:`KERNEL` of the ``Reduce`` request, :func:`envelope_state`), from a summary of
the chunk (minima and maxima of runs of :data:`SUMMARY_ITEMS` items, :func:`summarize`)
that they keep per chunk revision, so that redrawing a long series, zooming or
following appends reads only the partly covered runs and the new chunks
(:func:`summarized_state`, ``storage_node/service.py``); the client merges
the per-chunk states and adds the fill value for the chunks never written
(:class:`Envelope`).  This module decides and computes; it does no I/O:
:func:`neoarray.array.envelope.envelope` asks the nodes.
"""
from __future__ import annotations

import numpy as np

KERNEL = "envelope"
BUCKETS_MAX = 1 << 16      # buckets of one envelope (the node's reduce_histogram_bins_max too)
SUMMARY_ITEMS = 4096       # items of one run of a chunk's summary (summarize)
SUMMARIZED_BUCKET_RUNS_MIN = 4   # buckets narrower than this many runs are read whole
SPAN_ITEMS_MAX = 1 << 46   # items of an array an envelope spans (bucket arithmetic in int64)


def buckets_for(start: int, stop: int, buckets: int) -> int:
    """How many buckets ``[start, stop)`` gets when ``buckets`` are asked: at most one
    per item.  ValueError for an empty span or a count outside ``1..BUCKETS_MAX``."""
    if not 0 <= start < stop:
        raise ValueError(f"an envelope needs 0 <= start < stop, not start={start}, stop={stop}")
    if stop > SPAN_ITEMS_MAX:
        raise ValueError(f"an envelope spans items below {SPAN_ITEMS_MAX}, not up to {stop}")
    if not 1 <= buckets <= BUCKETS_MAX:
        raise ValueError(f"an envelope has 1 to {BUCKETS_MAX} buckets, not {buckets}")
    return min(buckets, stop - start)


def aligned_edges(start: int, stop: int, buckets: int, chunk_items: int):
    """Bucket edges on the chunk grid for an array that keeps an overview: ``start``,
    the multiples of ``m * chunk_items`` inside ``(start, stop)``, then ``stop``, with
    ``m`` the fewest whole chunks a bucket spans to give at most ``buckets`` buckets
    (int64).  None when the span holds fewer than ``buckets`` chunks: its buckets are
    narrower than a chunk and follow :func:`bucket_starts`."""
    start, stop = int(start), int(stop)
    buckets_for(start, stop, buckets)           # the same checks
    if buckets < 2 or stop - start < buckets * chunk_items:
        return None
    width = -(-(stop - start) // ((buckets - 1) * chunk_items)) * chunk_items
    inner = np.arange((start // width + 1) * width, stop, width, dtype=np.int64)
    return np.concatenate([[start], inner, [stop]]).astype(np.int64)


def bucket_of(index, start: int, stop: int, n: int):
    """The bucket of item ``index`` (an int or an int64 array)."""
    return (index - start) * n // (stop - start)


def bucket_starts(start: int, stop: int, n: int, first: int = 0, last: int | None = None) -> np.ndarray:
    """First item of each of the ``n`` buckets (int64), then ``stop``; with ``first``
    and ``last``, of the buckets ``first..last`` and of the next one only."""
    b = np.arange(first, (n if last is None else last + 1) + 1, dtype=np.int64)
    span = stop - start
    return start + (b * span + n - 1) // n


def envelope_state(block, offset: int, start: int, stop: int, n: int) -> tuple:
    """``(first bucket int64, minima, maxima)`` of the items of the 1-d ``block``
    (its first item is item ``offset`` of the array) within ``[start, stop)``: one
    minimum and maximum per bucket the block touches, from the first one.  A block
    outside the span gives empty minima and maxima."""
    block = np.asarray(block)
    if block.ndim != 1:
        raise ValueError(f"the envelope reduces 1-d blocks, not {block.ndim}-d ones")
    touched = _touched(block.shape[0], offset, start, stop, n)
    if touched is None:
        empty = block[:0]
        return np.int64(0), empty.copy(), empty.copy()
    first, edges = touched
    part = block[edges[0] - offset:edges[-1] - offset]
    at = edges[:-1] - edges[0]
    return (np.int64(first), np.minimum.reduceat(part, at), np.maximum.reduceat(part, at))


def _touched(items: int, offset: int, start: int, stop: int, n: int):
    """``(first bucket, edges)`` of the buckets that a block of ``items`` items at
    ``offset`` touches within ``[start, stop)``: ``edges`` (int64, array items) are the
    start of its part of each bucket, then the end of its last part; None when the
    block is outside the span."""
    lo, hi = max(offset, start), min(offset + items, stop)
    if lo >= hi:
        return None
    first, last = bucket_of(lo, start, stop, n), bucket_of(hi - 1, start, stop, n)
    edges = bucket_starts(start, stop, n, first, last)
    edges[0], edges[-1] = lo, hi
    return first, edges


def _wide(edges) -> bool:
    """Every bucket part between ``edges`` spans :data:`SUMMARIZED_BUCKET_RUNS_MIN` runs."""
    return int(np.diff(edges).min()) >= SUMMARIZED_BUCKET_RUNS_MIN * SUMMARY_ITEMS


def summarize(block) -> tuple:
    """Minima and maxima of each run of :data:`SUMMARY_ITEMS` items of the 1-d
    ``block`` (the last run may be shorter): what :func:`summarized_state` needs."""
    block = np.asarray(block)
    at = np.arange(0, block.shape[0], SUMMARY_ITEMS)
    return np.minimum.reduceat(block, at), np.maximum.reduceat(block, at)


def whole_chunk_state(summary: tuple, items: int, offset: int, start: int, stop: int, n: int):
    """The :func:`envelope_state` of a block of ``items`` items at ``offset`` from its
    summary alone, when the block lies in the span and inside one bucket (a plot of a
    long series: most chunks), else None.  Equal to the state read from the block."""
    if offset < start or offset + items > stop:
        return None
    first = bucket_of(offset, start, stop, n)
    if bucket_of(offset + items - 1, start, stop, n) != first:
        return None
    smin, smax = summary
    return np.int64(first), np.minimum.reduce(smin, keepdims=True), np.maximum.reduce(smax, keepdims=True)


def summary_helps(items: int, offset: int, start: int, stop: int, n: int) -> bool:
    """Whether :func:`summarized_state` of a block of ``items`` items at ``offset``
    reads only the runs at its buckets' edges (every bucket it touches spans at least
    :data:`SUMMARIZED_BUCKET_RUNS_MIN` runs), rather than the whole block."""
    touched = _touched(items, offset, start, stop, n)
    return touched is not None and _wide(touched[1])


def summarized_state(block, summary: tuple, offset: int, start: int, stop: int, n: int) -> tuple:
    """:func:`envelope_state`, reading from ``block`` only the runs that a bucket covers
    in part: a bucket's whole runs come from ``summary`` (:func:`summarize` of the same
    block).  With buckets of thousands of runs (a plot of a long series) that reads a
    few pages of each chunk instead of all of it; narrow buckets are read whole."""
    block = np.asarray(block)
    touched = _touched(block.shape[0], offset, start, stop, n)
    if touched is None or not _wide(touched[1]):
        return envelope_state(block, offset, start, stop, n)
    first, edges = touched
    local = edges - offset
    smin, smax = summary
    mins = np.empty(len(local) - 1, dtype=block.dtype)
    maxs = np.empty(len(local) - 1, dtype=block.dtype)
    for j in range(len(local) - 1):
        a, b = int(local[j]), int(local[j + 1])
        whole_lo, whole_hi = -(-a // SUMMARY_ITEMS), b // SUMMARY_ITEMS     # runs inside [a, b)
        head, tail = block[a:whole_lo * SUMMARY_ITEMS], block[whole_hi * SUMMARY_ITEMS:b]
        lows = [smin[whole_lo:whole_hi].min()] + [x.min() for x in (head, tail) if len(x)]
        highs = [smax[whole_lo:whole_hi].max()] + [x.max() for x in (head, tail) if len(x)]
        mins[j] = np.minimum.reduce(np.asarray(lows, dtype=block.dtype))
        maxs[j] = np.maximum.reduce(np.asarray(highs, dtype=block.dtype))
    return np.int64(first), mins, maxs


def reference(values, start: int, stop: int, buckets: int) -> tuple:
    """numpy's envelope of ``values[start:stop]``: ``(bucket starts, minima, maxima)``."""
    n = buckets_for(start, stop, buckets)
    starts = bucket_starts(start, stop, n)
    part = np.asarray(values[start:stop])
    at = starts[:-1] - start
    return starts, np.minimum.reduceat(part, at), np.maximum.reduceat(part, at)


class Envelope:
    """The envelope of ``[start, stop)`` being merged from parts.

    :meth:`add_state` merges a chunk's :func:`envelope_state`, :meth:`add_fill` the
    items ``[lo, hi)`` that all equal one value (chunks never written); once every
    item of the span was added, :meth:`result` gives ``(bucket starts, minima,
    maxima)``, numpy's answer.
    """

    def __init__(self, start: int, stop: int, buckets: int, dtype):
        self.start, self.stop = int(start), int(stop)
        self.n = buckets_for(self.start, self.stop, int(buckets))
        self.mins = np.zeros(self.n, dtype=dtype)
        self.maxs = np.zeros(self.n, dtype=dtype)
        self.covered = np.zeros(self.n, dtype=bool)
        self.items = 0          # items added so far

    def _merge(self, first: int, mins, maxs) -> None:
        if first < 0 or first + len(mins) > self.n or len(mins) != len(maxs):
            raise ValueError(f"an envelope part of {len(mins)} buckets from bucket {first} "
                             f"does not fit {self.n} buckets")
        sl = slice(first, first + len(mins))
        seen = self.covered[sl]
        self.mins[sl] = np.where(seen, np.minimum(self.mins[sl], mins), mins)
        self.maxs[sl] = np.where(seen, np.maximum(self.maxs[sl], maxs), maxs)
        self.covered[sl] = True

    def add_state(self, state, items: int) -> None:
        """Merge one chunk's state, which covered ``items`` items of the span."""
        first, mins, maxs = state
        if len(mins):
            self._merge(int(first), np.asarray(mins), np.asarray(maxs))
        self.items += items

    def add_fill(self, lo: int, hi: int, value) -> None:
        """Merge the items ``[lo, hi)`` (clipped to the span), all equal to ``value``."""
        lo, hi = max(lo, self.start), min(hi, self.stop)
        if lo >= hi:
            return
        first = int(bucket_of(lo, self.start, self.stop, self.n))
        last = int(bucket_of(hi - 1, self.start, self.stop, self.n))
        part = np.full(last - first + 1, value, dtype=self.mins.dtype)
        self._merge(first, part, part)
        self.items += hi - lo

    def result(self) -> tuple:
        if self.items != self.stop - self.start or not self.covered.all():
            raise ValueError(f"the envelope holds {self.items} of the "
                             f"{self.stop - self.start} items of its span")
        return bucket_starts(self.start, self.stop, self.n), self.mins, self.maxs
