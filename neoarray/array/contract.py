"""Tensor contractions over neoarrays, block by block: ``np.einsum``, ``np.tensordot``,
``np.inner``, ``np.vdot``.

Every subscript letter of ``einsum`` is walked in blocks (the chunks of a neoarray
operand that has it, else blocks of about ``DENSE_BLOCK_BYTES`` of a numpy operand);
for each combination of blocks numpy's ``einsum`` contracts the operands' blocks and
the partial result is added into the output's block.  Memory holds one block of each
operand and the output, which is a numpy array checked against
``config.memory_bytes_max`` (``ArrayTooLargeError`` names its bytes).  The patterns
of a matrix product (``ij,jk->ik``, ``ij,j->i``, ``i,ij->j``) go to :mod:`.linalg`,
whose result is a neoarray tiled in bounded memory however large; the product of two
vectors (``i,i->``, also ``np.dot``/``@`` of 1-D operands: :func:`dot1d`) is walked here,
so that sparse vectors stay cheap.

Sparse operands stay cheap: when a neoarray operand's fill value is zero, only the
combinations where its block holds stored chunks can add anything, so the walk starts
from its stored chunks (the operand with the fewest of them), provided every other
operand is finite (checked first, chunk by chunk: infinity or NaN times zero is not
zero).  A sum of products over
an exabyte-shaped sparse vector visits its stored chunks only.

Subscripts with an ellipsis, ``optimize=`` paths and ``einsum``'s ``order``/``casting``
are left to numpy, in memory within the bound.
"""
import itertools
import math
import string

import numpy as np

from . import core, elementwise, layout, linalg
from .errors import ArrayShapeError, ArrayTooLargeError, ArrayValueError

DENSE_BLOCK_BYTES = linalg.DENSE_BLOCK_BYTES
BLOCKS_VISITED_MAX = 4_000_000       # block combinations one contraction may walk
MATMUL_PATTERNS = {"ij,jk->ik", "ij,j->i", "i,ij->j"}


def _parse(subscripts: str, operands):
    """``(input subscripts, output subscript)``, numpy's implicit output (the letters
    that appear once, sorted) when there is no ``->``; None for an ellipsis."""
    if "..." in subscripts:
        return None
    text = subscripts.replace(" ", "")
    inputs, arrow, output = text.partition("->")
    subs = inputs.split(",")
    if not arrow:
        letters = "".join(subs)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(subs) != len(operands):
        raise ArrayValueError(f"einsum: {len(subs)} operand subscripts for {len(operands)} operands")
    for sub, op in zip(subs, operands):
        if len(sub) != op.ndim or any(c not in string.ascii_letters for c in sub):
            raise ArrayValueError(f"einsum: subscripts {sub!r} do not fit an operand of shape {op.shape}")
    if len(set(output)) != len(output) or any(c not in "".join(subs) for c in output):
        raise ArrayValueError(f"einsum: output subscripts {output!r} must be distinct letters of the inputs")
    return subs, output


def _sizes(subs, operands) -> dict:
    sizes = {}
    for sub, op in zip(subs, operands):
        for letter, n in zip(sub, op.shape):
            if sizes.setdefault(letter, n) != n:
                raise ArrayShapeError(f"einsum: subscript {letter!r} has sizes {sizes[letter]} and {n} "
                                      f"in operands of shapes {[tuple(o.shape) for o in operands]}")
    return sizes


