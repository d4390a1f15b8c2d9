"""The ndarray methods numpy users reach for, chunk by chunk.

Each result is computed from the *stored* chunks only, so it costs work in proportion
to the data written, not to the shape (an exabyte-shaped sparse array transposes in
milliseconds), with one chunk in memory at a time:

* elementwise maps (``astype``, ``clip``, ``round``) are lazy expressions
  (:mod:`.lazy`): the fill value is mapped like the items, so unwritten chunks stay
  unwritten; ``copy`` stores the array's values in a new persistent array;
* axis moves (``T``, ``transpose``, ``swapaxes``), size-1 axes (``squeeze``,
  ``expand_dims``) and ``reshape``, ``ravel`` and ``flatten`` are lazy views
  (:mod:`.views`): they permute, add or drop axes of the chunk grid, and read their
  base when read; a ``reshape`` that the chunks do not allow is computed in memory
  (``ArrayTooLargeError`` naming the bytes when it does not fit ``memory_bytes_max``),
  as are ``tolist`` and ``item`` of the whole array;
* ``fill`` sets the fill value and drops every chunk (in place, as numpy's);
* ``nonzero`` gathers the indices chunk by chunk (a non-zero fill value would make
  every unwritten item count: refused unless the whole array fits in memory).

``copy`` is a new array (``outputs``: added to the connection of the input).
"""
import functools
import math

import numpy as np

from . import core, elementwise, layout, lazy, views
from .errors import ArrayShapeError, ArrayValueError


def _map(array, func):
    """The lazy expression of ``func(block)`` for each block (see :mod:`.lazy`): computed
    from the stored blocks only, ``func`` of the fill value for the rest; floating-point
    warnings off."""
    def quiet(block):
        with np.errstate(all="ignore"):
            return func(block)
    return lazy.lazyarray(quiet, (array,))


def _same(block):
    return block


def copy(array):
    """An independent copy, a new persistent array (``outputs``): numpy's ``copy``."""
    return elementwise.apply(_same, (array,))


def astype(array, dtype, copy=True):
    dtype = np.dtype(dtype)
    if dtype == array.dtype and not copy:
        return array
    return _map(array, lambda block: block.astype(dtype))


def clip(array, a_min=None, a_max=None):
    if a_min is None and a_max is None:
        raise ArrayValueError("clip: give a_min, a_max or both")
    return _map(array, lambda block: np.clip(block, a_min, a_max))


def round_(array, decimals=0):
    return _map(array, lambda block: np.round(block, decimals))


def is_field_key(key) -> bool:
    """Whether ``key`` names fields of a structured array (``A['x']``, ``A[['x', 'y']]``)."""
    return isinstance(key, str) or (isinstance(key, list) and bool(key)
                                    and all(isinstance(k, str) for k in key))


def field(array, key):
    """``array[name]`` or ``array[[names]]`` of a structured array: a lazy expression
    of the field(s), as numpy's view of them (read-only)."""
    names = [key] if isinstance(key, str) else key
    missing = [n for n in names if n not in (array.dtype.names or ())]
    if missing:
        raise ArrayValueError(f"no field of name {missing[0]!r} in dtype {array.dtype}")
    return lazy.lazyarray(functools.partial(_take_field, key=key), (array,))


def _take_field(block, key):
    return block[key]


def compare(a, b, ufunc, op):
    """``a == b`` / ``a != b``: numpy's ufunc, or for structured items numpy's own
    comparison operator (field by field), lazily in both cases."""
    structured = [x for x in (a, b) if getattr(x, "dtype", None) is not None and x.dtype.names]
    if not structured:
        return ufunc(a, b)
    if not elementwise.is_operand(b):
        b = np.asarray(b, dtype=structured[0].dtype)
    return lazy.lazyarray(op, (a, b))


# ---------------------------------------------------------------------- axes
# lazy views of the array (neoarray.array.views)

def transpose(array, axes=None):
    """The array with its axes permuted (reversed by default): a lazy view."""
    ndim = array.ndim
    if axes is None or axes == ():
        perm = list(range(ndim))[::-1]
    else:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        perm = list(layout.normalize_axes(axes, ndim, "transpose", allow_duplicate=True))
        if sorted(perm) != list(range(ndim)):
            raise ArrayValueError(f"transpose: axes {tuple(axes)} are not a permutation of the "
                                  f"{ndim} axes")
    return views.transpose(array, perm)


