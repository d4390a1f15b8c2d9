"""Running reductions along an axis (``ufunc.accumulate``, ``np.cumsum``, ``np.cumprod``),
chunk by chunk with a carry, and differences along an axis (``np.diff``).

The array is walked one line of chunks along ``axis`` at a time (every chunk of the
other axes' grid position, in order along ``axis``): each block is accumulated by
numpy, combined with the carry, the last values along the axis left by the chunks
before it (``ufunc(carry, block)``, which is exact for the associative ufuncs
accepted here), written to the result, and its last slice becomes the next carry.
Memory holds one chunk and one carry slice.  Results are a new ``neoarray.ndarray``
(``outputs``) with the input's chunks, or ``out=``.
"""
import itertools

import numpy as np

from . import core, layout, outputs
from .errors import ArrayValueError

ACCUMULATE_UFUNCS = frozenset({np.add, np.multiply, np.minimum, np.maximum, np.fmin, np.fmax,
                               np.logical_and, np.logical_or, np.logical_xor, np.bitwise_and,
                               np.bitwise_or, np.bitwise_xor})


def _result_dtype(ufunc, dtype, array_dtype, numpy_func=None):
    """The dtype numpy gives the same call on a one-item array of ``array_dtype``."""
    probe = np.zeros(1, dtype=array_dtype)
    if numpy_func is not None:
        return numpy_func(probe, dtype=dtype).dtype
    return ufunc.accumulate(probe, dtype=dtype).dtype


def accumulate(ufunc, array, axis=0, dtype=None, out=None, numpy_func=None):
    """``ufunc.accumulate(array, axis)`` (``numpy_func``: ``np.cumsum`` or ``np.cumprod``,
    whose ``axis=None`` flattens: left to numpy, in memory, for arrays of more than one axis)."""
    if ufunc not in ACCUMULATE_UFUNCS or not isinstance(array, core.ChunkedArray):
        return NotImplemented
    if axis is None:
        if array.ndim != 1:
            return NotImplemented   # numpy's flattening scan, in memory within the bound
        axis = 0
    (axis,) = layout.normalize_axes(axis, array.ndim)
    result_dtype = _result_dtype(ufunc, dtype, array.dtype, numpy_func)
    result = outputs.prepare_out(out, (array,), array.shape, result_dtype, chunks=array.chunks,
                                 what=f"the {ufunc.__name__}.accumulate of the input")
    grid = layout.chunk_grid(array.shape, array.chunks)
    others = [range(g) if i != axis else range(1) for i, g in enumerate(grid)]
    for base in itertools.product(*others):
        carry = None
        for j in range(grid[axis]):
            key = base[:axis] + (j,) + base[axis + 1:]
            region = layout.chunk_region(key, array.shape, array.chunks)
            block = ufunc.accumulate(np.asarray(array[region]), axis=axis, dtype=result_dtype)
            if carry is not None:
                ufunc(carry, block, out=block, dtype=result_dtype)    # a new block: in place
            result[region] = block
            carry = np.take(block, [-1], axis=axis)
    return result


def diff(array, n=1, axis=-1):
    """``np.diff(array, n, axis)``, from the stored chunks only: each stored chunk's
    differences are computed from it and the one item before and after it along
    ``axis`` (read from the neighbouring chunks, or their fill value); elsewhere the
    difference of two fill values is the result's fill value.  ``n > 1`` repeats it
    (each pass a new array)."""
    if not isinstance(array, core.ChunkedArray):
        return NotImplemented
    if array.ndim == 0:
        raise ArrayValueError("diff requires an array of at least one dimension")
    (axis,) = layout.normalize_axes(axis, array.ndim)
    n = int(n)
    if n < 0:
        raise ArrayValueError(f"diff: order n={n} must be non-negative")
    result = array
    for _ in range(n):
        result = _diff_once(result, axis)
    return result


def _diff_once(array, axis):
    length = array.shape[axis]
    shape = array.shape[:axis] + (max(length - 1, 0),) + array.shape[axis + 1:]
    probe = np.diff(np.full(2, array.fill_value, dtype=array.dtype))
    result = outputs.prepare_out(None, (array,), shape, probe.dtype, fill_value=probe[0], chunks=array.chunks,
                                 what="the differences")
    if length < 2:
        return result
    for key in list(array.chunk_keys()):
        region = list(layout.chunk_region(key, array.shape, array.chunks))
        start, stop = region[axis].start, region[axis].stop
        region[axis] = slice(max(start - 1, 0), min(stop + 1, length))
        block = np.diff(np.asarray(array[tuple(region)]), axis=axis)
        target = list(region)
        target[axis] = slice(region[axis].start, region[axis].stop - 1)
        result[tuple(target)] = block
    return result
