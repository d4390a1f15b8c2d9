"""Errors raised by :mod:`neoarray.array`.

Every class derives from :class:`ArrayError` *and* from the builtin exception a
numpy user expects (``IndexError`` for a bad index, ``ValueError`` for a bad
shape, ``TypeError`` for a bad dtype or cast, ``MemoryError`` for a result too
large to materialise), so ``except IndexError`` keeps working and
``except ArrayError`` catches everything this package raises on purpose.

All classes take a single message argument, so they survive pickling.
:class:`ArrayError` derives from :class:`neoarray.errors.NeoError`, the base of
neoarray's own errors.
Conflicts between concurrent writers are ZODB's own
:class:`ZODB.POSException.ConflictError`, raised by the commit.
"""

import pickle

from ..errors import NeoError


class ArrayError(NeoError):
    """Base class of the errors raised on purpose by neoarray.array."""


class ArrayIndexError(ArrayError, IndexError):
    """An index is out of bounds, malformed or not supported."""


class ArrayShapeError(ArrayError, ValueError):
    """A shape is invalid: negative, too large, or not broadcastable."""


class ArrayValueError(ArrayError, ValueError):
    """An argument value is invalid (chunk shape, order, codec, axis...)."""


class ArrayDtypeError(ArrayError, TypeError):
    """The dtype cannot be stored (object or variable-size dtypes)."""


class ArrayCastError(ArrayError, TypeError):
    """A value cannot be cast to the array dtype under ``same_kind`` rules."""


class ArrayTooLargeError(ArrayError, MemoryError):
    """A result would exceed ``config.memory_bytes_max`` once in memory."""

    # The slot this class inherits (BaseException's), not MemoryError.__new__ found by
    # attribute lookup: unpicklers that call cls.__new__(cls, *args) (tblib's, which
    # Dask installs) would otherwise fail with "MemoryError.__new__ is not safe".
    __new__ = BaseException.__new__


class ArrayLazyError(ArrayError, TypeError):
    """A lazy expression was used where a stored array is needed (it was pickled, for
    instance by assigning it into a persistent object): store it first."""


class ArrayHandleError(ArrayError, pickle.PicklingError):
    """An array cannot travel as a handle (uncommitted changes, or a handle that names
    no array); the message says what to do."""


class ArrayAttrsError(ArrayError, ValueError):
    """An attribute value that cannot be stored (see :mod:`neoarray.array.attrs`)."""


class DatasetError(ArrayAttrsError):
    """A group, a variable or an attribute of :mod:`neoarray.datasets` that cannot be
    stored or found as asked."""
