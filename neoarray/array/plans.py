"""Reductions split into partial results: what parallel jobs run piece by piece.

A *plan* fixes everything about one reduction of one array (the reducer, the
axes, the accumulator and result dtypes, the output shape) and works on
*partials*: the reduction of some of the array's stored chunks.  Partials of
disjoint sets of chunks merge in any grouping; :meth:`finish` adds the items
never written (all equal to the fill value) in closed form and gives numpy's
answer.  So a job can fold each piece of an array (a range of chunks)
wherever it likes (a thread, a process, a Dask worker), ship the partial back
as bytes (:meth:`encode`), and merge.

A partial is a tuple of numpy arrays of the output shape with the reduced axes
kept as 1: ``(covered, *state)``, where ``covered`` counts the items folded in
per output cell and ``state`` is the reducer's state (see
:mod:`neoarray.array.reductions`; empty while nothing is covered).

:meth:`fold_block_states` folds whole-chunk states computed elsewhere (by
:func:`neoarray.kernels.block_state`, for instance on the storage node that
holds the chunk); plans that support it name their kernel in ``kernel``.

:func:`reduce` and :func:`arg_reduce`, the reductions of ``ndarray.sum``, ``np.sum``,
``np.argmin``..., make a plan and fold every stored chunk into it: this module uses the
reducers of :mod:`neoarray.array.reductions`, which knows nothing of plans.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from . import layout, reductions
from .errors import ArrayValueError

#: the reductions plans make (and jobs run)
NAMES = ("sum", "mean", "prod", "min", "max", "var", "std", "count_nonzero", "any", "all",
         "argmin", "argmax", "histogram")


def plan(array, name, axis=None, dtype=None, ddof=0, bins=None, range=None):
    """The plan of reduction ``name`` over ``array`` (numpy's arguments).

    ``histogram`` takes ``bins`` (an int) and ``range`` (``(lo, hi)``, required:
    see :func:`histogram_range`); the others take numpy's ``axis``, ``dtype``
    and ``ddof`` where numpy does.
    """
    if name in ("argmin", "argmax"):
        if dtype is not None:
            raise ArrayValueError(f"{name} takes no dtype")
        return ArgPlan(array, name, axis)
    if name == "histogram":
        if axis is not None:
            raise ArrayValueError("histogram reduces the whole array: it takes no axis")
        return HistogramPlan(array, bins, range)
    if name not in reductions.REDUCERS:
        raise ArrayValueError(f"unknown reduction {name!r} (known: {', '.join(NAMES)})")
    return ReducePlan(array, name, axis, dtype, ddof)


class _Plan:
    """What every plan shares: array geometry, pieces of chunk keys, encoding."""

    kernel = None       # whole-block kernel for storage nodes (axis=None only)

    def __init__(self, array, axes):
        self.shape = array.shape
        self.chunks = array.chunks
        self.ndim = array.ndim
        self.dtype = array.dtype
        self.fill_value = array.fill_value
        self.axes = axes
        self.out_keep = tuple(1 if ax in axes else n for ax, n in enumerate(self.shape))
        self.whole = len(axes) == self.ndim

    def empty(self):
        """The partial of no chunk at all."""
        return (np.zeros(self.out_keep, dtype=np.int64),)

    def encode(self, partial) -> bytes:
        """Exact bytes of ``partial`` (see :func:`neoarray.kernels.encode_state`)."""
        return kernels.encode_state(tuple(partial))

    def decode(self, raw: bytes):
        """The partial encoded in ``raw``; refuses one of another output shape."""
        partial = tuple(np.asarray(x) for x in kernels.decode_state(raw))
        if not partial or any(p.shape != self.out_keep for p in partial):
            raise ArrayValueError(f"a partial result of shape {partial[0].shape if partial else ()} "
                                  f"does not match this reduction's {self.out_keep}")
        return partial

    def fold(self, array, keys=None):
        """The partial of ``array``'s stored chunks among ``keys`` (all when None)."""
        raise NotImplementedError

    def _fold_items(self, items):
        """Fold ``(key, extent, part)`` triples (``part`` keepdims over the block)."""
        covered = np.zeros(self.out_keep, dtype=np.int64)
        state = None
        for key, extent, part in items:
            if state is None:
                state = tuple(np.zeros(self.out_keep, dtype=np.asarray(p).dtype) for p in part)
            region = reductions._region(key, extent, self.chunks, self.axes)
            self._fold_region(state, covered, region, part)
            covered[region] += math.prod(extent[ax] for ax in self.axes)
        return (covered,) if state is None else (covered, *state)

    def fold_block_states(self, items):
        """The partial of whole-chunk states: ``(key, extent, state tuple)`` triples.

        Each state is what :func:`neoarray.kernels.block_state` returns for the
        in-bounds block of chunk ``key`` with kernel :attr:`kernel`.
        """
        if self.kernel is None or not self.whole:
            raise ArrayValueError("whole-block states only make a reduction over every axis")
        keep = (1,) * self.ndim
        return self._fold_items((key, tuple(extent), self._block_part(key, extent, state, keep))
                                for key, extent, state in items)

    def _block_part(self, key, extent, state, keep):
        return tuple(np.full(keep, v) for v in state)


class ReducePlan(_Plan):
    """sum, prod, mean, var, std, min, max, any, all, count_nonzero."""

    def __init__(self, array, name, axis=None, dtype=None, ddof=0):
        super().__init__(array, reductions._axes(axis, array.ndim))
        self.name = name
        self.red = reductions.REDUCERS[name]
        kwargs = {"dtype": dtype} if name not in ("min", "max", "any", "all",
                                                  "count_nonzero") else {}
        self.result_dtype = reductions._probe(name, array.dtype, array.ndim, **kwargs)
        self.acc = reductions._acc_dtype(name, array.dtype,
                                         None if dtype is None else np.dtype(dtype))
        self.ddof = ddof
        self.size = array.size
        reductions._check_out_memory(self.out_keep, 3 * 16)
        if self.whole and self.red.state is not None and array.dtype.kind in "biuf":
            self.kernel = self.red.state

    def fold(self, array, keys=None):
        red, axes, acc = self.red, self.axes, self.acc

        def partial(_key, block):    # may run on a compute thread, on a view of the record
            return reductions._partial(red, block, axes, acc), block.shape
        return self._fold_items((key, shape, part)
                                for key, (part, shape) in array._map_stored(partial, keys))

    def _fold_region(self, state, covered, region, part):
        merged = reductions._merge_where(self.red, tuple(s[region] for s in state), part,
                                         covered[region] > 0)
        for s, m in zip(state, merged):
            s[region] = m

    def merge(self, a, b):
        """The partial of the union of the (disjoint) chunks of ``a`` and ``b``."""
        if len(a) == 1:
            return (a[0] + b[0], *b[1:]) if len(b) > 1 else (a[0] + b[0],)
        if len(b) == 1:
            return (a[0] + b[0], *a[1:])
        ca, cb = a[0] > 0, b[0] > 0
        with np.errstate(all="ignore"):
            merged = self.red.merge(a[1:], b[1:])
        state = tuple(np.where(ca & cb, m, np.where(cb, y, x))
                      for m, x, y in zip(merged, a[1:], b[1:]))
        return (a[0] + b[0], *state)

    def finish(self, partial, keepdims=False, out=None):
        """numpy's result from the partial of every stored chunk."""
        covered, state = partial[0], (partial[1:] or None)
        if self.size == 0:
            raise ArrayValueError("plans reduce arrays with items: use numpy for empty ones")
        n = math.prod(self.shape[ax] for ax in self.axes)
        state = reductions._add_fill(self.red, state, covered, n, self.fill_value, self.acc)
        with np.errstate(divide="ignore", invalid="ignore"):
            result = np.asarray(self.red.final(state, n, self.ddof, self.result_dtype)).astype(
                self.result_dtype, copy=False)
        return reductions._finish(result, self.axes, keepdims, out)


class ArgPlan(_Plan):
    """argmin, argmax: numpy's first occurrence, NaN first."""

    def __init__(self, array, name, axis=None):
        reductions._probe(name, array.dtype, array.ndim)
        if axis is not None:
            axis = (reductions._axes(axis, array.ndim)[0] if np.ndim(axis) == 0
                    else reductions._bad_axis(axis))
        super().__init__(array, tuple(range(array.ndim)) if axis is None else (axis,))
        self.name, self.axis = name, axis
        reductions._check_out_memory(self.out_keep, 2 * 16)
        if self.whole and array.dtype.kind in "biuf":
            self.kernel = name

    def fold(self, array, keys=None):
        name, chunks, shape, axis = self.name, self.chunks, self.shape, self.axis

        def partial(key, block):     # may run on a compute thread, on a view of the record
            return reductions._arg_partial(name, key, block, chunks, shape, axis), block.shape
        return self._fold_items((key, bshape, part)
                                for key, (part, bshape) in array._map_stored(partial, keys))

    def _block_part(self, key, extent, state, keep):
        value, local = state
        corner = [j * c for j, c in zip(key, self.chunks)]
        coords = tuple(int(i) + s for i, s in zip(np.unravel_index(int(local), extent), corner))
        return (np.full(keep, value, dtype=self.dtype),
                np.full(keep, reductions._flat_index(coords, self.shape), dtype=np.int64))

    def _fold_region(self, state, covered, region, part):
        value, index = state
        v, i = part
        take = (covered[region] == 0) | reductions._better(self.name, v, i, value[region],
                                                           index[region])
        value[region] = np.where(take, v, value[region])
        index[region] = np.where(take, i, index[region])

    def merge(self, a, b):
        if len(a) == 1 or len(b) == 1:
            return (a[0] + b[0], *(a[1:] or b[1:]))
        ca, cb = a[0] > 0, b[0] > 0
        take = cb & (~ca | reductions._better(self.name, b[1], b[2], a[1], a[2]))
        return (a[0] + b[0], np.where(take, b[1], a[1]), np.where(take, b[2], a[2]))

    def finish(self, partial, keepdims=False, out=None, array=None):
        """numpy's indices; where items are unwritten, ``array`` (the same array)
        locates the first unwritten one (only its chunk keys are read)."""
        covered = partial[0]
        value = partial[1].copy() if len(partial) > 1 else np.zeros(self.out_keep, self.dtype)
        index = partial[2].copy() if len(partial) > 1 else np.zeros(self.out_keep, np.int64)
        n = math.prod(self.shape[ax] for ax in self.axes)
        if (covered < n).any():
            if array is None:
                raise ArrayValueError(f"{self.name} over unwritten items needs the array "
                                      f"to locate them")
            reductions._add_arg_fill(array, self.name, self.axis, self.axes, self.out_keep,
                                     value, index, covered)
        return reductions._finish(index, self.axes, keepdims, out)


class HistogramPlan(_Plan):
    """``numpy.histogram(a, bins, range)`` over every item; ``(counts, edges)``."""

    def __init__(self, array, bins, range):
        super().__init__(array, tuple(np.arange(array.ndim).tolist()))
        if array.dtype.kind not in "biuf":
            raise ArrayValueError(f"histogram needs a real numeric dtype, not {array.dtype}")
        if bins is None or isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
            raise ArrayValueError(f"histogram needs an integer number of bins, not {bins!r}")
        if bins < 1:
            raise ArrayValueError(f"histogram needs bins >= 1, not {bins}")
        if range is None:
            raise ArrayValueError("this histogram needs range=(lo, hi): use "
                                  "histogram_range(array) for numpy's default (min, max)")
        lo, hi = (float(x) for x in range)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ArrayValueError(f"histogram range ({lo}, {hi}) must be finite with lo <= hi")
        self.bins, self.lo, self.hi = int(bins), lo, hi
        self.size = array.size
        self.out_keep = (1,) * self.ndim
        self.kernel = "histogram"

    def _counts(self, block):
        return kernels.block_state("histogram", block, None, self.bins, self.lo, self.hi)[0]

    def empty(self):
        return (np.zeros(self.out_keep, np.int64), np.zeros(self.bins, np.int64))

    def decode(self, raw: bytes):
        partial = tuple(np.asarray(x) for x in kernels.decode_state(raw))
        if len(partial) != 2 or partial[0].shape != self.out_keep or partial[1].shape != (self.bins,):
            raise ArrayValueError("a partial histogram does not match this histogram's bins")
        return partial

    def fold(self, array, keys=None):
        counts = np.zeros(self.bins, np.int64)
        covered = 0
        for _key, (part, n) in array._map_stored(
                lambda _k, block: (self._counts(block), block.size), keys):
            counts += part
            covered += n
        return (np.full(self.out_keep, covered, np.int64), counts)

    def fold_block_states(self, items):
        counts = np.zeros(self.bins, np.int64)
        covered = 0
        for _key, extent, state in items:
            counts += np.asarray(state[0], dtype=np.int64)
            covered += math.prod(extent)
        return (np.full(self.out_keep, covered, np.int64), counts)

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])

    def edges(self):
        lo, hi = (self.lo - 0.5, self.hi + 0.5) if self.lo == self.hi else (self.lo, self.hi)
        return np.linspace(lo, hi, self.bins + 1)

    def finish(self, partial, keepdims=False, out=None):
        covered, counts = int(partial[0].reshape(-1)[0]), partial[1].copy()
        missing = self.size - covered
        if missing:
            fill = np.asarray([self.fill_value], dtype=self.dtype)
            counts += self._counts(fill) * missing
        return counts, self.edges()


