"""Sorting, ``unique`` and ``searchsorted`` of neoarrays in bounded memory.

Every function here holds at most :func:`buffer_bytes` bytes of items (and indices):
half of ``config.memory_bytes_max``, the other half left to numpy's temporaries.

* ``np.sort`` / ``np.argsort`` / ``ndarray.sort`` of a 1-D array (or of a flattened one,
  ``axis=None``): an **external merge sort**.  A sort of values reads only the chunks the
  array may store (chunk by chunk, in any order); its unwritten items, all the fill
  value, are counted and written as one block where they sort, so sorting a mostly
  unwritten array costs its stored chunks (the output's chunks of fill values are not
  stored either).  Runs of the array, each at most a buffer
  (with numpy's sorted copy), are sorted by numpy and spilled to ``.npy`` files in a
  temporary directory (``config.spill_dir``); then a k-way merge reads each run through
  a bounded buffer and writes the result chunk by chunk.  When there are too many runs
  for reads of :data:`MERGE_READ_ITEMS_MIN` items each, groups of runs are merged into
  longer runs first.  Runs go to files rather than to a detached neoarray because a
  detached array keeps its chunks in memory (and an attached one would write them
  into the database's transaction): files leave memory to the OS's page cache.
  An array that fits in one run is sorted in memory, with no file.
* The merge is vectorised: each round takes the smallest last buffered value of the
  runs that still have unread items (the *bound*, first such run on ties); every
  buffered item before the bound in (value, position) order is final, so it is sorted
  with numpy (stably) and written; the bound's run empties its buffer, so each round
  writes at least one run buffer.  Runs are consecutive ranges of the array, so
  (value, run) order is the stable order: ``argsort`` carries the indices through
  the merge and gives numpy's ``kind='stable'`` answer (a valid answer of every
  kind).  numpy's own ordering (``np.argsort`` and ``np.searchsorted``) decides
  every comparison, so NaNs go last as in numpy, complex numbers sort as in numpy.
* ``order=`` sorts a structured array by fields (``np.sort``, ``np.argsort`` and
  ``ndarray.sort``): the items are read as a dtype of the same fields, the named ones
  first, and sorted as above, as numpy does.
* Along an axis of an N-D array (``np.sort(a, axis=k)``): tiles holding whole lines
  along the axis, at most a buffer of them, each sorted by numpy.  A line longer than
  the buffer is ``ArrayTooLargeError``.
* ``np.unique`` (``return_counts`` too): the unique items of each stored chunk, merged
  as they come; the unwritten items count as fill values.  The result must fit in
  memory.
* ``np.searchsorted(a, v)`` on a sorted 1-D array: a binary search over the first items
  of the chunks (one chunk read per probe, probes shared by the values), then numpy's
  search inside the one chunk found for each value.
"""
import contextlib
import functools
import math
import os
import tempfile

import numpy as np

from . import core, heap, layout, lazy, outputs
from .config import config
from .errors import ArrayTooLargeError

#: the smallest read of one run during a merge, in items; with more runs than the
#: buffer holds at that size, runs are first merged in groups
MERGE_READ_ITEMS_MIN = 1024
INDEX_DTYPE = np.dtype(np.intp)


