"""``np.concatenate``, ``np.stack``, ``np.vstack`` and ``np.hstack`` of neoarrays (and
numpy arrays) into a new neoarray (or ``out=``), chunk by chunk.

Each operand is a *piece* of the result: its items go to a span along the joining
axis (``np.stack`` and the 1-D operands of ``vstack`` add that axis, one slice each).
The result's chunks are those of the first neoarray operand (with 1 on a new axis),
its fill value that operand's fill value.

* A neoarray operand whose fill value is the result's and whose chunks line up with
  the result's (same chunk shape, its span starting on a chunk boundary and ending on
  one or at the result's end) copies only its stored chunks, each to one chunk of the
  result: the work is proportional to the stored data.
* The other chunks of the result that an operand reaches (its stored chunks when its
  fill value is the result's, all its chunks otherwise, and all of a numpy operand)
  are made region by region: each result chunk is filled from the operands that
  cover it, one chunk in memory at a time.
* ``axis=None`` flattens the operands (C order) into a 1-D result, in flat ranges of
  at most half of ``config.memory_bytes_max``.

With ``out=`` a neoarray, its chunks that no operand writes are dropped (they hold
the fill value); with ``out=`` a numpy array, every item is written.
"""
import itertools
import math

import numpy as np

from . import core, elementwise, layout, ordering, outputs
from .errors import ArrayShapeError, ArrayValueError


class _Piece:
    """One operand of a join: ``source`` (neoarray or numpy) whose items go to
    ``[start, start + length)`` along ``axis`` of the result; ``new_axis``: the source
    lacks that axis (its items are one slice of the result)."""

    def __init__(self, source, axis, start, new_axis):
        self.source, self.axis, self.start, self.new_axis = source, axis, start, new_axis
        self.length = 1 if new_axis else source.shape[axis]
        self.neo = isinstance(source, core.ChunkedArray)

    @property
    def stop(self):
        return self.start + self.length

    def out_chunks(self):
        """The source's chunks in result dimensions."""
        chunks = list(self.source.chunks)
        if self.new_axis:
            chunks.insert(self.axis, 1)
        return tuple(chunks)

    def out_key(self, key, out_chunks):
        """The result chunk of source chunk ``key`` (aligned pieces only)."""
        key = list(key)
        if self.new_axis:
            key.insert(self.axis, self.start)
        else:
            key[self.axis] += self.start // out_chunks[self.axis]
        return tuple(key)

    def out_region(self, region):
        """A region of the source (source dimensions) in result coordinates."""
        region = list(region)
        if self.new_axis:
            region.insert(self.axis, slice(self.start, self.stop))
        else:
            r = region[self.axis]
            region[self.axis] = slice(r.start + self.start, r.stop + self.start)
        return tuple(region)

    def read(self, region):
        """The items of the result ``region`` (inside this piece's span), as numpy."""
        local = list(region)
        if self.new_axis:
            del local[self.axis]
        else:
            r = local[self.axis]
            local[self.axis] = slice(r.start - self.start, r.stop - self.start)
        block = np.asarray(self.source[tuple(local)])
        return np.expand_dims(block, self.axis) if self.new_axis else block

    def same_fill(self, out):
        if not self.neo:
            return False
        with np.errstate(all="ignore"):     # a fill cast as the out array casts its items
            return layout.fill_bytes(self.source.fill_value, out.dtype) == out._fill

    def aligned(self, out):
        """Whether the piece's chunks are whole chunks of ``out`` (one each)."""
        c = out.chunks[self.axis]
        return (self.neo and self.out_chunks() == out.chunks and self.start % c == 0
                and (self.stop % c == 0 or self.stop == out.shape[self.axis]))

    def tiles(self, out):
        """Keys of ``out``'s chunks this piece writes: those overlapping its stored chunks
        when its fill value is ``out``'s, else every chunk of its span."""
        if self.same_fill(out):
            for key in self.source.chunk_keys():
                region = self.out_region(layout.chunk_region(key, self.source.shape, self.source.chunks))
                yield from _keys_overlapping(region, out.chunks)
        else:
            span = [slice(0, n) for n in out.shape]
            span[self.axis] = slice(self.start, self.stop)
            yield from _keys_overlapping(span, out.chunks)