def histogram_range(array):
    """numpy's default histogram range: ``(min, max)`` of the items, finite, as floats."""
    lo, hi = histogram_item_range(array)
    return float(lo), float(hi)


def histogram_item_range(array):
    """``(min, max)`` of the items as items (numpy scalars of their dtype, whose dtype
    numpy's bin edges take), finite; ``(0.0, 1.0)`` for an empty array."""
    if array.size == 0:
        return 0.0, 1.0
    lo, hi = array.min(), array.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ArrayValueError(f"autodetected range of [{lo}, {hi}] is not finite")
    return lo, hi


def stored_keys(array, start=None, stop=None):
    """Grid keys of ``array``'s stored chunks with flat index in ``[start, stop)``, C order."""
    if start is None and stop is None:
        return list(array.chunk_keys())
    grid = layout.chunk_grid(array.shape, array.chunks)
    low = unflatten(start, grid) if start is not None else None
    high = unflatten(stop - 1, grid) if stop is not None else None
    if low is not None and high is not None and low > high:
        return []
    return list(array._tree.keys(low, high))


def flatten(key, grid) -> int:
    """Flat C-order index of grid ``key``."""
    index = 0
    for j, g in zip(key, grid):
        index = index * g + j
    return index


def unflatten(index, grid) -> tuple:
    """Grid key of flat C-order ``index``."""
    key = []
    for g in reversed(grid):
        index, j = divmod(index, g)
        key.append(j)
    return tuple(reversed(key))


