"""The min/max envelope of a stored 1-d array, computed near the data.

:func:`envelope` asks the storage nodes holding the array's chunks for each
chunk's part (kernel ``envelope`` of ``Reduce``, :mod:`neoarray.envelopes`), computes
here the chunks they could not reduce (not raw chunk records, not committed, or a
storage other than a neoarray cluster), and adds the fill value for the chunks never
written, one run of them at a time: only the stored chunks of the span are visited.
"""
from __future__ import annotations

from .. import envelopes
from . import fetch, layout
from .errors import ArrayValueError


def _snapshot_before(array) -> bytes | None:
    """The ``before`` tid of the committed snapshot ``array``'s connection reads."""
    conn = array._p_jar
    snapshot = fetch.snapshot_of(getattr(conn, "_storage", None))
    return None if snapshot is None else snapshot[1]


def envelope(array, start: int = 0, stop: int | None = None, buckets: int = 1000) -> tuple:
    """``(bucket starts, minima, maxima)`` of ``array[start:stop]`` in ``buckets`` buckets.

    Equal to :func:`neoarray.envelopes.reference` on the array's items (NaN
    propagates like ``np.minimum``).  ``bucket starts`` has one more item than
    the minima: the end of the last bucket, ``stop``.  At most one bucket per
    item.  The stored chunks are reduced by the storage nodes holding them when
    the array is committed in a neoarray cluster.
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
    first, last = start // size, (stop - 1) // size
    keys = list(array._tree.keys((first,), (last,)))
    _add_fill_runs(env, keys, first, last, size, array.fill_value)
    rest = _add_near_data(env, array, keys)
    if rest:
        _add_here(env, array, rest)
    return env.result()


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
