"""Compiled kernels (Numba) on numpy chunk buffers, each with a plain numpy reference.

Kernels take one-dimensional contiguous arrays (a chunk, ravelled) of bool, integer
or floating dtypes, release the GIL (``nogil``) so chunks reduce in parallel on
threads, and are compiled once per dtype and cached on disk (``cache=True``).

Reductions return *partial states* that merge across chunks:

==================  ======================================  =========================
kernel              state                                    merge
==================  ======================================  =========================
``sum``/``prod``    the sum / product in the accumulation    ``+`` / ``*``
                    dtype given by the caller
``min``/``max``     the value (NaN if any NaN, like numpy)   ``minimum``/``maximum``
``argmin``          ``(index, value)``; first NaN wins,      see :func:`merge_arg`
``argmax``          then the first extremum
``moments``         ``(n, mean, M2)``, two passes in the     Chan et al. (parallel
                    chunk (numerically stable)               Welford), :func:`merge_moments`
``count_nonzero``   a count                                  ``+``
``any``/``all``     a bool                                   ``or`` / ``and``
``histogram``       counts of ``bins`` equal bins over       ``+``
                    ``[lo, hi]`` (numpy's edge rules)
==================  ======================================  =========================

Window operations on a 1-D series take the tail of the previous chunk (``halo``) so
chunked results equal whole-array results: :func:`diff`, :func:`moving_mean`
(window ``w``, like ``np.convolve(x, ones(w) / w, 'valid')``) and :func:`alerts`
(indices ``i`` where the rate of variation ``x[i] / x[i-1] - 1`` exceeds ``limit``
in absolute value, like flagging price moves larger than a limit).

``REFERENCE`` holds the numpy version of each kernel; the tests compare them.
"""
from __future__ import annotations

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True}
BLOCK_ITEMS = 1024     # sums: vectorised blocks added one after the other (error ~ numpy's)
SUPPORTED_KINDS = "biuf"


def supported(dtype) -> bool:
    """Whether the kernels handle ``dtype`` (bool, integers, floats; not complex)."""
    return np.dtype(dtype).kind in SUPPORTED_KINDS


# -- sums and products -------------------------------------------------------------

@numba.njit(fastmath={"reassoc", "nsz"}, **_JIT)
def _sum_block(x, start, stop, zero):
    s = zero
    for i in range(start, stop):
        s += x[i]
    return s


@numba.njit(**_JIT)
def _sum(x, acc):
    total = acc[0] - acc[0]
    n = x.shape[0]
    for start in range(0, n, BLOCK_ITEMS):
        total += _sum_block(x, start, min(start + BLOCK_ITEMS, n), total - total)
    acc[0] = total


def sum_(x, acc_dtype):
    """Sum of ``x`` accumulated in ``acc_dtype`` (a numpy scalar of that dtype)."""
    acc = np.zeros(1, dtype=acc_dtype)
    _sum(_bools_as_int(x), acc)
    return acc[0]


@numba.njit(**_JIT)
def _prod(x, acc):
    p = acc[0]
    for i in range(x.shape[0]):
        p *= x[i]
    acc[0] = p


def prod(x, acc_dtype):
    """Product of ``x`` accumulated in ``acc_dtype``."""
    acc = np.ones(1, dtype=acc_dtype)
    _prod(_bools_as_int(x), acc)
    return acc[0]


def _bools_as_int(x):
    return x.view(np.uint8) if x.dtype == np.bool_ else x


# -- extrema -----------------------------------------------------------------------

@numba.njit(**_JIT)
def _min_block(x, start, stop):
    m = x[start]
    nan = False
    for i in range(start, stop):     # branch-free: vectorised
        v = x[i]
        nan |= v != v
        m = v if v < m else m
    return m, nan


@numba.njit(**_JIT)
def _max_block(x, start, stop):
    m = x[start]
    nan = False
    for i in range(start, stop):
        v = x[i]
        nan |= v != v
        m = v if v > m else m
    return m, nan


@numba.njit(**_JIT)
def _first_nan(x, start, stop):
    for i in range(start, stop):
        if x[i] != x[i]:
            return i
    return -1


@numba.njit(**_JIT)
def _first_equal(x, start, stop, value):
    for i in range(start, stop):
        if x[i] == value:
            return i
    return -1


@numba.njit(**_JIT)
def _extremum(x, largest):
    """``(index, value)`` of the first extremum, or of the first NaN: block by block."""
    n = x.shape[0]
    best, best_block = x[0], 0
    for start in range(0, n, BLOCK_ITEMS):
        stop = min(start + BLOCK_ITEMS, n)
        if largest:
            m, nan = _max_block(x, start, stop)
        else:
            m, nan = _min_block(x, start, stop)
        if nan:
            i = _first_nan(x, start, stop)
            return i, x[i]
        if (m > best) if largest else (m < best):
            best, best_block = m, start
    i = _first_equal(x, best_block, min(best_block + BLOCK_ITEMS, n), best)
    return i, best