def swapaxes(array, axis1, axis2):
    a, b = layout.normalize_axes((axis1, axis2), array.ndim, "swapaxes", allow_duplicate=True)
    perm = list(range(array.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(array, perm)


# ---------------------------------------------------------------------- shapes

def _new_shape(array, shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    try:
        shape = [int(n) for n in shape]
    except TypeError:
        raise ArrayShapeError(f"reshape: a shape is integers, not {shape!r}") from None
    unknown = [i for i, n in enumerate(shape) if n == -1]
    if len(unknown) > 1 or any(n < -1 for n in shape):
        raise ArrayShapeError(f"reshape: {tuple(shape)} is not a shape (one -1 at most, no other negative)")
    known = math.prod(n for n in shape if n != -1)
    if unknown:
        if known == 0 or array.size % known:
            raise ArrayShapeError(f"cannot reshape an array of size {array.size} into shape {tuple(shape)}")
        shape[unknown[0]] = array.size // known
    if math.prod(shape) != array.size:
        raise ArrayShapeError(f"cannot reshape an array of size {array.size} into shape {tuple(shape)}")
    return tuple(shape)


def reshape(array, shape, order="C"):
    """A view when the chunk layout allows, else computed in memory (see
    :func:`.views.reshape`)."""
    if order not in ("C", "c"):
        raise ArrayValueError(f"reshape: order={order!r} is not supported, only 'C'")
    return views.reshape(array, _new_shape(array, shape))


def squeeze(array, axis=None):
    if axis is None:
        axes = [i for i, n in enumerate(array.shape) if n == 1]
    else:
        axes = layout.normalize_axes(axis, array.ndim, "squeeze", allow_duplicate=True)
        wide = [a for a in axes if array.shape[a] != 1]
        if wide:
            raise ArrayShapeError(f"squeeze: axis {wide[0]} has size {array.shape[wide[0]]}, not 1")
    return views.squeeze(array, set(axes))


def expand_dims(array, axis):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = array.ndim + len(axes)
    axes = layout.normalize_axes(axes, ndim, "expand_dims", allow_duplicate=True)
    if len(set(axes)) != len(axes):
        raise ArrayValueError(f"expand_dims: repeated axis in {tuple(axis)}")
    return views.expand_dims(array, set(axes))


# ---------------------------------------------------------------------- values

def fill(array, value):
    """Every item becomes ``value``: the fill value changes and every chunk goes."""
    new = layout.fill_bytes(value, array.dtype)
    for key in list(array._tree.keys()):
        array._drop_chunk(key, array._tree[key])
    array._fill = new


def item(array, *args):
    if not args:
        if array.size != 1:
            raise ArrayValueError(f"item(): the array has {array.size} items, not one; give an index")
        index = (0,) * array.ndim
    elif len(args) == 1 and isinstance(args[0], (int, np.integer)):
        flat = int(args[0])
        if not -array.size <= flat < array.size:
            raise IndexError(f"index {flat} is out of bounds for an array of size {array.size}")
        index = np.unravel_index(flat % array.size, array.shape)
    else:
        index = args[0] if len(args) == 1 else args
    return np.asarray(array[tuple(int(i) for i in index)]).item()


def tolist(array):
    core.check_memory(array.nbytes, f"tolist of an array of shape {array.shape}")
    return np.asarray(array).tolist()


def nonzero(array):
    """Indices of the non-zero items, per axis, in C order, chunk by chunk."""
    if np.asarray(array.fill_value).astype(bool):
        core.check_memory(array.nbytes, "nonzero of an array whose fill value is not zero")
        return np.nonzero(np.asarray(array))
    found = []
    for key, idx in array._map_stored(lambda _key, block: np.nonzero(block)):
        origin = [k * c for k, c in zip(key, array.chunks)]
        found.append([i + o for i, o in zip(idx, origin)])
    count = sum(len(f[0]) for f in found) if found and array.ndim else 0
    core.check_memory(count * max(1, array.ndim) * 8, f"nonzero: {count} indices")
    if not found:
        return tuple(np.zeros(0, dtype=np.intp) for _ in range(array.ndim))
    columns = [np.concatenate([f[axis] for f in found]).astype(np.intp) for axis in range(array.ndim)]
    order = np.lexsort(columns[::-1])
    return tuple(c[order] for c in columns)
