"""The min/max envelope of a stored 1-d array, computed near the data.

:func:`envelope` asks the storage nodes holding the array's chunks for each
chunk's part (kernel ``envelope`` of ``Reduce``, :mod:`neoarray.envelopes`), computes
here the chunks they could not reduce (not raw chunk records, not committed, or a
storage other than a neoarray cluster), and adds the fill value for the chunks never
written, one run of them at a time: only the stored chunks of the span are visited.

An array that keeps an overview (:meth:`ndarray.keep_overview`,
:mod:`neoarray.array.overview`) gives the buckets at least a chunk wide the extremes
of the chunks inside each of them from the overview's pages; only the chunks a bucket
edge cuts (at most one per edge) are reduced as above, so a plot of a long series costs
its buckets and pages, not its chunk count.  :func:`keep_overview` builds an overview
from the stored chunks.
"""
from __future__ import annotations

import numpy as np

from .. import envelopes
from . import fetch, layout
from . import overview as overviews
from .errors import ArrayValueError


def _snapshot_before(array) -> bytes | None:
    """The ``before`` tid of the committed snapshot ``array``'s connection reads."""
    conn = array._p_jar
    snapshot = fetch.snapshot_of(getattr(conn, "_storage", None))
    return None if snapshot is None else snapshot[1]


def envelope(array, start: int = 0, stop: int | None = None, buckets: int = 1000, *,
             align: bool = False) -> tuple:
    """``(bucket starts, minima, maxima)`` of ``array[start:stop]`` in ``buckets`` buckets.

    Equal to :func:`neoarray.envelopes.reference` on the array's items (NaN
    propagates like ``np.minimum``).  ``bucket starts`` has one more item than
    the minima: the end of the last bucket, ``stop``.  At most one bucket per
    item.  The stored chunks are reduced by the storage nodes holding them when
    the array is committed in a neoarray cluster.

    With ``align`` (what a plot asks), an array that keeps an overview and a span of
    at least ``buckets`` chunks get buckets of whole chunks instead, their edges on
    multiples of the bucket width (:func:`neoarray.envelopes.aligned_edges`; the bucket
    starts say where): each bucket's extremes come from the overview's pages, and
    only the chunks cut by ``start`` and ``stop`` are reduced.
    """
    if array.ndim != 1:
        raise ArrayValueError(f"an envelope is drawn for 1-d arrays, not {array.ndim}-d ones")
    length = array.shape[0]
    stop = length if stop is None else min(int(stop), length)
    start = int(start)
    if not 0 <= start < stop:
        raise ArrayValueError(f"an envelope needs 0 <= start < stop <= len(array) = {length}, "
                              f"not start={start}, stop={stop}")
    try:
        env = envelopes.Envelope(start, stop, int(buckets), array.dtype)
    except ValueError as exc:
        raise ArrayValueError(str(exc)) from None
    size = array.chunks[0]
    ov = getattr(array, "_overview", None)
    edges = envelopes.aligned_edges(start, stop, int(buckets), size) if align and ov is not None else None
    if edges is not None:
        return _aligned(array, ov, edges, size)
    if ov is not None and stop - start >= env.n * size:    # buckets of a chunk or more
        tree = array._tree
        keys = []
        for k in _add_from_overview(env, ov, size):
            if (k,) in tree:
                keys.append((k,))
            else:
                env.add_fill(k * size, (k + 1) * size, array.fill_value)
    else:
        first, last = start // size, (stop - 1) // size
        keys = list(array._tree.keys((first,), (last,)))
        _add_fill_runs(env, keys, first, last, size, array.fill_value)
    rest = _add_near_data(env, array, keys)
    if rest:
        _add_here(env, array, rest)
    return env.result()


