"""Selections and their projection onto chunks: pure code, no I/O.

A numpy index (``key``) over an array of ``shape`` becomes a
:class:`Selection` (:func:`parse_selection`), which then yields
:class:`ChunkProjection` objects (:func:`iter_projections`), one per chunk the
selection touches.  Nothing here iterates over the whole chunk grid: the work
is proportional to the number of selected chunks (and of index-array items).

Canonical layout
----------------
Results are assembled in a *canonical* array whose dimensions are the basic
axes (slices, and integers when there is no array index) in axis order,
followed by the broadcast shape ``B`` of the advanced indices.  Numpy's layout
is obtained by moving the ``B`` block to where numpy puts it and reshaping to
drop integer axes and insert ``None`` axes (:meth:`Selection.result_from_canon`).

Semantics
---------
Integers (negative too), slices (any step), ``Ellipsis``, ``None``, integer
arrays and boolean arrays follow numpy, including several advanced indices
broadcast together and numpy's rule placing the broadcast dimensions first
when advanced indices (integers count as advanced when an array index is
present) are not adjacent.  Not supported, with an ``IndexError``: boolean
scalars (``A[True]``) and non-integer arrays.
"""

import math
import operator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import ArrayIndexError, ArrayShapeError, ArrayValueError


@dataclass(frozen=True)
class AxisSlice:
    """Items ``start, start + step, ...`` (``count`` of them) along one axis."""

    start: int
    step: int
    count: int
    keep: bool  # False for an integer index: the axis is dropped from the result


@dataclass(frozen=True, eq=False)
class Selection:
    """A parsed numpy index over an array of ``shape``.

    Attributes
    ----------
    shape : tuple of int
        Shape of the indexed array.
    basic_axes : tuple of int
        Axes selected by :class:`AxisSlice` objects (``basic``), in order.
    basic : tuple of AxisSlice
    adv_axes : tuple of int
        Axes selected by advanced indices, in increasing order.
    adv_coords : tuple of numpy.ndarray
        Non-negative in-bounds coordinates, one array of shape ``adv_shape``
        per advanced axis.
    adv_shape : tuple of int
        Broadcast shape ``B`` of the advanced indices.
    adv_position : int
        Where numpy puts the ``B`` dimensions among the basic ones.
    result_shape : tuple of int
        Shape numpy gives to ``array[key]``.
    scalar : bool
        True when numpy returns a scalar rather than a 0-d array.
    """

    shape: tuple
    basic_axes: tuple
    basic: tuple
    adv_axes: tuple
    adv_coords: tuple
    adv_shape: tuple
    adv_position: int
    result_shape: tuple
    scalar: bool

    @property
    def canon_shape(self):
        """Shape of the canonical layout: basic counts, then ``adv_shape``."""
        return tuple(s.count for s in self.basic) + self.adv_shape

    @property
    def size(self):
        """Number of selected items."""
        return math.prod(self.result_shape)

    def _perm(self):
        nb, nk = len(self.basic), len(self.adv_shape)
        basic = list(range(nb))
        adv = list(range(nb, nb + nk))
        p = self.adv_position
        return tuple(basic[:p] + adv + basic[p:])

    def result_from_canon(self, canon):
        """Return the canonical array ``canon`` in numpy's result layout (a view)."""
        return canon.transpose(self._perm()).reshape(self.result_shape)

    def canon_from_value(self, value):
        """Return ``value`` (broadcastable to the result) in canonical layout.

        Raises
        ------
        ValueError
            When ``value`` does not broadcast to ``result_shape``.
        """
        value = strip_leading_ones(value, len(self.result_shape))
        try:
            value = np.broadcast_to(value, self.result_shape)
        except ValueError:
            raise ArrayShapeError(
                f"could not broadcast value of shape {value.shape} into a selection "
                f"of shape {self.result_shape}") from None
        perm = self._perm()
        transposed = tuple(self.canon_shape[i] for i in perm)
        return value.reshape(transposed).transpose(np.argsort(perm))


class ChunkProjection(NamedTuple):
    """The part of a selection that falls in one chunk.

    Attributes
    ----------
    key : tuple of int
        Chunk grid index.
    chunk_basic : tuple of slice
        In-chunk slices for the selection's basic axes.
    chunk_adv : tuple of numpy.ndarray
        In-chunk coordinates (1-d, equal lengths) for the advanced axes.
    out : tuple
        Index into the canonical array: slices for basic dimensions, then
        coordinate arrays into the ``adv_shape`` dimensions.
    full : bool
        True when the projection covers every in-bounds item of the chunk.
    """

    key: tuple
    chunk_basic: tuple
    chunk_adv: tuple
    out: tuple
    full: bool