def _keys_overlapping(region, chunks):
    ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, chunks)]
    return itertools.product(*ranges)


# ---------------------------------------------------------------------- checks

def _operands(arrays):
    return [a if isinstance(a, core.ChunkedArray) else np.asarray(a) for a in arrays]


def _result_dtype(operands, dtype, casting, out):
    """numpy's result dtype of the join (its errors for a cast ``casting`` refuses)."""
    probe = np.concatenate([np.zeros(1, a.dtype) for a in operands], dtype=dtype, casting=casting)
    if out is not None:
        np.copyto(np.empty(1, out.dtype), probe[:1], casting=casting)
    return probe.dtype


def _check_shapes(operands, axis, what):
    if not operands:
        raise ArrayValueError(f"need at least one array to {what}")
    first = operands[0].shape
    for i, a in enumerate(operands[1:], 1):
        if len(a.shape) != len(first):
            raise ArrayShapeError(
                f"all the input arrays must have the same number of dimensions to {what}, but the "
                f"array at index 0 has {len(first)} dimension(s) and the array at index {i} has "
                f"{len(a.shape)} dimension(s)")
        for ax, (n, m) in enumerate(zip(first, a.shape)):
            if n != m and ax != axis:
                raise ArrayShapeError(
                    f"all the input array dimensions except for the concatenation axis must match "
                    f"exactly, but along dimension {ax}, the array at index 0 has size {n} and the "
                    f"array at index {i} has size {m}")


# ---------------------------------------------------------------------- the join

def _join(pieces, shape, dtype, out):
    """Write ``pieces`` into ``out`` or a new array of ``shape``; return it."""
    neo = [p for p in pieces if p.neo]
    if out is None:
        first = neo[0]
        with np.errstate(all="ignore"):
            fill = np.asarray(first.source.fill_value).astype(dtype)
        out = outputs.prepare_out(None, [p.source for p in neo], shape, dtype, fill,
                                  chunks=first.out_chunks(), what="the joined arrays")
    else:
        out = outputs.prepare_out(out, (), shape, dtype, what="the joined arrays")
    if isinstance(out, core.ndarray):
        _join_into_neo(pieces, out)
    else:
        for piece in pieces:
            _copy_piece(piece, out)
    return out


def _join_into_neo(pieces, out):
    written, todo = set(), set()
    for piece in pieces:
        if piece.aligned(out) and piece.same_fill(out):
            for key, block in piece.source._map_stored(lambda _key, block: block):
                target = piece.out_key(key, out.chunks)
                out._put_block(target, np.expand_dims(block, piece.axis) if piece.new_axis else block)
                written.add(target)
        else:
            todo.update(piece.tiles(out))
    for key in sorted(todo):
        out._put_block(key, _assemble(pieces, out, key))
        written.add(key)
    for key in [k for k in out.chunk_keys() if k not in written]:
        out._drop_chunk(key, out._tree[key])


def _assemble(pieces, out, key):
    """The in-bounds block of ``out``'s chunk ``key``, from the pieces covering it."""
    region = layout.chunk_region(key, out.shape, out.chunks)
    block = np.full(tuple(r.stop - r.start for r in region), out.fill_value, out.dtype)
    r = region[pieces[0].axis]
    for piece in pieces:
        low, high = max(r.start, piece.start), min(r.stop, piece.stop)
        if low >= high:
            continue
        part = list(region)
        part[piece.axis] = slice(low, high)
        inside = [slice(None)] * len(region)
        inside[piece.axis] = slice(low - r.start, high - r.start)
        block[tuple(inside)] = piece.read(part)
    return block


def _copy_piece(piece, out):
    """Every item of ``piece`` into the numpy array ``out``, chunk by chunk."""
    source = piece.source
    if not piece.neo:
        out[piece.out_region(tuple(slice(0, n) for n in source.shape))] = (
            np.expand_dims(source, piece.axis) if piece.new_axis else source)
        return
    for key in elementwise.all_keys(source.shape, source.chunks):
        region = layout.chunk_region(key, source.shape, source.chunks)
        block = np.asarray(source[region])
        out[piece.out_region(region)] = np.expand_dims(block, piece.axis) if piece.new_axis else block


