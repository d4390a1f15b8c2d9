"""Exact order statistics of neoarrays: ``np.quantile``, ``np.percentile``, ``np.median``
and their ``nan`` variants, in bounded memory.

An array that fits in half of ``config.memory_bytes_max`` goes to numpy whole.  A
larger one, with ``axis=None``, is answered from the few order statistics numpy's
formula reads (the items of ranks ``floor``/``ceil`` of each virtual index, or the two
middle ones of a median), found by *selection passes* over the stored chunks:

1. one pass counts the items, the NaNs and the smallest and largest *keys* (each item
   as a ``uint64`` whose order is numpy's sort order: floats by their bits, NaNs
   last; integers offset);
2. each further pass histograms, for every wanted rank, the keys inside the rank's
   current key interval in at most 2**16 bins (the key's high bits), and narrows the
   interval to the bin holding the rank, counting the items below it;
3. a rank is known when its bin holds one key, or collected when its bin holds few
   enough items for the buffer: a last pass gathers those items, numpy sorts them and
   the rank is read.

Keys have 64 bits, so there are at most five narrowing passes.  The unwritten items
(all the fill value) are counted, never read.  numpy's own formula then makes the
result from these order statistics (its interpolation helpers, so the floating result
is numpy's to the bit), for every ``method`` of numpy.  Along an axis
(``axis=k``), tiles of whole lines (at most the buffer) go to numpy one by one.
``-0.0`` and ``0.0`` are distinct keys here (numpy treats them as equal: a zero
result may differ from numpy's in its sign).
"""
import math

import numpy as np
from numpy.lib import _function_base_impl as numpy_quantile  # numpy's formula helpers

from . import core, layout, ordering
from .errors import ArrayTooLargeError

KEY_BITS = 64
BIN_BITS_MAX = 16
_TOP = np.uint64(1 << 63)
_ALL = np.uint64((1 << 64) - 1)


# ---------------------------------------------------------------------- keys

def keys_of(block):
    """``uint64`` keys of the items of ``block`` (flattened): same order as numpy's sort,
    NaNs last (all one key)."""
    flat = np.asarray(block).reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        return flat.astype(np.uint64)
    if kind == "u":
        return flat.astype(np.uint64)
    if kind == "i":
        return flat.astype(np.int64).view(np.uint64) ^ _TOP
    keys = np.array(flat, dtype=np.float64).view(np.uint64)      # the one copy made
    nans = np.isnan(keys.view(np.float64))
    negative = keys >= _TOP
    np.invert(keys, out=keys, where=negative)
    np.bitwise_or(keys, _TOP, out=keys, where=~negative)
    keys[nans] = _ALL
    return keys


def value_of(key, dtype):
    """The item of ``dtype`` whose key is ``key``."""
    key = np.uint64(key)
    kind = dtype.kind
    if kind == "b":
        return np.asarray(key != 0)
    if kind == "u":
        return np.asarray(key).astype(dtype)
    if kind == "i":
        return np.asarray(key ^ _TOP).view(np.int64).astype(dtype)
    if key == _ALL:
        return np.asarray(np.nan, dtype=dtype)
    bits = key & ~_TOP if key & _TOP else ~key
    return np.asarray(bits).view(np.float64).astype(dtype)


# ---------------------------------------------------------------------- selection

class _Target:
    """One wanted rank: its key interval ``[low, high]`` and the items below ``low``."""

    def __init__(self, rank, low, high):
        self.rank, self.low, self.high, self.below = rank, low, high, 0
        self.value = None

    def interval(self):
        return (self.low, self.high)


