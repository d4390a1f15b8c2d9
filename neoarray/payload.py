"""Chunk payloads inside ZODB records, found without copying and decoded.

Shared by the client (``neoarray.array.fetch``) and storage nodes (near-data
reductions), so it imports neither numpy nor ZODB: only the standard library.

A chunk record (``neoarray.array.chunks.Chunk``) is two pickles: the class,
then the state, which is the payload ``bytes`` as a single
``SHORT_BINBYTES``/``BINBYTES``/``BINBYTES8`` opcode (optionally framed and
memoised).  :func:`payload_view` recognises exactly that shape and returns a
read-only ``memoryview`` of the record (no copy); any other shape (a
tombstone, a bytearray payload, an unknown pickle) gives None: the caller
unpickles it the usual way, or, on a storage node, leaves it to the client.

The payload is the chunk's raw bytes passed through the array's codec, named
by its spec: ``None`` (raw), ``('zlib', level)`` or ``('numcodecs', config)``
(:mod:`neoarray.codecs`, which imports numcodecs only when such a payload is
decoded); :func:`decode_payload` undoes it.
"""
from __future__ import annotations

import pickletools
import struct
import zlib

from . import codecs

CHUNK_CLASS = "neoarray.array.chunks.Chunk"    # the class of chunk records

_CLASS_PICKLE_BYTES_MAX = 4096
_BYTES_OPCODES = {b"C"[0]: struct.Struct("<B"), b"B"[0]: struct.Struct("<I"),
                  b"\x8e"[0]: struct.Struct("<Q")}   # SHORT_BINBYTES, BINBYTES, BINBYTES8
_MEMO_ARG_BYTES = {b"q"[0]: 1, b"r"[0]: 4, b"\x94"[0]: 0}  # BINPUT, LONG_BINPUT, MEMOIZE
_STOP = b"."[0]
_PROTO = 0x80
_FRAME = 0x95


def _class_pickle(record):
    """``(offset just past the first pickle of a ZODB record, its first global)``.

    The global is ``'module.name'`` (from ``GLOBAL``, or ``STACK_GLOBAL`` after
    two strings), or None; the offset is None when the record does not start
    with a whole pickle.
    """
    head = bytes(record[:_CLASS_PICKLE_BYTES_MAX])
    found, strings = None, []
    try:
        for opcode, arg, pos in pickletools.genops(head):
            name = opcode.name
            if name == "STOP":
                return pos + 1, found
            if found is not None:
                continue
            if name == "GLOBAL":
                found = arg.replace(" ", ".", 1)
            elif name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found = ".".join(strings[-2:])
    except ValueError:     # truncated or not a pickle
        return None, None
    return None, None


def _class_pickle_end(record):
    """Offset just past the first pickle of a ZODB record, or None."""
    return _class_pickle(record)[0]


def record_class(record):
    """``'module.name'`` of the class of a ZODB record (its first pickle), or None."""
    return _class_pickle(record)[1]


def _opcode_span(record, pos):
    """``(start, stop)`` of the bytes of the bytes opcode at ``pos`` (after a PROTO and a
    FRAME opcode, if any), or None when there is none there."""
    if record[pos] == _PROTO:
        pos += 2
    if record[pos] == _FRAME:
        pos += 9
    length = _BYTES_OPCODES.get(record[pos])
    if length is None:
        return None
    start = pos + 1 + length.size
    return start, start + length.unpack_from(record, pos + 1)[0]


def _bytes_span(record, pos):
    """``(start, stop)`` of the payload of a state pickle made of one bytes opcode."""
    span = _opcode_span(record, pos)
    if span is None:
        return None
    start, stop = span
    tail = stop
    if tail < len(record) and record[tail] in _MEMO_ARG_BYTES:
        tail += 1 + _MEMO_ARG_BYTES[record[tail]]
    if tail + 1 != len(record) or record[tail] != _STOP:
        return None
    return start, stop


