"""Window operations on 1-D series: :func:`diff`, :func:`moving_mean`, :func:`alerts`.

Each output item ``i`` depends on the input items ``a[i : i + width]`` (``width``
2 for ``diff``, ``window`` for ``moving_mean``), so an output chunk needs
``width - 1`` input items beyond its own span: its *halo*, which may cover
several input chunks when the window is longer than a chunk.

Halos
    Output chunks are computed in increasing order.  The stored input chunks
    are read once each, in order, through ``ndarray._map_stored`` (batched and
    read ahead, or computed on in place); the blocks overlapping the current
    output chunk's span are held in a short queue, so a block serves every
    output chunk whose span it meets and is dropped once behind.  Memory: the
    blocks of one span (output chunk plus halo) and one output chunk, checked
    with :func:`core.check_memory`, plus the read-ahead batch
    (``config.fetch_limit_bytes()``).  Each span goes to the Numba kernel of
    :mod:`neoarray.kernels` as one contiguous buffer.
Sparsity
    Where a span holds no stored chunk, every item is the input's fill value and
    the output is a known constant (``fill - fill``, ``fill``); a new output gets
    that constant as its fill value, so those chunks are neither computed nor
    stored.  Only output chunks whose span meets a stored input chunk, or which
    ``out`` already stores, are visited (found with ``minKey`` on the chunk
    trees): work is proportional to the stored data.  An ``out`` whose fill value
    differs from the constant is written everywhere.  With a NaN fill, NaN
    results are written with the fill's bytes, so all-NaN chunks are not stored.
Transactions
    Outputs are written in the caller's ZODB transaction; a new output is added
    to the input's connection (if any), like ufunc results.

:func:`alerts` returns a numpy array of indices; over unwritten runs it applies
the kernel's rule to a pair of fill values once (nothing is flagged unless
``limit < 0`` and the fill is finite and non-zero; then every such item is).
"""
from __future__ import annotations

import collections
import contextlib
import operator

import numpy as np

from .. import kernels
from . import core, layout
from .config import config
from .errors import ArrayCastError, ArrayDtypeError, ArrayShapeError, ArrayValueError

REAL_KINDS = "biuf"
NUMERIC_KINDS = "biufc"

_Op = collections.namedtuple("_Op", "name width work_dtype out_dtype constant compute")
_Op.__doc__ = """One window operation: ``out[i] = f(a[i : i + width])``.

``work_dtype``: dtype the input blocks are converted to; ``constant``: the output
over a span of fill values (a numpy scalar of ``out_dtype``); ``compute(span)``
returns ``len(span) - width + 1`` items."""


# ---------------------------------------------------------------------- public API

def diff(a: core.ndarray, *, out: core.ndarray | None = None) -> core.ndarray:
    """First difference of a 1-D series: ``out[i] = a[i + 1] - a[i]``.

    Parameters
    ----------
    a : neoarray.array.ndarray
        1-D array of a numeric dtype (bool, integer, float, complex).
    out : neoarray.array.ndarray, optional
        1-D array of length ``len(a) - 1`` to write into (any chunk length,
        a dtype that ``numpy.diff``'s result casts to under ``same_kind``).

    Returns
    -------
    neoarray.array.ndarray
        ``out``, or a new array of length ``max(len(a) - 1, 0)`` with the dtype
        of ``numpy.diff`` (``not_equal`` for bools), the chunk length of ``a``
        and the fill value ``fill - fill``; added to ``a``'s connection.

    Raises
    ------
    TypeError
        ``a`` (or ``out``) is not a stored ``ndarray`` (a lazy expression: persist it).
    ArrayShapeError
        ``a`` is not 1-D, or ``out`` has another length.
    ArrayDtypeError
        ``a``'s dtype is not numeric.
    ArrayCastError
        ``out``'s dtype cannot take the result under ``same_kind``.
    """
    _check_series(a, "diff", NUMERIC_KINDS)
    out_dtype = np.diff(np.zeros(2, a.dtype)).dtype
    work = a.dtype.newbyteorder("=")
    if work == np.float16:          # Numba has no float16: numpy computes it in float32 too
        work = np.dtype(np.float32)

    def compute(span):
        return kernels.diff(span).astype(out_dtype, copy=False)
    constant = compute(np.full(2, a.fill_value, work))[0]
    return _window_map(a, _Op("diff", 2, work, out_dtype, constant, compute), out)