def _nonempty(x, name):
    if x.shape[0] == 0:
        raise ValueError(f"zero-size array to reduction operation {name} which has no identity")
    return _bools_as_int(x)


def min_(x):
    """Smallest item (NaN when there is one, like ``np.min``)."""
    return x[_extremum(_nonempty(x, "minimum"), False)[0]]


def max_(x):
    """Largest item (NaN when there is one, like ``np.max``)."""
    return x[_extremum(_nonempty(x, "maximum"), True)[0]]


def argmin(x):
    """``(index, value)`` of the first smallest item, or of the first NaN."""
    i = int(_extremum(_nonempty(x, "argmin"), False)[0])
    return i, x[i]


def argmax(x):
    """``(index, value)`` of the first largest item, or of the first NaN."""
    i = int(_extremum(_nonempty(x, "argmax"), True)[0])
    return i, x[i]


def merge_arg(name, a, b):
    """Merge two ``(index, value)`` states, ``a`` covering earlier items than ``b``."""
    (_, va), (_, vb) = a, b
    if va != va:
        return a
    if vb != vb:
        return b
    better = vb < va if name == "argmin" else vb > va
    return b if better else a


# -- moments -----------------------------------------------------------------------

@numba.njit(fastmath={"reassoc", "nsz"}, **_JIT)
def _moments(x):
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += x[i]
    mean = s / n
    m2 = 0.0
    for i in range(n):
        d = x[i] - mean
        m2 += d * d
    return mean, m2


def moments(x):
    """``(n, mean, M2)`` of ``x`` in float64 (``M2``: sum of squared deviations)."""
    n = x.shape[0]
    if n == 0:
        return 0, 0.0, 0.0
    mean, m2 = _moments(_bools_as_int(x))
    return n, float(mean), float(m2)


def merge_moments(a, b):
    """Chan et al.'s parallel merge of two ``(n, mean, M2)`` states."""
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    if n == 0:
        return 0, 0.0, 0.0
    delta = mb - ma
    return n, ma + delta * nb / n, qa + qb + delta * delta * na * nb / n


def var(x, ddof=0):
    """Variance from :func:`moments` (NaN when ``n - ddof <= 0``)."""
    n, _mean, m2 = moments(x)
    return m2 / (n - ddof) if n - ddof > 0 else float("nan")


# -- counts ------------------------------------------------------------------------

@numba.njit(**_JIT)
def _count_nonzero(x):
    c = 0
    for i in range(x.shape[0]):
        if x[i] != 0:
            c += 1
    return c


def count_nonzero(x):
    """Number of items that are not zero (NaN counts, as in numpy)."""
    return int(_count_nonzero(_bools_as_int(x)))


@numba.njit(**_JIT)
def _any(x):
    for i in range(x.shape[0]):
        if x[i] != 0:
            return True
    return False


@numba.njit(**_JIT)
def _all(x):
    for i in range(x.shape[0]):
        if x[i] == 0:
            return False
    return True


def any_(x):
    return bool(_any(_bools_as_int(x)))


def all_(x):
    return bool(_all(_bools_as_int(x)))


# -- histogram ---------------------------------------------------------------------

@numba.njit(**_JIT)
def _histogram(x, edges, counts):
    bins = counts.shape[0]
    lo, hi = edges[0], edges[bins]
    norm = bins / (hi - lo)
    for i in range(x.shape[0]):
        v = x[i]
        if not (v >= lo and v <= hi):       # outside, or NaN
            continue
        f = (v - lo) * norm          # may be inf or huge for subnormal ranges: clamp first
        k = bins - 1 if not (f < bins) else (int(f) if f > 0 else 0)
        if k > 0 and v < edges[k]:
            k -= 1
        elif k < bins - 1 and v >= edges[k + 1]:
            k += 1
        counts[k] += 1


def histogram(x, bins, lo, hi):
    """Counts of ``bins`` equal bins over ``[lo, hi]`` (last bin closed), like
    ``np.histogram(x, bins, range=(lo, hi))``; items outside and NaNs are not counted."""
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"histogram needs bins >= 1, not {bins}")
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"histogram range ({lo}, {hi}) must be finite with lo <= hi")
    if lo == hi:            # numpy widens an empty range the same way
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    _histogram(_bools_as_int(x), edges, counts)
    return counts, edges


# -- windows on a 1-D series -------------------------------------------------------

@numba.njit(**_JIT)
def _diff(x, out):
    for i in range(out.shape[0]):
        out[i] = x[i + 1] - x[i]


def diff(x, halo=None):
    """``x[i] - x[i-1]``; with ``halo`` (the previous chunk's last item), one per item."""
    series = x if halo is None else np.concatenate([np.asarray(halo, x.dtype)[-1:], x])
    out = np.empty(max(series.shape[0] - 1, 0), dtype=np.result_type(x.dtype, x.dtype))
    if out.shape[0]:
        _diff(series, out)
    return out


