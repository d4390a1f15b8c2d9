"""Persistent numpy-like arrays far larger than memory, stored in ZODB.

>>> import neoarray.array as na
>>> root['a'] = na.zeros((10**18, 2), dtype=float, order='F')  # doctest: +SKIP

See :class:`ndarray`.  Modules: :mod:`.core` (the array), :mod:`.indexing`
(pure selection -> chunk projections), :mod:`.chunks` (chunk objects and
codecs), :mod:`.fetch` (batch chunk reads), :mod:`.reductions` and
:mod:`.ufuncs` (numpy protocols), :mod:`.lazy` (lazy expressions: ``A + 1``,
:func:`store`), :mod:`.linalg` (matrix products),
:mod:`.scans` (running reductions), :mod:`.methods` (ndarray methods),
:mod:`.views` (lazy transposes, slices and reshapes),
:mod:`.windows` (window operations on 1-D series), :mod:`.ordering` (sorting,
unique, searchsorted), :mod:`.quantiles` (exact order statistics), :mod:`.joining`
(concatenate, stack), :mod:`.creation`,
:mod:`.config` (limits), :mod:`.errors`, :mod:`.handles` (pickling by
reference), :mod:`.dasks` (Dask collections), :mod:`.zarrs` (zarr in and out),
:mod:`.attrs` (attribute values).

The operations sit above the array: they import :mod:`.core`, which imports none of
them; they are given to it here (``core.bind``).
"""

from .. import vm
from . import (
    core,
    dasks,
    envelope,
    handles,
    joining,
    lazy,
    methods,
    ordering,
    plans,
    quantiles,
    streams,
    ufuncs,
    views,
    zarrs,
)
from .config import config, configure
from .core import ndarray
from .creation import (
    asarray,
    empty,
    empty_like,
    full,
    full_like,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from .dasks import from_dask
from .errors import (
    ArrayAttrsError,
    ArrayCastError,
    ArrayDtypeError,
    ArrayError,
    ArrayHandleError,
    ArrayIndexError,
    ArrayLazyError,
    ArrayShapeError,
    ArrayTooLargeError,
    ArrayValueError,
)
from .fetch import get_fetcher, set_fetcher
from .lazy import lazyarray, store
from .windows import alerts, diff, moving_mean
from .zarrs import from_zarr

core.bind(ufuncs=ufuncs, plans=plans, methods=methods, ordering=ordering, lazy=lazy, views=views,
          handles=handles, dasks=dasks, zarrs=zarrs, streams=streams, vm=vm, envelope=envelope)
for _module in (ordering, quantiles, joining):      # sorting, order statistics, joining
    ufuncs.register(_module.ARRAY_FUNCTIONS)

__all__ = [
    "ArrayAttrsError",
    "ArrayCastError",
    "ArrayDtypeError",
    "ArrayError",
    "ArrayHandleError",
    "ArrayIndexError",
    "ArrayLazyError",
    "ArrayShapeError",
    "ArrayTooLargeError",
    "ArrayValueError",
    "alerts",
    "asarray",
    "config",
    "configure",
    "diff",
    "empty",
    "empty_like",
    "from_dask",
    "from_zarr",
    "full",
    "full_like",
    "get_fetcher",
    "lazyarray",
    "moving_mean",
    "ndarray",
    "ones",
    "ones_like",
    "set_fetcher",
    "store",
    "zeros",
    "zeros_like",
]