def buffer_bytes():
    """Bytes of items and indices an ordering function holds at once: half of
    ``config.memory_bytes_max`` (the other half for numpy's temporaries)."""
    return max(1, config.memory_limit_bytes() // 2)


# ---------------------------------------------------------------------- flat reads

def flat_pieces(shape, start, stop):
    """Indices of the boxes covering the flat C-order items ``[start, stop)`` of an
    array of ``shape``, in order (at most two partial rows per axis and one box)."""
    if not shape:
        if start < stop:
            yield ()
        return
    row = math.prod(shape[1:])
    if row == 0 or start >= stop:
        return
    first, offset = divmod(start, row)
    last, end = divmod(stop, row)
    if first == last:
        yield from ((first,) + index for index in flat_pieces(shape[1:], offset, end))
        return
    if offset:
        yield from ((first,) + index for index in flat_pieces(shape[1:], offset, row))
        first += 1
    if last > first:
        yield (slice(first, last),) + (slice(None),) * (len(shape) - 1)
    if end:
        yield from ((last,) + index for index in flat_pieces(shape[1:], 0, end))


def read_flat(array, start, stop):
    """Items ``[start, stop)`` of ``array`` flattened in C order, as a numpy array."""
    if array.ndim == 1:
        return np.asarray(array[start:stop])
    parts = [np.asarray(array[index]).reshape(-1) for index in flat_pieces(array.shape, start, stop)]
    return np.concatenate(parts) if parts else np.empty(0, array.dtype)


# ---------------------------------------------------------------------- spilled runs

class _Run:
    """A sorted run spilled to ``.npy`` files: values, and indices when carried."""

    def __init__(self, paths, length):
        self.paths, self.length = paths, length

    @property
    def with_indices(self):
        return len(self.paths) == 2

    def reader(self):
        """The run's arrays, mapped (read through bounded slices)."""
        return [np.load(path, mmap_mode="r") for path in self.paths]

    def delete(self):
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


class _Spill:
    """The temporary directory of one sort's runs (``config.spill_dir`` or the system's)."""

    def __init__(self):
        self._dir = None        # made by the first run
        self.count = 0          # runs written

    def _paths(self, with_indices):
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="neoarray-sort-", dir=config.spill_dir)
        self.count += 1
        names = ("values", "indices") if with_indices else ("values",)
        return [os.path.join(self._dir.name, f"run{self.count}.{name}.npy") for name in names]

    def run(self, values, indices=None):
        """A run of ``values`` (and ``indices``), written now."""
        paths = self._paths(indices is not None)
        for path, data in zip(paths, (values, indices)):
            np.save(path, data)
        return _Run(paths, len(values))

    def writer(self, length, dtype, with_indices):
        """A sink writing a run of ``length`` items, spilled as it comes."""
        return _RunWriter(_Run(self._paths(with_indices), length), dtype)

    def close(self):
        if self._dir is not None:
            self._dir.cleanup()


class _RunWriter:
    """Sink of a merge into a new spilled run (``.npy`` files written through a map)."""

    def __init__(self, run, dtype):
        self.run, self.position = run, 0
        self.maps = [np.lib.format.open_memmap(path, mode="w+", dtype=kind, shape=(run.length,))
                     for path, kind in zip(run.paths, (dtype, INDEX_DTYPE))]

    def write(self, values, indices):
        stop = self.position + len(values)
        for mapped, data in zip(self.maps, (values, indices)):
            mapped[self.position:stop] = data
        self.position = stop

    def close(self):
        for mapped in self.maps:
            mapped.flush()
        self.maps = []
        return self.run


class _ArraySink:
    """Sink of the merge into items ``[start, ...)`` of a 1-D array (neoarray or numpy):
    the values, or the indices (``argsort``), written whole chunks at a time.

    The whole chunks of each write are written from it directly (a chunk's encoding is
    its only copy); what is left of a chunk waits, copied, for the next write: the sink
    holds less than one chunk of items of its own."""

    def __init__(self, out, write_indices, start=0):
        self.out, self.write_indices, self.position = out, write_indices, start
        self.step = out.chunks[0] if isinstance(out, core.ndarray) else 1
        self.pending = None         # the items of a chunk begun, fewer than ``step``

    @property
    def pending_items(self):
        return 0 if self.pending is None else len(self.pending)

    def write(self, values, indices):
        part = indices if self.write_indices else values
        if self.pending is not None:
            need = self.step - len(self.pending)
            self.pending = np.concatenate([self.pending, part[:need]])
            part = part[need:]
            if len(self.pending) < self.step:
                return
            self._put(self.pending)
            self.pending = None
        whole = len(part) // self.step * self.step
        if whole:
            self._put(part[:whole])
        if len(part) > whole:
            self.pending = part[whole:].copy()      # not a view keeping ``part`` alive

    def _put(self, data):
        self.out[self.position:self.position + len(data)] = data
        self.position += len(data)

    def close(self):
        if self.pending is not None:
            self._put(self.pending)
            self.pending = None

    def fill(self, value, count):
        """Write ``count`` items of ``value`` (a one-item array): whole chunks of a stored
        output whose fill value it is are dropped, not written."""
        head = min(count, -self.pending_items % self.step)
        if head:
            self.write(np.full(head, value[0], value.dtype), None)
        middle = (count - head) // self.step * self.step
        if middle:
            self._fill_range(self.position, self.position + middle, value)
            self.position += middle
        if count - head - middle:
            self.write(np.full(count - head - middle, value[0], value.dtype), None)

    def _fill_range(self, start, stop, value):
        """Items ``[start, stop)`` (whole steps, nothing pending) set to ``value``."""
        out = self.out
        if not isinstance(out, core.ndarray):
            out[start:stop] = value[0]
        elif start % self.step == 0 and out._fill == value.astype(out.dtype).tobytes():
            first, stop_key = start // self.step, -(-stop // self.step)
            for key in list(out._tree.keys(min=(first,), max=(stop_key,), excludemax=True)):
                out._drop_chunk(key, out._tree[key])
        else:
            for low in range(start, stop, self.step):
                out[low:low + self.step] = np.full(self.step, value[0], value.dtype)


