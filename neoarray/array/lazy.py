"""Lazy expressions: elementwise operations on arrays, computed only where they are read.

``B = A + 1``, ``np.exp(A) * B``, ``A.astype(np.float32)``, ``A.clip(0, 1)``,
``A.round(2)``, ``np.where(A > 0, A, 0)`` and ``np.isclose(A, B)`` on neoarrays (any
elementwise ufunc without ``out=``) give a :class:`lazyarray`: the function, its inputs
(stored arrays, other expressions, numpy arrays, scalars) and the geometry of the
result.  Building one reads and stores nothing; a commit writes nothing for it.  It
behaves like an array (``shape``, ``dtype``, ``chunks``, ``fill_value``, operators and
ufuncs that nest, numpy functions, reductions and methods), and is computed chunk by
chunk only when read:

* ``B[i, j]``, ``B[[1, 5]]``: only the items selected, read from the inputs' chunks
  they fall in; a basic selection of one dimension or more (``B[10:20, ::2]``,
  ``B[3]``) is a lazy view of ``B`` instead (:mod:`.views`), as are ``B.T``,
  ``B.reshape(...)`` and the other axis moves;
* ``np.asarray(B)``, ``list(B)``: within ``config.memory_bytes_max``
  (``ArrayTooLargeError`` naming the bytes otherwise), as for a stored array;
* ``B.sum()``, ``np.mean(B, axis=0)``, ``B.argmax()``...: the reductions of stored
  arrays (:mod:`.plans`), fed one computed chunk at a time;
* other operations that make new arrays (``np.cumsum(B)``, ``B @ x``, ``B.copy()``)
  make persistent ones, as they do from stored arrays.

Its fill value is the expression of its inputs' fill values, and its chunks are those
of its first input of the result's shape, so over sparse inputs only the chunks stored
in some input are ever computed (:func:`.elementwise.touched_keys`): an expression over
an exabyte-shaped array reads and stores in proportion to what is written.  Inputs of
other chunk grids, numpy arrays and broadcast inputs are read region by region as each
chunk needs them.

An expression reads its inputs when it is read, not when it is built: after
``B = A + 1; A[0] = 5``, ``B[0]`` is 6.  ``B.copy()`` or :func:`store` freezes values.

Storing
-------
* ``store(expr, target)`` writes the expression into the existing array ``target`` of
  the same shape, chunk by chunk (only the chunks where either may hold other items
  than the fill value when their fill values agree); ``A[...] = expr`` and
  ``A[2:5, ::2] = expr`` (basic selections, the expression broadcast to them) do the
  same; other selections, or an expression that reads the array it is written into
  through another selection, are computed in memory first (``memory_bytes_max``).
* ``store(expr)`` or ``expr.persist()`` returns a new detached persistent array (the
  expression's chunks, fill value, order and codec) for the caller to place:
  ``root['b'] = (A + 1).persist()``.

A lazy array is not a persistent object, and it refuses to be pickled: ``root['b'] =
A + 1`` raises at the commit (or savepoint), naming this fix.  Making it store itself
when pickled was the alternative, refused because that pickling happens inside the
two-phase commit: a large expression would be computed there, with the values of
commit time rather than of the assignment, and stored anew at each commit of the
object that holds it, while the name in memory still held the expression.  An error
that says what to write is less surprising.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from . import core, elementwise, indexing, layout, outputs
from .errors import ArrayLazyError, ArrayShapeError, ArrayValueError
from .hints import OrderLike


class lazyarray(core.ChunkedArray):
    """``func(*inputs, **kwargs)``, elementwise, computed chunk by chunk when read.

    See the module docstring.  Made by ufuncs and methods of neoarrays; the
    constructor checks that ``func`` accepts the inputs' dtypes (numpy's error
    otherwise) and that they broadcast together.

    Parameters
    ----------
    func : callable
        An elementwise function of numpy arrays (a ufunc, ``numpy.where``...), called
        on blocks of the inputs, and once on their fill values.
    inputs : iterable
        Its positional arguments: neoarrays, lazy arrays, numpy arrays or scalars.
    kwargs : dict, optional
        Its keyword arguments.

    Raises
    ------
    ValueError
        The inputs do not broadcast together (numpy's error).
    TypeError
        ``func`` does not accept the inputs' dtypes (numpy's error).
    ArrayDtypeError
        The result's dtype cannot be stored (no fixed item size, or Python objects).
    """

    __hash__ = object.__hash__

    def __init__(self, func: Callable[..., Any], inputs: Iterable[Any],
                 kwargs: dict[str, Any] | None = None) -> None:
        self._func, self._inputs, self._kwargs = func, tuple(inputs), dict(kwargs or {})
        self._shape = elementwise.broadcast_shape(self._inputs)
        fill = elementwise.fill_of(func, self._inputs, self._kwargs)
        layout.normalize_dtype(fill.dtype)
        self._fill = fill
        self._chunks = elementwise.iteration_chunks(self._inputs, self._shape)
        self._weight = elementwise.weight(self._inputs)

    # ------------------------------------------------------------------ metadata

    @property
    def shape(self) -> tuple[int, ...]:
        """Tuple of array dimensions."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype of the items."""
        return self._fill.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the computation (and of :meth:`persist`'s array)."""
        return self._chunks

    @property
    def fill_value(self) -> np.generic:
        """Value of the items where every input holds its fill value (numpy scalar)."""
        return self._fill[0]

    @property
    def order(self) -> OrderLike:
        """'C' or 'F': the order of the first stored array read ('C' if none)."""
        return next((a.order for a in self.arrays()), "C")

    @property
    def codec(self) -> tuple[str, Any] | None:
        """Codec of the first stored array read (that of :meth:`persist`'s array)."""
        return next((a.codec for a in self.arrays()), None)

    def arrays(self) -> Iterator[core.ndarray]:
        """Yield the stored arrays the expression reads (depth first)."""
        return outputs.stored_arrays(self._inputs)

    def __repr__(self):
        return (f"<neoarray.array.lazyarray {_describe(self)} shape={self._shape} "
                f"dtype={self.dtype} chunks={self._chunks} fill_value={self.fill_value!r}>")

    def _label(self):
        name = getattr(self._func, "__name__", type(self._func).__name__)
        return f"{name}({', '.join(_describe(i) for i in self._inputs)})"

    def __reduce_ex__(self, protocol):
        raise ArrayLazyError(
            f"a lazy array ({_describe(self)}, shape {self._shape}) is not stored and cannot "
            "be pickled: store it first, e.g. root['b'] = (A + 1).persist() or "
            "neoarray.array.store(expr, target)")

    # ------------------------------------------------------------------ chunks

    def _touched_keys(self):
        """The keys (C order) of the chunks where some input may differ from its fill
        value, or None when every chunk may (a numpy input, a broadcast one...)."""
        return elementwise.touched_keys(self._inputs, self._shape, self._chunks)

    def chunk_keys(self) -> Iterable[tuple[int, ...]]:
        """The keys (C order) of the chunks where some input may differ from its fill
        value: every other chunk of the expression is its fill value."""
        keys = self._touched_keys()
        return elementwise.all_keys(self._shape, self._chunks) if keys is None else keys

    def _chunk_blocks(self, keys):
        keys = list(keys)
        dtype = self.dtype
        for block in elementwise.blocks(self._func, self._inputs, self._kwargs,
                                        self._shape, self._chunks, keys):
            yield block.astype(dtype, copy=False)

    def _map_stored(self, func, keys=None):
        """``(key, func(key, block))`` for the chunks of :meth:`chunk_keys` (or ``keys``),
        computed a batch at a time."""
        keys = self.chunk_keys() if keys is None else keys
        for batch in elementwise.batches(keys, self._chunks, self._weight):
            for key, block in zip(batch, self._chunk_blocks(batch)):
                yield key, func(key, block)

    # ------------------------------------------------------------------ reading

    def __getitem__(self, key):
        """A lazy view for a basic selection of one dimension or more
        (:func:`.views.select`), the items read now otherwise."""
        if core._ops.methods.is_field_key(key):
            return core._ops.methods.field(self, key)
        return core._ops.views.select(self, key)

    def _read(self, key):
        """``self[key]`` computed now, as a numpy array (or scalar)."""
        sel = indexing.parse_selection(key, self._shape)
        core.check_memory(sel.size * self.itemsize, f"selection of shape {sel.result_shape}")
        if all(elementwise.is_scalar(x) or isinstance(x, np.ndarray) or x.shape == self._shape
               for x in self._inputs):
            result = self._select_inputs(key, sel)
        else:
            result = self._select_chunks(sel)
        return result[()] if sel.scalar else result

    def _select_inputs(self, key, sel):
        """The selection computed from the same selection of each input (elementwise
        functions commute with indexing); numpy inputs are broadcast views."""
        args = [x if elementwise.is_scalar(x) else
                np.broadcast_to(x, self._shape)[key] if isinstance(x, np.ndarray) else x._read(key)
                for x in self._inputs]
        result = np.asarray(self._func(*args, **self._kwargs))
        if result.shape != sel.result_shape:
            result = np.broadcast_to(result, sel.result_shape)
        return result.astype(self.dtype, copy=not result.flags.writeable)

    def _select_chunks(self, sel):
        """The selection assembled chunk by chunk, each chunk's part computed over its
        bounding box (an input broadcast from another chunked shape)."""
        canon = np.empty(sel.canon_shape, dtype=self.dtype)
        for proj in indexing.iter_projections(sel, self._chunks):
            canon[proj.out] = self._projection_items(sel, proj)
        return sel.result_from_canon(canon)

    def _projection_items(self, sel, proj):
        extent = layout.chunk_extent(proj.key, self._shape, self._chunks)
        bounds = [slice(0, e) for e in extent]
        for ax, s in zip(sel.basic_axes, proj.chunk_basic):
            items = range(*s.indices(extent[ax]))
            bounds[ax] = slice(min(items[0], items[-1]), max(items[0], items[-1]) + 1)
        for ax, coords in zip(sel.adv_axes, proj.chunk_adv):
            bounds[ax] = slice(int(coords.min()), int(coords.max()) + 1)
        origin = [j * c for j, c in zip(proj.key, self._chunks)]
        region = tuple(slice(o + b.start, o + b.stop) for o, b in zip(origin, bounds))
        block = np.empty(extent, dtype=self.dtype)
        block[tuple(bounds)] = elementwise.region_block(self._func, self._inputs, self._kwargs,
                                                        region)
        return indexing.read_projection(sel, block, proj)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a lazy neoarray expression cannot be viewed without computing it")
        core.check_memory(self.nbytes, f"array of shape {self._shape} and dtype {self.dtype}")
        result = np.full(self._shape, self.fill_value, dtype=self.dtype)
        for key, block in self._map_stored(lambda _key, block: block):
            result[layout.chunk_region(key, self._shape, self._chunks)] = block
        return result if dtype is None else result.astype(dtype, copy=False)

    def __setitem__(self, key, value):
        raise ArrayValueError(
            "a lazy array is read-only (an expression over its inputs): write into a stored "
            "array instead (b = (A + 1).persist(); b[...] = ...), or build a new expression "
            "(b = b + 1 rather than b += 1)")

    # ------------------------------------------------------------------ storing

    def persist(self, **options: Any) -> core.ndarray:
        """A new detached persistent array holding the expression's values (see
        :func:`store`); ``options`` are ``ndarray``'s (``chunks``, ``codec``...).

        Parameters
        ----------
        **options
            ``chunks``, ``fill_value``, ``order``, ``codec``, ``codec_level`` of the new
            array (default: the expression's).

        Returns
        -------
        ndarray
            A new detached array: place it (``root['b'] = (A + 1).persist()``).

        Raises
        ------
        ArrayShapeError, ArrayDtypeError, ArrayValueError
            ``options`` do not describe an array (see :class:`~neoarray.array.ndarray`).
        """
        return store(self, None, **options)


def _describe(x):
    if isinstance(x, lazyarray):
        return x._label()
    if isinstance(x, core.ndarray):
        return f"ndarray{x.shape}"
    if isinstance(x, np.ndarray) and x.ndim:
        return f"numpy{x.shape}"
    return repr(x)


def _same(block):
    return block


def _check_cast(source, target):
    if not np.can_cast(source, target, casting="same_kind"):
        raise core._cast_error(source, target)


def store(source: core.ChunkedArray, target: core.ndarray | None = None,
          **options: Any) -> core.ndarray:
    """Write ``source`` (a lazy expression, or any neoarray) chunk by chunk.

    Parameters
    ----------
    source : lazyarray or ndarray
        The values written.
    target : ndarray, optional
        An existing array of the same shape, whose dtype the values cast to under
        ``same_kind``: its items all become those of ``source``.  When None, a new
        detached ``ndarray`` is made: ``source``'s shape, dtype, chunks, fill value,
        order and codec unless ``options`` say otherwise.
    **options
        ``chunks``, ``fill_value``, ``order``, ``codec``, ``codec_level`` of the new
        array (only without ``target``).

    Returns
    -------
    ndarray
        ``target``, or the new array (place it: ``root['b'] = store(A + 1)``).

    Raises
    ------
    ArrayValueError
        ``source`` is not a neoarray, or ``target`` is not a stored ``ndarray``.
    ArrayShapeError
        ``target``'s shape is not ``source``'s.
    ArrayCastError
        ``source``'s dtype does not cast to ``target``'s under ``same_kind``.
    TypeError
        ``options`` were given with a ``target``.

    Notes
    -----
    Only the chunks where ``source`` or ``target`` may hold other items than the fill
    value are written when their fill values agree, so storing an expression over a
    sparse array costs in proportion to its stored chunks.
    """
    if not isinstance(source, core.ChunkedArray):
        raise ArrayValueError(f"store writes a neoarray expression or array, not "
                              f"{type(source).__name__}: use target[...] = values")
    if target is None:
        options.setdefault("chunks", source.chunks)
        options.setdefault("fill_value", source.fill_value)
        options.setdefault("codec", source.codec)
        target = core.ndarray(source.shape, source.dtype, options.pop("order", source.order),
                              **options)
    elif options:
        raise TypeError(f"store: {sorted(options)} describe a new array; they cannot change "
                        "an existing target")
    elif not isinstance(target, core.ndarray):
        raise ArrayValueError(f"store writes into a neoarray.array.ndarray, not "
                              f"{type(target).__name__} (np.asarray(expr) gives a numpy array)")
    elif tuple(target.shape) != tuple(source.shape):
        raise ArrayShapeError(
            f"cannot store an expression of shape {source.shape} into an array of shape "
            f"{target.shape}: the shapes must be equal (target[...] = expr broadcasts)")
    _check_cast(source.dtype, target.dtype)
    elementwise.apply(_same, (source,), out=target)
    return target


def assign(target, key, value):
    """``target[key] = value`` for a lazy ``value``, chunk by chunk where it can be (see
    the module docstring)."""
    _check_cast(value.dtype, target.dtype)
    sel = indexing.parse_selection(key, target.shape)
    if _whole(sel, target.shape) and value.shape == target.shape:
        store(value, target)
        return
    reads_target = any(a is target for a in value.arrays())
    basic = not sel.adv_axes and sum(s.keep for s in sel.basic) == len(sel.result_shape)
    if reads_target or not basic:
        target[key] = np.asarray(value)
        return
    lead = _check_broadcast(value.shape, sel.result_shape)
    target._write(sel, lambda batch: [_canon_block(value, sel, proj, lead) for proj in batch])


def _whole(sel, shape) -> bool:
    """Whether ``sel`` is every item of an array of ``shape``, in order."""
    return not sel.adv_axes and len(sel.result_shape) == len(shape) and all(
        s.keep and s.start == 0 and s.step == 1 and s.count == n
        for s, n in zip(sel.basic, shape))


def _check_broadcast(shape, result_shape) -> int:
    """Number of leading axes (all of size 1) ``shape`` has beyond ``result_shape``;
    ``ArrayShapeError`` unless it broadcasts to it, as numpy's assignment."""
    lead = max(0, len(shape) - len(result_shape))
    try:
        fits = (all(n == 1 for n in shape[:lead])
                and np.broadcast_shapes(shape[lead:], result_shape) == tuple(result_shape))
    except ValueError:
        fits = False
    if not fits:
        raise ArrayShapeError(f"could not broadcast value of shape {shape} into a selection "
                              f"of shape {result_shape}")
    return lead


def _canon_block(value, sel, proj, lead):
    """The items of ``value`` (broadcast to the selection) that ``proj`` writes, in the
    canonical layout (a basic selection: one dimension per axis of the target)."""
    result_region = tuple(o for o, s in zip(proj.out, sel.basic) if s.keep)
    region = (slice(0, 1),) * lead + elementwise._input_region(value.shape[lead:], result_region)
    block = np.asarray(value._read(region))
    block = block.reshape(block.shape[lead:])
    extent = tuple(r.stop - r.start for r in result_region)
    return np.broadcast_to(block, extent).reshape(tuple(o.stop - o.start for o in proj.out))