def moving_mean(a: core.ndarray, window: int, *, out: core.ndarray | None = None) -> core.ndarray:
    """Means of every ``window`` consecutive items of a 1-D series.

    Like ``numpy.convolve(a, numpy.ones(window) / window, 'valid')`` (Kahan-compensated
    sliding sums in float64, restarted at every output chunk); NaN and infinite
    items give NaN or infinite means only in the windows that hold them.

    Parameters
    ----------
    a : neoarray.array.ndarray
        1-D array of a real dtype (bool, integer, float).
    window : int
        Items per window, at least 1; may exceed the chunk length (the halo then
        spans several chunks) and the length of ``a`` (empty result).
    out : neoarray.array.ndarray, optional
        1-D array of length ``len(a) - window + 1`` (any chunk length, a floating dtype).

    Returns
    -------
    neoarray.array.ndarray
        ``out``, or a new float64 array of length ``max(len(a) - window + 1, 0)``
        with the chunk length of ``a`` and fill value ``float(a.fill_value)``.

    Raises
    ------
    TypeError
        ``a`` (or ``out``) is not a stored ``ndarray`` (a lazy expression: persist it).
    ArrayShapeError
        ``a`` is not 1-D, or ``out`` has another length.
    ArrayDtypeError
        ``a``'s dtype is not numeric.
    ArrayValueError
        If ``window < 1``.
    ArrayTooLargeError
        If the span of one output chunk and its window does not fit in memory.
    """
    _check_series(a, "moving_mean", REAL_KINDS)
    window = operator.index(window)
    if window < 1:
        raise ArrayValueError(f"moving_mean needs window >= 1, not {window}")
    f64 = np.dtype(np.float64)
    constant = np.float64(np.asarray(a.fill_value).astype(f64))

    def compute(span):
        return _moving_mean(span, window)
    return _window_map(a, _Op("moving_mean", window, f64, f64, constant, compute), out)


def alerts(a: core.ndarray, limit: float) -> np.ndarray:
    """Indices ``i`` where the rate of variation ``|a[i] / a[i-1] - 1|`` exceeds ``limit``.

    Same rules as :func:`neoarray.kernels.alerts`: items are compared in float64,
    an item after a zero is never flagged (no rate), nor is a NaN rate.

    Parameters
    ----------
    a : neoarray.array.ndarray
        1-D array of a real dtype (bool, integer, float).
    limit : float
        The rate of variation beyond which an item is flagged.

    Returns
    -------
    numpy.ndarray
        int64 global indices, increasing.

    Raises
    ------
    TypeError
        ``a`` is not a stored ``ndarray`` (a lazy expression: persist it).
    ArrayShapeError
        ``a`` is not 1-D.
    ArrayDtypeError
        ``a``'s dtype is not numeric.
    ArrayTooLargeError
        If the indices would not fit in ``config.memory_bytes_max``.
    """
    _check_series(a, "alerts", REAL_KINDS)
    found = _Alerts(a, float(limit))
    c = a.chunks[0]
    with contextlib.closing(a._map_stored(found.scan_block)) as stored:
        for (k,), scanned in stored:
            found.stored_block(k * c, *scanned)
    return found.finish()


# ---------------------------------------------------------------------- checks

def _check_series(a, name, kinds):
    if not isinstance(a, core.ndarray):
        hint = (": store the expression first (expr.persist())"
                if isinstance(a, core.ChunkedArray) else "")
        raise TypeError(f"{name} needs a neoarray.array.ndarray, not {type(a).__name__}{hint}")
    if a.ndim != 1:
        raise ArrayShapeError(f"{name} works on 1-D series, not on an array of shape {a.shape}")
    if a.dtype.kind not in kinds:
        raise ArrayDtypeError(
            f"{name} needs a numeric dtype ({_kind_names(kinds)}), not {a.dtype}")


def _kind_names(kinds):
    names = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
    return "/".join(names[k] for k in kinds)


def _checked_out(out, a, op, length):
    """``out`` if it can take the result of ``op`` on ``a``, else a clear error."""
    name = op.name
    if not isinstance(out, core.ndarray):
        raise TypeError(f"{name}: out must be a neoarray.array.ndarray, not {type(out).__name__}")
    if out is a:
        raise ArrayValueError(f"{name}: out must not be the input array (the halo would be "
                              "overwritten before it is read)")
    if out.ndim != 1:
        raise ArrayShapeError(f"{name}: out must be 1-D, not of shape {out.shape}")
    if out.shape[0] != length:
        raise ArrayShapeError(
            f"{name}: out has length {out.shape[0]}, the result has length {length} "
            f"(len(a) - {op.width - 1})")
    if out.dtype.kind not in NUMERIC_KINDS:
        raise ArrayDtypeError(f"{name}: out must have a numeric dtype, not {out.dtype}")
    if not np.can_cast(op.out_dtype, out.dtype, casting="same_kind"):
        raise ArrayCastError(f"{name}: cannot cast the result of dtype {op.out_dtype} to "
                             f"out's dtype {out.dtype} under the 'same_kind' rule")
    return out