def strip_leading_ones(value, ndim):
    """Drop leading length-1 axes of ``value`` beyond ``ndim`` (numpy setitem)."""
    while value.ndim > ndim and value.shape[0] == 1:
        value = value[0]
    return value


# --------------------------------------------------------------------------
# parsing


def _is_bool_scalar(item):
    return isinstance(item, (bool, np.bool_)) or (
        isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype == bool)


def _as_index_array(item):
    """Return ``item`` as an integer or boolean array, or None if it is not one."""
    if isinstance(item, np.ndarray):
        array = item
    elif isinstance(item, (list, tuple)):
        array = np.asarray(item) if len(item) else np.zeros(0, dtype=np.intp)
    else:
        return None
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    raise ArrayIndexError(
        f"arrays used as indices must be of integer or boolean type, not {array.dtype}")


def _classify(item):
    """Return ``(kind, payload)`` for one element of an index tuple."""
    if item is Ellipsis:
        return "ellipsis", None
    if item is None:
        return "newaxis", None
    if isinstance(item, slice):
        return "slice", item
    if _is_bool_scalar(item):
        raise ArrayIndexError("boolean scalar indices (A[True]) are not supported")
    array = _as_index_array(item)
    if array is not None:
        if array.dtype == bool:
            return "mask", array
        if array.ndim == 0:
            return "int", int(array)
        return "array", array.astype(np.intp, copy=False)
    try:
        return "int", operator.index(item)
    except TypeError:
        raise ArrayIndexError(
            "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
            f"and integer or boolean arrays are valid indices, not {item!r}") from None


def _axes_used(kind, payload):
    if kind in ("slice", "int", "array"):
        return 1
    if kind == "mask":
        return payload.ndim
    return 0


def _expand(key, ndim):
    """Return the list of ``(kind, payload)`` with the Ellipsis expanded."""
    items = [_classify(k) for k in (key if isinstance(key, tuple) else (key,))]
    used = sum(_axes_used(kind, p) for kind, p in items)
    ellipses = [i for i, (kind, _) in enumerate(items) if kind == "ellipsis"]
    if len(ellipses) > 1:
        raise ArrayIndexError("an index can only have a single ellipsis ('...')")
    if used > ndim:
        raise ArrayIndexError(
            f"too many indices for array: array is {ndim}-dimensional, "
            f"but {used} were indexed")
    fill = [("slice", slice(None))] * (ndim - used)
    if ellipses:
        i = ellipses[0]
        # numpy: an Ellipsis separates advanced indices even when it expands to nothing
        return items[:i] + [("separator", None)] + fill + items[i + 1:], True
    return items + fill, False


def _check_int(i, n, axis):
    if not -n <= i < n:
        raise ArrayIndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    return i + n if i < 0 else i


def _check_array(array, n, axis, checked=True):
    if checked and array.size:
        bad = (array < -n) | (array >= n)
        if bad.any():
            value = int(array[bad].flat[0])
            raise ArrayIndexError(
                f"index {value} is out of bounds for axis {axis} with size {n}")
    return np.where(array < 0, array + n, array)


def _mask_arrays(mask, shape, axis):
    """Return the integer arrays equivalent to a boolean ``mask`` at ``axis``."""
    for k, (m, n) in enumerate(zip(mask.shape, shape[axis:axis + mask.ndim])):
        if m != n and m != 0:  # numpy lets an empty mask axis match any size
            raise ArrayIndexError(
                f"boolean index did not match indexed array along axis {axis + k}; "
                f"size of axis is {n} but size of corresponding boolean axis is {m}")
    return [c.astype(np.intp) for c in np.nonzero(mask)]


def _slice_of(item, n):
    try:
        start, stop, step = item.indices(n)
    except ValueError as exc:
        raise ArrayValueError(str(exc)) from None
    return AxisSlice(start, step, len(range(start, stop, step)), True)


def _broadcast_shape(arrays):
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = " ".join(str(a.shape) for a in arrays)
        raise ArrayIndexError(
            "shape mismatch: indexing arrays could not be broadcast together "
            f"with shapes {shapes}") from None


def _broadcast(arrays):
    shape = _broadcast_shape(arrays)
    return shape, tuple(np.broadcast_to(a, shape) for a in arrays)


def _parse_item(kind, payload, shape, axis, advanced):
    """Return ``(AxisSlice, None)`` for a basic item, ``(None, arrays)`` otherwise."""
    n = shape[axis]
    if kind == "slice":
        return _slice_of(payload, n), None
    if kind == "int" and not advanced:
        return AxisSlice(_check_int(payload, n, axis), 1, 1, False), None
    if kind == "int":  # with array indices, numpy treats integers as advanced
        return None, [np.asarray(_check_int(payload, n, axis), dtype=np.intp)]
    if kind == "array":  # bounds checked once broadcast (numpy: not when empty)
        return None, [payload]
    return None, _mask_arrays(payload, shape, axis)