class _FillSink:
    """Passes sorted values on to ``sink`` with ``count`` copies of the one-item array
    ``fill`` inserted where numpy's order puts them: before the first value that does
    not sort before it (they are equal or after it)."""

    def __init__(self, sink, fill, count):
        self.sink, self.fill, self.count = sink, fill, count

    def write(self, values, indices):
        if self.count:
            cut = int(np.searchsorted(values, self.fill, side="left")[0])
            if cut < len(values):
                if cut:
                    self.sink.write(values[:cut], None)
                self._insert()
                values = values[cut:]
        if len(values):
            self.sink.write(values, None)

    def _insert(self):
        self.sink.fill(self.fill, self.count)
        self.count = 0

    def close(self):
        if self.count:
            self._insert()
        self.sink.close()


# ---------------------------------------------------------------------- merge

class _Cursor:
    """A run being merged: its mapped arrays and a bounded buffer of its next items."""

    def __init__(self, run, read_items):
        self.run, self.read_items = run, read_items
        self.arrays = run.reader()
        self.read = 0
        self.buffers = [a[:0].copy() for a in self.arrays]

    def refill(self):
        want = self.read_items - len(self.buffers[0])
        if want > 0 and self.read < self.run.length:
            stop = min(self.run.length, self.read + want)
            self.buffers = [_joined(b, a[self.read:stop]) for b, a in zip(self.buffers, self.arrays)]
            self.read = stop

    @property
    def exhausted(self):
        """Every unread item of the run is in the buffer."""
        return self.read >= self.run.length

    def take(self, count):
        taken = [b[:count] for b in self.buffers]
        self.buffers = [b[count:] for b in self.buffers]
        return taken


def _joined(head, mapped):
    """A new array of the items of ``head`` then those of ``mapped`` (a slice of a mapped
    run, read once, straight into the result)."""
    out = np.empty(len(head) + len(mapped), head.dtype)
    out[:len(head)] = head
    out[len(head):] = mapped
    return out


def _merge(runs, sink, read_items, report):
    """k-way merge of sorted ``runs`` (consecutive ranges of the input, in order) into
    ``sink``, holding at most ``read_items`` items of each run (see the module doc);
    ``report["held_items_max"]``: the most items buffered at once."""
    cursors = [_Cursor(run, read_items) for run in runs]
    with_indices = runs[0].with_indices
    while cursors:
        for cursor in cursors:
            cursor.refill()
        held = sum(len(c.buffers[0]) for c in cursors)
        report["held_items_max"] = max(report.get("held_items_max", 0), held)
        takes = _round_takes(cursors)
        parts = [cursor.take(count) for cursor, count in zip(cursors, takes)]
        values = np.concatenate([p[0] for p in parts])
        indices = np.concatenate([p[1] for p in parts]) if with_indices else None
        if with_indices:
            order = np.argsort(values, kind="stable")
            values, indices = values[order], indices[order]
        else:
            values.sort(kind="stable")
        if len(values):
            sink.write(values, indices)
        cursors = [c for c in cursors if not (c.exhausted and len(c.buffers[0]) == 0)]


