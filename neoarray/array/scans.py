"""Running reductions along an axis (``ufunc.accumulate``, ``np.cumsum``, ``np.cumprod``),
chunk by chunk with a carry.

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
    whose ``axis=None`` flattens: refused here for arrays of more than one axis)."""
    if ufunc not in ACCUMULATE_UFUNCS or not isinstance(array, core.ndarray):
        return NotImplemented
    if axis is None:
        if array.ndim != 1:
            raise ArrayValueError(f"{(numpy_func or ufunc).__name__} with axis=None flattens the array: "
                                  f"give an axis for an array of {array.ndim} dimensions "
                                  f"(shape {array.shape})")
        axis = 0
    axis = _axis(axis, array.ndim)
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
                block = ufunc(carry, block, dtype=result_dtype)
            result[region] = block
            carry = np.take(block, [-1], axis=axis)
    return result


def _axis(axis, ndim):
    try:
        axis = int(axis)
    except TypeError:
        raise ArrayValueError(f"axis must be an integer, not {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ArrayValueError(f"axis {axis} is out of bounds for an array of {ndim} dimensions")
    return axis % ndim