def parse_selection(key, shape):
    """Parse a numpy index ``key`` over an array of ``shape``.

    Raises
    ------
    IndexError
        For out-of-bounds or malformed indices, naming the index and axis size.
    """
    items, has_ellipsis = _expand(key, len(shape))
    advanced = any(kind in ("array", "mask") for kind, _ in items)
    basic_axes, basic, adv_axes, adv_arrays = [], [], [], []
    dims = []  # result dims in key order: ('basic', keep) / ('new',) / ('adv',) ...
    adv_runs, axis = [], 0  # adv_runs: basic dims before each run of advanced items
    for kind, payload in items:
        if kind in ("newaxis", "separator"):
            dims.append(("new",) if kind == "newaxis" else ("separator",))
            continue
        s, arrays = _parse_item(kind, payload, shape, axis, advanced)
        if s is not None:
            basic_axes.append(axis)
            basic.append(s)
            dims.append(("basic", s.keep))
            axis += 1
            continue
        adv_axes.extend(range(axis, axis + len(arrays)))
        adv_arrays.extend(arrays)
        axis += len(arrays)
        if dims[-1:] != [("adv",)]:
            adv_runs.append(sum(1 for d in dims if d[0] == "basic"))
            dims.append(("adv",))
    if adv_arrays:
        adv_shape = _broadcast_shape(adv_arrays)
        checked = math.prod(adv_shape) > 0
        adv_arrays = [_check_array(a, shape[ax], ax, checked)
                      for a, ax in zip(adv_arrays, adv_axes)]
    adv_shape, adv_coords = _broadcast(adv_arrays) if adv_arrays else ((), ())
    adjacent = len(adv_runs) == 1
    result_shape = _result_shape(dims, basic, adv_shape, adjacent)
    return Selection(
        shape=tuple(shape), basic_axes=tuple(basic_axes), basic=tuple(basic),
        adv_axes=tuple(adv_axes), adv_coords=adv_coords, adv_shape=tuple(adv_shape),
        adv_position=adv_runs[0] if adjacent else 0, result_shape=result_shape,
        scalar=result_shape == () and not has_ellipsis)


def _result_shape(dims, basic, adv_shape, adjacent):
    """Return numpy's result shape from the key-ordered dimension list."""
    out = [] if adjacent else list(adv_shape)
    counts = iter(basic)
    for d in dims:
        if d[0] == "new":
            out.append(1)
        elif d[0] == "basic":
            s = next(counts)
            if s.keep:
                out.append(s.count)
        elif d[0] == "adv" and adjacent:
            out.extend(adv_shape)
    return tuple(out)


# --------------------------------------------------------------------------
# projection onto chunks


def _axis_run(s, chunk, n, j, k_lo, k_hi):
    """Return ``(j, in-chunk slice, out slice, full)`` for items k_lo..k_hi-1."""
    first = s.start + k_lo * s.step - j * chunk
    last = first + (k_hi - k_lo - 1) * s.step
    stop = last + (1 if s.step > 0 else -1)
    in_chunk = slice(first, None if stop < 0 else stop, s.step)
    extent = min(chunk, n - j * chunk)
    full = abs(s.step) == 1 and k_hi - k_lo == extent
    return j, in_chunk, slice(k_lo, k_hi), full


