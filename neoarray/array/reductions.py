"""Reductions over stored chunks, with the unwritten remainder added analytically.

A reduction never visits unwritten chunks: it folds a partial result per
*stored* chunk into an output-shaped state, counts the items covered per
output cell, and merges the contribution of the ``missing`` items (all equal
to the fill value) in closed form (``sum += fill * missing``, ...).  Work is
proportional to the stored data, whatever the shape.

The per-chunk partial functions live in :data:`REDUCERS`, a table of small
numpy functions that compiled kernels may replace.  Each entry provides:

``partial(block, axes, acc)``
    State of one in-bounds chunk block, reduced over ``axes`` with
    ``keepdims=True``; ``acc`` is the accumulation dtype.
``fill(value, missing, acc)``
    State of ``missing`` (an int64 array) items all equal to ``value``.
``merge(a, b)``
    State of the union of two disjoint sets of items.
``final(state, n, ddof, dtype)``
    Result from a state; ``n`` is the number of items reduced per cell.

States are tuples of arrays of the output shape (reduced axes kept as 1).
"""

import math

import numpy as np

from .. import kernels
from . import layout
from .config import check_memory

NUMPY_FUNCS = {
    "sum": np.sum, "prod": np.prod, "mean": np.mean, "var": np.var, "std": np.std,
    "min": np.min, "max": np.max, "any": np.any, "all": np.all,
    "count_nonzero": np.count_nonzero, "argmin": np.argmin, "argmax": np.argmax,
}


class Reducer:
    """One entry of the reduction table (see the module docstring).

    ``state``, when given, names the :func:`neoarray.kernels.block_state` that
    gives the state of a whole block (every axis reduced) as a tuple of scalars:
    :func:`_partial` uses it there (compiled kernels where they apply), so the
    client and storage nodes (near-data reductions) compute identical states.
    """

    def __init__(self, partial, fill, merge, final=lambda s, n, ddof, dtype: s[0], state=None):
        self.partial = partial
        self.fill = fill
        self.merge = merge
        self.final = final
        self.state = state


def _kernel_applies(block, axes, acc):
    """Compiled kernels reduce whole blocks of bool/int/float items into exact-enough
    accumulators: float64 or integers (float32 sums keep numpy's pairwise summation)."""
    return len(axes) == block.ndim and kernels.kernel_applies(block.dtype, acc)


def _partial(red, block, axes, acc):
    """State of one block: :func:`kernels.block_state` for whole blocks, else numpy."""
    if red.state is not None and block.size and len(axes) == block.ndim:
        keep = (1,) * block.ndim
        return tuple(np.full(keep, v) for v in kernels.block_state(red.state, block, acc))
    return red.partial(block, axes, acc)


def _full(value, missing, dtype):
    return np.full(missing.shape, value, dtype=dtype)


def _moments_partial(block, axes, acc):
    n = math.prod(block.shape[ax] for ax in axes)
    mean = np.mean(block, axis=axes, keepdims=True, dtype=acc)
    if acc.kind == "f":     # like numpy.var: one temporary, squared in place
        deviation = np.subtract(block, mean, dtype=acc)
        np.multiply(deviation, deviation, out=deviation)
        m2 = np.sum(deviation, axis=axes, keepdims=True)
    else:
        m2 = np.sum(np.abs(block - mean) ** 2, axis=axes, keepdims=True)
    return np.full(mean.shape, n, dtype=np.int64), mean, m2


def _moments_fill(value, missing, acc):
    return missing, np.full(missing.shape, value, dtype=acc), np.zeros(missing.shape)


def _moments_merge(a, b):
    """Chan et al. parallel merge of (count, mean, M2)."""
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    delta = mb - ma
    ratio = nb / np.maximum(n, 1)
    return n, ma + delta * ratio, qa + qb + np.abs(delta) ** 2 * na * ratio


def _var_final(state, n, ddof, dtype):
    return (state[2] / (n - ddof)).astype(dtype, copy=False)


def _std_final(state, n, ddof, dtype):
    return np.sqrt(state[2] / (n - ddof)).astype(dtype, copy=False)


def _mean_final(state, n, ddof, dtype):
    return (state[0] / n).astype(dtype, copy=False)


def _times(value, missing, acc):
    count = missing if acc.kind == "m" else missing.astype(acc)
    return (np.full(missing.shape, value, dtype=acc) * count,)


def _power(value, missing, acc):
    exponent = missing.astype(acc) if acc.kind in "iu" else missing  # exact, wraps like numpy
    return (np.power(np.full(missing.shape, value, dtype=acc), exponent),)


def _truthy(value):
    return bool(np.count_nonzero(np.asarray(value)))