def _round_takes(cursors):
    """How many buffered items of each cursor are final this round."""
    bounding = [i for i, c in enumerate(cursors) if not c.exhausted and len(c.buffers[0])]
    if not bounding:
        return [len(c.buffers[0]) for c in cursors]
    lasts = np.array([cursors[i].buffers[0][-1] for i in bounding], dtype=cursors[0].buffers[0].dtype)
    bound_run = bounding[int(np.argsort(lasts, kind="stable")[0])]
    bound = cursors[bound_run].buffers[0][-1:]
    takes = []
    for i, cursor in enumerate(cursors):
        if i == bound_run:
            takes.append(len(cursor.buffers[0]))
        else:
            side = "right" if i < bound_run else "left"
            takes.append(int(np.searchsorted(cursor.buffers[0], bound, side=side)[0]))
    return takes


def _item_bytes(dtype, with_indices):
    return dtype.itemsize + (INDEX_DTYPE.itemsize if with_indices else 0)


def _make_runs(array, spill, with_indices, kind, run_items):
    """Sorted runs of ``run_items`` items of the flattened ``array``, spilled."""
    runs = []
    for start in range(0, array.size, run_items):
        values = read_flat(array, start, min(array.size, start + run_items))
        if with_indices:
            order = np.argsort(values, kind="stable")
            runs.append(spill.run(values[order], (order + start).astype(INDEX_DTYPE)))
        else:
            values.sort(kind=kind)
            runs.append(spill.run(values))
    return runs


