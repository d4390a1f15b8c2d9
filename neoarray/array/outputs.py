"""Where the result of a computation over arrays goes: ``out=`` checked, or a new array.

Shared by the elementwise ufuncs (:mod:`.ufuncs`), products (:mod:`.linalg`) and
scans (:mod:`.scans`): a new result is a persistent ``neoarray.ndarray`` in the order
and codec of the first neoarray input (or the first stored array a lazy expression
input reads), added to the connection of the first attached one (detached otherwise).
Elementwise results without ``out=`` are lazy expressions instead (:mod:`.lazy`).
"""
import numpy as np

from . import core
from .errors import ArrayShapeError


def prepare_out(out, inputs, shape, dtype, fill_value=None, chunks=None, what="the inputs"):
    """``out`` when its shape is ``shape`` (``ArrayShapeError`` otherwise), else a new
    array of ``shape`` and ``dtype``: ``chunks`` (clamped to the shape), those of a
    neoarray input of that shape, or the default."""
    if out is not None:
        if tuple(out.shape) != tuple(shape):
            raise ArrayShapeError(f"output array of shape {tuple(out.shape)} does not match the shape "
                                  f"{tuple(shape)} of {what}")
        return out
    chunked = [x for x in inputs if isinstance(x, core.ChunkedArray)]
    if chunks is not None:
        chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape))
    else:
        like = next((x for x in chunked if x.shape == tuple(shape)), None)
        chunks = None if like is None else like.chunks
    result = core.ndarray(shape, dtype=np.dtype(dtype), order=chunked[0].order, chunks=chunks,
                          fill_value=fill_value, codec=chunked[0].codec)
    jar = next((a._p_jar for a in stored_arrays(inputs) if a._p_jar is not None), None)
    if jar is not None:
        jar.add(result)
    return result


def stored_arrays(inputs):
    """The stored arrays among ``inputs`` and those lazy expressions among them read."""
    for x in inputs:
        if isinstance(x, core.ndarray):
            yield x
        elif isinstance(x, core.ChunkedArray):
            yield from x.arrays()
