"""Chunk objects and codecs.

A chunk is one :class:`Chunk` persistent object per stored chunk of an array,
so chunks spread over oids (and over partitions of a cluster storage).  Its
pickled state is just the encoded payload: the raw bytes of the full chunk
(``prod(chunks) * itemsize`` bytes, in the array's memory order), passed
through the array's codec.  Parts of a chunk beyond the array's bounds always
hold the fill value.

Codecs are named by a small tuple stored with the array, ``None`` (raw bytes),
``('zlib', level)`` or ``('numcodecs', config)`` (blosc, zstd or lz4 through the
optional numcodecs package, see :mod:`neoarray.codecs`), so stored arrays do not
depend on codec classes.
"""

import sys
import zlib

import numpy as np
import persistent
from ZODB.Connection import Connection
from ZODB.mvccadapter import MVCCAdapterInstance
from ZODB.serialize import ObjectWriter

from .. import codecs
from ..client.staging import STAGE_BYTES_MIN
from .errors import ArrayValueError


class Chunk(persistent.Persistent):
    """One stored chunk: ``payload`` holds the encoded bytes.

    A chunk removed from its array gets ``payload = None`` (a tombstone), so a
    concurrent transaction writing the same chunk conflicts on this object
    instead of silently losing its write.

    A chunk written in this process may hold its payload as a read-only 1-D
    ``uint8`` numpy array rather than ``bytes`` (see :func:`encode_chunk`); its
    state, what ZODB pickles and stores, is always ``bytes``.  When ZODB stores it
    into a neoarray storage, the state handed to ZODB's pickler is a placeholder and
    the storage splices the payload buffer itself into the record, with no copy
    (``neoarray.client.staging``): the stored record is byte for byte the same.
    """

    def __init__(self, payload):
        self.payload = payload

    def __getstate__(self):
        payload = self.payload
        if payload is not None and len(payload) >= STAGE_BYTES_MIN:
            placeholder = _staged_state(self, sys._getframe(1))
            if placeholder is not None:
                return placeholder
        return payload.tobytes() if isinstance(payload, np.ndarray) else payload

    def __setstate__(self, state):
        self.payload = state

    def __repr__(self):
        size = None if self.payload is None else len(self.payload)
        return f"<neoarray.array.Chunk oid={self._p_oid!r} payload_bytes={size}>"


_SERIALIZE_CODE = ObjectWriter.serialize.__code__
_STORE_OBJECTS_CODE = Connection._store_objects.__code__


def _staged_state(chunk, caller):
    """The placeholder state of ``chunk`` when ZODB serialises it to store it at once into
    a neoarray storage (``neoarray.client.staging``), or None.

    Only when ``__getstate__`` is called by ``ObjectWriter.serialize`` called by
    ``Connection._store_objects`` of the chunk's own connection, whose storage is its
    normal one (not a savepoint's ``TmpStore``) and a neoarray storage under ZODB's MVCC
    adapter: ``_store_objects`` then hands the record to that storage's ``store`` next.
    Any other caller (a savepoint, ``copy``, a pickle, another storage) gets the payload.
    """
    if caller.f_code is not _SERIALIZE_CODE:
        return None
    outer = caller.f_back
    jar = chunk._p_jar
    if outer is None or outer.f_code is not _STORE_OBJECTS_CODE or outer.f_locals.get("self") is not jar:
        return None
    storage = jar._storage
    if storage is None or storage is not jar._normal_storage or type(storage) is not MVCCAdapterInstance:
        return None
    stage = getattr(storage._storage, "stage_chunk_payload", None)
    payload = chunk.payload
    if stage is None or not (type(payload) is bytes or (       # a bytearray pickles otherwise
            isinstance(payload, np.ndarray) and payload.flags.c_contiguous)):
        return None
    return stage(chunk._p_oid, payload, jar.large_record_size)


class RawCodec:
    """Identity codec: the payload is the chunk's raw bytes."""

    spec = None

    def encode(self, raw):
        """Return the payload for ``raw`` (a bytes-like object)."""
        return bytes(raw)

    def decode(self, payload):
        """Return the raw bytes of ``payload`` (no copy)."""
        return payload


