"""``map_blocks``: a user's function applied chunk by chunk, written to an array.

``fn(*blocks) -> block`` receives, for each chunk of the output, the matching
in-bounds block of every input (numpy arrays, read-only; unwritten parts hold the
fill value) and returns the output block: same shape, a dtype that casts safely
(``same_kind``) to the output's.  A Numba ``@njit`` function works as it is.

Work is proportional to the stored data when it can be: ``fn`` is first applied
once to blocks of fill values; when its answer is uniform, a new output takes
that value as its fill value (an ``out=`` array must already have it), and chunks
where every input is unwritten are neither computed nor stored.  Otherwise every
chunk of the output is computed.

:func:`map_blocks` writes inside the caller's transaction (commit to keep it,
abort to drop it): the blocks are computed in parallel on the compute threads
(``neoarray.array.config.compute_threads_max``; so ``fn`` must be thread-safe and
must not touch persistent objects) and written here, a bounded batch at a time.
:func:`prepare_map` makes the same a job (:func:`neoarray.jobs.run`) whose pieces
commit one by one, on any executor but the storage nodes.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import transaction

from ..array import core, fetch, layout, outputs, plans
from ..array.config import config
from ..array.errors import (
    ArrayCastError,
    ArrayDtypeError,
    ArrayShapeError,
    ArrayValueError,
)
from . import spec as jobs_spec
from .spec import JobError, JobSpec, Piece, PieceResult

if TYPE_CHECKING:
    import ZODB


def _check_inputs(arrays, stored=False):
    """The inputs' shape; ``stored``: each a stored array (a job's workers load them),
    else lazy expressions too (read here chunk by chunk)."""
    if not arrays:
        raise ArrayValueError("map_blocks needs at least one input array")
    for i, a in enumerate(arrays):
        if stored and isinstance(a, core.ChunkedArray) and not isinstance(a, core.ndarray):
            raise ArrayDtypeError(f"map_blocks job input {i} is a lazy expression, which "
                                  "workers cannot load: store it first (expr.persist()), commit")
        if not isinstance(a, core.ndarray if stored else core.ChunkedArray):
            raise ArrayDtypeError(f"map_blocks input {i} is a {type(a).__name__}, "
                                 f"not a neoarray.ndarray")
    shape = arrays[0].shape
    for i, a in enumerate(arrays[1:], 1):
        if a.shape != shape:
            raise ArrayShapeError(f"map_blocks inputs must have one shape: input 0 is "
                                  f"{shape}, input {i} is {a.shape}")
    return shape


def _fill_blocks(arrays, extent):
    return [np.full(extent, a.fill_value, dtype=a.dtype) for a in arrays]


def _apply(fn, blocks, extent, dtype, key):
    """``fn(*blocks)`` checked: the output block of chunk ``key``, cast to ``dtype``."""
    for b in blocks:
        b.flags.writeable = False
    result = np.asarray(fn(*blocks))
    if result.shape != tuple(extent):
        raise ArrayShapeError(f"map_blocks function returned shape {result.shape} for chunk "
                              f"{key}, expected {tuple(extent)}")
    if dtype is not None and not np.can_cast(result.dtype, dtype, "same_kind"):
        raise ArrayCastError(f"map_blocks function returned {result.dtype} for chunk {key}; "
                             f"it does not cast to the output's {dtype} (same_kind)")
    return result


def _uniform(block):
    """The single value of ``block`` if all its items are equal (bytewise), else None."""
    flat = np.ascontiguousarray(block).reshape(-1)
    if flat.size == 0:
        return None
    items = flat.view(np.uint8).reshape(flat.size, flat.itemsize)
    return flat[0] if bool((items == items[0]).all()) else None


def probe_fill(fn: Callable, arrays: Sequence[core.ChunkedArray], chunks: tuple[int, ...],
               dtype: Any) -> tuple[np.dtype, np.ndarray | None]:
    """``(dtype, fill value or None)``: ``fn`` applied once to a chunk of fill values."""
    extent = tuple(min(c, n) for c, n in zip(chunks, arrays[0].shape))
    with np.errstate(all="ignore"):        # log(0) of a fill value is a fill of -inf, not a warning
        result = _apply(fn, _fill_blocks(arrays, extent), extent, None, "of fill values")
    dtype = np.dtype(dtype) if dtype is not None else result.dtype
    if not np.can_cast(result.dtype, dtype, "same_kind"):
        raise ArrayCastError(f"map_blocks function returns {result.dtype}; it does not cast "
                             f"to dtype {dtype} (same_kind)")
    return dtype, _uniform(result.astype(dtype, copy=False))


def new_output(arrays: Sequence[core.ChunkedArray], dtype: np.dtype, fill: np.ndarray | None,
               chunks: tuple[int, ...] | None = None) -> core.ndarray:
    """A new array shaped like the first input, for the results of ``map_blocks``."""
    first = arrays[0]
    return core.ndarray(first.shape, dtype=dtype, order=first.order,
                        chunks=chunks or first.chunks,
                        fill_value=None if fill is None else fill.item(), codec=first.codec)


def _sparse(out, fill) -> bool:
    return fill is not None and np.asarray(fill, dtype=out.dtype).tobytes() == out._fill


def output_keys(arrays: Sequence[core.ChunkedArray], out: core.ndarray, sparse: bool) -> list[int] | None:
    """Flat indices (output grid, sorted) of the chunks to compute, or None: all of them."""
    if not sparse:
        return None
    grid = layout.chunk_grid(out.shape, out.chunks)
    keys = set()
    for a in arrays:
        if a.chunks == out.chunks:
            keys.update(plans.flatten(k, grid) for k in a.chunk_keys())
            continue
        for k in a.chunk_keys():           # output chunks overlapping a stored input chunk
            region = layout.chunk_region(k, a.shape, a.chunks)
            ranges = [range(r.start // c, (r.stop - 1) // c + 1) for r, c in zip(region, out.chunks)]
            keys.update(plans.flatten(j, grid) for j in itertools.product(*ranges))
    keys.update(plans.flatten(k, grid) for k in out.chunk_keys())   # stale chunks are rewritten
    return sorted(keys)


def _input_blocks(arrays, out, keys):
    """For each key of ``keys`` (output grid), the list of input blocks."""
    per_input = []
    for a in arrays:
        if a.chunks == out.chunks:
            per_input.append(a._chunk_blocks(keys))
        else:
            per_input.append(a._read(layout.chunk_region(k, out.shape, out.chunks)) for k in keys)
    return zip(*per_input)


def compute_keys(fn: Callable, arrays: Sequence[core.ChunkedArray], out: core.ndarray,
                 keys: Iterable[tuple[int, ...]]) -> int:
    """Compute and write the output chunks ``keys`` (grid keys), a bounded batch at a time."""
    nbytes = math.prod(out.chunks) * (out.itemsize + sum(a.itemsize for a in arrays))
    pool = fetch._compute_executor() if config.compute_threads_max > 1 else None
    written = 0
    for batch in fetch.iter_batches(keys, lambda _: nbytes, config.fetch_limit_bytes()):
        extents = [layout.chunk_extent(k, out.shape, out.chunks) for k in batch]
        blocks = list(_input_blocks(arrays, out, batch))
        jobs = [(k, e, b) for k, e, b in zip(batch, extents, blocks)]
        if pool is not None and len(jobs) > 1:
            results = list(pool.map(lambda j: _apply(fn, list(j[2]), j[1], out.dtype, j[0]), jobs))
        else:
            results = [_apply(fn, list(b), e, out.dtype, k) for k, e, b in jobs]
        for key, result in zip(batch, results):
            out._put_block(key, result.astype(out.dtype, copy=False))
            written += 1
    return written


def _all_keys(out, flat=None):
    grid = layout.chunk_grid(out.shape, out.chunks)
    if flat is None:
        return itertools.product(*(range(g) for g in grid))
    return (plans.unflatten(f, grid) for f in flat)


def map_blocks(fn: Callable[..., Any], *arrays: core.ChunkedArray, out: core.ndarray | None = None,
               dtype: Any = None, chunks: tuple[int, ...] | None = None) -> core.ndarray:
    """Apply ``fn`` to the matching blocks of ``arrays``; return the output array.

    Parameters
    ----------
    fn : callable
        ``fn(block_of_first, block_of_second, ...) -> block`` of the same shape (a
        Numba or numpy function); applied once to blocks of fill values to find the
        output's fill value, so that unwritten regions are not computed.
    *arrays : neoarray.ndarray
        Inputs of one shape.
    out : neoarray.ndarray, optional
        An existing array of the inputs' shape (its chunks define the blocks).
    dtype : data-type, optional
        Of a new output (default: ``fn``'s result dtype).
    chunks : tuple of int, optional
        Of a new output (default: the first input's).

    Returns
    -------
    neoarray.ndarray
        ``out``, or a new array with the first input's order, added to its connection;
        written in the current transaction (see the module docstring).

    Raises
    ------
    ArrayDtypeError
        ``fn`` is not callable, or ``out`` is not a neoarray array.
    ArrayShapeError
        The inputs or ``out`` differ in shape, or ``fn`` returns another shape.
    ArrayCastError
        ``fn``'s result does not cast to the output's dtype (``same_kind``).
    """
    if not callable(fn):
        raise ArrayDtypeError(f"map_blocks needs a function, not {type(fn).__name__}")
    shape = _check_inputs(arrays)
    if out is not None:
        if not isinstance(out, core.ndarray):
            raise ArrayDtypeError(f"out must be a neoarray.ndarray, not {type(out).__name__}")
        if out.shape != shape:
            raise ArrayShapeError(f"out has shape {out.shape}, the inputs {shape}")
        _, fill = probe_fill(fn, arrays, out.chunks, out.dtype)
    else:
        block_chunks = chunks or arrays[0].chunks
        dtype, fill = probe_fill(fn, arrays, block_chunks, dtype)
        out = new_output(arrays, dtype, fill, block_chunks)
        jar = next((a._p_jar for a in outputs.stored_arrays(arrays) if a._p_jar is not None),
                   None)
        if jar is not None:
            jar.add(out)
    if out.size == 0:
        return out
    flat = output_keys(arrays, out, _sparse(out, fill))
    compute_keys(fn, arrays, out, _all_keys(out, flat))
    return out


# ------------------------------------------------------------------------ as a job

def prepare_map(fn_name: str, arrays: Sequence[core.ndarray], out: core.ndarray, *,
                piece_bytes: int | None = None, colour: str | None = None) -> tuple[JobSpec, list[Piece]]:
    """``(spec, pieces)`` of a ``map_blocks`` job writing into the committed ``out``.

    ``fn_name`` is ``"module:function"`` (workers import it).  The inputs are read
    as of the snapshot their connection sees; ``out`` must be committed already.
    """
    fn = jobs_spec.resolve_function(fn_name)
    shape = _check_inputs(arrays, stored=True)
    if not isinstance(out, core.ndarray) or out._p_oid is None:
        raise JobError("a map_blocks job writes into a committed neoarray.ndarray (out)")
    if out.shape != shape:
        raise ArrayShapeError(f"out has shape {out.shape}, the inputs {shape}")
    before = jobs_spec.snapshot_before(arrays[0])
    _, fill = probe_fill(fn, arrays, out.chunks, out.dtype)
    sparse = _sparse(out, fill)
    spec = JobSpec("map_blocks", fn_name, tuple(jobs_spec.oid_hex(a) for a in arrays), before,
                   out=jobs_spec.oid_hex(out), params={"sparse": sparse}, colour=colour)
    per_piece = jobs_spec.piece_chunks_for(out, piece_bytes)
    flat = output_keys(arrays, out, sparse)
    if flat is None:
        pieces = jobs_spec.dense_pieces(layout.chunk_grid(out.shape, out.chunks), per_piece)
    else:
        pieces = jobs_spec.pieces_of_keys(flat, per_piece, explicit=True)
    return spec, pieces


def run_map_piece(db: ZODB.DB, spec: JobSpec, piece: Piece) -> PieceResult:
    """Compute one piece of a ``map_blocks`` job and commit its chunks."""
    fn = jobs_spec.resolve_function(spec.op)
    tm = transaction.TransactionManager()
    with jobs_spec.snapshot(db, spec) as conn:
        arrays = [jobs_spec.load_array(conn, oid) for oid in spec.inputs]
        wconn = db.open(tm)
        try:
            out = jobs_spec.load_array(wconn, spec.out)
            if piece.keys is not None:
                keys = list(_all_keys(out, piece.keys))
            else:
                keys = list(_all_keys(out, range(piece.start, piece.stop)))
            written = compute_keys(fn, arrays, out, keys)
            tm.get().note(jobs_spec.piece_note(spec, piece.index))
            tm.commit()
        except BaseException:
            jobs_spec.abort_quietly(tm)
            raise
        finally:
            wconn.close()
    nbytes = written * math.prod(out.chunks) * sum(a.itemsize for a in arrays)
    return PieceResult(None, written, nbytes)


def map_finisher(db: ZODB.DB, spec: JobSpec) -> Callable[[list], dict[str, str]]:
    """``finish(partials)`` of a ``map_blocks`` job: the output array's oid."""
    def finish(_partials):
        return {"out": "0x" + spec.out}
    return finish