def _new_chunks(a, op, length):
    """Chunks of a new output: ``a``'s, unless they would hold too many bytes."""
    if a.chunks[0] * op.out_dtype.itemsize <= config.chunk_bytes_max:
        return a.chunks
    return layout.default_chunks((length,), op.out_dtype.itemsize, "C",
                                 min(config.chunk_bytes_target, config.chunk_bytes_max))


def _new_out(a, op, length, chunks):
    """A new output array whose fill value is the constant, in ``a``'s connection."""
    result = core.ndarray((length,), dtype=op.out_dtype, order=a.order, chunks=chunks,
                          fill_value=op.constant, codec=a.codec)
    if a._p_jar is not None:
        a._p_jar.add(result)
    return result


def _check_span_memory(a, out_chunk_items, op):
    c, co = a.chunks[0], out_chunk_items
    span = co + op.width - 1
    nbytes = (2 * span + 2 * c) * op.work_dtype.itemsize + 2 * co * op.out_dtype.itemsize
    core.check_memory(nbytes, f"{op.name} with windows of {op.width} items over input "
                              f"chunks of {c} items and output chunks of {co} items")


# ---------------------------------------------------------------------- window map

def _window_map(a, op, out):
    """Write ``op`` over ``a`` into ``out`` (or a new array), chunk by chunk of the output."""
    length = max(a.shape[0] - op.width + 1, 0)
    chunks = _checked_out(out, a, op, length).chunks if out is not None else \
        _new_chunks(a, op, length)
    if length:
        _check_span_memory(a, chunks[0], op)    # before a new output joins the connection
    if out is None:
        out = _new_out(a, op, length, chunks)
    if length == 0:
        return out
    constant, dense = _out_constant(out, op)
    c, co = a.chunks[0], out.chunks[0]
    fill = np.asarray(a.fill_value).astype(op.work_dtype)
    nan_fill = out.dtype.kind == "f" and np.isnan(out.fill_value)

    def to_work(_key, block):
        return block.astype(op.work_dtype)
    with contextlib.closing(a._map_stored(to_work)) as stored:
        held = _HeldBlocks(stored, c)
        for j in _output_chunks(a, out, op.width, dense):
            start, stop = j * co, min((j + 1) * co, length)
            blocks = held.advance(start, stop + op.width - 1)
            if blocks:
                result = op.compute(_span(blocks, start, stop + op.width - 1, c, fill))
                if nan_fill:        # any NaN as out's fill bytes: all-NaN chunks are not stored
                    np.copyto(result, out.fill_value, where=np.isnan(result))
            else:
                result = np.full(stop - start, constant, dtype=out.dtype)
            out._put_block((j,), result)
    return out


def _out_constant(out, op):
    """``(constant in out's dtype, dense)``: dense when it is not out's fill value.

    A NaN constant matches a NaN fill whatever their bytes; out's own fill is then
    written, so those chunks stay unstored.
    """
    constant = np.asarray(op.constant).astype(out.dtype)
    fill = out.fill_value
    if constant.tobytes() == out._fill or (np.isnan(constant) and np.isnan(fill)):
        return fill, False
    return constant, True


