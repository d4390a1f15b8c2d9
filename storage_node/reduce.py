"""Near-data reductions (``Reduce``) of a storage node: the core, without I/O.

A client names a built-in kernel (``neoarray.kernels.BLOCK_STATES``: never code of its
own) and array chunks by oid; the node reads each chunk record in place (one short
LMDB read transaction per few oids, checksum verified), decodes its payload
(``neoarray.payload``), views it as the chunk's items, slices the in-bounds extent and
returns ``neoarray.kernels.block_state`` encoded with ``encode_state``: small partial
states cross the network instead of chunks.  The request is checked whole before any
read and refused (``RequestRefused``: INVALID_ARGUMENT, with a message naming the
problem) when the kernel is unknown, the batch exceeds
``Limits.reduce_oids_per_batch_max``, a dtype is not a plain numeric one, the extents
do not match the oids or the chunk shape, the order or codec is unknown (or is a
numcodecs one and numcodecs is not installed on the node: it is imported the first
time a request names one), or the kernel cannot reduce those items (probed on one
item).  Kernel ``envelope`` (``neoarray.envelopes``) reduces 1-d chunks to the
minima and maxima of the buckets of a span they touch; each extent carries the
chunk's offset in the array.  Each oid then gets a status:
``REDUCED``; ``NO_OBJECT``/``NO_REVISION``/``DELETED`` as ``Load`` reports them; or
``NOT_A_CHUNK`` when the record is not a ``neoarray.array.chunks.Chunk`` whose state
is one bytes opcode holding exactly the chunk's bytes (after the codec): the client
then computes that chunk itself.

Which copy is read: like ``Load``, the node answers from what it holds and does not
check cell states (it has no copy of them: the master does not send it the partition
table); an oid of a partition it does not hold has no key here and is ``NO_OBJECT``.
Reading only readable cells is the client's choice, as for loads
(``NeoStorage.reduce_chunks`` asks only nodes with a readable cell of the oid's
partition).

``check_reduce_request`` decides whether a request is served, before any read, and
returns what the servicer (``storage_node/service.py``) needs to read and reduce;
``chunk_state`` reduces one record it read.  Neither reads nor writes anything.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from neoarray import codecs, envelopes, payload
from neoarray.errors import LimitExceeded, RequestRefused
from neoarray.ids import checked_id

_DTYPE_CHARS_MAX = 64
_NDIM_MAX = 32
_CODECS = ("", "zlib", codecs.NUMCODECS)     # "": raw bytes


def _kernels():
    """``neoarray.kernels``, imported at the first reduction: it loads Numba, which a
    node that never reduces (most of them, most of the time) need not pay for at start."""
    from neoarray import kernels
    return kernels


@dataclass(frozen=True)
class ReduceSpec:
    """A checked ``ReduceRequest``, what every chunk of it is reduced with."""
    kernel: str
    dtype: np.dtype
    acc: np.dtype
    chunk_shape: tuple
    order: str
    codec: tuple | None
    bins: int | None = None
    lo: float | None = None
    hi: float | None = None
    span: tuple | None = None       # envelope: (start, stop)

    @property
    def raw_bytes(self) -> int:
        return math.prod(self.chunk_shape) * self.dtype.itemsize

    def state(self, block, offset: int = 0) -> tuple:
        if self.kernel == envelopes.KERNEL:
            return envelopes.envelope_state(block, offset, *self.span, self.bins)
        return _kernels().block_state(self.kernel, block, self.acc, self.bins, self.lo, self.hi)


def _numeric_dtype(text: str, what: str) -> np.dtype:
    """The numpy dtype named ``text``; RequestRefused unless it holds plain numbers."""
    try:
        if len(text) > _DTYPE_CHARS_MAX:
            raise TypeError("too long")
        dtype = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        raise RequestRefused(f"bad {what} {text!r}: not a numpy dtype string") from None
    if dtype.kind not in _kernels().STATE_KINDS or dtype.fields is not None or dtype.subdtype:
        raise RequestRefused(f"{what} {text!r}: storage nodes reduce only numeric items "
                             f"(bool, integer, float, complex, datetime), not object or "
                             f"structured ones")
    return dtype


def _codec_spec(req) -> tuple | None:
    if req.codec not in _CODECS:
        raise RequestRefused(f"unknown codec {req.codec!r} "
                             f"(known: '' for raw bytes, 'zlib', 'numcodecs')")
    if req.codec == "zlib" and req.codec_level > 9:
        raise RequestRefused(f"zlib level must be within 0..9, not {req.codec_level}")
    if req.codec == codecs.NUMCODECS:
        try:
            codecs.numcodecs_codec(req.codec_config)    # numcodecs imported now, once
        except ValueError as exc:
            raise RequestRefused(str(exc)) from None
        except ImportError:
            raise RequestRefused("this storage node cannot decode numcodecs codecs: "
                                 "numcodecs is not installed in its Python; install it "
                                 "there (pip install 'neoarray[codecs]')") from None
        return (req.codec, req.codec_config)
    return None if not req.codec else (req.codec, req.codec_level)


def _chunk_shape(req, dtype, limits) -> tuple:
    shape = tuple(req.chunk_shape)
    if len(shape) > _NDIM_MAX or not all(n >= 1 for n in shape):
        raise RequestRefused(f"bad chunk shape {shape}: at most {_NDIM_MAX} sizes >= 1")
    if math.prod(shape) * dtype.itemsize > limits.map_bytes_max:
        raise RequestRefused(f"chunk shape {shape} of {dtype} is larger than this node")
    return shape


def _extents(req, shape) -> list[tuple]:
    if len(req.extents) != len(req.oids):
        raise RequestRefused(f"{len(req.extents)} extents for {len(req.oids)} oids: "
                             f"one extent per oid")
    out = []
    for ext in req.extents:
        sizes = tuple(ext.sizes)
        if len(sizes) != len(shape) or not all(1 <= e <= c for e, c in zip(sizes, shape)):
            raise RequestRefused(f"extent {sizes} does not fit the chunk shape {shape}")
        out.append(sizes)
    return out


def _envelope_params(req, limits) -> dict:
    """The span and bucket count of an envelope request, checked."""
    if len(req.chunk_shape) != 1:
        raise RequestRefused(f"the envelope kernel reduces 1-d chunks, not chunk shape "
                             f"{tuple(req.chunk_shape)}")
    bins_max = min(limits.reduce_histogram_bins_max, envelopes.BUCKETS_MAX)
    if not 1 <= req.bins <= bins_max:
        raise RequestRefused(f"the envelope kernel needs 1 <= bins <= {bins_max}, not {req.bins}")
    if not req.span_start < req.span_stop:
        raise RequestRefused(f"the envelope kernel needs span_start < span_stop, not "
                             f"{req.span_start} and {req.span_stop}")
    if req.span_stop > envelopes.SPAN_ITEMS_MAX:
        raise RequestRefused(f"the envelope kernel needs span_stop <= {envelopes.SPAN_ITEMS_MAX}, "
                             f"not {req.span_stop}")
    bins = envelopes.buckets_for(req.span_start, req.span_stop, req.bins)
    return {"bins": bins, "span": (req.span_start, req.span_stop)}


def reduce_spec(req, limits) -> ReduceSpec:
    kernels = (*_kernels().BLOCK_STATES, envelopes.KERNEL)
    if req.kernel not in kernels:
        raise RequestRefused(f"storage nodes run only the built-in kernels: "
                             f"{', '.join(kernels)}; not {req.kernel!r}")
    dtype = _numeric_dtype(req.dtype, "item dtype")
    acc = _numeric_dtype(req.acc_dtype, "accumulator dtype")
    if req.order not in ("C", "F"):
        raise RequestRefused(f"order must be 'C' or 'F', not {req.order!r}")
    hist = {}
    if req.kernel == "histogram":
        if not 1 <= req.bins <= limits.reduce_histogram_bins_max:
            raise RequestRefused(f"the histogram kernel needs 1 <= bins <= "
                                 f"reduce_histogram_bins_max={limits.reduce_histogram_bins_max}, "
                                 f"not {req.bins}")
        hist = {"bins": req.bins, "lo": req.lo, "hi": req.hi}
    elif req.kernel == envelopes.KERNEL:
        hist = _envelope_params(req, limits)
    spec = ReduceSpec(req.kernel, dtype, acc, _chunk_shape(req, dtype, limits), req.order,
                       _codec_spec(req), **hist)
    try:            # a one-item probe: refuse what the kernel cannot do before reading
        spec.state(np.zeros(1, dtype=dtype), offset=spec.span[0] if spec.span else 0)
    except Exception as exc:  # noqa: BLE001 (numpy and Numba raise many kinds)
        raise RequestRefused(f"kernel {req.kernel!r} cannot reduce {dtype} items into "
                             f"{acc}: {type(exc).__name__}: {exc}") from None
    return spec


def chunk_state(record, extent: tuple, spec: ReduceSpec, offset: int = 0, summary=None) -> tuple | None:
    """The block state of the in-bounds ``extent`` of a chunk ``record``, or None
    when the record is not a chunk of ``spec``'s shape (the client computes it).
    ``summary(block)``: the envelope summary of the block (``SummaryCache``)."""
    view = payload.chunk_payload_view(record)
    if view is None:
        return None
    try:
        raw = payload.decode_payload(view, spec.codec, spec.raw_bytes)
    except (zlib.error, ValueError):     # corrupt, or not of this chunk shape
        return None
    if len(raw) != spec.raw_bytes:
        return None
    block = np.frombuffer(raw, dtype=spec.dtype).reshape(spec.chunk_shape, order=spec.order)
    block = block[tuple(slice(0, e) for e in extent)]
    if summary is not None:
        return envelopes.summarized_state(block, summary(block), offset, *spec.span, spec.bins)
    return spec.state(block, offset)



def _check_envelope_reply(spec: ReduceSpec, extents, offsets) -> None:
    """Refuse an envelope request whose chunks overlap in the span: disjoint chunks
    touch at most ``bins + len(chunks)`` buckets in all, which bounds the reply."""
    start, stop = spec.span
    touched = 0
    for (size,), offset in zip(extents, offsets):
        lo, hi = max(offset, start), min(offset + size, stop)
        if lo < hi:
            touched += (envelopes.bucket_of(hi - 1, start, stop, spec.bins)
                        - envelopes.bucket_of(lo, start, stop, spec.bins) + 1)
    if touched > spec.bins + len(extents):
        raise RequestRefused(f"envelope chunks overlap: they touch {touched} buckets of {spec.bins}; "
                             f"each chunk once, at its own offset")


@dataclass(frozen=True)
class ReduceOrder:
    """A checked ``ReduceRequest``: the oids to read (``before``: the revision bound,
    None for the newest), and for each its in-bounds extent and its offset in the array."""
    oids: list[bytes]
    before: bytes | None
    spec: ReduceSpec
    extents: list[tuple]
    offsets: list[int]


def check_reduce_request(req, limits) -> ReduceOrder:
    """The order of a ``ReduceRequest`` (``RequestRefused``/``LimitExceeded`` naming
    what is wrong: see the module docstring); ``limits``: the node's ``Limits``."""
    limit = limits.reduce_oids_per_batch_max
    if len(req.oids) > limit:
        raise LimitExceeded(f"{len(req.oids)} oids in one reduce, "
                            f"reduce_oids_per_batch_max={limit}")
    oids = [checked_id(o, "oid") for o in req.oids]
    before = checked_id(req.before, "before") if req.before else None
    spec = reduce_spec(req, limits)
    extents = _extents(req, spec.chunk_shape)
    offsets = [ext.offset for ext in req.extents]
    if spec.span is not None:
        _check_envelope_reply(spec, extents, offsets)
    return ReduceOrder(oids, before, spec, extents, offsets)


def encode_state(state: tuple) -> bytes:
    """The bytes of a block state for a ``ReducedChunk`` (``neoarray.kernels``)."""
    return _kernels().encode_state(state)
