"""``np.where``, ``np.isclose``, ``np.allclose``, ``np.array_equal``, ``np.histogram``
and ``np.bincount`` on neoarrays, chunk by chunk (:mod:`.elementwise`, :mod:`.plans`).

``where(condition, x, y)`` and ``isclose`` give lazy expressions (:mod:`.lazy`), computed
from the stored chunks when read (the fill value follows the fill values); ``where(condition)`` is ``condition.nonzero()``.  ``allclose`` and
``array_equal`` answer a bool, reading one chunk of each operand at a time and storing
nothing; they stop at the first chunk that differs.  ``histogram`` (integer bins,
unweighted; numpy's edges and their dtype) and ``bincount`` (unweighted) count in one
pass over the stored chunks, the unwritten items added as fill values.
"""
import numpy as np

from . import core, elementwise, lazy, methods, plans

_NO_VALUE = object()


def _operand(x):
    """Neoarrays, numpy arrays and scalars as they are; anything else as numpy."""
    if elementwise.is_operand(x):
        return x
    return np.asarray(x)


def where(condition, x=_NO_VALUE, y=_NO_VALUE):
    if x is _NO_VALUE and y is _NO_VALUE:
        if isinstance(condition, core.ChunkedArray):
            return methods.nonzero(condition)
        return NotImplemented
    if x is _NO_VALUE or y is _NO_VALUE:
        raise ValueError("either both or neither of x and y should be given")
    return lazy.lazyarray(np.where, tuple(_operand(v) for v in (condition, x, y)))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    def close(u, v):
        return np.isclose(u, v, rtol=rtol, atol=atol, equal_nan=equal_nan)
    return lazy.lazyarray(close, (_operand(a), _operand(b)))


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


def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002 - numpy's name
    """``np.histogram`` of a neoarray with an integer number of bins, unweighted: one pass
    over the stored chunks (the default range, numpy's (min, max), is a pass too).  Each
    block is binned by numpy itself with the whole array's range, so every item falls in
    the bin numpy's one call would give it (edges rounded to the data's dtype included);
    the unstored items count as the fill value."""
    if (not isinstance(a, core.ChunkedArray) or weights is not None or isinstance(bins, bool)
            or not isinstance(bins, (int, np.integer))):
        return NotImplemented
    if a.dtype.kind not in "biuf":
        return NotImplemented
    if range is None:
        range = plans.histogram_item_range(a)     # numpy scalars of the items' dtype, as numpy's
    edges = np.histogram_bin_edges(np.zeros(0, dtype=a.dtype), bins=int(bins), range=range)
    counts = np.zeros(int(bins), dtype=np.intp)
    covered = 0
    for _key, (part, n) in a._map_stored(
            lambda _k, block: (np.histogram(block, bins=int(bins), range=range)[0], block.size)):
        counts += part
        covered += n
    missing = a.size - covered
    if missing:
        counts += np.histogram(np.full(1, a.fill_value, dtype=a.dtype), bins=int(bins), range=range)[0] * missing
    if density:
        return counts / np.diff(edges) / counts.sum(), edges
    return counts, edges


def bincount(x, weights=None, minlength=0):
    """``np.bincount`` of a 1-D neoarray of non-negative integers, unweighted, chunk by chunk."""
    if not isinstance(x, core.ChunkedArray) or weights is not None or x.ndim != 1 or x.dtype.kind not in "iub":
        return NotImplemented
    counts = np.zeros(max(int(minlength), 0), dtype=np.intp)
    covered = 0
    for _key, (part, n) in x._map_stored(lambda _k, block: (np.bincount(block, minlength=0), block.size)):
        counts = _at_least(counts, len(part))
        counts[:len(part)] += part
        covered += n
    missing = x.size - covered
    if missing:
        fill = int(x.fill_value)
        if fill < 0:
            raise ValueError("'list' argument must have no negative elements")
        counts = _at_least(counts, fill + 1)
        counts[fill] += missing
    return counts


def _at_least(counts, length):
    """``counts`` padded with zeros to ``length`` items (or as it is when longer)."""
    return np.pad(counts, (0, max(0, length - len(counts))))
