"""The persistent chunked array :class:`ndarray`, and :class:`ChunkedArray`, what it shares
with lazy expressions (:mod:`.lazy`).

Persistent state (all plain Python values, so a stored array does not depend
on numpy's pickle format)::

    _shape        tuple of int
    _dtype_descr  dtype in the .npy header format
    _order        'C' or 'F' (memory order inside chunks)
    _chunks       chunk shape, tuple of int
    _fill         fill value, raw bytes of one item
    _codec        None, ('zlib', level) or ('numcodecs', config JSON text)
    _attrs        dict of attribute values (:mod:`.attrs`); absent in older arrays
    _tree         OOBTree: chunk grid index (tuple of int) -> Chunk

Chunk grid indices are tuples, so the tree iterates chunks in C order of the
grid whatever the array's order.  Writing a chunk whose items are all the
fill value removes it from the tree.
"""
from __future__ import annotations

import gc
import math
import operator
import sys
import types
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import persistent
from BTrees.OOBTree import OOBTree
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import attrs as attrs_
from . import fetch, heap, indexing, layout
from .chunks import (
    Chunk,
    codec_from_spec,
    codec_spec,
    decode_chunk,
    encode_chunk,
    is_all_fill,
    new_chunk_array,
)
from .config import check_memory, config
from .errors import ArrayCastError, ArrayShapeError, ArrayValueError
from .hints import AxisLike, CodecLike, DTypeLike, OrderLike, ShapeLike

if TYPE_CHECKING:
    import os

    import dask.array
    import zarr


# The operations over arrays (ufuncs, reductions, methods, ...) live in the modules above
# this one, which import it; the package binds them here (``bind``, called by
# ``neoarray/array/__init__.py``), so that this module imports none of them.
_ops = types.SimpleNamespace(ufuncs=None, plans=None, methods=None, ordering=None, lazy=None,
                             views=None, handles=None, dasks=None, zarrs=None, streams=None, vm=None,
                             envelope=None)


def bind(**modules):
    """Give the array its operations: ``ufuncs``, ``plans`` (reductions), ``methods``,
    ``ordering`` (sorting), ``lazy`` (lazy expressions, which ``A[...] = expr`` writes chunk by
    chunk), ``views`` (lazy views of lazy arrays: ``expr[2:5]``), ``handles`` (pickling),
    ``dasks`` (Dask collections), ``zarrs`` (zarr), ``streams`` (concurrent appends) and
    ``vm`` (mapped views, :mod:`neoarray.vm`) and ``envelope`` (plots' envelopes and their
    overviews)."""
    unknown = set(modules) - set(vars(_ops))
    if unknown:
        raise TypeError(f"unknown operations {sorted(unknown)}")
    vars(_ops).update(modules)


_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _cast_error(source, dtype):
    return ArrayCastError(
        f"cannot cast values of dtype {source} to array dtype {dtype} "
        "under the 'same_kind' rule")


def _python_value(value, dtype):
    """Convert Python scalars and lists, weakly typed as in numpy 2 (NEP 50).

    Their kind (bool < integer < float < complex) must fit ``dtype``; an
    out-of-range value raises numpy's ``OverflowError``.
    """
    source = np.asarray(value).dtype
    rank, target = _KIND_RANK.get(source.kind), _KIND_RANK.get(dtype.kind)
    if rank is None or target is None or rank > target:
        raise _cast_error(source, dtype)
    return np.asarray(value, dtype=dtype)


def as_value(value, dtype):
    """Return ``value`` as a numpy array castable to ``dtype`` (``same_kind``)."""
    if isinstance(value, ChunkedArray):
        value = np.asarray(value)
    if dtype.fields is not None and not isinstance(value, np.ndarray):
        return np.asarray(value, dtype=dtype)
    if isinstance(value, (bool, int, float, complex, list, tuple)):
        return _python_value(value, dtype)
    array = np.asarray(value)
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise _cast_error(array.dtype, dtype)
    return array


_AXES_NOTE = "``axis``: one axis, several, or None for all; ``out``: a numpy array of the result's shape"
_SCALAR_OR_ARRAY = ("numpy.generic or numpy.ndarray",
                    "A numpy scalar when every axis is reduced, else a numpy array (or ``out``).")


def _reduction_doc(summary: str, params: str = "axis, dtype, out, keepdims", note: str = _AXES_NOTE,
                   returns: tuple[str, str] = _SCALAR_OR_ARRAY):
    """Give a reduction method of :class:`ChunkedArray` its numpydoc docstring: the
    sections the reductions share, for ``numpy.<name>``."""
    def document(method):
        method.__doc__ = (f"{summary}\n\nParameters\n----------\n{params}\n"
                          f"    As for ``numpy.{method.__name__}`` ({note}).\n\n"
                          f"Returns\n-------\n{returns[0]}\n    {returns[1]}\n\n"
                          f"Raises\n------\nArrayValueError\n    An axis is out of bounds or repeated.\n")
        return method
    return document