def _join_flat(operands, dtype, out):
    """``axis=None``: the operands flattened (C order) one after the other, 1-D."""
    total = sum(math.prod(a.shape) for a in operands)
    neo = [a for a in operands if isinstance(a, core.ChunkedArray)]
    if out is None:
        with np.errstate(all="ignore"):
            fill = np.asarray(neo[0].fill_value).astype(dtype)
        out = outputs.prepare_out(None, neo, (total,), dtype, fill, what="the joined arrays")
    else:
        out = outputs.prepare_out(out, (), (total,), dtype, what="the joined arrays")
    step = max(1, ordering.buffer_bytes() // max(1, np.dtype(dtype).itemsize))
    if isinstance(out, core.ndarray):
        step = max(out.chunks[0], step // out.chunks[0] * out.chunks[0])
    position = 0
    for a in operands:
        size = math.prod(a.shape)
        for start in range(0, size, step):
            stop = min(size, start + step)
            part = ordering.read_flat(a, start, stop) if isinstance(a, core.ChunkedArray) else \
                a.reshape(-1)[start:stop]
            out[position + start:position + stop] = part
        position += size
    return out


# ---------------------------------------------------------------------- entry points

def concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    """``np.concatenate`` chunk by chunk (see the module doc)."""
    operands = _operands(arrays)
    dtype = _result_dtype(operands, dtype, casting, out)
    if axis is None:
        return _join_flat(operands, dtype, out)
    if any(a.ndim == 0 for a in operands):
        raise ArrayShapeError("zero-dimensional arrays cannot be concatenated")
    (axis,) = layout.normalize_axes(axis, operands[0].ndim)
    _check_shapes(operands, axis, "concatenate")
    pieces, start = [], 0
    for a in operands:
        pieces.append(_Piece(a, axis, start, False))
        start += a.shape[axis]
    shape = operands[0].shape[:axis] + (start,) + operands[0].shape[axis + 1:]
    return _join(pieces, shape, dtype, out)


def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """``np.stack`` chunk by chunk: each operand one slice along the new ``axis``."""
    operands = _operands(arrays)
    dtype = _result_dtype(operands, dtype, casting, out)
    if not operands:
        raise ArrayValueError("need at least one array to stack")
    if any(a.shape != operands[0].shape for a in operands):
        raise ArrayShapeError("all input arrays must have the same shape")
    (axis,) = layout.normalize_axes(axis, operands[0].ndim + 1)
    pieces = [_Piece(a, axis, i, True) for i, a in enumerate(operands)]
    shape = operands[0].shape[:axis] + (len(operands),) + operands[0].shape[axis:]
    return _join(pieces, shape, dtype, out)


def vstack(tup, *, dtype=None, casting="same_kind"):
    """``np.vstack``: 1-D operands become rows, the others are joined along axis 0."""
    operands = _operands(tup)
    if not operands or any(a.ndim == 0 for a in operands):
        return NotImplemented
    dtype = _result_dtype(operands, dtype, casting, None)
    rows = [(1,) + a.shape if a.ndim == 1 else a.shape for a in operands]
    _check_shapes([_Shape(r) for r in rows], 0, "vstack")
    pieces, start = [], 0
    for a, r in zip(operands, rows):
        pieces.append(_Piece(a, 0, start, a.ndim == 1))
        start += r[0]
    return _join(pieces, (start,) + rows[0][1:], dtype, None)


def hstack(tup, *, dtype=None, casting="same_kind"):
    """``np.hstack``: joined along axis 1, or axis 0 for 1-D operands."""
    operands = _operands(tup)
    if not operands or any(a.ndim == 0 for a in operands):
        return NotImplemented
    return concatenate(operands, axis=0 if operands[0].ndim == 1 else 1, dtype=dtype, casting=casting)


class _Shape:
    """A shape standing for an operand in :func:`_check_shapes`."""

    def __init__(self, shape):
        self.shape = shape


#: numpy functions run here (see :mod:`.ufuncs`)
ARRAY_FUNCTIONS = {np.concatenate: concatenate, np.stack: stack, np.vstack: vstack,
                   np.hstack: hstack}