def _payload_span(record, class_name=None):
    """``(start, stop)`` of the payload in a chunk record (see :func:`payload_view`), or None.

    With ``class_name``, also None unless the record's class is that one.
    """
    pos, found = _class_pickle(record)
    if pos is None or (class_name is not None and found != class_name):
        return None
    try:
        return _bytes_span(record, pos)
    except (IndexError, struct.error):
        return None


def head_payload_span(head, record_bytes):
    """``(start, stop)`` of the payload of a chunk record of ``record_bytes`` bytes, told
    from its first bytes ``head`` alone (a record still arriving), or None.  A guess to
    place the record: check it with :func:`_payload_span` once the record is whole."""
    pos = _class_pickle_end(head)
    if pos is None:
        return None
    try:
        span = _opcode_span(head, pos)
    except (IndexError, struct.error):
        return None
    if span is None:
        return None
    start, stop = span
    # after the payload: at most a memo opcode (5 bytes) and STOP
    return (start, stop) if 0 < record_bytes - stop <= 6 else None


def payload_offset(record):
    """Offset of the payload in a chunk record (see :func:`payload_view`), or None."""
    span = _payload_span(record)
    return None if span is None else span[0]


def payload_view(record):
    """Return the payload of a chunk record as a read-only memoryview, or None.

    ``record`` is a ZODB record (class pickle, then state pickle) of a
    :class:`~neoarray.array.chunks.Chunk`.  None means the state is not one
    bytes opcode: unpickle it the usual way.
    """
    span = _payload_span(record)
    if span is None:
        return None
    return memoryview(record)[span[0]:span[1]].toreadonly()


def chunk_payload_view(record):
    """:func:`payload_view` of a record whose class is exactly :data:`CHUNK_CLASS`, else None.

    What a storage node reduces: another class whose state happens to be one
    bytes opcode is not a chunk.
    """
    span = _payload_span(record, CHUNK_CLASS)
    if span is None:
        return None
    return memoryview(record)[span[0]:span[1]].toreadonly()


def check_codec(spec) -> None:
    """Raise ValueError unless ``spec`` is ``None``, ``('zlib', level)`` (level 0-9) or
    ``('numcodecs', config)`` with a config of :data:`neoarray.codecs.NUMCODECS_IDS`."""
    if spec is None:
        return
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] == codecs.NUMCODECS:
        codecs.parse_config(spec[1])
        return
    if (not isinstance(spec, (tuple, list)) or len(spec) != 2 or spec[0] != "zlib"
            or not isinstance(spec[1], int) or not 0 <= spec[1] <= 9):
        raise ValueError(f"unknown codec {spec!r} (known: None, ('zlib', 0..9), "
                         f"('numcodecs', config))")


def decode_payload(view, codec_spec, raw_bytes_max=None):
    """The raw chunk bytes of the payload ``view``, encoded with ``codec_spec``.

    ``None``: ``view`` itself (no copy); ``('zlib', level)``: the decompressed
    bytes (``zlib.error`` on corrupt data).  ValueError for another spec.
    With ``raw_bytes_max``, decompression stops after ``raw_bytes_max + 1``
    bytes (a caller expecting ``raw_bytes_max`` bytes then sees a longer
    result, never a memory blow-up).  ``('numcodecs', config)``: numcodecs is
    imported now (:class:`~neoarray.errors.CodecUnavailable` without it); with
    ``raw_bytes_max``, exactly that many bytes or ValueError, checked against the
    payload's header before decoding (:func:`neoarray.codecs.decode_exact`).
    """
    check_codec(codec_spec)
    if codec_spec is None:
        return view
    if codec_spec[0] == codecs.NUMCODECS:
        if raw_bytes_max is None:
            return codecs.numcodecs_codec(codec_spec[1]).decode(view)
        return codecs.decode_exact(view, codec_spec[1], raw_bytes_max)
    if raw_bytes_max is None:
        return zlib.decompress(view)
    stream = zlib.decompressobj()
    raw = stream.decompress(view, max(1, raw_bytes_max + 1))
    if len(raw) <= raw_bytes_max and not stream.eof:      # like zlib.decompress
        raise zlib.error("incomplete or truncated stream")
    return raw