def _driver(subs, operands):
    """``(i, keys)``: the zero-fill neoarray operand ``i`` with the fewest stored chunks
    (no repeated letter), and the keys of its chunk grid to visit, or None (every block
    combination is visited).  Its stored chunks, and where another inexact operand
    stores chunks (infinity or NaN times the zeros of the unstored region is not zero)
    the driver's chunks covering them; None when such an operand's values cannot be
    placed on the driver's grid and are not all finite."""
    best = None
    for i, (sub, op) in enumerate(zip(subs, operands)):
        if (_chunked(op) and len(set(sub)) == len(sub)
                and not np.any(np.asarray(op.fill_value))):
            keys = list(op.chunk_keys())
            if best is None or len(keys) < len(best[1]):
                best = (i, keys)
    if best is None:
        return None
    i, keys = best
    own, driver = subs[i], operands[i]
    wanted = set(keys)
    for j, (sub, op) in enumerate(zip(subs, operands)):
        if j == i or op.dtype.kind not in "fc":
            continue
        source = op.array if isinstance(op, _Conjugate) else op
        placeable = (isinstance(source, core.ChunkedArray) and set(sub) <= set(own) and len(set(sub)) == len(sub)
                     and np.all(np.isfinite(np.asarray(source.fill_value))))
        if not placeable:
            if not elementwise.all_finite(source):
                return None
            continue
        grid = layout.chunk_grid(driver.shape, driver.chunks)
        for key in source.chunk_keys():
            region = dict(zip(sub, layout.chunk_region(key, source.shape, source.chunks)))
            spans = []
            for letter, c, g in zip(own, driver.chunks, grid):
                r = region.get(letter)
                spans.append(range(g) if r is None else range(r.start // c, (r.stop - 1) // c + 1))
            if math.prod(map(len, spans)) > BLOCKS_VISITED_MAX:
                return None
            wanted.update(itertools.product(*spans))
    return i, sorted(wanted)


def _steps(subs, operands, sizes, itemsize, driver) -> dict:
    """Block length per letter: the driver's chunks, else the smallest chunk of a
    neoarray operand along it, else a dense block."""
    steps = {}
    if driver is not None:
        i, _ = driver
        steps.update(zip(subs[i], operands[i].chunks))
    for sub, op in zip(subs, operands):
        if _chunked(op):
            for letter, c in zip(sub, op.chunks):
                if letter not in steps or (driver is None or letter not in subs[driver[0]]):
                    steps[letter] = min(steps.get(letter, c), c)
    for letter, n in sizes.items():
        if letter not in steps:
            others = math.prod(v for k, v in sizes.items() if k != letter) or 1
            steps[letter] = max(1, DENSE_BLOCK_BYTES // max(1, others * itemsize))
        steps[letter] = max(1, min(steps[letter], max(n, 1)))
    return steps


def _ranges(n: int, step: int):
    return [slice(i, min(i + step, n)) for i in range(0, n, step)] or [slice(0, 0)]


def _visits(sizes, steps, driver, subs) -> int:
    """How many block combinations the walk visits."""
    free = [c for c in sizes if driver is None or c not in subs[driver[0]]]
    count = math.prod(-(-max(sizes[c], 1) // steps[c]) for c in free)
    return count * (1 if driver is None else len(driver[1]))


def _combinations(subs, operands, sizes, steps, driver):
    """Dicts ``letter -> slice`` to visit."""
    letters = sorted(sizes)
    if driver is None:
        yield from (dict(zip(letters, combo))
                    for combo in itertools.product(*(_ranges(sizes[c], steps[c]) for c in letters)))
        return
    i, keys = driver
    own = subs[i]
    others = [c for c in letters if c not in own]
    op = operands[i]
    for key in keys:
        region = layout.chunk_region(key, op.shape, op.chunks)
        fixed = dict(zip(own, region))
        for combo in itertools.product(*(_ranges(sizes[c], steps[c]) for c in others)):
            yield {**fixed, **dict(zip(others, combo))}


def einsum(subscripts, *operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    """``np.einsum`` with at least one neoarray operand (see the module docstring)."""
    if not isinstance(subscripts, str) or order != "K" or casting != "safe" or optimize is not False:
        return NotImplemented
    if not any(isinstance(op, core.ChunkedArray) for op in operands):
        return NotImplemented
    operands = [op if isinstance(op, (core.ChunkedArray, np.ndarray)) else np.asarray(op) for op in operands]
    parsed = _parse(subscripts, operands)
    if parsed is None:
        return NotImplemented
    subs, output = parsed
    pattern = ",".join(subs) + "->" + output
    if pattern in MATMUL_PATTERNS and len(operands) == 2 and linalg.supported(*operands):
        _sizes(subs, operands)
        return linalg.matmul(*operands, out=out, dtype=dtype)
    return _contract(subs, output, operands, dtype, out, subscripts)


def _chunked(op) -> bool:
    return isinstance(op, core.ChunkedArray) or (isinstance(op, _Conjugate) and isinstance(op.array, core.ChunkedArray))


def _contract(subs, output, operands, dtype, out, what):
    """The block walk of the module docstring; a numpy result (or ``out``)."""
    sizes = _sizes(subs, operands)
    result_dtype = np.dtype(dtype) if dtype is not None else np.result_type(*[op.dtype for op in operands])
    shape = tuple(sizes[c] for c in output)
    driver = _driver(subs, operands)
    steps = _steps(subs, operands, sizes, result_dtype.itemsize, driver)
    block_bytes = sum(math.prod(steps[c] for c in sub) * op.dtype.itemsize for sub, op in zip(subs, operands))
    core.check_memory(math.prod(shape) * result_dtype.itemsize + block_bytes,
                      f"einsum {what!r}: its output of shape {shape} and one block of each operand")
    visits = _visits(sizes, steps, driver, subs)
    if visits > BLOCKS_VISITED_MAX:
        raise ArrayTooLargeError(f"einsum {what!r} would visit {visits} blocks of its operands, more than "
                                 f"{BLOCKS_VISITED_MAX}: its operands are too large or too dense for a walk "
                                 f"block by block (use chunks of more items, or a matrix product pattern)")
    acc = np.zeros(shape, dtype=result_dtype)
    if 0 not in sizes.values():
        expression = ",".join(subs) + "->" + output
        for ranges in _combinations(subs, operands, sizes, steps, driver):
            blocks = [np.asarray(op[tuple(ranges[c] for c in sub)]) for sub, op in zip(subs, operands)]
            acc[tuple(ranges[c] for c in output)] += np.einsum(expression, *blocks, dtype=result_dtype)
    if out is not None:
        if tuple(out.shape) != shape:
            raise ArrayShapeError(f"einsum: out= of shape {tuple(out.shape)} for a result of shape {shape}")
        out[...] = acc
        return out
    return acc[()] if not shape else acc


def dot1d(a, b, out=None, dtype=None):
    """``a @ b`` of two vectors: their sum of products (``NotImplemented`` otherwise)."""
    if np.ndim(a) != 1 or np.ndim(b) != 1 or out is not None:
        return NotImplemented
    return einsum("i,i->", a, b, dtype=dtype)


def tensordot(a, b, axes=2):
    """``np.tensordot``: ``einsum`` over the named axes (numpy's rules for ``axes``)."""
    if not (isinstance(a, core.ChunkedArray) or isinstance(b, core.ChunkedArray)):
        return NotImplemented
    a = a if isinstance(a, (core.ChunkedArray, np.ndarray)) else np.asarray(a)
    b = b if isinstance(b, (core.ChunkedArray, np.ndarray)) else np.asarray(b)
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        if n < 0 or n > min(a.ndim, b.ndim):
            raise ArrayValueError(f"tensordot: axes={n} for operands of {a.ndim} and {b.ndim} dimensions")
        a_axes, b_axes = list(range(a.ndim - n, a.ndim)), list(range(n))
    else:
        a_axes, b_axes = (list(x) if isinstance(x, (list, tuple)) else [x] for x in axes)
    if len(a_axes) != len(b_axes):
        raise ArrayShapeError(f"tensordot: {len(a_axes)} axes of the first operand for {len(b_axes)} of the second")
    a_axes = list(layout.normalize_axes(tuple(a_axes), a.ndim, "tensordot"))
    b_axes = list(layout.normalize_axes(tuple(b_axes), b.ndim, "tensordot"))
    letters = iter(string.ascii_letters)
    a_sub = [next(letters) for _ in range(a.ndim)]
    b_sub = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(a_axes, b_axes):
        b_sub[j] = a_sub[i]
    output = [c for k, c in enumerate(a_sub) if k not in a_axes] + [c for k, c in enumerate(b_sub) if k not in b_axes]
    return einsum("".join(a_sub) + "," + "".join(b_sub) + "->" + "".join(output), a, b)


def inner(a, b):
    """``np.inner``: a sum of products over the last axes."""
    if not (isinstance(a, core.ChunkedArray) or isinstance(b, core.ChunkedArray)) or np.ndim(a) == 0 or np.ndim(b) == 0:
        return NotImplemented
    return tensordot(a, b, axes=([-1], [-1]))


def vdot(a, b):
    """``np.vdot`` of operands of one shape: the conjugated first operand's items times
    the second's, summed chunk by chunk (flattening both the same way)."""
    if not (isinstance(a, core.ChunkedArray) or isinstance(b, core.ChunkedArray)) or np.shape(a) != np.shape(b):
        return NotImplemented
    a = a if isinstance(a, (core.ChunkedArray, np.ndarray)) else np.asarray(a)
    b = b if isinstance(b, (core.ChunkedArray, np.ndarray)) else np.asarray(b)
    letters = string.ascii_letters[:a.ndim]
    first = _Conjugate(a) if a.dtype.kind == "c" else a
    return _contract([letters, letters], "", [first, b], None, None, "vdot")


class _Conjugate:
    """An operand read conjugated, block by block (for ``vdot``)."""

    def __init__(self, array):
        self.array = array
        self.shape, self.ndim, self.dtype = tuple(array.shape), array.ndim, array.dtype
        if isinstance(array, core.ChunkedArray):
            self.chunks, self.fill_value = array.chunks, np.conj(array.fill_value)
            self.chunk_keys = array.chunk_keys

    def __getitem__(self, index):
        return np.conj(np.asarray(self.array[index]))
