"""Arrays as Dask collections: :func:`to_dask` (``A.to_dask()``) and :func:`from_dask`.

``to_dask`` gives a ``dask.array.Array`` whose tasks read the array through its handle
(:mod:`.handles`), so they run in any process: threads, ``processes=True`` local
clusters, remote Dask workers.  The graph follows the *stored* chunks, so its size is
proportional to them and not to the array's shape:

* along each axis, every chunk index that some stored chunk has is one Dask block
  (one chunk wide), and every run of chunk indices that no stored chunk has is merged
  into one block, however long;
* a block that is exactly one stored chunk is a task reading that chunk; every other
  block reads as the fill value, built without reading by ``numpy.broadcast_to`` of
  one item (no memory, whatever its size, until something copies it).

A ``(10**18, 2)`` array with 3 stored chunks of ``(4096, 2)`` items thus has 7 blocks
(3 chunks, 4 gaps) instead of 2.4e14.  Dask computes on fill blocks like on any
other block: a reduction over such an array visits every item of its gaps (use the
array's own reductions, or :mod:`neoarray.jobs`, which skip unwritten chunks).  Dask's grid is regular (the product of the
per-axis splits), so for stored chunks scattered along several axes it holds up to
``prod(2 * distinct indices + 1)`` blocks, most of them fill blocks: cheap tasks, but
more of them than stored chunks (at most :data:`DASK_BLOCKS_MAX`, a clear error
beyond).  The collection's name is a token of the cluster,
oid and snapshot: the same snapshot of the same array gives the same graph keys.

Dask is optional: ``pip install 'neoarray[dask]'``.
"""
from __future__ import annotations

import itertools
import math
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from . import core
from .config import config
from .errors import ArrayShapeError, ArrayValueError
from .handles import handle_of
from .hints import CodecLike, OrderLike, ShapeLike

if TYPE_CHECKING:
    import dask.array

DASK_BLOCKS_MAX = 1_000_000        # blocks (tasks) of one to_dask graph


def _dask():
    try:
        import dask
        import dask.array
    except ImportError:
        raise ImportError("neoarray arrays as Dask collections need Dask: "
                          "pip install 'neoarray[dask]'") from None
    return dask


def _segments(indices, count: int, size: int, chunk: int):
    """``[(first item, items, chunk index or None)]`` along one axis of ``size`` items.

    Each chunk index in ``indices`` (sorted) is a segment of its own; the runs of
    chunk indices between them are merged into one segment each (index None).
    """
    if size == 0:
        return [(0, 0, None)]
    out, start = [], 0
    for k in indices:
        if k > start:
            out.append((start * chunk, k * chunk - start * chunk, None))
        out.append((k * chunk, min(size, (k + 1) * chunk) - k * chunk, k))
        start = k + 1
    if start < count:
        out.append((start * chunk, size - start * chunk, None))
    return out


def _read_block(source, region):
    """A task: the items of ``region`` (tuple of slices) of the array named by
    ``source`` (a handle, opened in this process, or the array itself)."""
    array = source if isinstance(source, core.ndarray) else source.open()
    return array[region]


def _fill_block(shape, fill_item: bytes, dtype):
    """A task: a read-only block of ``shape`` holding the fill value (no memory)."""
    return np.broadcast_to(np.frombuffer(fill_item, dtype=dtype)[0], shape)