class ChunkedArray(NDArrayOperatorsMixin):
    """What every chunked array shares: numpy's operators, methods, reductions and
    protocols, computed chunk by chunk by the operations bound to this module.

    Subclasses are :class:`ndarray` (stored chunks) and the lazy expressions of
    :mod:`.lazy`.  They provide, and the operations read only through:

    ``shape``, ``dtype``, ``chunks``, ``fill_value``, ``order``, ``codec``
        geometry and values of the items never written;
    ``chunk_keys()``
        the grid indices (C order) of the chunks that may hold items other than
        the fill value: every other chunk is all fill;
    ``_chunk_blocks(keys)``
        the in-bounds block of each chunk of ``keys`` (a list), in order;
    ``_map_stored(func, keys=None)``
        ``(key, func(key, block))`` for the chunks of ``chunk_keys()`` (or those of
        ``keys``); ``func`` must not keep the block;
    ``__getitem__``
        numpy's indexing, reading only the chunks the selection touches.
    """

    __slots__ = ()

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of items."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per item."""
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array once in memory (not its storage size)."""
        return self.size * self.itemsize

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        for i in range(self.shape[0]):
            yield self[i]

    def _read(self, key):
        """``self[key]`` read now, as a numpy array (or scalar): what the operations use
        where a lazy array's ``[...]`` would give a view."""
        return self[key]

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                "The truth value of an array with more than one element is ambiguous. "
                "Use a.any() or a.all()")
        return bool(self[(0,) * self.ndim])

    def __eq__(self, other):
        return _ops.methods.compare(self, other, np.equal, operator.eq)

    def __ne__(self, other):
        return _ops.methods.compare(self, other, np.not_equal, operator.ne)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _ops.ufuncs.array_ufunc(ufunc, method, inputs, kwargs)

    # ------------------------------------------------------------------ numpy methods
    # chunk by chunk, from the stored chunks (see neoarray.array.methods)

    @property
    def T(self) -> ChunkedArray:
        """The transposed array: a lazy view (:mod:`neoarray.array.views`)."""
        return _ops.methods.transpose(self)

    def transpose(self, *axes: int | tuple[int, ...]) -> ChunkedArray:
        """The array with its axes permuted: a lazy view (:mod:`neoarray.array.views`).

        Parameters
        ----------
        *axes : int or tuple of int
            A permutation of the axes, as integers or one tuple; none reverses them.

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy view that reads this array when read (the array itself when the
            permutation is the identity).

        Raises
        ------
        ArrayValueError
            ``axes`` is not a permutation of the array's axes.
        """
        return _ops.methods.transpose(self, axes)

    def swapaxes(self, axis1: int, axis2: int) -> ChunkedArray:
        """The array with two axes interchanged: a lazy view (see :meth:`transpose`).

        Parameters
        ----------
        axis1, axis2 : int
            The axes swapped (negative ones count from the end).

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy view of this array.

        Raises
        ------
        ArrayValueError
            An axis is out of bounds.
        """
        return _ops.methods.swapaxes(self, axis1, axis2)

    def reshape(self, *shape: int | tuple[int, ...], order: OrderLike = "C") -> ChunkedArray:
        """The array in a new shape of the same size, read in C order.

        A lazy view when the chunks cut both shapes into the same runs
        (:mod:`neoarray.array.views`), else computed in memory.

        Parameters
        ----------
        *shape : int or tuple of int
            The new shape, as integers or one tuple; one of them may be -1 (inferred).
        order : {'C'}, optional
            Only 'C' is supported.

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy array of the new shape.

        Raises
        ------
        ArrayShapeError
            ``shape`` is not a shape of the array's size.
        ArrayValueError
            ``order`` is not 'C'.
        ArrayTooLargeError
            The reshape must be computed in memory and exceeds ``memory_bytes_max``.
        """
        return _ops.methods.reshape(self, shape, order)

    def ravel(self, order: OrderLike = "C") -> ChunkedArray:
        """The array as one dimension, in C order (``reshape(-1)``; ``flatten`` too).

        Parameters
        ----------
        order : {'C'}, optional
            Only 'C' is supported.

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy 1-D array (see :meth:`reshape`).

        Raises
        ------
        ArrayValueError
            ``order`` is not 'C'.
        ArrayTooLargeError
            The reshape must be computed in memory and exceeds ``memory_bytes_max``.
        """
        return _ops.methods.reshape(self, (-1,), order)

    flatten = ravel

    def squeeze(self, axis: AxisLike = None) -> ChunkedArray:
        """The array without axes of size 1: a lazy view.

        Parameters
        ----------
        axis : int or tuple of int, optional
            The axes removed; default every axis of size 1.

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy view of this array (the array itself when nothing is removed).

        Raises
        ------
        ArrayShapeError
            An axis of ``axis`` has a size other than 1.
        ArrayValueError
            An axis is out of bounds.
        """
        return _ops.methods.squeeze(self, axis)

    def astype(self, dtype: DTypeLike, copy: bool = True) -> ChunkedArray:
        """The array's items cast to ``dtype``: a lazy expression (:mod:`neoarray.array.lazy`).

        Parameters
        ----------
        dtype : data-type
            The items' new dtype.
        copy : bool, optional
            When False and ``dtype`` is already the array's, the array itself.

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy expression (or this array).

        Raises
        ------
        TypeError
            ``dtype`` is not a data type (numpy's error).
        """
        return _ops.methods.astype(self, dtype, copy)

    def copy(self) -> ndarray:
        """An independent copy: a new persistent array (see ``methods.copy``).

        A stored array called by ``dask.array.from_array`` gives its snapshot reader
        instead (``ndarray.copy``).

        Returns
        -------
        ndarray
            A new detached array with the same values, chunks, fill value, order and
            codec.
        """
        return _ops.methods.copy(self)

    def clip(self, min: npt.ArrayLike | None = None, max: npt.ArrayLike | None = None) -> ChunkedArray:
        """The items limited to ``[min, max]``: a lazy expression (see ``numpy.clip``).

        Parameters
        ----------
        min, max : array_like, optional
            The bounds; one of them may be None (no bound on that side).

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy expression.

        Raises
        ------
        ArrayValueError
            Both bounds are None.
        """
        return _ops.methods.clip(self, min, max)

    def round(self, decimals: int = 0) -> ChunkedArray:
        """The items rounded to ``decimals`` decimals: a lazy expression (see ``numpy.round``).

        Parameters
        ----------
        decimals : int, optional
            Number of decimal places (negative: to the left of the point).

        Returns
        -------
        neoarray.array.core.ChunkedArray
            A lazy expression.
        """
        return _ops.methods.round_(self, decimals)

    def item(self, *args: int | tuple[int, ...]) -> Any:
        """One item as a Python scalar (see ``numpy.ndarray.item``).

        Parameters
        ----------
        *args : int or tuple of int
            None for an array of one item, a flat index (C order), or one index per axis.

        Returns
        -------
        object
            The item as a Python scalar.

        Raises
        ------
        ArrayValueError
            No index was given and the array has more than one item.
        IndexError
            The flat index is out of bounds.
        """
        return _ops.methods.item(self, *args)

    def tolist(self) -> Any:
        """The items as nested Python lists of Python scalars (see ``numpy.ndarray.tolist``).

        Returns
        -------
        list or object
            Nested lists, one level per dimension (a scalar for a 0-d array).

        Raises
        ------
        ArrayTooLargeError
            The array's bytes exceed ``memory_bytes_max``.
        """
        return _ops.methods.tolist(self)

    def nonzero(self) -> tuple[np.ndarray, ...]:
        """The indices of the non-zero items, per axis, in C order (see ``numpy.nonzero``).

        Gathered chunk by chunk from the stored chunks when the fill value is zero.

        Returns
        -------
        tuple of numpy.ndarray
            One array of indices per dimension.

        Raises
        ------
        ArrayTooLargeError
            The indices, or the array when its fill value is not zero, exceed
            ``memory_bytes_max``.
        """
        return _ops.methods.nonzero(self)

    def dot(self, b: npt.ArrayLike | ChunkedArray, out: ndarray | None = None) -> Any:
        """``numpy.dot(self, b)``: for 1-D and 2-D operands, block by block
        (:mod:`neoarray.array.linalg`).

        Parameters
        ----------
        b : array_like or neoarray.array.core.ChunkedArray
            The other operand.
        out : ndarray, optional
            An array of the result's shape and dtype to write into.

        Returns
        -------
        ndarray or numpy.generic
            A new array (or ``out``); a numpy scalar for two 1-D operands.
        """
        return np.dot(self, b, out=out)

    def cumsum(self, axis: int | None = None, dtype: DTypeLike = None,
               out: ndarray | None = None) -> Any:
        """``numpy.cumsum``, chunk by chunk with a carry (:mod:`neoarray.array.scans`).

        Parameters
        ----------
        axis : int, optional
            The axis of the running sum; None flattens (in memory beyond one dimension).
        dtype : data-type, optional
            The result's dtype (numpy's default otherwise).
        out : ndarray, optional
            An array of the result's shape to write into.

        Returns
        -------
        ndarray or numpy.ndarray
            A new array (or ``out``); a numpy array when computed in memory.
        """
        return np.cumsum(self, axis=axis, dtype=dtype, out=out)

    def cumprod(self, axis: int | None = None, dtype: DTypeLike = None,
                out: ndarray | None = None) -> Any:
        """``numpy.cumprod``, chunk by chunk with a carry (:mod:`neoarray.array.scans`).

        Parameters
        ----------
        axis : int, optional
            The axis of the running product; None flattens (in memory beyond one
            dimension).
        dtype : data-type, optional
            The result's dtype (numpy's default otherwise).
        out : ndarray, optional
            An array of the result's shape to write into.

        Returns
        -------
        ndarray or numpy.ndarray
            A new array (or ``out``); a numpy array when computed in memory.
        """
        return np.cumprod(self, axis=axis, dtype=dtype, out=out)

    def argsort(self, axis: int | None = -1, kind: str | None = None,
                order: str | list[str] | None = None, *, stable: bool | None = None) -> ndarray:
        """``numpy.argsort(self, ...)``: a new array of indices (:mod:`neoarray.array.ordering`).

        Parameters
        ----------
        axis : int or None, optional
            The axis sorted along; None sorts the flattened array.
        kind : str, optional
            numpy's sorting kind (1-D and flattened sorts are always stable).
        order : str or list of str, optional
            The fields compared, in order, for a structured dtype.
        stable : bool, optional
            Ask for a stable sort (see ``numpy.argsort``).

        Returns
        -------
        ndarray
            A new array of indices (``intp`` items).
        """
        return np.argsort(self, axis=axis, kind=kind, order=order, stable=stable)

    def searchsorted(self, v: npt.ArrayLike, side: str = "left",
                     sorter: npt.ArrayLike | None = None) -> Any:
        """``numpy.searchsorted(self, v, ...)`` of a sorted 1-D array, O(log) chunk reads.

        Parameters
        ----------
        v : array_like
            The values to place.
        side : {'left', 'right'}, optional
            Which index a value equal to an item gets: the first or the last suitable.
        sorter : array_like, optional
            The indices that sort the array, when it is not sorted itself.

        Returns
        -------
        numpy.intp or numpy.ndarray
            Insertion indices, of ``v``'s shape.
        """
        return np.searchsorted(self, v, side=side, sorter=sorter)

    def __array_function__(self, func, types, args, kwargs):
        return _ops.ufuncs.array_function(self, func, types, args, kwargs)

    # ------------------------------------------------------------------ reductions

    @_reduction_doc('Sum of items over ``axis`` (see ``numpy.sum``).')
    def sum(self, axis: AxisLike = None, dtype: DTypeLike = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "sum", axis, keepdims, dtype=dtype, out=out)

    @_reduction_doc('Product of items over ``axis`` (see ``numpy.prod``).')
    def prod(self, axis: AxisLike = None, dtype: DTypeLike = None, out: np.ndarray | None = None,
             keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "prod", axis, keepdims, dtype=dtype, out=out)

    @_reduction_doc('Arithmetic mean over ``axis`` (see ``numpy.mean``).')
    def mean(self, axis: AxisLike = None, dtype: DTypeLike = None, out: np.ndarray | None = None,
             keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "mean", axis, keepdims, dtype=dtype, out=out)

    @_reduction_doc("Variance over ``axis`` (see ``numpy.var``), merged with Chan's formula.",
                    params='axis, dtype, out, ddof, keepdims')
    def var(self, axis: AxisLike = None, dtype: DTypeLike = None, out: np.ndarray | None = None,
            ddof: int = 0, keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "var", axis, keepdims, dtype=dtype, out=out,
                                 ddof=ddof)

    @_reduction_doc('Standard deviation over ``axis`` (see ``numpy.std``).',
                    params='axis, dtype, out, ddof, keepdims')
    def std(self, axis: AxisLike = None, dtype: DTypeLike = None, out: np.ndarray | None = None,
            ddof: int = 0, keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "std", axis, keepdims, dtype=dtype, out=out,
                                 ddof=ddof)

    @_reduction_doc('Minimum over ``axis`` (see ``numpy.min``); NaN propagates.',
                    params='axis, out, keepdims')
    def min(self, axis: AxisLike = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "min", axis, keepdims, out=out)

    @_reduction_doc('Maximum over ``axis`` (see ``numpy.max``); NaN propagates.',
                    params='axis, out, keepdims')
    def max(self, axis: AxisLike = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "max", axis, keepdims, out=out)

    @_reduction_doc('True where any item over ``axis`` is true (see ``numpy.any``).',
                    params='axis, out, keepdims',
                    returns=('numpy.bool or numpy.ndarray',
                             'A numpy boolean when every axis is reduced, else a numpy array (or ``out``).'))
    def any(self, axis: AxisLike = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "any", axis, keepdims, out=out)

    @_reduction_doc('True where all items over ``axis`` are true (see ``numpy.all``).',
                    params='axis, out, keepdims',
                    returns=('numpy.bool or numpy.ndarray',
                             'A numpy boolean when every axis is reduced, else a numpy array (or ``out``).'))
    def all(self, axis: AxisLike = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "all", axis, keepdims, out=out)

    @_reduction_doc('Number of non-zero items over ``axis`` (see ``numpy.count_nonzero``).',
                    params='axis, keepdims',
                    note='``axis``: one axis, several, or None for all',
                    returns=('int or numpy.ndarray',
                             'A count when every axis is reduced, else a numpy array of counts.'))
    def count_nonzero(self, axis: AxisLike = None, keepdims: bool = False) -> Any:
        return _ops.plans.reduce(self, "count_nonzero", axis, keepdims)

    @_reduction_doc('Index of the first minimum (flat C index when ``axis`` is None).',
                    params='axis, out, keepdims',
                    note="``axis``: one axis or None, the flattened array; ``out``: a numpy array of the result's shape",
                    returns=('numpy.intp or numpy.ndarray',
                             'An index when ``axis`` is None, else a numpy array of indices (or ``out``).'))
    def argmin(self, axis: int | None = None, out: np.ndarray | None = None,
               keepdims: bool = False) -> Any:
        return _ops.plans.arg_reduce(self, "argmin", axis, keepdims, out=out)

    @_reduction_doc('Index of the first maximum (flat C index when ``axis`` is None).',
                    params='axis, out, keepdims',
                    note="``axis``: one axis or None, the flattened array; ``out``: a numpy array of the result's shape",
                    returns=('numpy.intp or numpy.ndarray',
                             'An index when ``axis`` is None, else a numpy array of indices (or ``out``).'))
    def argmax(self, axis: int | None = None, out: np.ndarray | None = None,
               keepdims: bool = False) -> Any:
        return _ops.plans.arg_reduce(self, "argmax", axis, keepdims, out=out)