def external_sort(array, sink, with_indices, kind=None, stats=None):
    """Sort ``array`` flattened (C order) into ``sink`` in bounded memory (see the module
    doc).  ``stats`` (a dict), when given, receives ``runs`` (spilled runs, 0 when
    sorted in memory), ``run_items``, ``merge_passes``, ``held_items_max`` (the most
    run items a merge buffered at once), ``item_bytes``, ``buffer_bytes`` and
    ``fill_items`` (unwritten items counted, not read: a sort of values)."""
    budget = buffer_bytes()
    item_bytes = _item_bytes(array.dtype, with_indices)
    run_items = max(1, budget // (2 * item_bytes))
    report = {"runs": 0, "merge_passes": 0, "buffer_bytes": budget, "run_items": run_items,
              "item_bytes": item_bytes, "fill_items": 0}
    spill = _Spill()
    try:
        if with_indices:
            _sort_positions(array, sink, kind, run_items, spill, report)
        else:
            _sort_values(array, sink, kind, run_items, spill, report)
    finally:
        spill.close()
    if stats is not None:
        stats.update(report)


def _sort_positions(array, sink, kind, run_items, spill, report):
    """``argsort``: runs of consecutive flat ranges, their indices carried."""
    if array.size <= run_items:
        values = read_flat(array, 0, array.size)
        order = np.argsort(values, kind="stable")
        sink.write(values[order], order.astype(INDEX_DTYPE))
    else:
        runs = _make_runs(array, spill, True, kind, run_items)
        _merge_runs(runs, spill, sink, array.dtype, report)
    sink.close()


def _sort_values(array, sink, kind, run_items, spill, report):
    """``sort``: the items of the chunks the array may store, read chunk by chunk in
    any order (a sorted list of values keeps no positions), in runs; the other items
    are its fill value, counted and written as one block where they sort
    (:class:`_FillSink`), never read."""
    runs, held, covered, flat = [], 0, 0, None
    buffer = np.empty(min(run_items, array.size), array.dtype)     # the run being read
    for _key, flat in array._map_stored(lambda _key, block: block.flatten()):
        covered += flat.size
        while flat.size:
            take = min(flat.size, run_items - held)
            buffer[held:held + take] = flat[:take]
            held, flat = held + take, flat[take:]
            if held == run_items:
                buffer.sort(kind=kind)
                runs.append(spill.run(buffer))
                held = 0
    tail = buffer[:held]
    tail.sort(kind=kind)
    missing = array.size - covered
    report["fill_items"] = missing
    sink = _FillSink(sink, np.full(1, array.fill_value, array.dtype), missing) if missing else sink
    if not runs:
        if len(tail):
            sink.write(tail, None)
    else:
        if len(tail):
            runs.append(spill.run(tail))
        del buffer, tail, flat          # the merge has the whole buffer to itself
        heap.trim()
        _merge_runs(runs, spill, sink, array.dtype, report)
    sink.close()


def _merge_runs(runs, spill, sink, dtype, report):
    """Merge the spilled ``runs`` into ``sink``: in groups first when there are more
    than the buffer reads at :data:`MERGE_READ_ITEMS_MIN` items each."""
    budget, item_bytes = report["buffer_bytes"], report["item_bytes"]
    report["runs"] = len(runs)
    fan_in = max(2, budget // (3 * item_bytes * MERGE_READ_ITEMS_MIN))
    while len(runs) > fan_in:
        runs = [_merge_to_run(runs[i:i + fan_in], spill, budget, item_bytes, dtype, report)
                for i in range(0, len(runs), fan_in)]
        report["merge_passes"] += 1
    _merge(runs, sink, max(1, budget // (3 * item_bytes * len(runs))), report)
    report["merge_passes"] += 1


def _merge_to_run(runs, spill, budget, item_bytes, dtype, report):
    if len(runs) == 1:
        return runs[0]
    writer = spill.writer(sum(r.length for r in runs), dtype, runs[0].with_indices)
    _merge(runs, writer, max(1, budget // (3 * item_bytes * len(runs))), report)
    for run in runs:
        run.delete()
    return writer.close()


# ---------------------------------------------------------------------- along an axis

def _tiles_along(array, axis, item_bytes):
    """Regions of ``array`` holding whole lines along ``axis``, at most a buffer each
    (with numpy's copy): chunk-aligned tiles of the other axes, halved until they fit."""
    line = array.shape[axis] * item_bytes * 2
    budget = buffer_bytes()
    if line > budget:
        raise ArrayTooLargeError(
            f"sorting along axis {axis} holds whole lines of {array.shape[axis]} items: "
            f"{line} bytes with numpy's copy, more than the sort buffer ({budget} bytes, half "
            "of memory_bytes_max); raise neoarray.array.config.memory_bytes_max or sort "
            "along another axis")
    tile = list(array.chunks)
    tile[axis] = max(1, array.shape[axis])
    others = [ax for ax in range(array.ndim) if ax != axis]
    while math.prod(tile[ax] for ax in others) * line > budget:
        widest = max(others, key=lambda ax: tile[ax])
        tile[widest] = max(1, tile[widest] // 2)
    grid = layout.chunk_grid(array.shape, tuple(tile))
    for key in np.ndindex(*grid):
        yield layout.chunk_region(key, array.shape, tuple(tile))


def _along_axis(array, axis, func, out):
    for region in _tiles_along(array, axis, _item_bytes(array.dtype, True)):
        out[region] = func(np.asarray(array[region]))


# ---------------------------------------------------------------------- entry points

def _sort_kind(dtype, kind, stable):
    """numpy's ``kind``/``stable`` checked by numpy itself (its errors), as a kind."""
    if stable:
        kind = "stable"
    np.sort(np.empty(0, dtype), kind=kind)
    return kind


def _by_fields(a, order):
    """``(a, dtype)`` to sort by the fields ``order`` (None: ``a`` as it is): ``a`` read
    as a dtype of the same fields, ``order``'s first (numpy's order for ``order=``: the
    other fields break ties in their own order; numpy sorts a view of its items with
    the names so reordered, a copy here, so runs can be spilled to ``.npy`` files)."""
    if order is None:
        return a, a.dtype
    if a.dtype.names is None:
        raise ValueError("Cannot specify order when the array has no fields.")
    names = [order] if isinstance(order, str) else list(order)
    for name in names:
        if name not in a.dtype.names:
            raise ValueError(f"no field of name {name}")
    names += [n for n in a.dtype.names if n not in names]
    dtype = np.dtype([(n, a.dtype.fields[n][0]) for n in names])
    return lazy.lazyarray(functools.partial(_by_name, dtype=dtype), (a,)), dtype


def _by_name(values, dtype):
    """``values`` (structured) as ``dtype``, field by field by name."""
    result = np.empty(values.shape, dtype)
    for name in dtype.names:
        result[name] = values[name]
    return result


class _FieldSink:
    """Passes sorted values to ``sink`` in the output's ``dtype``, field by field."""

    def __init__(self, sink, dtype):
        self.sink, self.dtype = sink, dtype

    def write(self, values, indices):
        self.sink.write(_by_name(values, self.dtype), indices)

    def fill(self, value, count):
        self.sink.fill(_by_name(value, self.dtype), count)

    def close(self):
        self.sink.close()


def sort(a, axis=-1, kind=None, order=None, *, stable=None, out=None, stats=None):
    """``np.sort`` of a neoarray into a new one (or ``out``), see the module doc;
    ``stats``: see :func:`external_sort`.  ``order`` sorts a structured array by fields."""
    if not isinstance(a, core.ChunkedArray) or (a.ndim == 0 and axis is not None):
        return NotImplemented
    kind = _sort_kind(a.dtype, kind, stable)
    if axis is None or a.ndim == 1:
        shape = (a.size,)
        out = outputs.prepare_out(out, (a,), shape, a.dtype, a.fill_value,
                                  chunks=a.chunks if a.ndim == 1 else None, what="the sorted items")
        source = _by_fields(a, order)[0]
        sink = _ArraySink(out, False)
        external_sort(source, sink if order is None else _FieldSink(sink, a.dtype), False, kind,
                      stats)
        return out
    (axis,) = layout.normalize_axes(axis, a.ndim)
    _by_fields(a, order)                                # numpy's errors
    out = outputs.prepare_out(out, (a,), a.shape, a.dtype, a.fill_value, chunks=a.chunks,
                              what="the sorted array")
    _along_axis(a, axis, lambda block: np.sort(block, axis=axis, kind=kind, order=order), out)
    return out


def sort_in_place(a, axis=-1, kind=None, order=None, stable=None):
    """``ndarray.sort``: the array sorted in place (runs are spilled before any write)."""
    sort(a, axis=axis if a.ndim > 1 else -1, kind=kind, order=order, stable=stable, out=a)


def argsort(a, axis=-1, kind=None, order=None, *, stable=None, stats=None):
    """``np.argsort`` of a neoarray: a new array of indices (always a stable order for
    1-D and flattened arrays, see the module doc).  ``order``: by fields."""
    if not isinstance(a, core.ChunkedArray) or (a.ndim == 0 and axis is not None):
        return NotImplemented
    kind = _sort_kind(a.dtype, kind, stable)
    if axis is None or a.ndim == 1:
        shape = (a.size,)
        out = outputs.prepare_out(None, (a,), shape, INDEX_DTYPE, 0,
                                  chunks=a.chunks if a.ndim == 1 else None, what="the sort indices")
        external_sort(_by_fields(a, order)[0], _ArraySink(out, True), True, kind, stats)
        return out
    (axis,) = layout.normalize_axes(axis, a.ndim)
    _by_fields(a, order)
    out = outputs.prepare_out(None, (a,), a.shape, INDEX_DTYPE, 0, chunks=a.chunks,
                              what="the sort indices")
    _along_axis(a, axis, lambda block: np.argsort(block, axis=axis, kind=kind, order=order), out)
    return out


# ---------------------------------------------------------------------- unique

def _merge_unique(parts, counted, equal_nan):
    """The union of ``(values, counts)`` parts: sorted unique values (and summed counts)."""
    values = np.concatenate([p[0] for p in parts])
    if not counted:
        return np.unique(values, equal_nan=equal_nan), None
    counts = np.concatenate([p[1] for p in parts])
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    unique, starts = np.unique(values, return_index=True, equal_nan=equal_nan)
    return unique, np.add.reduceat(counts, starts) if len(starts) else counts[:0]


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *,
           equal_nan=True, sorted=True):
    """``np.unique`` of a neoarray, chunk by chunk (``return_counts`` too; ``return_index``,
    ``return_inverse`` and ``axis`` go to numpy on the array in memory)."""
    if not isinstance(ar, core.ChunkedArray) or return_index or return_inverse or axis is not None:
        return NotImplemented
    counted = bool(return_counts)
    budget = buffer_bytes() // 2
    item_bytes = ar.itemsize + (INDEX_DTYPE.itemsize if counted else 0)

    def block_unique(_key, block):
        if counted:
            values, counts = np.unique(block, return_counts=True, equal_nan=equal_nan)
            return values, counts.astype(INDEX_DTYPE), block.size
        return np.unique(block, equal_nan=equal_nan), None, block.size

    merged, parts, held, covered = None, [], 0, 0
    for _key, (values, counts, size) in ar._map_stored(block_unique):
        parts.append((values, counts))
        held += len(values) * item_bytes
        covered += size
        if held > budget:
            merged = _merge_unique(([merged] if merged else []) + parts, counted, equal_nan)
            parts, held = [], len(merged[0]) * item_bytes
            _check_unique_size(held, budget)
    missing = ar.size - covered
    if missing and not equal_nan and ar.dtype.kind in "fc" and np.isnan(ar.fill_value):
        # unequal NaNs: each unwritten item is a distinct value, as numpy gives them
        _check_unique_size(missing * item_bytes, budget)
        parts.append((np.full(missing, ar.fill_value, ar.dtype), np.ones(missing, INDEX_DTYPE)))
    elif missing:
        parts.append((np.full(1, ar.fill_value, ar.dtype), np.full(1, missing, INDEX_DTYPE)))
    if not parts and merged is None:
        parts.append((np.empty(0, ar.dtype), np.empty(0, INDEX_DTYPE)))
    values, counts = _merge_unique(([merged] if merged else []) + parts, counted, equal_nan)
    return (values, counts) if counted else values


def _check_unique_size(held, budget):
    if held > budget:
        raise ArrayTooLargeError(
            f"np.unique of this array has at least {held} bytes of distinct items (with their "
            f"counts), more than its buffer ({budget} bytes, a quarter of memory_bytes_max); "
            "raise neoarray.array.config.memory_bytes_max")


# ---------------------------------------------------------------------- searchsorted

class _FirstItems:
    """The first item of each chunk of a 1-D array, read on demand and kept."""

    def __init__(self, array):
        self.array, self.step, self.items = array, array.chunks[0], {}

    def __getitem__(self, j):
        item = self.items.get(j)
        if item is None:
            item = self.items[j] = np.asarray(self.array[j * self.step:j * self.step + 1])
        return item


def _last_chunk_before(firsts, count, value, side):
    """The last chunk whose first item goes before ``value`` (numpy's order, ``side``), or -1."""
    low, high = 0, count - 1
    found = -1
    while low <= high:
        middle = (low + high) // 2
        if np.searchsorted(firsts[middle], value, side=side) == 1:
            found, low = middle, middle + 1
        else:
            high = middle - 1
    return found


def searchsorted(a, v, side="left", sorter=None):
    """``np.searchsorted`` of a sorted 1-D neoarray: O(log(chunks)) chunk reads per value
    (shared between values), then numpy's search in one chunk per value."""
    if not isinstance(a, core.ChunkedArray) or a.ndim != 1 or sorter is not None:
        return NotImplemented
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right' (got {side!r})")
    values = np.asarray(v)
    flat = values.reshape(-1)
    result = np.zeros(flat.shape, INDEX_DTYPE)
    count = layout.chunk_grid(a.shape, a.chunks)[0] if a.size else 0
    firsts = _FirstItems(a)
    found = np.array([_last_chunk_before(firsts, count, x, side) for x in flat], dtype=np.int64)
    for j in np.unique(found):
        if j < 0:
            continue
        start = int(j) * a.chunks[0]
        block = np.asarray(a[start:start + a.chunks[0]])
        where = found == j
        result[where] = start + np.searchsorted(block, flat[where], side=side)
    return result.reshape(values.shape)[()] if values.ndim == 0 else result.reshape(values.shape)


#: numpy functions run here (see :mod:`.ufuncs`)
ARRAY_FUNCTIONS = {np.sort: sort, np.argsort: argsort, np.unique: unique,
                   np.searchsorted: searchsorted}
