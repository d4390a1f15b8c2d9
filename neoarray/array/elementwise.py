"""The elementwise engine: a function of numpy blocks applied chunk by chunk.

``func`` is a ufunc or any function that maps broadcast blocks to a block (``np.where``,
``np.isclose``, the maps of ``astype``...).  Its inputs are chunked arrays
(:class:`~.core.ChunkedArray`: stored arrays and lazy expressions), numpy arrays and
scalars.

* ``blocks(func, inputs, kwargs, shape, chunks, keys)`` yields ``func(*blocks)`` for
  the chunks ``keys`` of a grid over the broadcast shape: how lazy expressions
  (:mod:`.lazy`) compute their chunks.
* ``apply(func, inputs, kwargs, out)`` writes ``func`` of the inputs into ``out`` (a
  neoarray or numpy array; a new persistent array when None): ufuncs with ``out=``,
  and storing an expression.
* ``all_true(func, inputs)`` tells whether ``func`` holds for every item, chunk by
  chunk, storing nothing.

Sparse inputs stay cheap: the output's fill value is ``func`` of the inputs' fill
values, so only the chunks where some input may differ from its fill value need
computing (:func:`touched_keys`): the chunks an input of the output's shape may hold,
mapped onto the output grid when its own grid differs.  A numpy array input, or a
chunked input broadcast to the output that holds some chunk, makes every chunk count
(the dense path, one batch of chunks at a time).  Work is proportional to the stored
data otherwise, whatever the shape.
"""

import heapq
import itertools
import math
import numbers

import numpy as np

from . import core, fetch, layout, outputs
from .config import config
from .errors import ArrayShapeError


def is_scalar(x):
    return isinstance(x, (numbers.Number, np.generic)) or (
        isinstance(x, np.ndarray) and x.ndim == 0)


def is_operand(x):
    """Whether the engine takes ``x`` as it is: a chunked array, a numpy array or a scalar."""
    return is_scalar(x) or isinstance(x, (core.ChunkedArray, np.ndarray))


def _shape_of(x):
    return () if is_scalar(x) else tuple(x.shape)


def _probe_input(x):
    """A one-item stand-in of ``x`` with the same dtype (Python scalars kept)."""
    if isinstance(x, core.ChunkedArray):
        return np.full(1, x.fill_value, dtype=x.dtype)
    if isinstance(x, np.ndarray) and x.ndim:
        return np.zeros(1, dtype=x.dtype)
    return x


def fill_of(func, inputs, kwargs):
    """Value of the output (a one-item array) where every chunked input holds its fill
    value; raises numpy's error when ``func`` refuses the inputs' dtypes."""
    with np.errstate(all="ignore"):
        return np.asarray(func(*[_probe_input(x) for x in inputs], **kwargs)).reshape(1)


def broadcast_shape(inputs):
    try:
        return np.broadcast_shapes(*(_shape_of(x) for x in inputs))
    except ValueError:
        shapes = ", ".join(str(_shape_of(x)) for x in inputs)
        raise ArrayShapeError(f"operands could not be broadcast together: {shapes}") from None


def weight(inputs) -> int:
    """Number of array operands read to compute one chunk (for batch sizes)."""
    return sum(getattr(x, "_weight", 1) for x in inputs if not is_scalar(x))


def iteration_chunks(inputs, shape):
    """The chunk grid of a result of ``shape``: a chunked input's of that shape, else
    the default one for the inputs' dtype."""
    like = next((x for x in inputs if isinstance(x, core.ChunkedArray) and x.shape == shape),
                None)
    if like is not None:
        return like.chunks
    dtype = np.result_type(*[x.dtype for x in inputs if not is_scalar(x)] or [float])
    return layout.default_chunks(shape, dtype.itemsize, "C", config.chunk_bytes_target)


def all_keys(shape, chunks):
    """Every chunk key of the grid, C order."""
    return itertools.product(*(range(g) for g in layout.chunk_grid(shape, chunks)))


# ---------------------------------------------------------------------- which chunks

def touched_keys(inputs, shape, chunks):
    """The keys (sorted, C order, unique) of the chunks of the ``chunks`` grid over
    ``shape`` where some input may differ from its fill value; None when every chunk
    may (a numpy array input, or a broadcast chunked input that holds chunks)."""
    streams = []
    for x in inputs:
        if is_scalar(x):
            continue
        if not isinstance(x, core.ChunkedArray):
            return None
        if tuple(x.shape) != tuple(shape):
            if next(iter(x.chunk_keys()), None) is None:
                continue        # all fill: as a scalar
            return None
        keys = x.chunk_keys()
        streams.append(keys if tuple(x.chunks) == tuple(chunks) else
                       _regridded(keys, shape, x.chunks, chunks))
    return _unique(heapq.merge(*streams))