@numba.njit(**_JIT)
def _moving_mean(x, w, out):
    s = 0.0
    c = 0.0          # Kahan compensation: the window sum does not drift
    for i in range(w):
        y = x[i] - c
        t = s + y
        c = (t - s) - y
        s = t
    out[0] = s / w
    for i in range(w, x.shape[0]):
        y = (x[i] - x[i - w]) - c
        t = s + y
        c = (t - s) - y
        s = t
        out[i - w + 1] = s / w


def moving_mean(x, window, halo=None):
    """Means of every ``window`` consecutive items (``halo``: the previous
    chunk's last ``window - 1`` items), like ``np.convolve(x, ones(w)/w, 'valid')``."""
    window = int(window)
    if window < 1:
        raise ValueError(f"moving_mean needs window >= 1, not {window}")
    series = x if halo is None else np.concatenate([np.asarray(halo, np.float64), x])
    series = np.ascontiguousarray(series, dtype=np.float64)
    n = series.shape[0] - window + 1
    out = np.empty(max(n, 0), dtype=np.float64)
    if n > 0:
        _moving_mean(series, window, out)
    return out


@numba.njit(**_JIT)
def _alerts(x, limit, out):
    k = 0
    for i in range(1, x.shape[0]):
        prev = x[i - 1]
        if prev == 0:
            continue
        rate = x[i] / prev - 1.0
        if abs(rate) > limit:
            out[k] = i
            k += 1
    return k


def alerts(x, limit, halo=None, offset=0):
    """Indices ``i`` (plus ``offset``) where ``|x[i] / x[i-1] - 1| > limit``.

    ``halo`` is the previous chunk's last item; items after a zero are never
    flagged (no rate).  NaNs are never flagged.
    """
    series = np.ascontiguousarray(x if halo is None else np.concatenate(
        [np.asarray(halo, x.dtype)[-1:], x]), dtype=np.float64)
    out = np.empty(max(series.shape[0] - 1, 0), dtype=np.int64)
    k = _alerts(series, float(limit), out) if series.shape[0] > 1 else 0
    shift = offset - (0 if halo is None else 1)
    return out[:k] + shift


# -- numpy references --------------------------------------------------------------

def _ref_moments(x):
    if x.size == 0:
        return 0, 0.0, 0.0
    x = x.astype(np.float64)
    mean = x.mean()
    return x.size, float(mean), float(((x - mean) ** 2).sum())


def _ref_alerts(x, limit, halo=None, offset=0):
    series = x.astype(np.float64) if halo is None else np.concatenate(
        [np.asarray(halo, np.float64)[-1:], x.astype(np.float64)])
    prev, cur = series[:-1], series[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = cur / prev - 1.0
    flagged = np.nonzero((prev != 0) & (np.abs(rate) > limit))[0] + 1
    return flagged + offset - (0 if halo is None else 1)


def _ref_argmin(x):
    i = int(np.argmin(x))
    return i, x[i]


def _ref_argmax(x):
    i = int(np.argmax(x))
    return i, x[i]


REFERENCE = {
    "sum": lambda x, acc_dtype: np.sum(x, dtype=acc_dtype),
    "prod": lambda x, acc_dtype: np.prod(x, dtype=acc_dtype),
    "min": np.min, "max": np.max, "argmin": _ref_argmin, "argmax": _ref_argmax,
    "moments": _ref_moments, "count_nonzero": lambda x: int(np.count_nonzero(x)),
    "any": lambda x: bool(np.any(x)), "all": lambda x: bool(np.all(x)),
    "histogram": lambda x, bins, lo, hi: np.histogram(x, bins, range=(lo, hi)),
    "diff": lambda x, halo=None: np.diff(x if halo is None else np.concatenate(
        [np.asarray(halo, x.dtype)[-1:], x])),
    "moving_mean": lambda x, window, halo=None: np.convolve(
        (x if halo is None else np.concatenate([np.asarray(halo, np.float64), x])).astype(np.float64),
        np.ones(window) / window, "valid"),
    "alerts": _ref_alerts,
}

KERNELS = {
    "sum": sum_, "prod": prod, "min": min_, "max": max_, "argmin": argmin, "argmax": argmax,
    "moments": moments, "count_nonzero": count_nonzero, "any": any_, "all": all_,
    "histogram": histogram, "diff": diff, "moving_mean": moving_mean, "alerts": alerts,
}


def warm_up(dtypes=(np.float64, np.int64)) -> None:
    """Load (or compile) the kernels for ``dtypes`` now rather than at their first use.

    The first kernel call of a process initialises Numba (about half a second, even
    with the on-disk cache); long-running services and benchmarks call this first.
    """
    for dtype in dtypes:
        x = np.arange(3, dtype=dtype)
        acc = np.sum(x[:0]).dtype
        sum_(x, acc), prod(x, acc), min_(x), max_(x), argmin(x), argmax(x), moments(x)
        count_nonzero(x), any_(x), all_(x), histogram(x, 2, 0, 2)
        diff(x), moving_mean(x, 2), alerts(x, 0.1)
