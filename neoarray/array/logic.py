"""``np.where``, ``np.isclose``, ``np.allclose`` and ``np.array_equal`` on neoarrays,
chunk by chunk (:mod:`.elementwise`).

``where(condition, x, y)`` and ``isclose`` give new arrays, computed from the stored
chunks when the operands share shape and chunks (the fill value follows the fill
values); ``where(condition)`` is ``condition.nonzero()``.  ``allclose`` and
``array_equal`` answer a bool, reading one chunk of each operand at a time and storing
nothing; they stop at the first chunk that differs.
"""
import numpy as np

from . import core, elementwise, methods

_NO_VALUE = object()


def _operand(x):
    """Neoarrays, numpy arrays and scalars as they are; anything else as numpy."""
    if isinstance(x, (core.ndarray, np.ndarray)) or elementwise.is_scalar(x):
        return x
    return np.asarray(x)


def where(condition, x=_NO_VALUE, y=_NO_VALUE):
    if x is _NO_VALUE and y is _NO_VALUE:
        if isinstance(condition, core.ndarray):
            return methods.nonzero(condition)
        return NotImplemented
    if x is _NO_VALUE or y is _NO_VALUE:
        raise ValueError("either both or neither of x and y should be given")
    return elementwise.apply(np.where, tuple(_operand(v) for v in (condition, x, y)))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    def close(u, v):
        return np.isclose(u, v, rtol=rtol, atol=atol, equal_nan=equal_nan)
    return elementwise.apply(close, (_operand(a), _operand(b)))


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    def close(u, v):
        return np.isclose(u, v, rtol=rtol, atol=atol, equal_nan=equal_nan)
    return elementwise.all_true(close, (_operand(a), _operand(b)))


def array_equal(a1, a2, equal_nan=False):
    a1, a2 = _operand(a1), _operand(a2)
    if np.shape(a1) != np.shape(a2):
        return False

    def equal(u, v):
        same = u == v
        if equal_nan:
            both_nan = np.isnan(u) & np.isnan(v) if np.asarray(u).dtype.kind in "fc" else False
            same = same | both_nan
        return same
    return elementwise.all_true(equal, (a1, a2))