def _output_chunks(a, out, width, dense):
    """Indices of the output chunks to write, increasing.

    Dense: all.  Otherwise those whose input span meets a stored chunk of ``a``
    (input chunk ``k`` reaches outputs ``k*c - width + 1 .. (k+1)*c - 1``) and those
    stored in ``out`` (stale values to replace).  The trees are queried afresh
    after each yield, since the caller writes ``out`` in between.
    """
    length, co, c = out.shape[0], out.chunks[0], a.chunks[0]
    grid = -(-length // co)
    if dense:
        yield from range(grid)
        return
    j = 0
    while j < grid:
        candidates = []
        k = _min_key(a._tree, j * co // c)      # first input chunk reaching output chunk j
        if k is not None:
            candidates.append(max(j, max(0, k * c - width + 1) // co))
        stale = _min_key(out._tree, j)
        if stale is not None:
            candidates.append(stale)
        if not candidates:
            return
        j = min(candidates)
        if j < grid:
            yield j
        j += 1


def _min_key(tree, index):
    """Smallest chunk index ``>= index`` stored in ``tree``, or None."""
    try:
        return tree.minKey((index,))[0]
    except ValueError:
        return None


class _HeldBlocks:
    """The stored input blocks meeting a span that only moves forward.

    ``stored`` yields ``((k,), block)`` in increasing ``k``; each block is read
    once and dropped when the span has passed it.
    """

    def __init__(self, stored, chunk_items):
        self._stored = stored
        self._chunk_items = chunk_items
        self._next = next(stored, None)
        self._held = collections.deque()

    def advance(self, start, stop):
        """Hold exactly the blocks meeting ``[start, stop)``; return them in order."""
        c = self._chunk_items
        while self._next is not None and self._next[0][0] * c < stop:
            self._held.append(self._next)
            self._next = next(self._stored, None)
        while self._held and self._held[0][0][0] * c + len(self._held[0][1]) <= start:
            self._held.popleft()
        return self._held


def _span(blocks, start, stop, chunk_items, fill):
    """Items ``[start, stop)`` of the input: ``blocks`` where stored, ``fill`` elsewhere."""
    span = np.empty(stop - start, dtype=fill.dtype)
    done = start
    for (k,), block in blocks:
        first = k * chunk_items
        lo, hi = max(first, start), min(first + len(block), stop)
        if lo >= hi:
            continue
        span[done - start:lo - start] = fill
        span[lo - start:hi - start] = block[lo - first:hi - first]
        done = hi
    span[done - start:] = fill
    return span


def _moving_mean(span, window):
    """The kernel's moving mean of ``span`` (float64; NaN and infinities as
    ``numpy.convolve`` gives them, only in the windows that hold them)."""
    if window == 1:
        return span
    return kernels.moving_mean(span, window)


# ---------------------------------------------------------------------- alerts

class _Alerts:
    """Collects the flagged indices of one series, stored block by stored block.

    ``next_item`` is the first index not yet decided; ``last`` the value of the
    item before it when that item is stored (None: it is the fill value).
    """

    def __init__(self, a, limit):
        self.limit = limit
        self.length = a.shape[0]
        self.fill = float(np.asarray(a.fill_value).astype(np.float64))
        pair = np.array([self.fill, self.fill])
        self.fill_runs_flagged = kernels.alerts(pair, limit).size > 0
        self.pieces, self.count = [], 0
        self.next_item, self.last = 1, None

    def scan_block(self, _key, block):
        """Flags inside one stored block (may run on a compute thread), its ends, its length."""
        x = block.astype(np.float64)
        return kernels.alerts(x, self.limit), float(x[0]), float(x[-1]), len(x)

    def stored_block(self, start, inner, first, last, items):
        """Decide the items up to the end of the stored block of ``items`` items at ``start``."""
        if self.next_item < start:
            self._after_stored()
            self._fill_run(start)
        if start > 0:
            prev = self.fill if self.last is None else self.last
            self._single(start, first, prev)
        self._add(inner + start)
        self.next_item, self.last = start + items, last

    def finish(self):
        """The flagged indices, once the stored blocks are done."""
        if self.next_item < self.length:
            self._after_stored()
            self._fill_run(self.length)
        if not self.pieces:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(self.pieces).astype(np.int64, copy=False)

    def _after_stored(self):
        """The item right after a stored block: its previous item is stored."""
        if self.last is not None:
            self._single(self.next_item, self.fill, self.last)
            self.next_item += 1
            self.last = None

    def _fill_run(self, stop):
        """Items ``[next_item, stop)``, they and their previous items unwritten."""
        if self.fill_runs_flagged and self.next_item < stop:
            self._check(stop - self.next_item)
            self.pieces.append(np.arange(self.next_item, stop, dtype=np.int64))
            self.count += stop - self.next_item
        self.next_item = max(self.next_item, stop)

    def _single(self, item, value, prev):
        self._add(kernels.alerts(np.array([value]), self.limit, halo=np.array([prev]),
                                 offset=item))

    def _add(self, flagged):
        if flagged.size:
            self._check(flagged.size)
            self.pieces.append(flagged)
            self.count += flagged.size

    def _check(self, more):
        core.check_memory((self.count + more) * 8,
                          f"alerts result of {self.count + more} indices")
