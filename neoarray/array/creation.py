"""Creation functions, after numpy's (``zeros``, ``full``, ``asarray``...).

Each returns a detached :class:`~neoarray.array.core.ndarray`; store it in a
ZODB database by reference (``root['a'] = zeros(...)``) and commit.  Keyword
arguments ``chunks``, ``codec`` and ``codec_level`` are passed to the
:class:`~neoarray.array.core.ndarray` constructor.
"""

import numpy as np

from . import lazy
from .core import ChunkedArray, ndarray
from .layout import normalize_order


def empty(shape, dtype=float, order="C", **options):
    """Return a new array of ``shape``; unwritten items read as 0.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : data-type, optional
    order : {'C', 'F'}, optional
    **options
        ``chunks``, ``fill_value``, ``codec``, ``codec_level``.

    Returns
    -------
    ndarray
    """
    return ndarray(shape, dtype, order, **options)


def zeros(shape, dtype=float, order="C", **options):
    """Return a new array of ``shape`` filled with zeros (stores nothing)."""
    return ndarray(shape, dtype, order, fill_value=0, **options)


def ones(shape, dtype=float, order="C", **options):
    """Return a new array of ``shape`` filled with ones (stores nothing)."""
    return ndarray(shape, dtype, order, fill_value=1, **options)


def full(shape, fill_value, dtype=None, order="C", **options):
    """Return a new array of ``shape`` filled with ``fill_value`` (stores nothing).

    ``dtype`` defaults to ``numpy.array(fill_value).dtype``.
    """
    if dtype is None:
        dtype = np.array(fill_value).dtype
    return ndarray(shape, dtype, order, fill_value=fill_value, **options)


def _order_of(source, order):
    if order in ("K", "A", None):
        if isinstance(source, ChunkedArray):
            return source.order
        if isinstance(source, np.ndarray) and source.flags.f_contiguous \
                and not source.flags.c_contiguous:
            return "F"
        return "C"
    return normalize_order(order)


def asarray(a, dtype=None, order=None, **options):
    """Convert ``a`` (numpy array, nested sequence, scalar) to a persistent array.

    A neoarray ``ndarray`` of a compatible dtype (and no new ``options``) is
    returned as is; a lazy expression is stored chunk by chunk (:func:`.lazy.store`).

    Parameters
    ----------
    a : array_like
    dtype : data-type, optional
    order : {'C', 'F', 'A', 'K', None}, optional
    **options
        ``chunks``, ``fill_value``, ``codec``, ``codec_level``.
    """
    if isinstance(a, ndarray) and not options and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    if isinstance(a, ChunkedArray) and not isinstance(a, ndarray):     # computed chunk by chunk
        return lazy.store(a if dtype is None else a.astype(dtype), None,
                          order=_order_of(a, order), **options)
    source = np.asarray(a, dtype=dtype)
    result = ndarray(source.shape, source.dtype, _order_of(a, order), **options)
    if source.size:
        result[...] = source
    return result


def _like(prototype, dtype, order, shape, options):
    """Keyword arguments of a new array shaped like ``prototype``."""
    proto_shape = tuple(np.shape(prototype))
    if dtype is None:
        dtype = prototype.dtype if isinstance(prototype, ndarray) else \
            np.asarray(prototype).dtype
    if isinstance(prototype, ndarray):
        options.setdefault("codec", prototype.codec)
        if shape is None or tuple(np.atleast_1d(shape)) == proto_shape:
            options.setdefault("chunks", prototype.chunks)
    shape = proto_shape if shape is None else shape
    return dict(shape=shape, dtype=dtype, order=_order_of(prototype, order), **options)


def empty_like(prototype, dtype=None, order="K", shape=None, **options):
    """Return a new array with the shape and dtype of ``prototype`` (reads 0)."""
    return ndarray(**_like(prototype, dtype, order, shape, options))


def zeros_like(prototype, dtype=None, order="K", shape=None, **options):
    """Return an array of zeros with the shape and dtype of ``prototype``."""
    return ndarray(fill_value=0, **_like(prototype, dtype, order, shape, options))


def ones_like(prototype, dtype=None, order="K", shape=None, **options):
    """Return an array of ones with the shape and dtype of ``prototype``."""
    return ndarray(fill_value=1, **_like(prototype, dtype, order, shape, options))


def full_like(prototype, fill_value, dtype=None, order="K", shape=None, **options):
    """Return an array of ``fill_value`` with the shape and dtype of ``prototype``."""
    return ndarray(fill_value=fill_value, **_like(prototype, dtype, order, shape, options))