class ZlibCodec:
    """zlib compression at ``level`` (0-9)."""

    def __init__(self, level=6):
        if not 0 <= level <= 9:
            raise ArrayValueError(f"zlib level must be within 0..9, not {level}")
        self.level = level
        self.spec = ("zlib", level)

    def encode(self, raw):
        """Return the compressed payload of ``raw``."""
        return zlib.compress(raw, self.level)

    def decode(self, payload):
        """Return the decompressed bytes of ``payload``."""
        return zlib.decompress(payload)


class NumcodecsCodec:
    """A numcodecs byte compressor (:data:`neoarray.codecs.NUMCODECS_IDS`).

    Chunks are given to it as arrays of their own item size (:meth:`encode_items`),
    so blosc's shuffle groups the bytes of each item as it should.
    """

    def __init__(self, config):
        try:
            codecs.parse_config(config)
        except ValueError as exc:
            raise ArrayValueError(str(exc)) from None
        self.spec = (codecs.NUMCODECS, config)
        self._codec = codecs.numcodecs_codec(config)

    def encode(self, raw):
        """Return the compressed payload of the bytes-like ``raw``."""
        return bytes(self._codec.encode(raw))

    def encode_items(self, array, order):
        """Return the compressed payload of a chunk array's items in ``order``."""
        flat = np.ascontiguousarray(array.reshape(-1, order=order))
        items = flat.view(f"V{flat.dtype.itemsize}")     # any dtype: blosc sees the item size
        return bytes(self._codec.encode(items))

    def decode(self, payload):
        """Return the decompressed bytes of ``payload``."""
        return self._codec.decode(payload)


_NUMCODECS_LEVEL = {"zstd": "level", "blosc": "clevel"}     # what codec_level sets


def _numcodecs_spec(codec, level):
    """The spec of a numcodecs codec given as a name, a config dict or a codec object."""
    if isinstance(codec, str):
        config = {"id": codec}
    elif isinstance(codec, dict):
        config = dict(codec)
    else:
        config = codec.get_config()
    if level is not None:
        key = _NUMCODECS_LEVEL.get(config.get("id"))
        if key is None:
            raise ArrayValueError(f"codec_level applies to zlib, zstd and blosc, not to "
                                  f"{config.get('id')!r}: put the codec's options in a config "
                                  "dict instead")
        config[key] = int(level)
    try:
        return (codecs.NUMCODECS, codecs.canonical_config(config))
    except (ValueError, TypeError) as exc:     # numcodecs' own checks of the options
        raise ArrayValueError(f"bad codec {codec!r}: {exc}") from None


def codec_spec(codec, level=None):
    """Return the stored description of a codec given by the user.

    ``codec`` is ``None``; ``'zlib'``; ``'blosc'``, ``'zstd'`` or ``'lz4'`` (numcodecs'
    defaults; ``level`` sets zstd's ``level`` or blosc's ``clevel``); a numcodecs
    config dict (``{'id': 'blosc', 'cname': 'lz4', 'clevel': 5, 'shuffle': 1}``); a
    numcodecs codec object; or a stored spec (``('zlib', level)``,
    ``('numcodecs', config)``).  numcodecs codecs need ``pip install
    'neoarray[codecs]'`` (:class:`~neoarray.errors.CodecUnavailable` otherwise).
    """
    if codec is None:
        return None
    if isinstance(codec, tuple) and len(codec) == 2 and codec[0] == codecs.NUMCODECS:
        return NumcodecsCodec(codec[1]).spec
    if isinstance(codec, tuple) and len(codec) == 2:
        codec, level = codec
    if codec == "zlib":
        level = 6 if level is None else int(level)
        return ZlibCodec(level).spec
    if (codec in codecs.NUMCODECS_IDS or isinstance(codec, dict)
            or callable(getattr(codec, "get_config", None))):
        return _numcodecs_spec(codec, level)
    raise ArrayValueError(f"unknown codec {codec!r} (known: None, 'zlib', "
                          f"{', '.join(map(repr, codecs.NUMCODECS_IDS))}, a numcodecs config "
                          "dict or codec object)")


