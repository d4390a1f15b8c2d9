"""Creation functions, after numpy's (``zeros``, ``full``, ``asarray``...).

Each returns a detached :class:`~neoarray.array.core.ndarray`; store it in a
ZODB database by reference (``root['a'] = zeros(...)``) and commit.  Keyword
arguments ``chunks``, ``codec`` and ``codec_level`` are passed to the
:class:`~neoarray.array.core.ndarray` constructor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import lazy
from .core import ChunkedArray, ndarray
from .hints import DTypeLike, OrderKALike, OrderLike, ShapeLike
from .layout import normalize_order


def empty(shape: ShapeLike, dtype: DTypeLike = float, order: OrderLike = "C",
          **options: Any) -> ndarray:
    """Return a new array of ``shape``; unwritten items read as 0.

    Parameters
    ----------
    shape : int or tuple of int
        The array's shape.
    dtype : data-type, optional
        Any fixed-size dtype without Python objects.  Default ``float``.
    order : {'C', 'F'}, optional
        Memory order of the items inside each chunk.
    **options
        ``chunks``, ``fill_value``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array: store it in a database (``root['a'] = ...``) and commit.

    Raises
    ------
    ArrayShapeError
        ``shape`` or ``chunks`` is not a shape, or the array's bytes exceed 64 bits.
    ArrayDtypeError
        ``dtype`` has no fixed item size or holds Python objects.
    """
    return ndarray(shape, dtype, order, **options)


def zeros(shape: ShapeLike, dtype: DTypeLike = float, order: OrderLike = "C",
          **options: Any) -> ndarray:
    """Return a new array of ``shape`` filled with zeros (stores nothing).

    Parameters
    ----------
    shape : int or tuple of int
        The array's shape.
    dtype : data-type, optional
        Default ``float``.
    order : {'C', 'F'}, optional
        Memory order of the items inside each chunk.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array whose fill value is 0.

    Raises
    ------
    ArrayShapeError, ArrayDtypeError
        As :func:`empty`.
    """
    return ndarray(shape, dtype, order, fill_value=0, **options)


def ones(shape: ShapeLike, dtype: DTypeLike = float, order: OrderLike = "C",
         **options: Any) -> ndarray:
    """Return a new array of ``shape`` filled with ones (stores nothing).

    Parameters
    ----------
    shape : int or tuple of int
        The array's shape.
    dtype : data-type, optional
        Default ``float``.
    order : {'C', 'F'}, optional
        Memory order of the items inside each chunk.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array whose fill value is 1.

    Raises
    ------
    ArrayShapeError, ArrayDtypeError
        As :func:`empty`.
    """
    return ndarray(shape, dtype, order, fill_value=1, **options)


def full(shape: ShapeLike, fill_value: Any, dtype: DTypeLike | None = None, order: OrderLike = "C",
         **options: Any) -> ndarray:
    """Return a new array of ``shape`` filled with ``fill_value`` (stores nothing).

    Parameters
    ----------
    shape : int or tuple of int
        The array's shape.
    fill_value : scalar
        Value of every item (the array's fill value: nothing is stored).
    dtype : data-type, optional
        Default: ``numpy.array(fill_value).dtype``.
    order : {'C', 'F'}, optional
        Memory order of the items inside each chunk.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array.

    Raises
    ------
    ArrayShapeError, ArrayDtypeError
        As :func:`empty`.
    ArrayCastError
        ``fill_value`` does not fit ``dtype``.
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


def asarray(a: npt.ArrayLike | ChunkedArray, dtype: DTypeLike | None = None,
            order: OrderKALike = None, **options: Any) -> ndarray:
    """Convert ``a`` (numpy array, nested sequence, scalar) to a persistent array.

    A neoarray ``ndarray`` of a compatible dtype (and no new ``options``) is
    returned as is; a lazy expression is stored chunk by chunk (:func:`.lazy.store`).

    Parameters
    ----------
    a : array_like
        The values: a numpy array, nested sequences, a scalar, a neoarray array or a
        lazy expression of them.
    dtype : data-type, optional
        Default: ``a``'s.
    order : {'C', 'F', 'A', 'K', None}, optional
        Memory order of the new array (``'A'``, ``'K'`` and None: ``a``'s).
    **options
        ``chunks``, ``fill_value``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        ``a`` itself, or a new detached array holding its values.

    Raises
    ------
    ArrayTooLargeError
        A lazy expression's chunks exceed the memory limit of a detached array.
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


def _like(prototype, dtype, order, shape, options: dict) -> dict:
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


def empty_like(prototype: npt.ArrayLike | ChunkedArray, dtype: DTypeLike | None = None,
               order: OrderKALike = "K", shape: ShapeLike | None = None, **options: Any) -> ndarray:
    """Return a new array whose unwritten items read as 0 with the shape and dtype of ``prototype``.

    Parameters
    ----------
    prototype : array_like
        Gives the shape, dtype and order; a neoarray array also its codec, and its
        chunk shape when ``shape`` is the same.
    dtype : data-type, optional
        Default: ``prototype``'s.
    order : {'C', 'F', 'A', 'K', None}, optional
        Default ``'K'``: ``prototype``'s.
    shape : int or tuple of int, optional
        Default: ``prototype``'s.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array: nothing is stored.
    """
    return ndarray(**_like(prototype, dtype, order, shape, options))


def zeros_like(prototype: npt.ArrayLike | ChunkedArray, dtype: DTypeLike | None = None,
               order: OrderKALike = "K", shape: ShapeLike | None = None, **options: Any) -> ndarray:
    """Return a new array of zeros with the shape and dtype of ``prototype``.

    Parameters
    ----------
    prototype : array_like
        Gives the shape, dtype and order; a neoarray array also its codec, and its
        chunk shape when ``shape`` is the same.
    dtype : data-type, optional
        Default: ``prototype``'s.
    order : {'C', 'F', 'A', 'K', None}, optional
        Default ``'K'``: ``prototype``'s.
    shape : int or tuple of int, optional
        Default: ``prototype``'s.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array: nothing is stored.
    """
    return ndarray(fill_value=0, **_like(prototype, dtype, order, shape, options))


def ones_like(prototype: npt.ArrayLike | ChunkedArray, dtype: DTypeLike | None = None,
              order: OrderKALike = "K", shape: ShapeLike | None = None, **options: Any) -> ndarray:
    """Return a new array of ones with the shape and dtype of ``prototype``.

    Parameters
    ----------
    prototype : array_like
        Gives the shape, dtype and order; a neoarray array also its codec, and its
        chunk shape when ``shape`` is the same.
    dtype : data-type, optional
        Default: ``prototype``'s.
    order : {'C', 'F', 'A', 'K', None}, optional
        Default ``'K'``: ``prototype``'s.
    shape : int or tuple of int, optional
        Default: ``prototype``'s.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array: nothing is stored.
    """
    return ndarray(fill_value=1, **_like(prototype, dtype, order, shape, options))


def full_like(prototype: npt.ArrayLike | ChunkedArray, fill_value: Any, dtype: DTypeLike | None = None,
              order: OrderKALike = "K", shape: ShapeLike | None = None, **options: Any) -> ndarray:
    """Return a new array of ``fill_value`` with the shape and dtype of ``prototype``.

    Parameters
    ----------
    prototype : array_like
        Gives the shape, dtype and order; a neoarray array also its codec, and its
        chunk shape when ``shape`` is the same.
    fill_value : scalar
        Value of every item (the new array's fill value).
    dtype : data-type, optional
        Default: ``prototype``'s.
    order : {'C', 'F', 'A', 'K', None}, optional
        Default ``'K'``: ``prototype``'s.
    shape : int or tuple of int, optional
        Default: ``prototype``'s.
    **options
        ``chunks``, ``codec``, ``codec_level`` (see :class:`ndarray`).

    Returns
    -------
    ndarray
        A new detached array: nothing is stored.
    """
    return ndarray(fill_value=fill_value, **_like(prototype, dtype, order, shape, options))
