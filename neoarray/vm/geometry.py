"""Where the items of a mapped window lie in its pages, and which chunks fill them: pure
arithmetic, no I/O.

A window is a box ``[start, stop)`` of an array, laid out in memory as one numpy array of
shape ``stop - start`` in the array's order (C or F).  Its address space is cut into
*units* of ``unit_bytes`` (whole pages): one fault loads one unit.

* **Slab windows** (:attr:`Window.slab`): each chunk is one contiguous run of the window's
  bytes (1-D arrays, or chunks spanning every axis but the outer one, C's first or F's
  last, with the window covering those axes whole and starting on a chunk boundary of the
  outer one) and the chunk's bytes are whole pages.  A unit is one chunk: its bytes go
  straight into the pages (:meth:`Window.slab_key`).
* **Other windows**: a unit is a power-of-two number of pages near the chunk size; its
  items are a flat run of the window, cut into at most ``2 * ndim - 1`` boxes
  (:func:`flat_boxes`), each read from the array through its chunk-batched reads.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from ..array.errors import ArrayIndexError, ArrayValueError

UNIT_BYTES_MAX = 8 << 20


def parse_window(region, shape):
    """``(start, stop, dropped axes)`` of ``region``: None (everything), or a slice, an int
    or a tuple of them (unit steps), one per leading axis."""
    if region is None:
        region = ()
    if not isinstance(region, tuple):
        region = (region,)
    if len(region) > len(shape):
        raise ArrayIndexError(f"a window of {len(region)} axes for an array of shape {shape}")
    start, stop, dropped = [], [], []
    for axis, (item, n) in enumerate(itertools.zip_longest(region, shape)):
        if item is None:
            item = slice(None)
        if isinstance(item, slice):
            lo, hi, step = item.indices(n)
            if step != 1:
                raise ArrayValueError(
                    f"a mapped window takes slices of step 1 (axis {axis} has step {step}); "
                    "map the enclosing window and slice the numpy array it gives")
            start.append(lo)
            stop.append(max(lo, hi))
        elif isinstance(item, int) or hasattr(item, "__index__"):
            index = int(item)
            if not -n <= index < n:
                raise ArrayIndexError(f"index {index} is out of bounds for axis {axis} of size {n}")
            index %= n
            start.append(index)
            stop.append(index + 1)
            dropped.append(axis)
        else:
            raise ArrayValueError(
                f"a mapped window is given by slices and integers, not {type(item).__name__}")
    return tuple(start), tuple(stop), tuple(dropped)


def flat_boxes(shape, lo, hi) -> Iterator[tuple[tuple[int, int], ...]]:
    """The boxes, in C order, covering items ``[lo, hi)`` of a C-ordered array of
    ``shape``; each box is a flat run of items, in order: ``((lo, hi) per axis)``."""
    if lo >= hi:
        return
    if len(shape) == 1:
        yield ((lo, hi),)
        return
    inner = math.prod(shape[1:])
    a0, r0 = divmod(lo, inner)
    a1, r1 = divmod(hi, inner)
    if a0 == a1:
        for sub in flat_boxes(shape[1:], r0, r1):
            yield ((a0, a0 + 1),) + sub
        return
    if r0:
        for sub in flat_boxes(shape[1:], r0, inner):
            yield ((a0, a0 + 1),) + sub
        a0 += 1
    if a1 > a0:
        yield ((a0, a1),) + tuple((0, n) for n in shape[1:])
    if r1:
        for sub in flat_boxes(shape[1:], 0, r1):
            yield ((a1, a1 + 1),) + sub


class Window:
    """The page geometry of one window (see the module docstring)."""

    def __init__(self, shape, chunks, order, itemsize, start, stop, page_bytes):
        self.array_shape, self.chunks, self.order = tuple(shape), tuple(chunks), order
        self.itemsize, self.start, self.stop = itemsize, tuple(start), tuple(stop)
        self.shape = tuple(b - a for a, b in zip(start, stop))
        self.size = math.prod(self.shape)
        self.nbytes = self.size * itemsize
        chunk_bytes = math.prod(chunks) * itemsize
        self.slab = self._is_slab(chunk_bytes, page_bytes)
        if self.slab:
            self.unit_bytes = chunk_bytes
        else:
            unit = page_bytes
            while unit < min(chunk_bytes, UNIT_BYTES_MAX):
                unit *= 2
            self.unit_bytes = unit
        self.units = max(1, -(-self.nbytes // self.unit_bytes))
        self.region_bytes = self.units * self.unit_bytes

    def _outer(self):
        """The axis chunks are slabs of (C: first, F: last), and the others."""
        n = len(self.shape)
        outer = 0 if self.order == "C" else n - 1
        return outer, [ax for ax in range(n) if ax != outer]

    def _is_slab(self, chunk_bytes, page_bytes):
        if not self.shape or chunk_bytes % page_bytes:
            return False
        outer, others = self._outer()
        if any(self.chunks[ax] != self.array_shape[ax] or self.start[ax] != 0
               or self.stop[ax] != self.array_shape[ax] for ax in others):
            return False
        return self.start[outer] % self.chunks[outer] == 0

    def slab_key(self, unit):
        """The grid index of the chunk that is ``unit`` (slab windows)."""
        cached = self.__dict__.get("_slab_key_parts")
        if cached is None:
            outer, _ = self._outer()
            cached = self._slab_key_parts = (
                (0,) * outer, (0,) * (len(self.shape) - outer - 1),
                self.start[outer] // self.chunks[outer])
        head, tail, first = cached
        return head + (first + unit,) + tail

    def unit_items(self, unit):
        """``(first item, end item, byte offset of the unit in the first item)``: the
        items (flat, in the window's order) with bytes in ``unit``."""
        lo_byte = unit * self.unit_bytes
        hi_byte = min(lo_byte + self.unit_bytes, self.nbytes)
        first = lo_byte // self.itemsize
        end = -(-hi_byte // self.itemsize)
        return first, end, lo_byte - first * self.itemsize

    def boxes(self, first, end):
        """The absolute boxes (tuples of ``(lo, hi)`` per axis of the array) of the
        window's items ``[first, end)``, each a flat run, in order."""
        if self.order == "C":
            for box in flat_boxes(self.shape, first, end):
                yield tuple((a + s, b + s) for (a, b), s in zip(box, self.start))
        else:
            for box in flat_boxes(self.shape[::-1], first, end):
                yield tuple((a + s, b + s) for (a, b), s in zip(box[::-1], self.start))

    def chunk_keys(self, box):
        """The grid indices of the chunks a box touches."""
        return itertools.product(*(range(a // c, (b - 1) // c + 1)
                                   for (a, b), c in zip(box, self.chunks)))