REDUCERS = {
    "sum": Reducer(
        lambda b, axes, acc: (np.sum(b, axis=axes, keepdims=True, dtype=acc),),
        _times, lambda a, b: (a[0] + b[0],), state="sum"),
    "mean": Reducer(
        lambda b, axes, acc: (np.sum(b, axis=axes, keepdims=True, dtype=acc),),
        _times, lambda a, b: (a[0] + b[0],), _mean_final, state="sum"),
    "prod": Reducer(
        lambda b, axes, acc: (np.prod(b, axis=axes, keepdims=True, dtype=acc),),
        _power, lambda a, b: (a[0] * b[0],), state="prod"),
    "min": Reducer(
        lambda b, axes, acc: (np.min(b, axis=axes, keepdims=True),),
        lambda v, m, acc: (_full(v, m, acc),), lambda a, b: (np.minimum(a[0], b[0]),),
        state="min"),
    "max": Reducer(
        lambda b, axes, acc: (np.max(b, axis=axes, keepdims=True),),
        lambda v, m, acc: (_full(v, m, acc),), lambda a, b: (np.maximum(a[0], b[0]),),
        state="max"),
    "any": Reducer(
        lambda b, axes, acc: (np.any(b, axis=axes, keepdims=True),),
        lambda v, m, acc: (_full(_truthy(v), m, bool),),
        lambda a, b: (a[0] | b[0],), state="any"),
    "all": Reducer(
        lambda b, axes, acc: (np.all(b, axis=axes, keepdims=True),),
        lambda v, m, acc: (_full(_truthy(v), m, bool),),
        lambda a, b: (a[0] & b[0],), state="all"),
    "count_nonzero": Reducer(
        lambda b, axes, acc: (np.count_nonzero(b, axis=axes, keepdims=True),),
        lambda v, m, acc: (m * int(_truthy(v)),), lambda a, b: (a[0] + b[0],),
        state="count_nonzero"),
    "var": Reducer(_moments_partial, _moments_fill, _moments_merge, _var_final,
                   state="moments"),
    "std": Reducer(_moments_partial, _moments_fill, _moments_merge, _std_final,
                   state="moments"),
}


# --------------------------------------------------------------------------
# dtypes


def _probe(name, item_dtype, ndim, **kwargs):
    """Run numpy's reduction on one item: gives the result dtype, or numpy's error."""
    func = NUMPY_FUNCS[name]
    sample = np.zeros((1,) * max(ndim, 1), dtype=item_dtype)
    with np.errstate(all="ignore"):
        return np.asarray(func(sample, **kwargs)).dtype


def _acc_dtype(name, dtype, requested):
    """Accumulation dtype of the partial results."""
    if name in ("var", "std"):
        base = requested or dtype
        if np.issubdtype(base, np.complexfloating):
            return np.result_type(base, np.complex128)
        return np.result_type(base, np.float64)
    if name == "mean":
        if requested is not None:
            return np.dtype(requested)
        if np.issubdtype(dtype, np.integer) or dtype == bool:
            return np.dtype(np.float64)
        if dtype == np.float16:
            return np.dtype(np.float32)
        return dtype
    if name in ("sum", "prod"):
        return np.dtype(_probe(name, dtype, 1, dtype=requested))
    if name == "count_nonzero":
        return np.dtype(np.intp)
    return dtype


# --------------------------------------------------------------------------
# engine


def _region(key, shape, chunks, axes):
    """Output cells (keepdims layout) covered by a chunk block of ``shape``."""
    return tuple(slice(0, 1) if ax in axes else slice(j * c, j * c + e)
                 for ax, (j, c, e) in enumerate(zip(key, chunks, shape)))


def _merge_where(red, old, new, mask):
    """Merge ``new`` into ``old`` where ``mask``, take ``new`` elsewhere."""
    with np.errstate(all="ignore"):
        merged = red.merge(old, new)
    return tuple(np.where(mask, m, b) for m, b in zip(merged, new))


def _finish(result, axes, keepdims, out):
    if not keepdims:
        result = result.reshape(tuple(n for ax, n in enumerate(result.shape)
                                      if ax not in axes))
    if out is not None:
        out[...] = result
        return out
    return result[()] if result.ndim == 0 else result


def _check_out_memory(out_keep, itemsize):
    check_memory(math.prod(out_keep) * itemsize, f"reduction output of shape {out_keep}")


def _add_fill(red, state, covered, n, fill, acc):
    missing = n - covered
    if not missing.any():
        return state
    with np.errstate(all="ignore"):
        fill_state = red.fill(fill, missing, acc)
    if state is None:
        return fill_state
    merged = _merge_where(red, state, fill_state, covered > 0)
    return tuple(np.where(missing > 0, m, s) for m, s in zip(merged, state))