class ndarray(persistent.Persistent, ChunkedArray):
    """A persistent, chunked, numpy-like array far larger than memory.

    Parameters
    ----------
    shape : int or tuple of int
        Array shape; its byte size must fit in 64 bits.
    dtype : data-type, optional
        Any fixed-size dtype without Python objects.  Default ``float``.
    order : {'C', 'F'}, optional
        Memory order of the items inside each chunk.
    chunks : int or tuple of int, optional
        Chunk shape.  Default: about ``config.chunk_bytes_target`` bytes.
    fill_value : scalar, optional
        Value of items never written.  Default 0 (all-zero bytes).
    codec : None, str, dict or numcodecs codec, optional
        Compression of chunk payloads: None, ``'zlib'``, or through numcodecs
        (``pip install 'neoarray[codecs]'``) ``'blosc'`` (byte shuffle), ``'zstd'``,
        ``'lz4'``, a config dict (``{'id': 'blosc', 'cname': 'lz4', 'clevel': 5,
        'shuffle': 1}``) or a numcodecs codec object.  Recorded with the array
        (:mod:`neoarray.array.chunks`); storage nodes decode it for near-data
        reductions.
    codec_level : int, optional
        Compression level of the codec (zlib: 0-9, default 6; zstd's ``level``,
        blosc's ``clevel``).

    Raises
    ------
    ArrayShapeError
        ``shape`` or ``chunks`` is not a shape, or the array's bytes exceed 64 bits.
    ArrayDtypeError
        ``dtype`` has no fixed item size or holds Python objects.
    ArrayValueError
        ``order`` is neither 'C' nor 'F', or ``fill_value`` does not fit ``dtype``.

    Notes
    -----
    Each stored chunk is its own persistent object, kept in a BTree keyed by
    chunk grid index; unwritten chunks cost nothing.  Indexing returns
    ``numpy.ndarray`` objects; assignment writes whole chunks inside the
    current ZODB transaction.  Reads see the snapshot of the connection's
    transaction.
    """

    __hash__ = object.__hash__
    _colour = None      # arrays stored before colours existed read in the default colour
    _attrs = None       # arrays stored before attributes existed have none
    _log = None         # arrays stored before concurrent appends get their log at the first one
    _overview = None    # an envelope overview (neoarray.array.overview), kept once asked

    def __init__(self, shape: ShapeLike, dtype: DTypeLike = float, order: OrderLike = "C", *,
                 chunks: ShapeLike | None = None, fill_value: Any = None, codec: CodecLike = None,
                 codec_level: int | None = None) -> None:
        dtype = layout.normalize_dtype(dtype)
        self._shape = layout.normalize_shape(shape, dtype.itemsize)
        self._dtype_descr = layout.dtype_to_state(dtype)
        self._order = layout.normalize_order(order)
        self._chunks = layout.normalize_chunks(
            chunks, self._shape, dtype.itemsize, self._order,
            config.chunk_bytes_target, config.chunk_bytes_max)
        self._fill = layout.fill_bytes(fill_value, dtype)
        self._codec = codec_spec(codec, codec_level)
        self._tree = OOBTree()
        self._log = _ops.streams.AppendLog()

    # ------------------------------------------------------------------ metadata

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype of the items."""
        dtype = self.__dict__.get("_v_dtype")
        if dtype is None:
            dtype = self._v_dtype = layout.dtype_from_state(self._dtype_descr)
        return dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Tuple of array dimensions."""
        return self._shape

    @property
    def order(self) -> OrderLike:
        """'C' or 'F': memory order of the items inside chunks."""
        return self._order

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape."""
        return self._chunks

    @property
    def fill_value(self) -> np.generic:
        """Value of the items never written (numpy scalar)."""
        return np.frombuffer(self._fill, dtype=self.dtype)[0]

    @property
    def colour(self) -> str:
        """Cache colour of this array's chunk reads (default ``config.default_colour``).

        Stored with the array: ``A.colour = "scan"`` (then commit) makes every client
        read its chunks as a stream.  ``with neoarray.cache_colour(name):`` overrides it
        for the reads of a block.  None restores the default.
        """
        return self._colour or config.default_colour

    @colour.setter
    def colour(self, name: str | None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ArrayValueError(f"an array's cache colour is a non-empty name, not {name!r}")
        self._colour = name

    @property
    def codec(self) -> tuple[str, Any] | None:
        """Codec description: None, ('zlib', level) or ('numcodecs', config JSON text)."""
        return self._codec

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The array's attributes, read only: ``A.attrs = {...}`` replaces them (values:
        see :mod:`neoarray.array.attrs`; numpy values come back as numpy values)."""
        return types.MappingProxyType(attrs_.python_attrs(self._attrs or {}))

    @attrs.setter
    def attrs(self, values: Mapping[str, Any]) -> None:
        self._attrs = attrs_.plain_attrs(values) or None

    def __repr__(self):
        return (f"<neoarray.array.ndarray shape={self._shape} dtype={self.dtype} "
                f"order={self._order!r} chunks={self._chunks} "
                f"fill_value={self.fill_value!r} codec={self._codec!r}>")

    # ------------------------------------------------------------------ travel
    # pickle.dumps(A) and Dask (see neoarray.array.handles and .dasks); ZODB stores the
    # array with __getstate__ and never calls __reduce_ex__

    def __reduce_ex__(self, protocol):
        return _ops.handles.reduce_ex(self, protocol)

    def __dask_tokenize__(self):
        return _ops.handles.dask_token(self)

    def to_dask(self, chunks: None = None) -> dask.array.Array:
        """A ``dask.array.Array`` reading this array's committed snapshot, by handle.

        One task per stored chunk; unwritten regions are fill-value blocks built
        without reading (see :func:`neoarray.array.dasks.to_dask`).

        Parameters
        ----------
        chunks : None
            Reserved: the blocks always follow the stored chunks.

        Returns
        -------
        dask.array.Array
            One block per stored chunk and one per run of unwritten chunks along an axis.

        Raises
        ------
        ArrayHandleError
            The array's connection has uncommitted changes: commit or abort first.
        ArrayValueError
            ``chunks`` was given, or the graph would have too many blocks.
        ImportError
            Dask is not installed (``pip install 'neoarray[dask]'``).
        """
        return _ops.dasks.to_dask(self, chunks)

    def to_zarr(self, store: str | os.PathLike | object, **options: object) -> zarr.Array:
        """Copy this array into a new zarr array, chunk by chunk; return the zarr array
        (see :func:`neoarray.array.zarrs.to_zarr`).

        Parameters
        ----------
        store : str, path or zarr store
            Where the zarr array is made.
        **options
            ``path``, ``zarr_format``, ``overwrite``, ``progress`` (see
            :func:`neoarray.array.zarrs.to_zarr`).

        Returns
        -------
        zarr.Array
            The new zarr array, with this array's dtype, chunks, fill value, order,
            attributes and codec.

        Raises
        ------
        ArrayValueError
            ``zarr_format`` is neither 2 nor 3.
        ImportError
            zarr is not installed (``pip install 'neoarray[zarr]'``).
        """
        return _ops.zarrs.to_zarr(self, store, **options)

    def chunk_keys(self) -> Iterator[tuple[int, ...]]:
        """Return an iterator over the grid indices of the stored chunks (C order)."""
        return iter(self._tree.keys())

    # ------------------------------------------------------------------ chunk I/O

    @property
    def _chunk_nbytes(self):
        return math.prod(self._chunks) * self.itemsize

    def _codec_obj(self):
        codec = self.__dict__.get("_v_codec")
        if codec is None:
            codec = self._v_codec = codec_from_spec(self._codec)
        return codec

    def _fill_chunk(self):
        return new_chunk_array(self.fill_value, self.dtype, self._chunks, self._order)

    def _decode(self, payload):
        return decode_chunk(payload, self._codec_obj(), self.dtype, self._chunks,
                            self._order)

    def _load_arrays(self, pairs):
        """Yield ``(item, chunk array)`` for ``(item, Chunk)`` pairs, batch by batch.

        Chunk arrays are read-only views of the payloads.  The next batch is
        loaded while the caller processes the current one (see
        :func:`fetch.submit`), so batches hold half of
        ``config.fetch_limit_bytes()``: at most that many bytes of chunks are held.
        """
        nbytes = self._chunk_nbytes
        pending = None
        for batch in fetch.iter_batches(pairs, lambda _: nbytes,
                                        max(1, config.fetch_limit_bytes() // 2)):
            started = (batch, fetch.submit([chunk for _, chunk in batch], self.colour))
            if pending is not None:
                yield from self._decoded(*pending)
            pending = started
        if pending is not None:
            yield from self._decoded(*pending)

    def _map_arrays(self, pairs, func):
        """Yield ``(item, func(item, chunk array))`` for ``(item, Chunk)`` pairs.

        The chunk array (read-only) is valid only during the call: on a
        storage with ``read_views`` it is a view of the record in the
        storage's pages, and ``func`` runs on a compute thread (see
        :func:`fetch.map_payloads`), so it must not touch persistent objects
        and must return values that do not share the chunk's memory (numpy
        views in its result are copied).  Otherwise the chunks are loaded
        batch by batch as in :meth:`_load_arrays` and ``func`` runs here.
        """
        source = fetch.view_source(self._p_jar)
        if source is None:
            for item, array in self._load_arrays(pairs):
                yield item, func(item, array)
            return
        codec, dtype, chunks, order = self._codec_obj(), self.dtype, self._chunks, self._order

        def compute(item, payload):
            return func(item, decode_chunk(payload, codec, dtype, chunks, order))
        yield from fetch.map_payloads(pairs, compute, source, self._chunk_nbytes, self.colour)

    def _map_stored(self, func, keys=None):
        """Yield ``(key, func(key, in-bounds block))`` for stored chunks (see :meth:`_map_arrays`).

        All chunks when ``keys`` is None, C order of the grid.
        """
        tree, shape, chunks = self._tree, self._shape, self._chunks
        pairs = tree.items() if keys is None else (
            (k, tree[k]) for k in keys if k in tree)

        def block_func(key, array):
            extent = layout.chunk_extent(key, shape, chunks)
            return func(key, array[tuple(slice(0, e) for e in extent)])
        return self._map_arrays(pairs, block_func)

    def _decoded(self, batch, payloads):
        """Yield ``(item, chunk array)`` for one submitted batch."""
        for (item, _), payload in zip(batch, payloads()):
            yield item, self._decode(payload)

    def _stored(self, projections, canon=None):
        """Yield ``(projection, Chunk)`` for the projections whose chunk is stored.

        With ``canon``, the output of the other projections is set to the fill
        value (each output item is written once: no pass over the whole
        output before the copies).
        """
        tree = self._tree
        fill = self.fill_value
        for proj in projections:
            chunk = tree.get(proj.key)
            if chunk is not None:
                yield proj, chunk
            elif canon is not None:
                canon[proj.out] = fill

    def _store_chunk(self, key, array, existing):
        """Store a full chunk array at ``key``, or drop it if all fill."""
        if is_all_fill(array, self._fill):
            if existing is not None:
                self._drop_chunk(key, existing)
            return
        self._put_payload(key, encode_chunk(array, self._codec_obj(), self._order), existing, array)

    def _put_payload(self, key, payload, existing, block=None):
        """Give chunk ``key`` (``existing``: its ``Chunk``, or None) the encoded
        ``payload`` (``block``: the chunk array it encodes, when the caller has it); an
        attached array counts it toward the bound on what a long write holds in one
        transaction (see :class:`Unsaved`); an overview takes the chunk's extremes."""
        if existing is not None:
            existing.payload = payload
        else:
            existing = self._tree[key] = Chunk(payload)
        if self._overview is not None:
            self._overview.chunk_written(key[0], self._decode(payload) if block is None else block)
        if self._p_jar is not None:
            Unsaved.of(self._p_jar).add(existing, len(payload))
        self._tell_views(key)

    def _drop_chunk(self, key, chunk):
        """Remove a chunk; tombstone it so concurrent writers of it conflict."""
        del self._tree[key]
        chunk.payload = None
        if self._overview is not None:
            self._overview.chunk_dropped(key[0])
        self._tell_views(key)

    def _tell_views(self, key):
        """Tell the open mapped views of this array (:mod:`neoarray.vm`) that chunk
        ``key`` was written."""
        views = self.__dict__.get("_v_views")
        if views:
            for view in list(views):
                view.chunk_written(key)

    def _stored_blocks(self, keys=None):
        """Yield ``(key, in-bounds block)`` for stored chunks (all when ``keys`` is None)."""
        tree = self._tree
        pairs = tree.items() if keys is None else (
            (k, tree[k]) for k in keys if k in tree)
        for key, array in self._load_arrays(pairs):
            extent = layout.chunk_extent(key, self._shape, self._chunks)
            yield key, array[tuple(slice(0, e) for e in extent)]

    def _chunk_blocks(self, keys):
        """Yield the in-bounds block of each chunk in ``keys`` (fill if unstored)."""
        stored = dict(self._stored_blocks(keys))
        for key in keys:
            block = stored.get(key)
            if block is None:
                extent = layout.chunk_extent(key, self._shape, self._chunks)
                block = np.full(extent, self.fill_value, dtype=self.dtype)
            yield block

    def _put_block(self, key, block):
        """Write the in-bounds ``block`` of chunk ``key`` (replaces the chunk).  A block
        that is the whole chunk, of the array's dtype, is encoded from itself (no chunk
        array filled and copied into first)."""
        if block.shape == self._chunks and block.dtype == self.dtype:
            self._store_chunk(key, block, self._tree.get(key))
            return
        array = self._fill_chunk()
        array[tuple(slice(0, e) for e in block.shape)] = block
        self._store_chunk(key, array, self._tree.get(key))

    # ------------------------------------------------------------------ indexing

    def __getitem__(self, key):
        if _ops.methods.is_field_key(key):
            return _ops.methods.field(self, key)        # a lazy expression, as numpy's view
        sel = indexing.parse_selection(key, self._shape)
        check_memory(sel.size * self.itemsize, f"selection of shape {sel.result_shape}")
        canon = np.empty(sel.canon_shape, dtype=self.dtype)
        projections = indexing.iter_projections(sel, self._chunks)

        def copy(proj, array):
            canon[proj.out] = indexing.read_projection(sel, array, proj)
        for _ in self._map_arrays(self._stored(projections, canon), copy):
            pass
        result = sel.result_from_canon(canon)
        return result[()] if sel.scalar else result

    def __setitem__(self, key, value):
        if isinstance(value, ChunkedArray) and not isinstance(value, ndarray):
            _ops.lazy.assign(self, key, value)      # an expression: chunk by chunk
            return
        sel = indexing.parse_selection(key, self._shape)
        canon = sel.canon_from_value(as_value(value, self.dtype))
        self._write(sel, lambda batch: [canon[proj.out] for proj in batch])

    def _write(self, sel, blocks_of):
        """Write the items of ``sel``, a batch of projections at a time: ``blocks_of(batch)``
        gives the block (canonical layout) of each projection of the batch."""
        if sel.size == 0:
            return
        nbytes = self._chunk_nbytes
        projections = indexing.iter_projections(sel, self._chunks)
        for batch in fetch.iter_batches(projections, lambda _: nbytes,
                                        config.fetch_limit_bytes()):
            self._write_batch(sel, batch, blocks_of(batch))

    def _write_batch(self, sel, batch, blocks):
        """Read-modify-write the chunks of one batch of projections."""
        existing = [self._tree.get(p.key) for p in batch]
        partial = [(i, c) for i, (p, c) in enumerate(zip(batch, existing))
                   if c is not None and not p.full]
        arrays = dict(self._map_arrays(partial, _writable_copy))
        for i, proj in enumerate(batch):
            block = blocks[i]
            if self._whole_chunk(sel, proj, block):     # encoded from the block itself
                self._store_chunk(proj.key, block, existing[i])
                continue
            array = arrays.pop(i, None)
            if array is None:
                array = self._fill_chunk()
            indexing.write_projection(sel, array, proj, block)
            self._store_chunk(proj.key, array, existing[i])

    def _whole_chunk(self, sel, proj, block) -> bool:
        """Whether ``block`` is, item for item in the same places, the whole chunk of
        ``proj`` (a full, in-bounds chunk written by unit-step slices): no chunk array
        needs to be made and filled first."""
        if sel.adv_axes or not proj.full or block.dtype != self.dtype or block.shape != self._chunks:
            return False
        return all(s.step in (None, 1) and (s.start or 0) == 0 and s.stop in (None, c)
                   for s, c in zip(proj.chunk_basic, (self._chunks[ax] for ax in sel.basic_axes)))

    # ------------------------------------------------------------------ growth

    def fill(self, value: Any) -> None:
        """Every item becomes ``value``, in place (the fill value changes, chunks go).

        Parameters
        ----------
        value : scalar
            The new value of every item, which must fit the array's dtype.

        Raises
        ------
        ArrayValueError
            ``value`` does not fit the array's dtype.
        """
        _ops.methods.fill(self, value)

    def resize(self, shape: ShapeLike) -> None:
        """Change the shape in place, keeping items at the same indices.

        Growing is O(1): new items read as the fill value.  Shrinking removes
        the chunks past the new end and resets the cut-off part of boundary
        chunks to the fill value, so growing again shows fill values.

        Parameters
        ----------
        shape : tuple of int
            New shape, with the same number of dimensions.

        Raises
        ------
        ArrayShapeError
            ``shape`` is not a shape, or has another number of dimensions.
        """
        new = layout.normalize_shape(shape, self.itemsize)
        if len(new) != self.ndim:
            raise ArrayShapeError(
                f"cannot resize an array of shape {self._shape} to shape {new}: "
                "the number of dimensions must stay the same")
        if any(n < o for n, o in zip(new, self._shape)):
            self._shrink_chunks(new)
        self._shape = new
        if self._overview is not None:      # its pages made ahead as the array grows
            self._overview.cover(-(-new[0] // self._chunks[0]))

    def _keys_past(self, new, shrunk):
        """Stored keys of chunks reaching beyond ``new`` on a shrunk axis."""
        tree, chunks = self._tree, self._chunks
        if shrunk == [0]:  # keys are sorted: start at the first chunk row concerned
            keys = tree.keys(min=(new[0] // chunks[0],))
        else:
            keys = tree.keys()
        return [k for k in keys if any((k[ax] + 1) * chunks[ax] > new[ax] for ax in shrunk)]

    def _shrink_chunks(self, new):
        """Drop chunks past ``new`` and reset boundary chunk tails to fill."""
        chunks = self._chunks
        shrunk = [ax for ax, (n, o) in enumerate(zip(new, self._shape)) if n < o]
        boundary = []
        for key in self._keys_past(new, shrunk):
            if any(key[ax] * chunks[ax] >= new[ax] for ax in shrunk):
                self._drop_chunk(key, self._tree[key])
            else:
                boundary.append((key, self._tree[key]))
        for key, array in self._map_arrays(boundary, _writable_copy):
            for ax in shrunk:
                index = [slice(None)] * self.ndim
                index[ax] = slice(new[ax] - key[ax] * chunks[ax], None)
                array[tuple(index)] = self.fill_value
            self._store_chunk(key, array, self._tree[key])

    def copy(self) -> Any:
        """An independent copy: a new persistent array (see ``methods.copy``).

        Called by ``dask.array.from_array`` (which copies what it is given so later
        writes cannot reach the graph), a committed array of a cluster gives instead
        its read-only snapshot reader (:func:`neoarray.array.handles.snapshot`): no
        data is copied, and it pickles as a handle.

        Returns
        -------
        ndarray
            A new detached array with the same values, chunks, fill value, order and
            codec (the snapshot reader, for ``dask.array.from_array``).
        """
        frozen = _ops.handles.frozen_for_dask(self, sys._getframe(1))
        return super().copy() if frozen is None else frozen

    def sort(self, axis: int = -1, kind: str | None = None, order: str | list[str] | None = None,
             *, stable: bool | None = None) -> None:
        """Sort in place (see ``numpy.ndarray.sort``): an external merge sort of a 1-D
        array, line tiles of an N-D one (:mod:`neoarray.array.ordering`).

        Parameters
        ----------
        axis : int, optional
            The axis sorted along (default the last).
        kind : str, optional
            numpy's sorting kind (a 1-D sort is always stable).
        order : str or list of str, optional
            The fields compared, in order, for a structured dtype.
        stable : bool, optional
            Ask for a stable sort (see ``numpy.sort``).

        Raises
        ------
        ArrayValueError
            ``axis`` is out of bounds, or ``order`` names no field.
        """
        _ops.ordering.sort_in_place(self, axis, kind, order, stable)

    def keep_overview(self) -> int:
        """Keep an envelope overview of this 1-d array from now on (the minimum and
        maximum of each chunk, in pages written with the chunks), so that plots of it
        (:func:`neoarray.array.envelope.envelope`, the dashboard) read pages instead of
        every chunk.  Builds it from the stored chunks (reduced on the storage nodes)
        in the current transaction; commit to keep it.  Returns the chunks summarized
        (0 when the array keeps one already).  See :mod:`neoarray.array.overview`.

        Raises
        ------
        ArrayValueError
            The array is not 1-d, or its items are not bool, integer or float.
        """
        return _ops.envelope.keep_overview(self)

    def drop_overview(self) -> None:
        """Stop keeping the envelope overview (see :meth:`keep_overview`)."""
        self._overview = None

    @property
    def has_overview(self) -> bool:
        """Whether the array keeps an envelope overview (:meth:`keep_overview`)."""
        return self._overview is not None

    def append(self, values: npt.ArrayLike, axis: int = 0, *, concurrent: bool = False) -> None:
        """Append ``values`` along ``axis`` in place, in time O(len(values)).

        Parameters
        ----------
        values : array_like
            Same shape as the array except along ``axis``; an array with one
            dimension less is appended as a single slice.
        axis : int, optional
            Axis along which to append.  Default 0.
        concurrent : bool, optional
            Append so that other transactions may append to the array at the same
            time without conflicting (:mod:`neoarray.array.streams`): the values
            are stored with the commit and appear in the array, in commit order,
            shortly after it (not within this transaction).  The array must be
            stored in a database.

        Raises
        ------
        ArrayShapeError
            ``values`` has another shape than the array's except along ``axis``.
        ArrayValueError
            ``axis`` is out of bounds.
        ArrayCastError
            ``values`` do not cast to the array's dtype under ``same_kind``.
        """
        axis = _axis_index(axis, self.ndim)
        values = as_value(values, self.dtype)
        if values.ndim == self.ndim - 1:
            values = np.expand_dims(values, axis)
        expected = self._shape[:axis] + self._shape[axis + 1:]
        if values.ndim != self.ndim or values.shape[:axis] + values.shape[axis + 1:] != expected:
            raise ArrayShapeError(
                f"cannot append values of shape {values.shape} to an array of shape "
                f"{self._shape} along axis {axis}")
        if concurrent:
            _ops.streams.append(self, values, axis)
        else:
            self._append_now(values, axis)

    def _append_now(self, values, axis):
        """Append checked ``values`` to the chunks and shape (one writer at a time)."""
        old = self._shape[axis]
        new_shape = list(self._shape)
        new_shape[axis] = old + values.shape[axis]
        self.resize(tuple(new_shape))
        index = [slice(None)] * self.ndim
        index[axis] = slice(old, new_shape[axis])
        self[tuple(index)] = values

    # ------------------------------------------------------------------ numpy protocols

    def mapped(self, region: Any = None, writable: bool = False, **options: Any) -> Any:
        """A context manager giving a real ``numpy.ndarray`` over ``self[region]``, whose
        pages are read from the chunks on first touch (:mod:`neoarray.vm`).

        ``with A.mapped((slice(10**17, 10**17 + 10**6), slice(None))) as v:`` works on an
        array of any size; any numpy, scipy or scikit-learn code runs on ``v``.

        Parameters
        ----------
        region : slice, int or tuple, optional
            The window: slices of step 1 and integers (one per leading axis); default
            the whole array.  An integer drops its axis.
        writable : bool, optional
            Writes into ``v`` become chunk revisions at ``transaction.commit()`` (or when
            the block ends, for a detached array) and are dropped by ``abort()``.
        **options
            ``mode`` ('uffd' or 'mprotect'; default ``$NEOARRAY_VM_MODE``, else userfaultfd
            where allowed), ``budget_bytes`` (clean pages kept; default a quarter of
            ``memory_bytes_max``), ``dirty_bytes_max`` (written pages held before they are
            written early into the transaction; default half the budget).

        Returns
        -------
        contextlib.AbstractContextManager
            Its ``__enter__`` gives the ``numpy.ndarray`` (read-only unless ``writable``),
            unmapped when the block ends.

        Raises
        ------
        neoarray.vm.MappingUnavailableError
            Neither userfaultfd nor the mprotect fallback works here (the native
            extension is not built, or not Linux).
        ArrayTooLargeError
            The window does not fit the address space.
        ArrayValueError, ArrayIndexError
            ``region`` is not slices of step 1 and integers inside the array.
        """
        return _ops.vm.mapped(self, region, writable, **options)

    def __array__(self, dtype=None, copy=None):
        if copy is False:       # numpy 2: a view of the whole array through virtual memory
            return _ops.vm.whole(self, None if dtype is None else np.dtype(dtype))
        check_memory(self.nbytes, f"array of shape {self._shape} and dtype {self.dtype}")
        result = np.asarray(self[...])
        return result if dtype is None else result.astype(dtype, copy=False)

class Unsaved:
    """The chunks written into attached arrays by one connection in its current
    transaction since its last savepoint, and their payload bytes.

    Shared by every array of the connection, so that writing two arrays at once holds
    no more.  Once the bytes exceed ``config.unsaved_limit_bytes()`` (a quarter of
    ``memory_bytes_max``, read when the transaction's first chunk is written), a
    savepoint is taken (ZODB writes their states to its temporary file; a rollback to
    an earlier savepoint still works) and those chunks become ghosts, reloaded from
    there if read again.
    """

    __slots__ = ("chunks", "limit_bytes", "manager", "nbytes", "savepoints")

    def __init__(self, manager):
        self.manager, self.chunks, self.nbytes = manager, [], 0
        self.limit_bytes = config.unsaved_limit_bytes()
        self.savepoints = 0         # taken by this tracker

    @classmethod
    def of(cls, jar):
        """The tracker of ``jar``'s current transaction (made by its first write)."""
        manager = jar.transaction_manager
        txn = manager.get()
        try:
            return txn.data(jar)
        except KeyError:
            tracker = cls(manager)
            txn.set_data(jar, tracker)
            return tracker

    def add(self, chunk, nbytes):
        """Count ``chunk`` (``nbytes`` of payload); spill when over the limit."""
        self.chunks.append(chunk)
        self.nbytes += nbytes
        if self.nbytes > self.limit_bytes:
            self.spill()

    def spill(self):
        """Savepoint now; the chunks counted become ghosts."""
        self.manager.savepoint(optimistic=True)
        self.savepoints += 1
        gc.collect(1)   # ZODB's object writer is a cycle holding the last states it pickled
        for written in self.chunks:
            if written._p_jar is not None and not written._p_changed:
                written._p_deactivate()
        self.chunks, self.nbytes = [], 0
        heap.trim()     # what the payloads and pickles freed, back to the system


def _writable_copy(_item, array):
    """A writable copy of a chunk array that owns its memory."""
    return array.copy(order="K")


def _axis_index(axis, ndim):
    try:
        return np.lib.array_utils.normalize_axis_index(axis, ndim)
    except np.exceptions.AxisError as exc:
        raise ArrayValueError(str(exc)) from None