def _add_from_overview(env, ov, size: int) -> list:
    """Merge, for each bucket, the extremes of the chunks wholly inside it (from the
    overview); return the chunks a bucket edge or an end of the span cuts, in order."""
    edges = envelopes.bucket_starts(env.start, env.stop, env.n)
    whole_lo, whole_hi = -(-edges[:-1] // size), edges[1:] // size
    for b in np.flatnonzero(whole_lo < whole_hi):
        a, z = int(whole_lo[b]), int(whole_hi[b])
        lo, hi = ov.extremes(a, z)
        env.add_state((np.int64(b), np.asarray([lo]), np.asarray([hi])), (z - a) * size)
    return sorted({int(e) // size for e in edges if e % size})


def _aligned(array, ov, edges, size: int) -> tuple:
    """The envelope in the buckets between ``edges`` (chunk boundaries, but for the
    first and the last): whole chunks from the overview, the cut ones reduced."""
    n = len(edges) - 1
    mins, maxs = np.empty(n, dtype=array.dtype), np.empty(n, dtype=array.dtype)
    for b in range(n):
        lo, hi = int(edges[b]), int(edges[b + 1])
        a, z = -(-lo // size), hi // size           # the chunks wholly inside
        parts = [ov.extremes(a, z)] if a < z else []
        cuts = [(lo, hi)] if a >= z else [(lo, a * size), (z * size, hi)]
        for c_lo, c_hi in cuts:
            if c_lo < c_hi:
                _, c_min, c_max = envelope(array, c_lo, c_hi, 1)
                parts.append((c_min[0], c_max[0]))
        mins[b] = np.minimum.reduce(np.asarray([p[0] for p in parts], dtype=array.dtype))
        maxs[b] = np.maximum.reduce(np.asarray([p[1] for p in parts], dtype=array.dtype))
    return edges, mins, maxs


def keep_overview(array) -> int:
    """Give ``array`` an overview of its stored chunks (:meth:`ndarray.keep_overview`)."""
    overviews.check_keepable(array)
    if array._overview is not None:
        return 0
    ov = overviews.Overview(array.dtype, array._fill)
    size, length = array.chunks[0], array.shape[0]
    ov.cover(-(-length // size))
    keys = [k for (k,) in array._tree]
    inside = [k for k in keys if (k + 1) * size <= length]     # chunks wholly in bounds
    for a, z in _runs(inside, envelopes.BUCKETS_MAX):           # reduced on the nodes
        _, mins, maxs = envelope(array, a * size, z * size, z - a)
        ov.set_run(a, mins, maxs)
    cut = [(key, array._tree[key]) for key in array._tree.keys(min=(length // size,))]
    def extremes(key, block):           # the whole chunk, beyond the array's end too
        return np.minimum.reduce(block, axis=None), np.maximum.reduce(block, axis=None)
    for (k,), (lo, hi) in array._map_arrays(cut, extremes):
        ov.set_extremes(k, lo, hi)
    array._overview = ov
    return len(keys)


def _runs(keys: list, longest: int):
    """``(first, end)`` of each run of consecutive ``keys``, at most ``longest`` long."""
    i = 0
    while i < len(keys):
        j = i + 1
        while j < len(keys) and keys[j] == keys[j - 1] + 1 and j - i < longest:
            j += 1
        yield keys[i], keys[j - 1] + 1
        i = j


def _items_in(env, lo: int, hi: int) -> int:
    return max(0, min(hi, env.stop) - max(lo, env.start))


def _add_fill_runs(env, keys, first: int, last: int, size: int, fill) -> None:
    """Add the fill value for each run of chunks in ``first..last`` absent from ``keys``."""
    expected = first
    for (k,) in keys + [(last + 1,)]:
        if k > expected:
            env.add_fill(expected * size, k * size, fill)
        expected = k + 1


def _add_near_data(env, array, keys) -> list:
    """Merge the parts the storage nodes reduce; the keys they did not reduce."""
    conn = array._p_jar
    storage = getattr(getattr(conn, "db", lambda: None)(), "storage", None)
    before = _snapshot_before(array) if storage is not None else None
    if before is None or not hasattr(storage, "reduce_chunks"):
        return keys
    if getattr(conn, "_registered_objects", None) or getattr(conn, "_added", None):
        return keys             # changes not committed: the nodes hold the committed chunks
    tree, size, shape = array._tree, array.chunks[0], array.shape
    oids = {}
    for key in keys:
        oid = tree[key]._p_oid
        if oid is None:
            return keys         # uncommitted chunks: everything here
        oids[oid] = key
    if not oids:
        return []
    extents = {oid: layout.chunk_extent(k, shape, array.chunks) for oid, k in oids.items()}
    states = storage.reduce_chunks(
        list(oids), before, envelopes.KERNEL, dtype=array.dtype, acc=array.dtype,
        chunk_shape=array.chunks, order=array.order, extents=extents, codec=array.codec,
        bins=env.n, span=(env.start, env.stop),
        offsets={oid: k[0] * size for oid, k in oids.items()})
    for oid, (state, _serial) in states.items():
        k = oids[oid][0]
        env.add_state(state, _items_in(env, k * size, k * size + extents[oid][0]))
    return [k for oid, k in oids.items() if oid not in states]


def _add_here(env, array, keys) -> None:
    size = array.chunks[0]

    def part(key, block):      # may run on a compute thread, on a view of the record
        offset = key[0] * size
        return (envelopes.envelope_state(block, offset, env.start, env.stop, env.n),
                _items_in(env, offset, offset + block.shape[0]))
    for _key, (state, items) in array._map_stored(part, keys):
        env.add_state(state, items)
