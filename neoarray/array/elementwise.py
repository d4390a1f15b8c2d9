"""The elementwise engine: a function of numpy blocks applied chunk by chunk.

``apply(func, inputs)`` computes ``func(*blocks)`` for every chunk of the broadcast
shape of ``inputs`` (neoarrays, numpy arrays, scalars) into ``out`` or a new array
(``outputs``); ``func`` is a ufunc or any function that maps broadcast blocks to a
block (``np.where``, ``np.isclose``...).  ``all_true(func, inputs)`` tells whether
``func`` holds for every item, chunk by chunk, storing nothing.

* Sparse path: when every array input is a neoarray with the output's shape and chunk
  shape (other inputs being scalars), only chunks stored in some input are computed;
  the output's fill value is ``func`` of the fill values.  Work is proportional to the
  stored data.
* Dense path otherwise (broadcasting, numpy array inputs): every chunk of the output is
  computed, one batch at a time.
"""

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


def _shape_of(x):
    return () if is_scalar(x) else tuple(x.shape)


def _probe_input(x):
    """A one-item stand-in of ``x`` with the same dtype (Python scalars kept)."""
    if isinstance(x, core.ndarray):
        return np.full(1, x.fill_value, dtype=x.dtype)
    if isinstance(x, np.ndarray) and x.ndim:
        return np.zeros(1, dtype=x.dtype)
    return x


def _fill_of(ufunc, inputs, kwargs):
    """Value of the output where every neoarray input holds its fill value."""
    with np.errstate(all="ignore"):
        return ufunc(*[_probe_input(x) for x in inputs], **kwargs)


def broadcast_shape(inputs):
    try:
        return np.broadcast_shapes(*(_shape_of(x) for x in inputs))
    except ValueError:
        shapes = ", ".join(str(_shape_of(x)) for x in inputs)
        raise ArrayShapeError(f"operands could not be broadcast together: {shapes}") from None


def apply(func, inputs, kwargs=None, out=None):
    """``func(*inputs, **kwargs)`` chunk by chunk, into ``out`` or a new array."""
    kwargs = kwargs or {}
    shape = broadcast_shape(inputs)
    fill = _fill_of(func, inputs, kwargs)
    out = _prepare_out(out, inputs, shape, fill)
    _compute(func, inputs, kwargs, out, shape, fill)
    return out


def all_true(func, inputs) -> bool:
    """Whether ``func(*blocks)`` is true for every item of the broadcast inputs, chunk by
    chunk, stopping at the first chunk where it is not; nothing is stored."""
    shape = broadcast_shape(inputs)
    chunks = _iteration_chunks(inputs, shape)
    neo = [x for x in inputs if isinstance(x, core.ndarray)]
    sparse = _same_grid(inputs, shape, chunks)
    if sparse and not bool(np.all(_fill_of(func, inputs, {}))) and any(map(_unstored_chunks, neo)):
        return False
    for _batch, args_of_chunks in _batches(inputs, shape, chunks, neo if sparse else None):
        if not all(bool(np.all(func(*args))) for args in args_of_chunks):
            return False
    return True


def _unstored_chunks(array) -> bool:
    return len(array._tree) < math.prod(layout.chunk_grid(array.shape, array.chunks))


def _prepare_out(out, inputs, shape, fill):
    """Return the output array: ``out`` checked, or a new neoarray."""
    return outputs.prepare_out(out, inputs, shape, fill.dtype, fill[0], what="the broadcast inputs")


def _same_grid(inputs, shape, chunks) -> bool:
    """Every input a scalar or a neoarray of ``shape`` and ``chunks``."""
    return all(is_scalar(x) or (isinstance(x, core.ndarray) and x.shape == shape and x.chunks == chunks)
               for x in inputs)


def _sparse_ok(inputs, out, shape, fill):
    """True when only the chunks stored in some input need computing."""
    if not isinstance(out, core.ndarray) or out._fill != fill.astype(out.dtype).tobytes():
        return False
    return _same_grid(inputs, shape, out.chunks)


def _batches(inputs, shape, chunks, stored_in):
    """``(keys, the inputs' blocks of each key)`` a batch at a time: the chunks stored in
    one of the neoarrays ``stored_in``, or every chunk of the grid (``stored_in`` None)."""
    if stored_in is not None:
        keys = sorted(set().union(*(set(x.chunk_keys()) for x in stored_in)))
    else:
        keys = itertools.product(*(range(g) for g in layout.chunk_grid(shape, chunks)))
    nbytes = math.prod(chunks) * 16 * (len(inputs) + 1)
    for batch in fetch.iter_batches(keys, lambda _: nbytes, config.fetch_bytes_max):
        yield batch, zip(*[_input_blocks(x, shape, chunks, batch) for x in inputs])


def _compute(ufunc, inputs, kwargs, out, shape, fill):
    chunks = out.chunks if isinstance(out, core.ndarray) else _iteration_chunks(inputs, shape)
    stored_in = ([x for x in inputs + (out,) if isinstance(x, core.ndarray)]
                 if _sparse_ok(inputs, out, shape, fill) else None)
    same_grid = isinstance(out, core.ndarray) and out.chunks == chunks
    for batch, args_of_chunks in _batches(inputs, shape, chunks, stored_in):
        for key, args in zip(batch, args_of_chunks):
            region = layout.chunk_region(key, shape, chunks)
            extent = tuple(r.stop - r.start for r in region)
            result = np.broadcast_to(ufunc(*args, **kwargs), extent)
            if same_grid:
                out._put_block(key, result)
            else:
                out[region] = result


def _iteration_chunks(inputs, shape):
    like = next((x for x in inputs if isinstance(x, core.ndarray) and x.shape == shape),
                None)
    if like is not None:
        return like.chunks
    dtype = np.result_type(*[x.dtype for x in inputs if not is_scalar(x)])
    return layout.default_chunks(shape, dtype.itemsize, "C", config.chunk_bytes_target)


def _input_blocks(x, shape, chunks, batch):
    """Yield the block of input ``x`` for each output chunk of ``batch``."""
    if is_scalar(x):
        return itertools.repeat(x)
    if isinstance(x, core.ndarray) and x.shape == shape and x.chunks == chunks:
        return x._chunk_blocks(batch)
    return (x[_input_region(x.shape, layout.chunk_region(k, shape, chunks))]
            for k in batch)


def _input_region(in_shape, region):
    """Region of an input broadcast to the output (size-1 axes stay at 0)."""
    region = region[len(region) - len(in_shape):]
    return tuple(slice(0, 1) if n == 1 else r for n, r in zip(in_shape, region))
