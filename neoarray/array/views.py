"""Lazy views: axis moves, basic slices, size-1 axes and reshapes of chunked arrays.

``A.T``, ``A.transpose(...)``, ``A.swapaxes(...)``, ``A.squeeze()``,
``np.expand_dims(A, ...)``, ``A.reshape(...)`` and ``A.ravel()`` of any neoarray
(stored or lazy), and basic selections of a lazy array (``expr[2:9, ::3]``,
``expr[4]``, ``expr[:, None]``), are views: lazy arrays (:class:`~.lazy.lazyarray`)
that read their base where and when they are read, as numpy's views do (after
``T = A.T; A[0, 1] = 5``, ``T[1, 0]`` is 5).  A view costs nothing to make, and a
view of a view is one view of the first base.

* :class:`basicview` (axis moves, size-1 axes, basic slices, steps included): each
  output axis is a range ``start, start + step, ...`` of one axis of the base (or a
  new size-1 axis); integers pick single items of the other base axes.  Its chunks
  follow the base's (divided by the step), so each chunk of the view reads at most two
  chunks of the base per axis; when every range starts on a chunk boundary with step 1
  each chunk of the view *is* a chunk of the base (transposed, with axes added or
  dropped), read through the base's own batched chunk reads.  Its stored chunks are
  those of the base mapped onto it, so a view of an exabyte-shaped sparse array reads
  in proportion to what is written.
* :class:`reshapeview` (``reshape``, ``ravel``, ``flatten``): when each group of axes
  that a C-order reshape splits or merges is cut by the base's chunks into runs of one
  length that the new axes can also be cut into (a chunk holding whole rows of the
  merged axes; a chunk length that divides the split axis's trailing block, or is a
  multiple of it), each chunk of the view is one chunk of the base, reshaped.  Other
  reshapes are computed in memory (``ArrayTooLargeError`` naming the bytes beyond
  ``memory_bytes_max``), as a lazy array over the result.

Indexing a *stored* array (``A[2:9]``) reads it into a numpy array, as zarr and h5py
do; indexing a lazy array with a basic selection gives a view, as dask does;
``np.asarray(view)`` reads it (a basic view reads its base's selection at once).

A view of a stored array can be written: ``A.T[0] = 1``, ``A[...].T``... write through
to the base with a basic selection, as numpy's views do.  A view of an expression is
read-only, like the expression.
"""
import itertools
import math

import numpy as np

from . import core, elementwise, indexing, layout, lazy
from .errors import ArrayShapeError, ArrayValueError


def _same(block):
    return block


def held(block):
    """The values of a lazy array over a numpy array (the name its repr shows)."""
    return block


def in_memory(values):
    """A lazy array over the numpy array ``values`` (kept in memory)."""
    return lazy.lazyarray(held, (np.asarray(values),))


def _fill_of(array):
    fill = np.empty(1, array.dtype)
    fill[0] = array.fill_value
    return fill


def _sparse_keys(array):
    """The chunk keys of ``array`` that may hold other items than its fill value, or
    None when every chunk may (a dense expression)."""
    if isinstance(array, lazy.lazyarray):
        return array._touched_keys()
    return array.chunk_keys()


# ---------------------------------------------------------------------- basic views

def _out_chunk(pick, chunk):
    """Chunk length of an output axis reading ``pick`` of a base axis cut in ``chunk``."""
    _start, step, count = pick
    size = chunk if abs(step) == 1 else chunk // abs(step)
    return max(1, min(size, count))