def _regridded(keys, shape, chunks, grid_chunks):
    """The keys of the ``grid_chunks`` grid overlapping the chunks ``keys`` of the
    ``chunks`` grid (sorted; memory in proportion to the keys)."""
    found = set()
    for key in keys:
        region = layout.chunk_region(key, shape, chunks)
        found.update(itertools.product(*(
            range(r.start // c, (r.stop - 1) // c + 1) for r, c in zip(region, grid_chunks))))
    return iter(sorted(found))


def _unique(keys):
    last = None
    for key in keys:
        if key != last:
            yield key
            last = key


# ---------------------------------------------------------------------- computing

def blocks(func, inputs, kwargs, shape, chunks, keys):
    """Yield ``func(*inputs' blocks)`` (read-only, broadcast to the chunk's in-bounds
    extent) for each chunk of ``keys`` (a list) of the ``chunks`` grid over ``shape``."""
    sources = [_input_blocks(x, shape, chunks, keys) for x in inputs]
    for key, args in zip(keys, zip(*sources)):
        yield np.broadcast_to(func(*args, **kwargs), layout.chunk_extent(key, shape, chunks))


def region_block(func, inputs, kwargs, region):
    """``func`` of the inputs over ``region`` (unit-step slices of the broadcast shape),
    each input read over that region only."""
    args = [x if is_scalar(x) else np.asarray(_read(x, _input_region(x.shape, region)))
            for x in inputs]
    extent = tuple(r.stop - r.start for r in region)
    return np.broadcast_to(func(*args, **kwargs), extent)


def batches(keys, chunks, operands):
    """``keys`` in lists holding about ``config.fetch_limit_bytes()`` bytes of blocks of
    ``operands`` arrays."""
    nbytes = math.prod(chunks) * 16 * (operands + 1)
    return fetch.iter_batches(keys, lambda _: nbytes, config.fetch_limit_bytes())


def apply(func, inputs, kwargs=None, out=None):
    """``func(*inputs, **kwargs)`` chunk by chunk, into ``out`` or a new persistent array
    (``outputs``)."""
    kwargs = kwargs or {}
    shape = broadcast_shape(inputs)
    fill = fill_of(func, inputs, kwargs)
    out = outputs.prepare_out(out, inputs, shape, fill.dtype, fill[0], what="the broadcast inputs")
    _compute(func, inputs, kwargs, out, shape, fill)
    return out


def _compute(func, inputs, kwargs, out, shape, fill):
    stored = isinstance(out, core.ndarray)
    chunks = out.chunks if stored else iteration_chunks(inputs, shape)
    keys = None
    if stored and out._fill == fill.astype(out.dtype).tobytes():
        keys = touched_keys(tuple(inputs) + (out,), shape, chunks)   # out's chunks rewritten
    if keys is None:
        keys = all_keys(shape, chunks)
    for batch in batches(keys, chunks, weight(inputs)):
        for key, block in zip(batch, blocks(func, inputs, kwargs, shape, chunks, batch)):
            if stored:
                out._put_block(key, block)
            else:
                out[layout.chunk_region(key, shape, chunks)] = block


def all_true(func, inputs) -> bool:
    """Whether ``func(*blocks)`` is true for every item of the broadcast inputs, chunk by
    chunk, stopping at the first chunk where it is not; nothing is stored."""
    shape = broadcast_shape(inputs)
    chunks = iteration_chunks(inputs, shape)
    keys = touched_keys(inputs, shape, chunks)
    fill_true = keys is None or bool(np.all(fill_of(func, inputs, {})))
    seen = 0
    for batch in batches(all_keys(shape, chunks) if keys is None else keys, chunks,
                         weight(inputs)):
        if not all(bool(np.all(b)) for b in blocks(func, inputs, {}, shape, chunks, batch)):
            return False
        seen += len(batch)
    return fill_true or seen == math.prod(layout.chunk_grid(shape, chunks))


def all_finite(x) -> bool:
    """Whether every item of ``x`` (a chunked array, chunk by chunk and its fill value,
    or a numpy array) is finite: what a product with zero needs to be zero."""
    if x.dtype.kind not in "fc":
        return True
    if isinstance(x, core.ChunkedArray):
        return all_true(np.isfinite, [x])
    return bool(np.isfinite(x).all())


def _input_blocks(x, shape, chunks, batch):
    """Yield the block of input ``x`` for each output chunk of ``batch``."""
    if is_scalar(x):
        return itertools.repeat(x)
    if isinstance(x, core.ChunkedArray) and x.shape == shape and x.chunks == chunks:
        return x._chunk_blocks(batch)
    return (_read(x, _input_region(x.shape, layout.chunk_region(k, shape, chunks)))
            for k in batch)


def _read(x, region):
    """``x[region]`` as a numpy array (a lazy array's basic selection is a view)."""
    return x._read(region) if isinstance(x, core.ChunkedArray) else x[region]


def _input_region(in_shape, region):
    """Region of an input broadcast to the output (size-1 axes stay at 0)."""
    region = region[len(region) - len(in_shape):]
    return tuple(slice(0, 1) if n == 1 else r for n, r in zip(in_shape, region))