def codec_from_spec(spec):
    """Return the codec object described by ``spec``."""
    if spec is None:
        return RawCodec()
    name, arg = spec
    if name == "zlib":
        return ZlibCodec(arg)
    if name == codecs.NUMCODECS:
        return NumcodecsCodec(arg)
    raise ArrayValueError(f"unknown stored codec {spec!r}")


def decode_chunk(payload, codec, dtype, chunks, order):
    """Return a read-only array view of a chunk payload (no copy if raw)."""
    raw = codec.decode(payload)
    return np.frombuffer(raw, dtype=dtype).reshape(chunks, order=order)


def decode_chunk_into(payload, codec, out):
    """Decode a chunk payload straight into ``out``, a writable buffer of the chunk's
    raw size (a mapped view's staging unit: :mod:`neoarray.vm`).  numcodecs compressors
    write their output there (no temporary, and no first touch of fresh memory for
    it); the others decode, then copy."""
    if isinstance(codec, NumcodecsCodec):
        codec._codec.decode(payload, out=out)
        return
    raw = memoryview(codec.decode(payload)).cast("B")
    if raw.nbytes != len(out):
        raise ArrayValueError(f"a chunk payload decodes to {raw.nbytes} bytes, not the "
                              f"chunk's {len(out)}: the chunk is damaged")
    out[:] = raw


def encode_chunk(array, codec, order):
    """Return the payload of a full chunk array.

    Raw chunks are copied into a read-only ``uint8`` array rather than ``bytes``:
    numpy asks the kernel for huge pages for large arrays, so the copy is about 2.4x
    faster than ``tobytes`` into fresh memory (3.4 against 1.4 GB/s here); a neoarray
    storage sends this buffer as it is (``neoarray.client.staging``), another storage
    gets ``bytes`` made at commit (``Chunk.__getstate__``).
    """
    if isinstance(codec, RawCodec):
        copy = np.array(array, order=order, copy=True)
        payload = copy.reshape(-1, order=order).view(np.uint8)
        payload.flags.writeable = False
        return payload
    if isinstance(codec, NumcodecsCodec):
        return codec.encode_items(array, order)
    return codec.encode(array.tobytes(order=order))


def new_chunk_array(fill, dtype, chunks, order):
    """Return a writable full chunk holding the fill value."""
    array = np.empty(chunks, dtype=dtype, order=order)
    array[...] = fill
    return array


_FILL_BLOCK_BYTES = 1 << 16         # is_all_fill compares this much at a time
_UINT_OF_WIDTH = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def is_all_fill(array, fill_item):
    """Return True when every item of ``array`` has the bytes ``fill_item``.

    Bytewise comparison (items of 1, 2, 4 or 8 bytes as one unsigned integer, others
    byte by byte): it is exact for every dtype, NaN fills included.  A chunk that
    holds data is usually told at its first or last item; otherwise the items are
    compared ``_FILL_BLOCK_BYTES`` at a time, stopping at the first block that
    differs, with no temporary the size of the chunk.
    """
    flat = array.reshape(-1, order="A")
    if not flat.flags.contiguous:
        flat = np.ascontiguousarray(flat)
    raw = flat.view(np.uint8)
    width = len(fill_item)
    uint = _UINT_OF_WIDTH.get(width)
    if uint is not None:
        items, fill = raw.view(uint), np.frombuffer(fill_item, dtype=uint)[0]
    else:
        items, fill = raw.reshape(-1, width), np.frombuffer(fill_item, dtype=np.uint8)
    if len(items) == 0:
        return True
    if not (np.all(items[0] == fill) and np.all(items[-1] == fill)):
        return False
    step = max(1, _FILL_BLOCK_BYTES // width)
    return all(bool(np.all(items[start:start + step] == fill)) for start in range(0, len(items), step))