def _axes(axis, ndim):
    return tuple(range(ndim)) if axis is None else layout.normalize_axes(axis, ndim)


def _numpy_empty(array, name, axis, keepdims, out, **kwargs):
    """numpy's answer for an array of size 0 (costs no memory)."""
    func = NUMPY_FUNCS[name]
    if name not in ("var", "std"):
        kwargs.pop("ddof", None)
    if name not in ("count_nonzero",) and out is not None:
        kwargs["out"] = out
    return func(np.empty(array.shape, dtype=array.dtype), axis=axis,
                keepdims=keepdims, **kwargs)


# --------------------------------------------------------------------------
# argmin / argmax


def _isnan(values):
    if np.issubdtype(values.dtype, np.inexact):
        return np.isnan(values)
    if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(
            values.dtype, np.timedelta64):
        return np.isnat(values)
    return np.zeros(values.shape, dtype=bool)


def _better(name, value_b, index_b, value_a, index_a):
    """True where candidate b beats candidate a (NaN first, then lowest index)."""
    nan_a, nan_b = _isnan(value_a), _isnan(value_b)
    with np.errstate(invalid="ignore"):
        strictly = value_b < value_a if name == "argmin" else value_b > value_a
        tie = (value_b == value_a) | (nan_a & nan_b)
    return (nan_b & ~nan_a) | (~nan_a & ~nan_b & strictly) | (tie & (index_b < index_a))


def _arg_partial(name, key, block, chunks, array_shape, axis):
    """Best (value, global index) of a block, keepdims layout."""
    func = np.argmin if name == "argmin" else np.argmax
    if axis is None:
        local = np.unravel_index(func(block), block.shape)
        corner = [j * c for j, c in zip(key, chunks)]
        coords = tuple(int(i) + s for i, s in zip(local, corner))
        index = _flat_index(coords, array_shape)
        shape = (1,) * block.ndim
        return (np.full(shape, block[local], dtype=block.dtype),
                np.full(shape, index, dtype=np.int64))
    local = func(block, axis=axis, keepdims=True)
    value = np.take_along_axis(block, local, axis)
    return value, local.astype(np.int64) + key[axis] * chunks[axis]


def _flat_index(coords, shape):
    index = 0
    for i, n in zip(coords, shape):
        index = index * n + i
    return index


def _next_key(key, grid):
    key = list(key)
    for ax in reversed(range(len(key))):
        key[ax] += 1
        if key[ax] < grid[ax]:
            return tuple(key)
        key[ax] = 0
    return None


def _first_missing_flat(array):
    """Flat C index of the first item in an unstored chunk (None if all stored)."""
    grid = layout.chunk_grid(array.shape, array.chunks)
    expected = (0,) * array.ndim
    for key in array.chunk_keys():
        if key != expected:
            break
        expected = _next_key(expected, grid)
        if expected is None:
            return None
    corner = tuple(j * c for j, c in zip(expected, array.chunks))
    return _flat_index(corner, array.shape)


def _first_missing_along(array, axis, out_keep):
    """Index along ``axis`` of the first unstored chunk, per output cell."""
    rows = {}
    for key in array.chunk_keys():
        rows.setdefault(key[:axis] + key[axis + 1:], set()).add(key[axis])
    first = np.zeros(out_keep, dtype=np.int64)
    c = array.chunks[axis]
    for row, present in rows.items():
        gap = next(g for g in range(len(present) + 1) if g not in present)
        key = row[:axis] + (0,) + row[axis:]
        region = tuple(slice(0, 1) if ax == axis else slice(j * cc, (j + 1) * cc)
                       for ax, (j, cc) in enumerate(zip(key, array.chunks)))
        first[region] = gap * c
    return first


def _bad_axis(axis):
    raise TypeError(f"argmin/argmax take a single integer axis, not {axis!r}")


def _add_arg_fill(array, name, axis, axes, out_keep, value, index, covered):
    """Merge the fill-value candidate where some items are unwritten."""
    n = math.prod(array.shape[ax] for ax in axes)
    missing = covered < n
    if not missing.any():
        return
    if axis is None:
        first = np.full(out_keep, _first_missing_flat(array), dtype=np.int64)
    else:
        first = _first_missing_along(array, axis, out_keep)
    fill = np.full(out_keep, array.fill_value, dtype=array.dtype)
    take = missing & ((covered == 0) | _better(name, fill, first, value, index))
    value[...] = np.where(take, fill, value)
    index[...] = np.where(take, first, index)