def _survey(array):
    """One pass: (items read, NaNs, smallest key, largest key) of the stored chunks."""
    def survey(_key, block):
        keys = keys_of(block)
        if not len(keys):
            return 0, 0, None, None
        return len(keys), int(np.count_nonzero(keys == _ALL)), int(keys.min()), int(keys.max())
    covered, nans, low, high = 0, 0, None, None
    for _key, (n, nan, kmin, kmax) in array._map_stored(survey):
        covered, nans = covered + n, nans + nan
        if kmin is not None:
            low = kmin if low is None else min(low, kmin)
            high = kmax if high is None else max(high, kmax)
    missing = array.size - covered
    if missing:
        fill = int(keys_of(np.asarray([array.fill_value], array.dtype))[0])
        nans += missing if fill == int(_ALL) else 0
        low = fill if low is None else min(low, fill)
        high = fill if high is None else max(high, fill)
    return missing, nans, low, high


def _shift(low, high, bins_bits):
    """Right shift of ``key - low`` making at most ``2**bins_bits`` bins of [low, high]."""
    return max(0, (high - low).bit_length() - bins_bits)


def _histogram_pass(array, groups, missing, fill_key, bins_bits):
    """Bin counts of the keys inside each ``(low, high)`` of ``groups``."""
    shifts = [_shift(lo, hi, bins_bits) for lo, hi in groups]

    def counts(_key, block):
        keys = keys_of(block)
        out = []
        for (lo, hi), s in zip(groups, shifts):
            inside = keys[(keys >= np.uint64(lo)) & (keys <= np.uint64(hi))]
            inside -= np.uint64(lo)
            inside >>= np.uint64(s)         # a bin number, below 2**BIN_BITS_MAX: fits intp
            out.append(np.bincount(inside.view(np.intp), minlength=((hi - lo) >> s) + 1))
        return out
    totals = [np.zeros(((hi - lo) >> s) + 1, np.int64) for (lo, hi), s in zip(groups, shifts)]
    for _key, parts in array._map_stored(counts):
        for total, part in zip(totals, parts):
            total += part
    if missing:
        for (lo, hi), s, total in zip(groups, shifts, totals):
            if lo <= fill_key <= hi:
                total[(fill_key - lo) >> s] += missing
    return shifts, totals


def _collect_pass(array, groups, missing, fill_key, fill_value):
    """The items whose keys lie in each ``(low, high)`` of ``groups``, sorted."""
    def collect(_key, block):
        keys = keys_of(block)
        flat = np.asarray(block).reshape(-1)
        return [flat[(keys >= np.uint64(lo)) & (keys <= np.uint64(hi))] for lo, hi in groups]
    found = [[] for _ in groups]
    for _key, parts in array._map_stored(collect):
        for bucket, part in zip(found, parts):
            bucket.append(part)
    result = []
    for (lo, hi), bucket in zip(groups, found):
        if missing and lo <= fill_key <= hi:
            bucket.append(np.full(missing, fill_value, array.dtype))
        result.append(np.sort(np.concatenate(bucket)) if bucket else np.empty(0, array.dtype))
    return result