# ---------------------------------------------------------------------- entry points

def reduce(array, name, axis=None, keepdims=False, dtype=None, out=None, ddof=0):
    """Reduce ``array`` (a neoarray ndarray) with the reduction ``name``.

    Same arguments and result as the numpy function of that name.  One pass over
    the stored chunks (:class:`neoarray.array.plans.ReducePlan`, whose partial
    results parallel jobs merge piece by piece).
    """
    reductions._axes(axis, array.ndim)
    kwargs = {"dtype": dtype} if name not in ("min", "max", "any", "all",
                                              "count_nonzero") else {}
    reductions._probe(name, array.dtype, array.ndim, **kwargs)
    if array.size == 0:
        return reductions._numpy_empty(array, name, axis, keepdims, out, ddof=ddof, **kwargs)
    plan = ReducePlan(array, name, axis, dtype, ddof)
    return plan.finish(plan.fold(array), keepdims, out)


def arg_reduce(array, name, axis=None, keepdims=False, out=None):
    """``argmin``/``argmax`` of ``array``, with numpy's results (first occurrence)."""
    reductions._probe(name, array.dtype, array.ndim)
    if array.size == 0:
        return reductions.NUMPY_FUNCS[name](np.empty(array.shape, array.dtype), axis=axis,
                                            keepdims=keepdims)
    plan = ArgPlan(array, name, axis)
    return plan.finish(plan.fold(array), keepdims, out, array=array)