def _items_in(pick, low, high):
    """The range of output indices ``i`` whose base item ``start + i * step`` is in
    ``[low, high)``."""
    start, step, count = pick
    if step > 0:
        first, stop = -((start - low) // step), -((start - high) // step)
    else:
        first, stop = (start - high) // -step + 1, (start - low) // -step + 1
    return max(0, first), min(count, stop)


def _base_item(pick, region):
    """The base index (an int, or a slice) of output ``region`` along a ranged pick."""
    if isinstance(pick, int):
        return pick
    start, step, _ = pick
    first = start + region.start * step
    stop = first + (region.stop - region.start) * step
    return slice(first, stop if stop >= 0 else None, step)


def _arrange(values, axes, shape):
    """``values`` (the base's kept axes, in base order) in the view's axis order."""
    values = np.asarray(values)
    kept = [j for j in axes if j is not None]
    order = sorted(kept)
    return values.transpose([order.index(j) for j in kept]).reshape(shape)


def ones_map(old, new):
    """For a ``new`` shape that is ``old`` with size-1 axes added or removed: for each
    axis of ``new``, the axis of ``old`` it is (None: a new size-1 axis); else None."""
    mapping, j = [], 0
    for n in new:
        while j < len(old) and old[j] == 1 and n != 1:
            j += 1                                  # a size-1 axis of old, dropped
        if j < len(old) and old[j] == n:
            mapping.append(j)
            j += 1
        elif n == 1:
            mapping.append(None)
        else:
            return None
    if any(old[i] != 1 for i in range(j, len(old))):
        return None
    return mapping


class basicview(lazy.lazyarray):
    """A basic view of ``base``: ``picks`` (for each base axis, an int or a range
    ``(start, step, count)``) and ``axes`` (for each output axis, the base axis of its
    range, or None for a new size-1 axis).  Made by :func:`view`; see the module doc."""

    def __init__(self, base, picks, axes):
        self._base, self._picks, self._axes = base, tuple(picks), tuple(axes)
        self._func, self._inputs, self._kwargs = _same, (base,), {}
        self._shape = tuple(1 if j is None else picks[j][2] for j in axes)
        self._fill = _fill_of(base)
        self._chunks = tuple(1 if j is None else _out_chunk(picks[j], base.chunks[j])
                             for j in axes)
        self._weight = getattr(base, "_weight", 1)
        self._aligned = all(isinstance(p, int) or (p[1] == 1 and p[0] % c == 0)
                            for p, c in zip(self._picks, base.chunks))

    def _label(self):
        return f"view({lazy._describe(self._base)}, {self._key_text()})"

    def _key_text(self):
        picks = [str(p) if isinstance(p, int) else f"{p[0]}:{p[0] + p[1] * p[2]}:{p[1]}"
                 for p in self._picks]
        return f"[{', '.join(picks)}] axes={list(self._axes)}"

    # ------------------------------------------------------------------ chunks

    def _touched_keys(self):
        keys = self._candidates()
        if keys is None:
            return None
        found = set()
        for key in keys:
            ranges = self._out_ranges(key)
            if ranges is not None:
                found.update(itertools.product(*ranges))
        return iter(sorted(found))

    def _candidates(self):
        """The base's keys that may hold items (first axis bounded on a stored base)."""
        base = self._base
        if isinstance(base, core.ndarray) and base.ndim:
            pick, chunk = self._picks[0], base.chunks[0]
            if isinstance(pick, int):
                low, high = pick, pick + 1
            elif pick[2] == 0:
                return iter(())
            else:
                ends = (pick[0], pick[0] + pick[1] * (pick[2] - 1))
                low, high = min(ends), max(ends) + 1
            return iter(base._tree.keys(min=(low // chunk,), max=((high - 1) // chunk + 1,),
                                        excludemax=True))
        return _sparse_keys(base)

    def _out_ranges(self, key):
        """For each output axis, the range of output chunk indices that base chunk
        ``key`` reaches (None when it holds no item of the view)."""
        per_axis = {}
        for j, (pick, chunk, n) in enumerate(zip(self._picks, self._base.chunks,
                                                 self._base.shape)):
            low, high = key[j] * chunk, min((key[j] + 1) * chunk, n)
            if isinstance(pick, int):
                if not low <= pick < high:
                    return None
                continue
            first, stop = _items_in(pick, low, high)
            if first >= stop:
                return None
            per_axis[j] = first, stop
        ranges = []
        for j, chunk in zip(self._axes, self._chunks):
            if j is None:
                ranges.append(range(1))
            else:
                first, stop = per_axis[j]
                ranges.append(range(first // chunk, (stop - 1) // chunk + 1))
        return ranges

    def chunk_keys(self):
        keys = self._touched_keys()
        return elementwise.all_keys(self._shape, self._chunks) if keys is None else keys

    def _chunk_blocks(self, keys):
        keys = list(keys)
        if self._aligned:
            sources = self._base._chunk_blocks([self._source_key(k) for k in keys])
            for key, block in zip(keys, sources):
                extent = layout.chunk_extent(key, self._shape, self._chunks)
                yield _arrange(block[self._inner(key, extent)], self._axes, extent)
            return
        for key in keys:
            region = layout.chunk_region(key, self._shape, self._chunks)
            extent = tuple(r.stop - r.start for r in region)
            yield _arrange(self._base._read(self._base_key(region)), self._axes, extent)

    def _out_axis(self, j):
        return self._axes.index(j)

    def _source_key(self, key):
        """The base chunk holding output chunk ``key`` (an aligned view)."""
        return tuple(p // c if isinstance(p, int) else p[0] // c + key[self._out_axis(j)]
                     for j, (p, c) in enumerate(zip(self._picks, self._base.chunks)))

    def _inner(self, key, extent):
        """Where output chunk ``key`` lies in its base chunk (an aligned view)."""
        return tuple(p % c if isinstance(p, int) else slice(0, extent[self._out_axis(j)])
                     for j, (p, c) in enumerate(zip(self._picks, self._base.chunks)))

    def _base_key(self, region=None):
        """The base's basic index of output ``region`` (the whole view when None)."""
        if region is None:
            region = tuple(slice(0, n) for n in self._shape)
        return tuple(_base_item(p, None if isinstance(p, int) else region[self._out_axis(j)])
                     for j, p in enumerate(self._picks))

    # ------------------------------------------------------------------ reading

    def _read(self, key):
        sel = indexing.parse_selection(key, self._shape)
        core.check_memory(sel.size * self.itemsize, f"selection of shape {sel.result_shape}")
        if sel.adv_axes or sel.size == 0:
            return assemble(self, sel)
        picks, axes = _compose(self._picks, self._axes, sel)
        values = _arrange(self._base._read(_key_of(picks)), axes, sel.result_shape)
        return values[()] if sel.scalar else values

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a lazy neoarray view cannot be viewed without reading it")
        core.check_memory(self.nbytes, f"array of shape {self._shape} and dtype {self.dtype}")
        result = _arrange(self._base._read(self._base_key()), self._axes, self._shape)
        return result if dtype is None else result.astype(dtype, copy=False)

    def __setitem__(self, key, value):
        if not isinstance(self._base, core.ndarray):
            super().__setitem__(key, value)         # read-only: its error
        sel = indexing.parse_selection(key, self._shape)
        if sel.adv_axes:
            raise ArrayValueError(
                "a view writes through to its stored array with basic selections only "
                "(integers, slices, None, ...): write into the stored array itself for "
                "index arrays and masks")
        if sel.size == 0:
            return
        picks, axes = _compose(self._picks, self._axes, sel)
        value = indexing.strip_leading_ones(core.as_value(value, self.dtype), len(sel.result_shape))
        try:
            value = np.broadcast_to(value, sel.result_shape)
        except ValueError:
            raise ArrayShapeError(f"could not broadcast value of shape {value.shape} into a "
                                  f"selection of shape {sel.result_shape}") from None
        kept = [j for j in axes if j is not None]
        order = sorted(kept)
        value = value.reshape([picks[j][2] for j in kept])
        self._base[_key_of(picks)] = value.transpose([kept.index(j) for j in order])


def _key_of(picks):
    return tuple(p if isinstance(p, int) else _base_item(p, slice(0, p[2])) for p in picks)


def _compose(picks, axes, sel):
    """``(picks, axes)`` over the base of the basic selection ``sel`` of a view."""
    picks, kept = list(picks), []
    for i, s in zip(sel.basic_axes, sel.basic):
        j = axes[i]
        if j is None:
            if s.keep:
                kept.append(None)
            continue
        start, step, _ = picks[j]
        first = start + s.start * step
        if s.keep:
            picks[j] = (first, step * s.step, s.count)
            kept.append(j)
        else:
            picks[j] = first
    counts = tuple(1 if j is None else picks[j][2] for j in kept)
    mapping = ones_map(counts, sel.result_shape)
    assert mapping is not None, (counts, sel.result_shape)
    return tuple(picks), tuple(None if m is None else kept[m] for m in mapping)


def assemble(array, sel):
    """``array[sel]`` (a neoarray of chunks that :meth:`_chunk_blocks` computes), chunk
    by chunk: each projection read from its whole chunk."""
    canon = np.empty(sel.canon_shape, dtype=array.dtype)
    for proj in indexing.iter_projections(sel, array.chunks):
        (block,) = array._chunk_blocks([proj.key])
        canon[proj.out] = indexing.read_projection(sel, block, proj)
    result = sel.result_from_canon(canon)
    return result[()] if sel.scalar else result


def spec(array):
    """``(base, picks, axes)`` of ``array``: a view's own, or the identity of ``array``."""
    if isinstance(array, basicview):
        return array._base, array._picks, array._axes
    return array, tuple((0, 1, n) for n in array.shape), tuple(range(array.ndim))


def view(base, picks, axes):
    """The basic view of ``base`` (``base`` itself when it is all of it, in order)."""
    shape = tuple(1 if j is None else picks[j][2] for j in axes)
    if math.prod(shape) == 0:
        return in_memory(np.empty(shape, base.dtype))
    if tuple(axes) == tuple(range(base.ndim)) and all(
            p == (0, 1, n) for p, n in zip(picks, base.shape)):
        return base
    return basicview(base, picks, axes)


def select(array, key):
    """``array[key]`` of a lazy array: a view for a basic selection of at least one
    dimension, read now otherwise."""
    sel = indexing.parse_selection(key, array.shape)
    if sel.adv_axes or not sel.result_shape:
        return array._read(key)
    if sel.size == 0:
        return in_memory(np.empty(sel.result_shape, array.dtype))
    base, picks, axes = spec(array)
    return view(base, *_compose(picks, axes, sel))


def transpose(array, perm):
    base, picks, axes = spec(array)
    return view(base, picks, tuple(axes[p] for p in perm))


def squeeze(array, drop):
    """``array`` without its size-1 axes ``drop``."""
    base, picks, axes = spec(array)
    picks = list(picks)
    for i in drop:
        if axes[i] is not None:
            picks[axes[i]] = picks[axes[i]][0]
    return view(base, picks, tuple(j for i, j in enumerate(axes) if i not in drop))


def expand_dims(array, new):
    """``array`` with new size-1 axes at the (sorted, result) positions ``new``."""
    base, picks, axes = spec(array)
    old = iter(axes)
    return view(base, picks, tuple(None if i in new else next(old)
                                   for i in range(len(axes) + len(new))))


# ---------------------------------------------------------------------- reshapes

def _groups(old, new):
    """The groups of consecutive axes a C-order reshape maps onto each other (equal
    products): a list of ``(old axes, new axes)`` ranges; trailing size-1 axes join
    the last group.  ``old`` and ``new`` hold at least two items."""
    groups, i, j = [], 0, 0
    while i < len(old) and j < len(new):
        a, b, i2, j2 = old[i], new[j], i + 1, j + 1
        while a != b:
            if a < b:
                a, i2 = a * old[i2], i2 + 1
            else:
                b, j2 = b * new[j2], j2 + 1
        groups.append((range(i, i2), range(j, j2)))
        i, j = i2, j2
    last_old, last_new = groups[-1]
    groups[-1] = (range(last_old.start, len(old)), range(last_new.start, len(new)))
    return groups


def _run_length(extents, chunks):
    """Length of the runs (in the C-order flat index of the group) that ``chunks`` cut
    ``extents`` into, when every chunk is one run of the same length; else None."""
    chunks = [min(c, n) for c, n in zip(chunks, extents)]
    cut = [i for i, (c, n) in enumerate(zip(chunks, extents)) if c < n]
    if not cut:
        return math.prod(extents)
    t = cut[-1]
    if any(chunks[i] != 1 for i in range(t)) or extents[t] % chunks[t]:
        return None
    return chunks[t] * math.prod(extents[t + 1:])


def _chunks_for(extents, run):
    """The chunks cutting ``extents`` into runs of length ``run``, or None."""
    inner = 1
    for t in reversed(range(len(extents))):
        if run <= inner * extents[t]:
            if run % inner or extents[t] % (run // inner):
                return None
            return (1,) * t + (run // inner,) + tuple(extents[t + 1:])
        inner *= extents[t]
    return tuple(extents) if run == inner else None


def _ravel(index, grid):
    flat = 0
    for i, n in zip(index, grid):
        flat = flat * n + i
    return flat


def _unravel(flat, grid):
    index = []
    for n in reversed(grid):
        flat, i = divmod(flat, n)
        index.append(i)
    return tuple(reversed(index))


class reshapeview(lazy.lazyarray):
    """``base`` reshaped (C order) where each of its chunks is one chunk of the result
    (see the module doc); made by :func:`reshape`."""

    def __init__(self, base, shape, groups, chunks):
        self._base, self._groups = base, groups
        self._func, self._inputs, self._kwargs = _same, (base,), {}
        self._shape, self._chunks = tuple(shape), tuple(chunks)
        self._fill = _fill_of(base)
        self._weight = getattr(base, "_weight", 1)
        self._old_grid = layout.chunk_grid(base.shape, base.chunks)
        self._new_grid = layout.chunk_grid(self._shape, self._chunks)

    def _label(self):
        return f"reshape({lazy._describe(self._base)}, {self._shape})"

    def _map_key(self, key, to_new):
        grids = (self._old_grid, self._new_grid) if to_new else (self._new_grid, self._old_grid)
        out = []
        for old_axes, new_axes in self._groups:
            here, there = (old_axes, new_axes) if to_new else (new_axes, old_axes)
            run = _ravel([key[a] for a in here], [grids[0][a] for a in here])
            out.extend(_unravel(run, [grids[1][a] for a in there]))
        return tuple(out)

    def _touched_keys(self):
        keys = _sparse_keys(self._base)
        return None if keys is None else (self._map_key(k, True) for k in keys)

    def chunk_keys(self):
        keys = self._touched_keys()
        return elementwise.all_keys(self._shape, self._chunks) if keys is None else keys

    def _chunk_blocks(self, keys):
        keys = list(keys)
        sources = self._base._chunk_blocks([self._map_key(k, False) for k in keys])
        for key, block in zip(keys, sources):
            yield np.asarray(block).reshape(layout.chunk_extent(key, self._shape, self._chunks))

    def _read(self, key):
        sel = indexing.parse_selection(key, self._shape)
        core.check_memory(sel.size * self.itemsize, f"selection of shape {sel.result_shape}")
        return assemble(self, sel)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a lazy neoarray view cannot be viewed without reading it")
        core.check_memory(self.nbytes, f"array of shape {self._shape} and dtype {self.dtype}")
        result = np.asarray(self._base).reshape(self._shape)
        return result if dtype is None else result.astype(dtype, copy=False)


def _reshaped(array, shape):
    """A :class:`reshapeview` of ``array`` into ``shape`` when its chunks allow, else None."""
    groups = _groups(array.shape, shape)
    chunks = []
    for old_axes, new_axes in groups:
        run = _run_length([array.shape[a] for a in old_axes], [array.chunks[a] for a in old_axes])
        cut = None if run is None else _chunks_for([shape[a] for a in new_axes], run)
        if cut is None:
            return None
        chunks.extend(cut)
    return reshapeview(array, shape, groups, chunks)


def reshape(array, shape):
    """``array`` in ``shape`` (same size, C order): a view when the chunks allow (see
    the module doc), else computed in memory within ``memory_bytes_max``."""
    shape = tuple(shape)
    if shape == array.shape:
        return array
    mapping = ones_map(array.shape, shape)
    if mapping is not None:                         # size-1 axes added or removed
        base, picks, axes = spec(array)
        picks = list(picks)
        for i in set(range(array.ndim)) - set(mapping):
            if axes[i] is not None:
                picks[axes[i]] = picks[axes[i]][0]
        return view(base, picks, tuple(None if m is None else axes[m] for m in mapping))
    if array.size > 1:
        for source in ([array._base] if isinstance(array, reshapeview) else []) + [array]:
            if source.shape == shape:
                return source
            found = _reshaped(source, shape)
            if found is not None:
                return found
    core.check_memory(array.nbytes, f"reshape of shape {array.shape} into {shape} (its chunks "
                                    "do not cut both shapes into the same runs)")
    return in_memory(np.asarray(array).reshape(shape))