def order_statistics(array, ranks, survey=None, stats=None):
    """The items of ``ranks`` (flat, numpy's sort order) of ``array``, by selection passes
    over its stored chunks (see the module doc); ``stats`` (a dict) receives ``passes``."""
    missing, _nans, low, high = survey or _survey(array)
    passes = 0 if survey else 1
    fill_key = int(keys_of(np.asarray([array.fill_value], array.dtype))[0])
    candidates_max = max(1, ordering.buffer_bytes() // (2 * array.itemsize))
    targets = {int(r): _Target(int(r), low, high) for r in np.unique(ranks)}
    while True:
        open_ = [t for t in targets.values() if t.value is None]
        if not open_:
            break
        groups = sorted({t.interval() for t in open_})
        bins_bits = max(1, min(BIN_BITS_MAX, int(math.log2(max(2, candidates_max // max(1, len(groups)))))))
        shifts, totals = _histogram_pass(array, groups, missing, fill_key, bins_bits)
        passes += 1
        collect = _narrow(open_, groups, shifts, totals, candidates_max, array.dtype)
        if collect:
            cgroups = sorted({t.interval() for t in collect})
            for (lo, hi), items in zip(cgroups, _collect_pass(array, cgroups, missing, fill_key,
                                                              array.fill_value)):
                for t in collect:
                    if t.interval() == (lo, hi):
                        t.value = items[t.rank - t.below]
            passes += 1
    if stats is not None:
        stats["passes"] = passes
    return {rank: t.value for rank, t in targets.items()}


def _narrow(open_, groups, shifts, totals, candidates_max, dtype):
    """Narrow each open target to its bin; return those whose bins are small enough to
    collect: together at most ``candidates_max`` items (the others narrow again)."""
    collect, collected, left = [], set(), candidates_max
    by_group = {g: (s, total) for g, s, total in zip(groups, shifts, totals)}
    for t in open_:
        s, total = by_group[t.interval()]
        cumulative = np.cumsum(total)
        b = int(np.searchsorted(cumulative, t.rank - t.below, side="right"))
        t.below += int(cumulative[b - 1]) if b else 0
        low = t.low + (b << s)
        t.low, t.high = low, min(t.high, low + (1 << s) - 1)
        if t.low == t.high:
            t.value = value_of(t.low, dtype)
        elif t.interval() in collected:
            collect.append(t)
        elif int(total[b]) <= left:
            collected.add(t.interval())
            left -= int(total[b])
            collect.append(t)
    return collect


# ---------------------------------------------------------------------- numpy's formulas

def _fits(array):
    return array.nbytes <= ordering.buffer_bytes()


def _quantile_1d(array, q, method, weak_q, drop_nans):
    """numpy's ``_quantile`` of the flattened array (NaNs removed first when ``drop_nans``,
    as ``nanquantile``), from its order statistics."""
    survey = _survey(array)
    nans = survey[1]
    n = array.size - (nans if drop_nans else 0)
    if n == 0:
        return np.full(q.shape, np.nan, dtype=array.dtype)[()]
    props = numpy_quantile._QuantileMethods[method]
    virtual = np.asanyarray(props["get_virtual_index"](n, q))
    integers = props["fix_gamma"] is None or (method == "linear" and np.issubdtype(virtual.dtype, np.integer))
    wanted = [virtual] if integers else list(numpy_quantile._get_indexes(np.empty(0, array.dtype), virtual, n))
    ranks = np.unique(np.concatenate([np.asarray(w).reshape(-1) % n for w in wanted]))
    known = order_statistics(array, ranks, survey)
    sample = np.array([known[int(r)] for r in ranks], dtype=array.dtype)
    picked = [sample[np.searchsorted(ranks, np.asarray(w) % n)] for w in wanted]
    if integers:
        result = picked[0]
    else:
        gamma = numpy_quantile._get_gamma(virtual, wanted[0], props)
        gamma = float(gamma) if weak_q else gamma.reshape(virtual.shape)
        result = numpy_quantile._lerp(picked[0], picked[1], gamma)
    if nans and not drop_nans:
        nan = np.asarray(np.nan, dtype=array.dtype)
        if np.ndim(result) == 0:
            return nan[()]
        np.copyto(result, nan)
    return result


def _median_1d(array, drop_nans):
    """numpy's ``_median`` of the flattened array (``nanmedian`` when ``drop_nans``)."""
    survey = _survey(array)
    nans = survey[1]
    if nans and not drop_nans:
        return np.asarray(np.nan, dtype=array.dtype)[()]
    n = array.size - (nans if drop_nans else 0)
    if n == 0:
        return np.asarray(np.nan, dtype=array.dtype)[()]
    ranks = [n // 2 - 1, n // 2] if n % 2 == 0 else [(n - 1) // 2]
    known = order_statistics(array, ranks, survey)
    return np.mean(np.array([known[r] for r in ranks], dtype=array.dtype), axis=0)


def _keep(result, ndim, keepdims, out):
    if keepdims:
        result = np.asarray(result).reshape(np.shape(result) + (1,) * ndim)
    if out is not None:
        np.copyto(out, result, casting="unsafe")
        return out
    return result


def _along_axis(array, axis, func, keepdims, out):
    """``func(block, axis)`` (a numpy reduction with a leading ``q`` shape) tile by tile."""
    shape = array.shape[:axis] + array.shape[axis + 1:]
    result = None
    for region in ordering._tiles_along(array, axis, array.itemsize):
        part = np.asarray(func(np.asarray(array[region]), axis))
        if result is None:
            lead = part.shape[:part.ndim - len(shape)]
            nbytes = math.prod(lead + shape) * part.itemsize
            core.check_memory(nbytes, f"the result of shape {lead + shape}")
            result = np.empty(lead + shape, part.dtype)
        result[(Ellipsis,) + region[:axis] + region[axis + 1:]] = part
    if keepdims:
        result = np.expand_dims(result, result.ndim - len(shape) + axis)
    if out is not None:
        np.copyto(out, result, casting="unsafe")
        return out
    return result[()] if result.ndim == 0 else result


def _axis(array, axis):
    if axis is None:
        return None
    axes = layout.normalize_axes(axis, array.ndim)
    if len(axes) == array.ndim:
        return None
    return axes[0] if len(axes) == 1 else NotImplemented


def _quantile_entry(numpy_func, drop_nans, percent):
    def run(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
            weights=None, interpolation=None):
        if not isinstance(a, core.ChunkedArray) or weights is not None or interpolation is not None:
            return NotImplemented
        if a.dtype.kind == "c":
            raise TypeError("a must be an array of real numbers")
        if a.dtype.kind not in "biuf" or _fits(a):
            return NotImplemented            # numpy, on the array in memory
        numpy_func(np.zeros(1, a.dtype), q, method=method)      # numpy's checks of q, method
        ax = _axis(a, axis)
        if ax is NotImplemented:
            return _too_large(a, numpy_func)
        if ax is not None:
            return _along_axis(a, ax, lambda block, k: numpy_func(block, q, axis=k, method=method),
                               keepdims, out)
        weak_q = type(q) in (int, float)
        qs = np.true_divide(q, 100) if percent else np.asanyarray(q)
        return _keep(_quantile_1d(a, np.asanyarray(qs), method, weak_q, drop_nans), a.ndim, keepdims, out)
    return run


def _median_entry(numpy_func, drop_nans):
    def run(a, axis=None, out=None, overwrite_input=False, keepdims=False):
        if not isinstance(a, core.ChunkedArray) or a.dtype.kind not in "biuf" or _fits(a):
            return NotImplemented
        ax = _axis(a, axis)
        if ax is NotImplemented:
            return _too_large(a, numpy_func)
        if ax is not None:
            return _along_axis(a, ax, lambda block, k: numpy_func(block, axis=k), keepdims, out)
        return _keep(_median_1d(a, drop_nans), a.ndim, keepdims, out)
    return run


def _too_large(array, numpy_func):
    raise ArrayTooLargeError(
        f"np.{numpy_func.__name__} over several (not all) axes of an array of {array.nbytes} "
        f"bytes needs it in memory, more than half of memory_bytes_max "
        f"({ordering.buffer_bytes()} bytes); reduce one axis, or all of them (axis=None)")


#: numpy functions run here (see :mod:`.ufuncs`)
ARRAY_FUNCTIONS = {
    np.quantile: _quantile_entry(np.quantile, False, False),
    np.percentile: _quantile_entry(np.percentile, False, True),
    np.nanquantile: _quantile_entry(np.nanquantile, True, False),
    np.nanpercentile: _quantile_entry(np.nanpercentile, True, True),
    np.median: _median_entry(np.median, False),
    np.nanmedian: _median_entry(np.nanmedian, True),
}
