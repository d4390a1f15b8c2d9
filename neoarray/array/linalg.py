"""Matrix products of 1-D and 2-D operands, block by block, in bounded memory.

``A @ B``, ``np.matmul``, ``np.dot`` and ``ndarray.dot`` on neoarrays (either operand
may be a numpy array) follow numpy's rules for 1-D and 2-D operands: a 1-D left
operand is a row, a 1-D right one a column, and that axis is dropped from the result.
Operands of more dimensions, and other generalized ufuncs, return ``NotImplemented``,
so numpy raises its ``TypeError`` naming the operation.

The product is computed one result tile at a time: a tile covers a block of rows of the
left operand and a block of columns of the right one (their chunks when they are
neoarrays); the contracted axis is walked block by block (the left operand's column
chunks, else the right operand's row chunks) and the partial products summed into the
tile, which is then written to the result.  Memory holds one block of each operand
and one tile, whatever the sizes.  A right operand that is a neoarray is read once
per block of rows of the left one.

The result is a new ``neoarray.ndarray`` (as for elementwise ufuncs: ``outputs``), or
``out=``; a 1-D by 1-D product is a numpy scalar.
"""
import math

import numpy as np

from . import core, layout, outputs
from .config import config
from .errors import ArrayShapeError

DENSE_BLOCK_BYTES = 16 << 20     # blocks of a numpy operand (no chunks to follow)


def _is_operand(x) -> bool:
    return isinstance(x, (core.ChunkedArray, np.ndarray)) and x.ndim in (1, 2)


def supported(a, b) -> bool:
    """Whether ``a @ b`` is computed here (both 1-D or 2-D, one at least a neoarray)."""
    return (_is_operand(a) and _is_operand(b)
            and (isinstance(a, core.ChunkedArray) or isinstance(b, core.ChunkedArray)))


def _blocks(extent: int, step: int):
    return [slice(i, min(i + step, extent)) for i in range(0, extent, step)]


def _step(x, axis: int, other_extent: int, itemsize: int) -> int:
    """Block length along ``axis`` of operand ``x`` (2-D view): its chunks, or a block
    of about ``DENSE_BLOCK_BYTES`` for a numpy operand."""
    if isinstance(x, core.ChunkedArray):
        return x.chunks[axis]
    return max(1, DENSE_BLOCK_BYTES // max(1, other_extent * itemsize))


class _Matrix:
    """An operand seen as 2-D: a 1-D left operand as a row, a 1-D right one as a column."""

    def __init__(self, x, left: bool):
        self.x, self.vector = x, x.ndim == 1
        self.shape = ((1, x.shape[0]) if left else (x.shape[0], 1)) if self.vector else tuple(x.shape)
        self.left = left
        if isinstance(x, core.ChunkedArray) and self.vector:
            self.chunks = (1, x.chunks[0]) if left else (x.chunks[0], 1)
        elif isinstance(x, core.ChunkedArray):
            self.chunks = x.chunks
        else:
            self.chunks = None

    def block(self, rows: slice, cols: slice) -> np.ndarray:
        if not self.vector:
            return np.asarray(self.x[rows, cols])
        part = np.asarray(self.x[cols if self.left else rows])
        return part[np.newaxis, :] if self.left else part[:, np.newaxis]


def matmul(a, b, out=None, dtype=None):
    """``a @ b`` for 1-D and 2-D operands, block by block (see the module docstring)."""
    if not supported(a, b):
        return NotImplemented
    left, right = _Matrix(a, True), _Matrix(b, False)
    (n, k), (k2, m) = left.shape, right.shape
    if k != k2:
        raise ArrayShapeError(f"matmul: the contracted axes differ: operand shapes {tuple(a.shape)} and "
                              f"{tuple(b.shape)} (left {k} columns, right {k2} rows)")
    result_dtype = np.dtype(dtype) if dtype is not None else np.result_type(a.dtype, b.dtype)
    shape = _kept(a, b, n, m)
    itemsize = result_dtype.itemsize
    row_step = max(1, min(n, left.chunks[0] if left.chunks else _step(a, 0, k, itemsize)))
    col_step = max(1, min(m, right.chunks[1] if right.chunks else _step(b, 1, k, itemsize)))
    inner_step = max(1, min(k, left.chunks[1] if left.chunks else right.chunks[0]))
    core.check_memory((row_step * inner_step + inner_step * col_step + 2 * row_step * col_step) * itemsize,
                      f"a {row_step}x{inner_step} by {inner_step}x{col_step} block of matmul")
    if not shape:       # 1-D by 1-D: a scalar
        return _tile(left, right, slice(0, 1), slice(0, 1), _blocks(k, inner_step), result_dtype)[0, 0]
    result = outputs.prepare_out(out, (a, b), shape, result_dtype,
                                 chunks=_result_chunks(shape, a, b, row_step, col_step, itemsize),
                                 what="the product")
    inner = _blocks(k, inner_step)
    for rows in _blocks(n, row_step):
        for cols in _blocks(m, col_step):
            index = _kept(a, b, rows, cols)
            result[index] = _tile(left, right, rows, cols, inner, result_dtype).reshape(
                [s.stop - s.start for s in index])
    return result


def _tile(left, right, rows, cols, inner, dtype):
    acc = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=dtype)
    for k in inner:
        acc += np.matmul(left.block(rows, k), right.block(k, cols), dtype=dtype)
    return acc


def _kept(a, b, row, col):
    """``(row, col)`` (extents, slices or steps) without the axis a 1-D operand drops
    from the result: its row for a 1-D left operand, its column for a 1-D right one."""
    return tuple(x for x, drop in ((row, a.ndim == 1), (col, b.ndim == 1)) if not drop)


def _result_chunks(shape, a, b, row_step, col_step, itemsize):
    """Tiles as chunks, unless a tile is larger than ``chunk_bytes_max``."""
    chunks = _kept(a, b, row_step, col_step)
    if math.prod(chunks) * itemsize <= config.chunk_bytes_max:
        return chunks
    return layout.default_chunks(shape, itemsize, "C", config.chunk_bytes_target)


def dot(a, b, out=None):
    """``np.dot`` where it equals ``matmul`` (1-D and 2-D operands); else NotImplemented."""
    return matmul(a, b, out=out)
