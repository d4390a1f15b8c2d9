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

from . import core, elementwise, layout, outputs
from .config import config
from .errors import ArrayShapeError, ArrayTooLargeError

DENSE_BLOCK_BYTES = 16 << 20     # blocks of a numpy operand (no chunks to follow)
TILES_MAX = 4_000_000            # result tiles one product may compute


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
    fill = _fill_product(a, b, k, result_dtype) if out is None and left.chunks and row_step == left.chunks[0] \
        and not left.vector else None
    if fill is None and -(-n // row_step) * -(-m // col_step) > TILES_MAX:
        raise ArrayTooLargeError(f"matmul of shapes {tuple(a.shape)} and {tuple(b.shape)} would compute "
                                 f"{-(-n // row_step) * -(-m // col_step)} tiles, more than {TILES_MAX}: "
                                 f"a left operand holding only its fill value in most rows gives a sparse "
                                 f"result when that row's product is one value (a zero fill and a finite right operand)")
    result = outputs.prepare_out(out, (a, b), shape, result_dtype, fill_value=fill,
                                 chunks=_result_chunks(shape, a, b, row_step, col_step, itemsize),
                                 what="the product")
    inner = _blocks(k, inner_step)
    rows_to_do = _blocks(n, row_step) if fill is None else _stored_rows(a, n, row_step)
    for rows in rows_to_do:
        for cols in _blocks(m, col_step):
            index = _kept(a, b, rows, cols)
            result[index] = _tile(left, right, rows, cols, inner, result_dtype).reshape(
                [s.stop - s.start for s in index])
    return result


def _fill_product(a, b, k: int, dtype):
    """The value of every row of ``a @ b`` where ``a`` (a 2-D neoarray) holds only its fill
    value, when that row is one value (then only its stored row blocks are computed and
    the result's fill value is this one, so an exabyte-shaped sparse ``A @ x`` costs its
    stored chunks); None otherwise."""
    if not isinstance(a, core.ChunkedArray) or a.ndim != 2:
        return None
    if isinstance(b, core.ChunkedArray):        # not read whole: zeros times a finite operand
        return np.zeros((), dtype)[()] if not np.any(np.asarray(a.fill_value)) and elementwise.all_finite(b) else None
    row = np.matmul(np.full((1, k), a.fill_value, dtype=a.dtype), np.asarray(b).reshape(k, -1), dtype=dtype)
    first = row.flat[0]
    same = (row == first) | (np.isnan(row) & np.isnan(first)) if dtype.kind in "fc" else row == first
    return first if bool(np.all(same)) else None


def _stored_rows(a, n: int, row_step: int):
    """The blocks of ``row_step`` rows where ``a`` stores chunks."""
    starts = sorted({key[0] * row_step for key in a.chunk_keys()})
    return [slice(start, min(start + row_step, n)) for start in starts]


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
