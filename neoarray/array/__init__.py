"""Persistent numpy-like arrays far larger than memory, stored in ZODB.

>>> import neoarray.array as na
>>> root['a'] = na.zeros((10**18, 2), dtype=float, order='F')  # doctest: +SKIP

See :class:`ndarray`.  Modules: :mod:`.core` (the array), :mod:`.indexing`
(pure selection -> chunk projections), :mod:`.chunks` (chunk objects and
codecs), :mod:`.fetch` (batch chunk reads), :mod:`.reductions` and
:mod:`.ufuncs` (numpy protocols), :mod:`.creation`, :mod:`.config` (limits),
:mod:`.errors`.
"""

from .config import config, configure
from .core import ndarray
from .creation import (asarray, empty, empty_like, full, full_like, ones, ones_like,
                       zeros, zeros_like)
from .errors import (ArrayCastError, ArrayDtypeError, ArrayError, ArrayIndexError,
                     ArrayShapeError, ArrayTooLargeError, ArrayValueError)
from .fetch import get_fetcher, set_fetcher

__all__ = [
    "ndarray", "empty", "zeros", "ones", "full", "asarray", "empty_like", "zeros_like",
    "ones_like", "full_like", "config", "configure", "get_fetcher", "set_fetcher",
    "ArrayError", "ArrayIndexError", "ArrayShapeError", "ArrayValueError",
    "ArrayDtypeError", "ArrayCastError", "ArrayTooLargeError",
]
