"""The frames of the data plane: length-prefixed, with request ids and raw bulk segments.

Pure: encoding, decoding and the checks of a frame, no sockets (``conn.py`` reads and
writes them).  One frame::

    header   21 bytes, network order: frame_bytes u32 (everything after this field),
             request id u32, method u16, kind u8, segments u32, meta_bytes u16,
             body_bytes u32
    lengths  u32 per segment
    meta     msgpack map of call metadata (the master's epoch), or nothing
    body     the message: protobuf bytes of the method's request or reply (``proto/`` is
             the contract of message shapes); msgpack for HELLO and ERROR
    segments raw bytes, back to back: bulk payloads (record data, chunk bytes) that
             never go through protobuf parsing and are read into aligned buffers

Kinds: ``HELLO`` (first frame each way: version, cluster name, admin token, the hash of
the method table), ``REQUEST``, ``REPLY``, ``ERROR`` (a gRPC status name and its
message: the same codes, so ``wire.to_exception`` maps both transports alike), ``PUSH``
(one message of a server stream, e.g. the master's events) and ``END`` (a server
stream ended).  ``method`` indexes ``METHODS``, every method of the services in
``proto/``; both ends check at HELLO that their tables agree.

Limits, each refused with a reason that names it: a frame larger than
``frame_bytes_max``, more than ``SEGMENTS_MAX`` segments, lengths that do not add up to
the frame, an unknown kind or method.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import msgpack

from ..errors import LimitExceeded, RequestRefused
from ..proto import master_pb2, standby_pb2, storage_pb2

VERSION = 1
HEADER = struct.Struct("!IIHBIHI")
HEADER_BYTES = HEADER.size              # 21
SIZE_FIELD_BYTES = 4                    # frame_bytes itself is not counted in it
SEGMENTS_MAX = 100_000                  # one per record of a store (objects_per_store_max)
META_BYTES_MAX = 4096
HELLO_BYTES_MAX = 16 << 10
NO_METHOD = 0xFFFF

HELLO, REQUEST, REPLY, ERROR, PUSH, END = 1, 2, 3, 4, 5, 6
KINDS = frozenset({HELLO, REQUEST, REPLY, ERROR, PUSH, END})


def _methods() -> tuple[str, ...]:
    names = []
    for module in (master_pb2, storage_pb2, standby_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names.extend(f"/{service.full_name}/{m.name}" for m in service.methods)
    return tuple(sorted(names))


METHODS: tuple[str, ...] = _methods()
METHOD_IDS: dict[str, int] = {name: i for i, name in enumerate(METHODS)}
METHODS_HASH = hashlib.sha256("\n".join(METHODS).encode()).hexdigest()[:16]


class Parts:
    """One segment given as several buffers, sent back to back (no copy joins them):
    a record made of a header, a payload buffer and a tail.  The receiver gets one
    segment, as for any other."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts):
        self.parts = tuple(memoryview(p).cast("B") for p in parts)
        self.nbytes = sum(p.nbytes for p in self.parts)

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def segment_bytes(segment) -> int:
    """The length of a segment (a bytes-like or ``Parts``)."""
    return segment.nbytes if isinstance(segment, Parts) else memoryview(segment).nbytes


@dataclass
class Frame:
    kind: int
    rid: int
    method: int = NO_METHOD
    body: bytes = b""
    segments: list = field(default_factory=list)   # bytes-like (memoryviews of aligned buffers) or Parts
    meta: dict = field(default_factory=dict)

    @property
    def method_name(self) -> str:
        return METHODS[self.method] if self.method < len(METHODS) else f"#{self.method}"


class Layout(NamedTuple):
    """What a header announces: checked sizes of the parts that follow it (a named
    tuple: one per frame read, made in a third of a frozen dataclass's time)."""
    kind: int
    rid: int
    method: int
    segments: int
    meta_bytes: int
    body_bytes: int
    rest_bytes: int           # lengths + meta + body + segments

    @property
    def lengths_bytes(self) -> int:
        return 4 * self.segments


def parse_header(raw, frame_bytes_max: int) -> Layout:
    """The layout of a frame from its ``HEADER_BYTES``; ``RequestRefused`` (or
    ``LimitExceeded``) for a header no sender of this protocol makes."""
    frame_bytes, rid, method, kind, segments, meta_bytes, body_bytes = HEADER.unpack(raw)
    if kind not in KINDS:
        raise RequestRefused(f"frame of unknown kind {kind}")
    if frame_bytes > frame_bytes_max:
        raise LimitExceeded(f"frame of {frame_bytes} bytes is larger than max {frame_bytes_max} "
                            f"(frame_bytes_max: message_bytes_max of the sender or the receiver, and "
                            f"1 MiB for the frame)")
    if meta_bytes > META_BYTES_MAX:
        raise LimitExceeded(f"{meta_bytes} bytes of call metadata, at most {META_BYTES_MAX}")
    if method != NO_METHOD and method >= len(METHODS):
        raise RequestRefused(f"frame names method {method}: this node knows {len(METHODS)}")
    rest = frame_bytes - (HEADER_BYTES - SIZE_FIELD_BYTES)
    if rest < 4 * segments + meta_bytes + body_bytes:
        raise RequestRefused(f"frame of {frame_bytes} bytes cannot hold its {segments} segment lengths, "
                             f"{meta_bytes} metadata and {body_bytes} body bytes")
    return Layout(kind, rid, method, segments, meta_bytes, body_bytes, rest)