def _k_range(s, chunk, j):
    """Return the item numbers ``[k_lo, k_hi)`` of slice ``s`` in chunk ``j``."""
    lo_idx, hi_idx = j * chunk, (j + 1) * chunk  # [lo_idx, hi_idx)
    a = abs(s.step)
    if s.step > 0:
        k_lo = -(-(lo_idx - s.start) // a)
        k_hi = -(-(hi_idx - s.start) // a)
    else:
        k_lo = -(-(s.start - hi_idx + 1) // a)
        k_hi = (s.start - lo_idx) // a + 1
    return max(0, k_lo), min(s.count, k_hi)


def axis_projections(s, chunk, n):
    """Yield ``(j, in-chunk slice, out slice, full)`` for one basic axis.

    The work is proportional to the number of chunks holding selected items,
    never to the number of chunks of the axis.
    """
    if s.count == 0:
        return
    if abs(s.step) >= chunk:  # every item in its own chunk
        for k in range(s.count):
            idx = s.start + k * s.step
            yield _axis_run(s, chunk, n, idx // chunk, k, k + 1)
        return
    j_first = s.start // chunk
    j_last = (s.start + (s.count - 1) * s.step) // chunk
    step = 1 if s.step > 0 else -1
    for j in range(j_first, j_last + step, step):
        k_lo, k_hi = _k_range(s, chunk, j)
        if k_lo < k_hi:
            yield _axis_run(s, chunk, n, j, k_lo, k_hi)


def _adv_groups(sel, chunks):
    """Return the advanced items grouped by chunk.

    A list of ``(chunk indices along adv_axes, in-chunk coords, out coords)``.
    """
    if not sel.adv_axes:
        return [((), (), ())]
    size = math.prod(sel.adv_shape)
    if size == 0:
        return []
    flat = [np.ascontiguousarray(c).reshape(-1) for c in sel.adv_coords]
    sizes = [chunks[ax] for ax in sel.adv_axes]
    ids = np.stack([f // c for f, c in zip(flat, sizes)], axis=1)
    unique, inverse = np.unique(ids, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
    groups = []
    for g, cid in enumerate(unique.tolist()):
        positions = order[bounds[g]:bounds[g + 1]]
        inner = tuple(f[positions] - j * c for f, j, c in zip(flat, cid, sizes))
        outer = np.unravel_index(positions, sel.adv_shape)
        groups.append((tuple(cid), inner, outer))
    return groups


def _adv_full(sel, chunks, cid, inner):
    """True when advanced coordinates cover every in-bounds item of the chunk."""
    extents = [min(chunks[ax], sel.shape[ax] - j * chunks[ax])
               for ax, j in zip(sel.adv_axes, cid)]
    if len(inner[0]) < math.prod(extents):
        return False
    linear = np.ravel_multi_index(inner, extents)
    return len(np.unique(linear)) == math.prod(extents)


def _basic_product(sel, chunks):
    """Lazily yield tuples of per-basic-axis projections (cartesian product)."""
    def rec(i):
        if i == len(sel.basic):
            yield ()
            return
        ax = sel.basic_axes[i]
        for run in axis_projections(sel.basic[i], chunks[ax], sel.shape[ax]):
            for rest in rec(i + 1):
                yield (run,) + rest
    return rec(0)


def iter_projections(sel, chunks):
    """Yield one :class:`ChunkProjection` per chunk touched by ``sel``.

    Each chunk is yielded at most once.  Pure: no I/O.
    """
    groups = _adv_groups(sel, chunks)
    if not groups:
        return
    adv_full = [not sel.adv_axes or _adv_full(sel, chunks, cid, inner)
                for cid, inner, _ in groups]
    ndim = len(sel.shape)
    for runs in _basic_product(sel, chunks):
        basic_full = all(r[3] for r in runs)
        for (cid, inner, outer), afull in zip(groups, adv_full):
            key = [0] * ndim
            for ax, r in zip(sel.basic_axes, runs):
                key[ax] = r[0]
            for ax, j in zip(sel.adv_axes, cid):
                key[ax] = j
            yield ChunkProjection(
                key=tuple(key), chunk_basic=tuple(r[1] for r in runs),
                chunk_adv=inner, out=tuple(r[2] for r in runs) + tuple(outer),
                full=basic_full and afull)


def chunk_view(sel, chunk_array, proj):
    """Return the basic-sliced view of ``chunk_array``, advanced axes last."""
    index = [slice(None)] * chunk_array.ndim
    for ax, s in zip(sel.basic_axes, proj.chunk_basic):
        index[ax] = s
    view = chunk_array[tuple(index) + (Ellipsis,)]  # a view, also for 0-d chunks
    if sel.adv_axes:
        view = view.transpose(sel.basic_axes + sel.adv_axes)
    return view


def read_projection(sel, chunk_array, proj):
    """Return the items of ``chunk_array`` selected by ``proj`` (canonical order)."""
    view = chunk_view(sel, chunk_array, proj)
    if sel.adv_axes:
        return view[(slice(None),) * len(sel.basic) + proj.chunk_adv]
    return view


def write_projection(sel, chunk_array, proj, block):
    """Assign ``block`` (canonical order) to the items of ``proj`` in the chunk."""
    view = chunk_view(sel, chunk_array, proj)
    if sel.adv_axes:
        view[(slice(None),) * len(sel.basic) + proj.chunk_adv] = block
    else:
        view[...] = block


def count_projections(sel, chunks):
    """Return the number of chunks ``sel`` touches (for tests and planning)."""
    return sum(1 for _ in iter_projections(sel, chunks))


__all__ = [
    "AxisSlice", "ChunkProjection", "Selection", "axis_projections", "chunk_view",
    "count_projections", "iter_projections", "parse_selection", "read_projection",
    "strip_leading_ones", "write_projection",
]

