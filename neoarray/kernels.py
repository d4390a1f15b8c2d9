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

:func:`block_state` gives the state of every item of an n-d block (a chunk) by name
(:data:`BLOCK_STATES`), compiled where :func:`kernel_applies`, numpy elsewhere: the
client's reductions and storage nodes (near-data reductions) both use it, so they
compute identical states; :func:`encode_state`/:func:`decode_state` carry a state
over the network, exactly, as msgpack.

``REFERENCE`` holds the numpy version of each kernel; the tests compare them.
"""
from __future__ import annotations

import msgpack
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
        f = (v - lo) * norm          # may be inf, huge or NaN (0 * inf) for subnormal ranges:
        k = bins - 1 if not (f < bins) else (int(f) if f > 0 else 0)   # clamp first,
        while k > 0 and v < edges[k]:                # then the edges decide (one step but
            k -= 1                                   # for such ranges)
        while k < bins - 1 and v >= edges[k + 1]:
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
def _kahan_add(s, c, v):
    y = v - c
    t = s + y
    return t, (t - s) - y


@numba.njit(**_JIT)
def _moving_mean(x, w, out):
    s = 0.0
    c = 0.0          # Kahan compensation: the window sum does not drift
    nan = 0          # non-finite items in the window are counted, not summed, so that
    pos = 0          # the sum recovers once they leave it (numpy.convolve's results:
    neg = 0          # NaN with a NaN or both infinities, else the infinity)
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            nan += 1
        elif v == np.inf:
            pos += 1
        elif v == -np.inf:
            neg += 1
        else:
            s, c = _kahan_add(s, c, v)
        if i >= w:
            u = x[i - w]
            if u != u:
                nan -= 1
            elif u == np.inf:
                pos -= 1
            elif u == -np.inf:
                neg -= 1
            else:
                s, c = _kahan_add(s, c, -u)
        if i >= w - 1:
            if nan or (pos and neg):
                out[i - w + 1] = np.nan
            elif pos:
                out[i - w + 1] = np.inf
            elif neg:
                out[i - w + 1] = -np.inf
            else:
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


# -- whole-block states ------------------------------------------------------------
#
# The partial state of every item of one n-d block (an array chunk, or its in-bounds
# part), computed the same way by the client (``neoarray.array.reductions``) and by
# storage nodes (near-data reductions), so both give identical states.

BLOCK_STATES = ("sum", "prod", "min", "max", "argmin", "argmax", "moments",
                "count_nonzero", "any", "all", "histogram")
STATE_KINDS = "biufcmM"      # dtype kinds a state may hold (numbers, dates): never objects
STATE_ITEMS_MAX = 16         # arrays in one encoded state


def kernel_applies(dtype, acc) -> bool:
    """Whether compiled kernels reduce items of ``dtype`` into the accumulator ``acc``.

    Bool/int/float items into exact-enough accumulators: float64 or integers (float32
    sums keep numpy's pairwise summation).  Only native byte order, and not float16:
    Numba has neither.
    """
    acc, dtype = np.dtype(acc), np.dtype(dtype)
    return (supported(dtype) and dtype.isnative and dtype != np.float16
            and (acc.kind in "iub" or acc == np.float64))


def _memory_order(block) -> str:
    """'C' or 'F': the order closest to ``block``'s memory layout."""
    if block.flags.c_contiguous:
        return "C"
    if block.flags.f_contiguous:
        return "F"
    strides = [abs(st) for st, n in zip(block.strides, block.shape) if n > 1]
    return "F" if strides == sorted(strides) else "C"


def _all_axes(block):
    return tuple(range(block.ndim))


def _sum_state(block, acc, fast):
    if fast:
        return (sum_(block.ravel(order="K"), acc),)
    return (np.sum(block, axis=_all_axes(block), dtype=acc),)


def _prod_state(block, acc, fast):
    if fast:
        return (prod(block.ravel(order="K"), acc),)
    return (np.prod(block, axis=_all_axes(block), dtype=acc),)


def _min_state(block, acc, fast):
    return (min_(block.ravel(order="K")) if fast else np.min(block, axis=_all_axes(block)),)


def _max_state(block, acc, fast):
    return (max_(block.ravel(order="K")) if fast else np.max(block, axis=_all_axes(block)),)


def _moments_state(block, acc, fast):
    """``(n, mean, M2)``; ``M2`` is real (float64) for complex accumulators, like numpy.var."""
    if fast:
        n, mean, m2 = moments(block.ravel(order="K"))
        return np.int64(n), acc.type(mean), acc.type(m2)
    axes = _all_axes(block)
    mean = np.mean(block, axis=axes, keepdims=True, dtype=acc)
    if acc.kind == "f":     # like numpy.var: one temporary, squared in place
        deviation = np.asarray(np.subtract(block, mean, dtype=acc))    # 0-d: a scalar
        np.multiply(deviation, deviation, out=deviation)
        m2 = np.sum(deviation, axis=axes)
    else:
        m2 = np.sum(np.abs(block - mean) ** 2, axis=axes)
    return np.int64(block.size), mean.reshape(())[()], m2


def _count_nonzero_state(block, acc, fast):
    if fast:
        return (np.intp(count_nonzero(block.ravel(order="K"))),)
    return (np.intp(np.count_nonzero(block)),)


def _any_state(block, acc, fast):
    return (np.bool_(any_(block.ravel(order="K")) if fast else np.any(block)),)


def _all_state(block, acc, fast):
    return (np.bool_(all_(block.ravel(order="K")) if fast else np.all(block)),)


def _arg_state(name, block, fast):
    """``(value, index)``: ``index`` is the C-order flat index in ``block``'s shape."""
    if not fast:
        index = int((np.argmin if name == "argmin" else np.argmax)(block))
        return block.reshape(-1)[index] if block.ndim else block[()], np.int64(index)
    order = _memory_order(block)
    flat = block.ravel(order=order)      # a view when the block is contiguous
    index, value = (argmin if name == "argmin" else argmax)(flat)
    if order == "F" and block.ndim > 1:  # first in C order among the equal items
        ties = np.isnan(block) if np.isnan(value) else (block == value)
        index = int(np.argmax(ties))
        value = block[np.unravel_index(index, block.shape)]
    return value, np.int64(index)


def _histogram_state(block, bins, lo, hi):
    if not supported(block.dtype):
        raise ValueError(f"histogram needs bool, integer or float items, not {block.dtype}")
    if block.dtype == np.float16 or not block.dtype.isnative:    # not for Numba
        block = block.astype(np.float32 if block.dtype == np.float16 else
                             block.dtype.newbyteorder("="))
    return (histogram(block.ravel(order="K"), bins, lo, hi)[0],)


_STATE_FUNCS = {
    "sum": _sum_state, "prod": _prod_state, "min": _min_state, "max": _max_state,
    "moments": _moments_state, "count_nonzero": _count_nonzero_state,
    "any": _any_state, "all": _all_state,
}


def block_state(name, block, acc, bins=None, lo=None, hi=None) -> tuple:
    """The partial state of every item of the n-d ``block``, a tuple (see the table).

    ``acc`` is the accumulator dtype (``neoarray.array.reductions._acc_dtype``).
    Compiled kernels run where :func:`kernel_applies` (and the block is not empty),
    numpy elsewhere, so float32 sums keep numpy's pairwise summation.

    =================  =====================================================
    ``name``           state
    =================  =====================================================
    sum, prod          ``(total,)`` in ``acc``
    min, max           ``(value,)`` (NaN first, like numpy)
    moments            ``(n int64, mean, M2)``: mean in ``acc``, M2 in ``acc``
                       (its real dtype for complex accumulators)
    count_nonzero      ``(count np.intp,)``
    any, all           ``(np.bool_,)``
    argmin, argmax     ``(value, index int64)``: ``index`` is the C-order flat
                       index in ``block``'s logical shape (first NaN, else
                       first extremum, like numpy)
    histogram          ``(counts int64[bins],)`` over ``[lo, hi]``, numpy's
                       edge rules (:func:`histogram`)
    =================  =====================================================

    Raises ValueError for an unknown ``name``, missing histogram parameters, and
    what numpy raises (an empty block for min, max and arg-reductions).
    """
    if name not in BLOCK_STATES:
        raise ValueError(f"unknown block state {name!r}; the built-in ones are "
                         f"{', '.join(BLOCK_STATES)}")
    acc, block = np.dtype(acc), np.asarray(block)      # a 0-d block may be a numpy scalar
    if name == "histogram":
        if bins is None or lo is None or hi is None:
            raise ValueError("the histogram block state needs bins, lo and hi")
        return _histogram_state(block, bins, lo, hi)
    fast = bool(block.size) and kernel_applies(block.dtype, acc)
    if name in ("argmin", "argmax"):
        if not block.size:
            raise ValueError(f"attempt to get {name} of an empty sequence")
        return _arg_state(name, block, fast)
    return _STATE_FUNCS[name](block, acc, fast)


def _state_item(value) -> list:
    array = np.asarray(value)
    if array.dtype.kind not in STATE_KINDS or array.dtype.fields is not None:
        raise ValueError(f"a block state holds numbers, not {array.dtype}")
    return [array.dtype.str, list(array.shape), np.ascontiguousarray(array).tobytes()]


def encode_state(state) -> bytes:
    """``state`` (a tuple of numpy scalars or arrays, or Python numbers) as bytes.

    Exact for every numeric dtype: each item is ``[dtype.str, shape, raw bytes]``
    (msgpack).  :func:`decode_state` gives numpy scalars and arrays back.
    """
    return msgpack.packb([_state_item(v) for v in state], use_bin_type=True)


def _decoded_item(item):
    if not (isinstance(item, list) and len(item) == 3):
        raise ValueError("a state item must be [dtype, shape, bytes]")
    descr, shape, raw = item
    if not (isinstance(descr, str) and isinstance(shape, list) and isinstance(raw, bytes)):
        raise ValueError("a state item must be [dtype, shape, bytes]")  # noqa: TRY004 (malformed input)
    if len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"bad shape {shape!r} in a state item")
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise ValueError(f"bad dtype {descr!r} in a state item") from None
    if dtype.kind not in STATE_KINDS or dtype.fields is not None or dtype.str != descr:
        raise ValueError(f"dtype {descr!r} is not allowed in a state item")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"a state item of shape {shape} and dtype {descr} needs "
                         f"{count * dtype.itemsize} bytes, not {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return array[()] if not shape else array


def decode_state(raw) -> tuple:
    """The state that :func:`encode_state` encoded; ValueError for malformed input."""
    try:
        items = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"a block state is not valid msgpack: {exc}") from None
    if not isinstance(items, list) or len(items) > STATE_ITEMS_MAX:
        raise ValueError(f"a block state must be a list of at most {STATE_ITEMS_MAX} items")
    return tuple(_decoded_item(item) for item in items)


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