def segment_lengths(raw, layout: Layout) -> list[int]:
    """The segment lengths (``raw``: ``layout.lengths_bytes``); they must fill the frame."""
    lengths = list(struct.unpack(f"!{layout.segments}I", raw)) if layout.segments else []
    if layout.lengths_bytes + layout.meta_bytes + layout.body_bytes + sum(lengths) != layout.rest_bytes:
        raise RequestRefused(f"frame lengths do not add up: {layout.rest_bytes} bytes announced, "
                             f"{layout.lengths_bytes + layout.meta_bytes + layout.body_bytes + sum(lengths)} "
                             f"described")
    return lengths


def encode(frame: Frame) -> list:
    """The buffers of ``frame``, in order (for ``sendmsg``): no bulk segment is copied."""
    if len(frame.segments) > SEGMENTS_MAX:
        raise LimitExceeded(f"{len(frame.segments)} segments in one frame, at most {SEGMENTS_MAX}")
    meta = msgpack.packb(frame.meta) if frame.meta else b""
    lengths = [segment_bytes(s) for s in frame.segments]
    rest = 4 * len(lengths) + len(meta) + len(frame.body) + sum(lengths)
    header = HEADER.pack(rest + HEADER_BYTES - SIZE_FIELD_BYTES, frame.rid, frame.method, frame.kind,
                         len(lengths), len(meta), len(frame.body))
    head = header + (struct.pack(f"!{len(lengths)}I", *lengths) if lengths else b"") + meta + frame.body
    out = [head]
    for s, n in zip(frame.segments, lengths):
        if isinstance(s, Parts):
            out.extend(p for p in s.parts if p.nbytes)
        elif n:
            out.append(s)
    return out


def decode_meta(raw) -> dict:
    if not raw:
        return {}
    try:
        meta = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several kinds
        raise RequestRefused(f"undecodable call metadata: {type(exc).__name__}") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise RequestRefused("call metadata must map strings to strings")
    return meta


# -- HELLO and ERROR bodies -------------------------------------------------------------

def hello_body(cluster: str, token: str | None = None, role: str = "") -> bytes:
    return msgpack.packb({"v": VERSION, "cluster": cluster, "token": token or "", "methods": METHODS_HASH,
                          "role": role})


def parse_hello(raw: bytes) -> dict:
    """The fields of a HELLO body: ``RequestRefused`` unless it is one of this version."""
    try:
        doc = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # noqa: BLE001
        raise RequestRefused(f"undecodable HELLO: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("cluster", "token", "methods")):
        raise RequestRefused("HELLO must carry the cluster name, a token and the method table's hash")
    if doc.get("v") != VERSION:
        raise RequestRefused(f"data plane version {doc.get('v')!r}: this node speaks version {VERSION}")
    if doc["methods"] != METHODS_HASH:
        raise RequestRefused(f"method table {doc['methods']} differs from this node's {METHODS_HASH}: "
                             f"the peer runs another version of neoarray")
    return doc


def error_body(code_name: str, details: str) -> bytes:
    return msgpack.packb([code_name, details])


def parse_error(raw: bytes) -> tuple[str, str]:
    try:
        code, details = msgpack.unpackb(raw, raw=False)
        return str(code), str(details)
    except Exception:  # noqa: BLE001 - a garbled error is still an error
        return "UNKNOWN", f"undecodable error frame ({len(raw)} bytes)"


def decode(raw, frame_bytes_max: int) -> Frame:
    """The frame ``raw`` holds whole (the concatenated buffers of ``encode``): what a
    reader of a socket gets, without a socket (the in-process transport)."""
    view = memoryview(raw)
    layout = parse_header(view[:HEADER_BYTES], frame_bytes_max)
    at = HEADER_BYTES
    lengths = segment_lengths(view[at:at + layout.lengths_bytes], layout)
    at += layout.lengths_bytes
    meta = decode_meta(bytes(view[at:at + layout.meta_bytes]))
    at += layout.meta_bytes
    body = bytes(view[at:at + layout.body_bytes])
    at += layout.body_bytes
    segments = []
    for n in lengths:
        segments.append(view[at:at + n])
        at += n
    if at != len(view):
        raise RequestRefused(f"{len(view) - at} bytes after the frame")
    return Frame(layout.kind, layout.rid, layout.method, body, segments, meta)