def to_dask(array: core.ndarray, chunks: None = None) -> dask.array.Array:
    """Return a ``dask.array.Array`` reading ``array`` (see the module docstring).

    Parameters
    ----------
    array : ndarray
        A committed array of a neoarray cluster: its tasks read the snapshot that
        its connection sees now, also in other processes (arrays without a cluster
        behind them put themselves in the graph: Dask's local schedulers, or
        by-value pickling within ``memory_bytes_max``).
    chunks : None
        Reserved: the blocks always follow the stored chunks.

    Returns
    -------
    dask.array.Array
        One block per stored chunk and one per run of unwritten chunks along an axis;
        its name is a token of the cluster, oid and snapshot.

    Raises
    ------
    ArrayHandleError
        The array's connection has uncommitted changes: commit or abort first.
    ArrayValueError
        ``chunks`` was given, or the graph would exceed :data:`DASK_BLOCKS_MAX` blocks.
    ImportError
        Dask is not installed (``pip install 'neoarray[dask]'``).
    """
    dask = _dask()
    if chunks is not None:
        raise ArrayValueError("to_dask() blocks follow the stored chunks; rechunk the "
                              "result (darr.rechunk(...)) for other blocks")
    handle = handle_of(array)
    source = array if handle is None else handle
    token = handle.token if handle is not None else uuid.uuid4().hex
    name = "neoarray-" + dask.base.tokenize(token)
    shape, cshape = array.shape, array.chunks
    stored = set(array.chunk_keys())
    axes = [_segments(sorted({k[ax] for k in stored}), -(-shape[ax] // cshape[ax]),
                      shape[ax], cshape[ax]) for ax in range(len(shape))]
    blocks = math.prod(len(a) for a in axes)
    if blocks > DASK_BLOCKS_MAX:
        raise ArrayValueError(
            f"to_dask() would make {blocks} blocks for {len(stored)} stored chunks (Dask's "
            f"grid is the product of the splits of each axis), more than DASK_BLOCKS_MAX "
            f"({DASK_BLOCKS_MAX}): use larger chunks, or neoarray.jobs for sparse arrays")
    graph = {}
    fill, dtype = array._fill, array.dtype
    for index in itertools.product(*(range(len(a)) for a in axes)):
        segs = [axes[ax][i] for ax, i in enumerate(index)]
        key = tuple(s[2] for s in segs)
        if key in stored:
            region = tuple(slice(s[0], s[0] + s[1]) for s in segs)
            graph[(name, *index)] = (_read_block, source, region)
        else:
            graph[(name, *index)] = (_fill_block, tuple(s[1] for s in segs), fill, dtype)
    dask_chunks = tuple(tuple(s[1] for s in a) for a in axes)
    meta = np.empty((0,) * len(shape), dtype=dtype)
    return dask.array.Array(graph, name, dask_chunks, meta=meta)


def _block_regions(numblocks, dask_chunks):
    """``(block index, region)`` of every block of a Dask grid, C order."""
    starts = [list(itertools.accumulate(c, initial=0)) for c in dask_chunks]
    for index in itertools.product(*(range(n) for n in numblocks)):
        yield index, tuple(slice(starts[ax][i], starts[ax][i + 1]) for ax, i in enumerate(index))


def from_dask(darr: dask.array.Array, out: core.ndarray | None = None, *, order: OrderLike = "C",
              chunks: ShapeLike | None = None, fill_value: Any = None, codec: CodecLike = None,
              codec_level: int | None = None) -> core.ndarray:
    """Write the Dask array ``darr`` into a neoarray, chunk by chunk; return it.

    ``darr`` is rechunked onto the chunk grid of ``out`` and its blocks computed by
    the current Dask scheduler (threads, processes, a distributed client), in groups
    of at most ``config.fetch_limit_bytes()`` bytes; each group is written into ``out``
    here, in the calling thread, before the next one is computed.  All-fill blocks
    store nothing.  Work that blocks of different groups share (a rechunk, an
    upstream reduction) is done again for each group: memory stays bounded instead.

    Parameters
    ----------
    darr : dask.array.Array
        The values, of any chunking (rechunked onto the grid of ``out``).
    out : ndarray, optional
        The array written (same shape; items cast under ``same_kind``).  Default: a
        new detached array of ``darr``'s shape and dtype, made with ``order``,
        ``chunks``, ``fill_value``, ``codec`` and ``codec_level``.
    order, chunks, fill_value, codec, codec_level
        Of a new array (see :class:`~neoarray.array.ndarray`); ignored with ``out``.

    Returns
    -------
    ndarray
        ``out``, or the new array.

    Raises
    ------
    ArrayShapeError
        ``out`` has another shape than ``darr``.
    ArrayCastError
        ``darr``'s items cannot be cast to ``out``'s dtype under ``same_kind``.
    ImportError
        Dask is not installed (``pip install 'neoarray[dask]'``).

    Notes
    -----
    What is atomic: the writes join the current transaction of ``out``'s connection
    (none for a new array: store it, then commit); nothing is visible to anyone else
    until that transaction commits, and its commit makes every written chunk visible
    at once.  An error midway leaves the transaction with some chunks written: abort
    it.  ``da.store(darr, A)`` also works, but only with a scheduler running in the
    thread that owns ``A``'s transaction (``scheduler="sync"``): other threads
    would join their own transactions, and other processes see ``A`` read-only.
    """
    dask = _dask()
    if out is None:
        out = core.ndarray(darr.shape, darr.dtype, order, chunks=chunks,
                           fill_value=fill_value, codec=codec, codec_level=codec_level)
    elif tuple(out.shape) != tuple(darr.shape):
        raise ArrayShapeError(f"cannot write a Dask array of shape {darr.shape} into a "
                              f"neoarray of shape {out.shape}")
    aligned = darr.rechunk(out.chunks)          # block i is chunk i
    blocks = aligned.to_delayed()
    group, group_bytes = [], 0
    bytes_max = config.fetch_limit_bytes()
    for index, region in _block_regions(aligned.numblocks, aligned.chunks):
        nbytes = math.prod(s.stop - s.start for s in region) * aligned.dtype.itemsize
        if group and group_bytes + nbytes > bytes_max:
            _write_group(dask, out, group)
            group, group_bytes = [], 0
        group.append((region, blocks[index]))
        group_bytes += nbytes
    if group:
        _write_group(dask, out, group)
    return out


def _write_group(dask, out, group):
    values = dask.compute(*(block for _region, block in group))
    for (region, _block), value in zip(group, values):
        out[region] = value

