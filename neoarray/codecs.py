"""numcodecs compressors of array chunks, shared by the client and the storage nodes.

Stored arrays name their codec by a spec of plain values (``ndarray._codec``):
``None`` (raw bytes), ``('zlib', level)`` (the standard library), or
``('numcodecs', config)`` where ``config`` is the canonical JSON text of a numcodecs
codec configuration (``codec.get_config()``, keys sorted), for instance
``'{"blocksize":0,"clevel":5,"cname":"lz4","id":"blosc","shuffle":1}'``.  Only the
byte compressors of :data:`NUMCODECS_IDS` are accepted: a storage node decodes
chunks for near-data reductions and must run nothing else (no pickle codecs, no
filters that change the items).

This module imports only the standard library; numcodecs is imported the first time
a numcodecs spec is decoded or made (:func:`load_numcodecs`), so a storage node
that never meets such a codec never imports it.  numcodecs is optional: ``pip
install 'neoarray[codecs]'``; :class:`~neoarray.errors.CodecUnavailable` says so when
it is missing.
"""
from __future__ import annotations

import functools
import json
import struct

NUMCODECS = "numcodecs"
NUMCODECS_IDS = ("blosc", "zstd", "lz4")     # byte compressors storage nodes decode
CONFIG_CHARS_MAX = 512                       # a codec config's JSON text
_CODECS_CACHED_MAX = 32

_U32 = struct.Struct("<I")
_ZSTD_MAGIC = 0xFD2FB528


def load_numcodecs():
    """The numcodecs module; :class:`CodecUnavailable` naming the fix when it is missing."""
    try:
        import numcodecs
    except ImportError:
        from .errors import CodecUnavailable  # neoarray.errors imports ZODB: only now
        raise CodecUnavailable(
            "this array's chunks are compressed with a numcodecs codec, and numcodecs is "
            "not installed in this process: pip install 'neoarray[codecs]'") from None
    return numcodecs


def parse_config(config: str) -> dict:
    """The configuration dict of the JSON text ``config``; ValueError naming what is wrong."""
    if not isinstance(config, str) or len(config) > CONFIG_CHARS_MAX:
        raise ValueError(f"a numcodecs codec config is JSON text of at most "
                         f"{CONFIG_CHARS_MAX} characters, not {config!r:.80}")
    try:
        parsed = json.loads(config)
    except ValueError:
        raise ValueError(f"a numcodecs codec config is JSON text, not {config!r:.80}") from None
    if not isinstance(parsed, dict) or parsed.get("id") not in NUMCODECS_IDS:
        raise ValueError(f"unknown numcodecs codec {config!r:.80} "
                         f"(known ids: {', '.join(NUMCODECS_IDS)})")
    return parsed


def canonical_config(config: dict) -> str:
    """The stored JSON text of a numcodecs configuration (completed by numcodecs),
    after a round trip of a few bytes; ValueError when numcodecs refuses the options."""
    parsed = parse_config(json.dumps(config))
    codec = load_numcodecs().get_codec(dict(parsed))
    probe = bytes(range(64))
    try:                    # numcodecs checks some options (blosc's cname) only when used
        if bytes(codec.decode(codec.encode(probe))) != probe:
            raise ValueError("it does not give back what it encoded")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return json.dumps(codec.get_config(), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=_CODECS_CACHED_MAX)
def numcodecs_codec(config: str):
    """The numcodecs codec object of a stored config (one per config, cached);
    ValueError for a config that is not one of :data:`NUMCODECS_IDS` with options
    numcodecs takes."""
    parsed = parse_config(config)
    numcodecs = load_numcodecs()
    try:
        return numcodecs.get_codec(parsed)
    except (TypeError, ValueError, KeyError) as exc:     # options numcodecs refuses
        raise ValueError(f"bad numcodecs codec config {config!r:.80}: {exc}") from None


def _zstd_content_bytes(payload) -> int | None:
    """The content size a zstd frame header declares, or None when it declares none."""
    if len(payload) < 6 or _U32.unpack_from(payload, 0)[0] != _ZSTD_MAGIC:
        return None
    descriptor = payload[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(payload) < pos + size:
        return None
    value = int.from_bytes(payload[pos:pos + size], "little")
    return value + 256 if size == 2 else value


def declared_raw_bytes(codec_id: str, payload) -> int | None:
    """The decoded size that ``payload``'s own header declares (None: it does not say).

    blosc: ``nbytes`` at offset 4 of its 16-byte header; numcodecs' lz4: a 4-byte
    little-endian size before the block; zstd: the frame content size.
    """
    if codec_id == "blosc":
        return _U32.unpack_from(payload, 4)[0] if len(payload) >= 16 else None
    if codec_id == "lz4":
        return _U32.unpack_from(payload, 0)[0] if len(payload) >= 4 else None
    return _zstd_content_bytes(payload)


def decode_exact(payload, config: str, raw_bytes: int):
    """Decode ``payload`` into a new buffer of exactly ``raw_bytes`` bytes.

    ValueError when the payload's header declares another size (nothing is decoded,
    so a corrupt or foreign payload never allocates more than ``raw_bytes``), or the
    decoder fails.
    """
    codec = numcodecs_codec(config)
    declared = declared_raw_bytes(codec.codec_id, payload)
    if declared != raw_bytes:
        raise ValueError(f"a {codec.codec_id} payload of {declared} bytes, "
                         f"expected {raw_bytes}")
    out = bytearray(raw_bytes)
    try:
        codec.decode(payload, out=memoryview(out))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"{codec.codec_id} cannot decode the payload: {exc}") from None
    return out
