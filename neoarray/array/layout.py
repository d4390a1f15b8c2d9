"""Pure validation of array metadata: shape, dtype, order, chunk shape, fill.

Nothing here touches storage.  Limits: a shape's byte size must fit in 64 bits
(``nbytes < 2**64``) and its element count in a signed 64-bit integer, so
numpy can index every element (``np.intp``).
"""

import math
import operator

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from .errors import ArrayDtypeError, ArrayShapeError, ArrayValueError

NBYTES_LIMIT = 1 << 64
SIZE_LIMIT = 1 << 63


def normalize_dtype(dtype):
    """Return ``numpy.dtype(dtype)`` if it can be stored, else raise TypeError.

    Storable dtypes have a fixed, non-zero item size and hold no Python
    objects: bool, integers, floats, complex, datetimes, fixed-size bytes and
    unicode, and structured dtypes made of those.
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ArrayDtypeError(
            f"dtype {dtype} holds Python objects; neoarray arrays store fixed-size "
            "binary items only (use a numeric, bool, complex or structured dtype)")
    if dtype.itemsize == 0:
        raise ArrayDtypeError(f"dtype {dtype} has no fixed item size")
    return dtype


def normalize_shape(shape, itemsize):
    """Return ``shape`` as a tuple of Python ints, checking its byte size.

    Raises
    ------
    ValueError
        On negative extents, or when the byte size does not fit in 64 bits.
    """
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ArrayShapeError(f"shape {shape!r} must be a tuple of integers") from None
    if any(n < 0 for n in shape):
        raise ArrayShapeError(f"negative dimensions are not allowed: shape {shape}")
    size = math.prod(shape)
    if size * itemsize >= NBYTES_LIMIT or size >= SIZE_LIMIT:
        raise ArrayShapeError(
            f"shape {shape} with item size {itemsize} bytes needs {size * itemsize} "
            "bytes, which overflows 64 bits")
    return shape


def normalize_order(order):
    """Return 'C' or 'F'."""
    if order in (None, "C", "c"):
        return "C"
    if order in ("F", "f"):
        return "F"
    raise ArrayValueError(f"order must be 'C' or 'F', not {order!r}")


def default_chunks(shape, itemsize, order, chunk_bytes_target):
    """Choose a chunk shape of about ``chunk_bytes_target`` bytes.

    Axes are filled from the fastest-varying one (last for C order, first for
    F order), each clamped to its extent, so a chunk is a run of whole rows
    (or columns) of the array.  Axes of extent 0 count as unbounded, so an
    array created empty and grown with ``append`` gets full-size chunks.
    """
    items_left = max(1, chunk_bytes_target // itemsize)
    chunks = [1] * len(shape)
    axes = range(len(shape)) if order == "F" else reversed(range(len(shape)))
    for axis in axes:
        extent = shape[axis] if shape[axis] > 0 else items_left
        chunks[axis] = max(1, min(extent, items_left))
        items_left = max(1, items_left // chunks[axis])
    return tuple(chunks)


def normalize_chunks(chunks, shape, itemsize, order, chunk_bytes_target,
                     chunk_bytes_max):
    """Return the chunk shape: the given one validated, or the default."""
    if chunks is None:
        return default_chunks(shape, itemsize, order, chunk_bytes_target)
    if isinstance(chunks, (int, np.integer)):
        chunks = (int(chunks),) * len(shape)
    try:
        chunks = tuple(operator.index(c) for c in chunks)
    except TypeError:
        raise ArrayValueError(f"chunks {chunks!r} must be a tuple of integers") from None
    if len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise ArrayValueError(
            f"chunks {chunks} must give one positive extent per axis of shape {shape}")
    chunk_bytes = math.prod(chunks) * itemsize
    if chunk_bytes > chunk_bytes_max:
        raise ArrayValueError(
            f"chunks {chunks} hold {chunk_bytes} bytes, more than chunk_bytes_max "
            f"({chunk_bytes_max} bytes)")
    return chunks


def fill_bytes(fill_value, dtype):
    """Return the raw bytes of ``fill_value`` as one item of ``dtype``."""
    if fill_value is None:
        return bytes(dtype.itemsize)
    try:
        item = np.asarray(fill_value, dtype=dtype) if dtype.fields else \
            np.asarray(fill_value).astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ArrayValueError(
            f"fill_value {fill_value!r} cannot be stored as dtype {dtype}: {exc}") from None
    if item.shape != ():
        raise ArrayValueError(f"fill_value {fill_value!r} must be a scalar")
    return item.tobytes()


def dtype_to_state(dtype):
    """Return a portable description of ``dtype`` (the .npy header format)."""
    return np.lib.format.dtype_to_descr(dtype)


def dtype_from_state(descr):
    """Inverse of :func:`dtype_to_state`."""
    return np.lib.format.descr_to_dtype(descr)


def chunk_grid(shape, chunks):
    """Return the number of chunks along each axis."""
    return tuple(-(-n // c) for n, c in zip(shape, chunks))


def chunk_region(key, shape, chunks):
    """Return the in-bounds slices of the array covered by chunk ``key``."""
    return tuple(slice(j * c, min((j + 1) * c, n)) for j, c, n in zip(key, chunks, shape))


def chunk_extent(key, shape, chunks):
    """Return the in-bounds shape of chunk ``key``."""
    return tuple(max(0, min((j + 1) * c, n) - j * c) for j, c, n in zip(key, chunks, shape))


def normalize_axes(axes, ndim, what=None, allow_duplicate=False) -> tuple:
    """``axes`` (an integer or a sequence of them) as non-negative axes of an array of
    ``ndim`` dimensions, as numpy's ``normalize_axis_tuple``: an axis out of bounds or a
    repeated one is ``ArrayValueError`` (prefixed by ``what``); one that is not an integer
    is numpy's ``TypeError``."""
    try:
        return normalize_axis_tuple(axes, ndim, argname=what, allow_duplicate=allow_duplicate)
    except ValueError as exc:       # numpy's AxisError is a ValueError too
        raise ArrayValueError(str(exc)) from None
