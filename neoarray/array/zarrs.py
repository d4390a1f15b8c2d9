"""zarr in and out: :func:`from_zarr` and :func:`to_zarr` (``A.to_zarr(...)``).

Both copy chunk by chunk, only the chunks that are stored: a zarr chunk that was
never written stays unwritten in neoarray and the other way round, so a sparse
array stays sparse.  At most ``config.fetch_limit_bytes()`` bytes of chunks are held
at a time (a batch); the writes into neoarray spill to savepoints beyond
``config.memory_bytes_max`` when the array is in a connection.  A tqdm progress bar
counts the chunks (``progress=None``: shown when standard error is a terminal).

dtype, shape, chunk shape, fill value, memory order and attributes are kept.  zarr
format 2 records the order; in format 3 an ``'F'`` array is written with a
``transpose`` codec reversing the axes, which :func:`from_zarr` reads back as order
``'F'``.

**Compressed chunks pass through** (no decoding, no compression) when the two
layouts give the same bytes once decoded: same chunk shape, no sharding, no
filters, the same item bytes (dtype and byte order), the same memory order, and a
compressor whose format neoarray's codec reads the same way, with the same
configuration: none, zlib (zarr 2's ``numcodecs.Zlib``, zarr 3's ``numcodecs.zlib``),
blosc, zstd and lz4 (:data:`neoarray.codecs.NUMCODECS_IDS`; zarr 3's ``blosc`` and
``zstd`` codecs write the same frames as numcodecs).  A passed chunk of a
numcodecs codec is checked against the size its header declares; an edge chunk
(reaching past the array's end) is decoded once and passed only when its padding
holds the fill value, as neoarray's chunks always do.  Every other chunk is decoded
by one side and encoded by the other.  ``from_zarr`` gives the new array the zarr
array's codec when neoarray has it (``codec=`` picks another: then chunks are
recompressed); ``to_zarr`` gives the zarr array the neoarray array's codec.

zarr is optional: ``pip install 'neoarray[zarr]'``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import codecs
from . import core, fetch, layout
from .chunks import codec_from_spec, codec_spec
from .config import config
from .errors import ArrayDtypeError, ArrayShapeError, ArrayValueError
from .hints import CodecLike, OrderLike, ShapeLike

if TYPE_CHECKING:
    import zarr
    from ZODB.Connection import Connection

_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_UNKNOWN = ("unknown",)          # a zarr compressor neoarray has no codec for


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("zarr import and export need zarr 3: pip install 'neoarray[zarr]'") from None
    return zarr


@dataclasses.dataclass(frozen=True)
class ZarrLayout:
    """What a zarr array's chunk bytes are, in neoarray's terms.

    ``codec``: the neoarray codec spec reading its compressed chunks (``_UNKNOWN`` when
    none does); ``order``; ``stored_dtype``: the items' bytes once decompressed (None
    when they are not plain items); ``why``: why chunks cannot pass, or ``""``.
    """

    codec: object
    order: str
    stored_dtype: np.dtype | None
    why: str

    def passes_to(self, array: core.ndarray) -> bool:
        """Whether chunks pass unchanged between this layout and neoarray ``array``."""
        return (not self.why and self.codec == array.codec and self.order == array.order
                and self.stored_dtype == array.dtype)


def _spec_of_numcodecs(config: dict):
    """The neoarray codec spec of a numcodecs configuration, or ``_UNKNOWN``."""
    config = dict(config)
    if config.get("id") == "zlib":
        return ("zlib", int(config.get("level", 1)))
    if config.get("id") not in codecs.NUMCODECS_IDS:
        return _UNKNOWN
    try:
        return codec_spec(config)
    except ArrayValueError:
        return _UNKNOWN


def _spec_of_v3(codec):
    """The neoarray codec spec of a zarr 3 bytes-to-bytes codec, or ``_UNKNOWN``."""
    described = codec.to_dict()
    name, conf = described["name"], dict(described.get("configuration") or {})
    if name == "zstd":
        return _spec_of_numcodecs({"id": "zstd", "level": conf.get("level", 0),
                                   "checksum": conf.get("checksum", False)})
    if name == "blosc":
        shuffle = conf.get("shuffle", "noshuffle")
        return _spec_of_numcodecs({"id": "blosc", "cname": str(conf.get("cname", "lz4")),
                                   "clevel": conf.get("clevel", 5),
                                   "shuffle": _SHUFFLES.get(str(shuffle), -9),
                                   "blocksize": conf.get("blocksize", 0)})
    if name.startswith("numcodecs."):
        return _spec_of_numcodecs({"id": name.split(".", 1)[1], **conf})
    return _UNKNOWN


def _layout_v2(z) -> ZarrLayout:
    md = z.metadata
    compressor = md.compressor
    spec = None if compressor is None else _spec_of_numcodecs(compressor.get_config())
    why = "it has filters" if md.filters else ""
    return ZarrLayout(spec, md.order, np.dtype(z.dtype), why)


def _layout_v3(z) -> ZarrLayout:
    zarr = _zarr()
    ndim = len(z.shape)
    order, why = "C", ""
    filters = list(z.filters)
    if filters and isinstance(filters[0], zarr.codecs.TransposeCodec):
        axes = tuple(filters.pop(0).order)
        if axes == tuple(reversed(range(ndim))) and ndim > 1:
            order = "F"
        elif axes != tuple(range(ndim)):
            why = f"its transpose codec reorders the axes as {axes}"
    if filters:
        why = why or "it has filters"
    dtype = np.dtype(z.dtype)
    serializer = z.serializer
    stored = None
    if not isinstance(serializer, zarr.codecs.BytesCodec):
        why = why or f"its serializer is {type(serializer).__name__}"
    elif dtype.fields is None and dtype.itemsize > 1 and dtype.byteorder != "|":
        stored = dtype.newbyteorder("<" if serializer.endian.value == "little" else ">")
    elif dtype.fields is None:
        stored = dtype
    else:
        why = why or "its items are structured"
    compressors = list(z.compressors)
    if len(compressors) > 1:
        return ZarrLayout(_UNKNOWN, order, stored, why or "it chains compressors")
    spec = _spec_of_v3(compressors[0]) if compressors else None
    return ZarrLayout(spec, order, stored, why)


def layout_of(z: zarr.Array) -> ZarrLayout:
    """The :class:`ZarrLayout` of the zarr array ``z``."""
    if getattr(z, "shards", None) is not None:
        base = _layout_v3(z)
        return dataclasses.replace(base, why="it is sharded")
    out = _layout_v2(z) if z.metadata.zarr_format == 2 else _layout_v3(z)
    if out.codec == _UNKNOWN and not out.why:
        out = dataclasses.replace(out, why="neoarray has no codec reading its compressor")
    return out


# ---------------------------------------------------------------------- zarr keys and I/O

def _key_grid(z) -> tuple:
    """The grid that chunk keys name: shards when sharded, else chunks."""
    return tuple(z.shards) if getattr(z, "shards", None) is not None else tuple(z.chunks)


def _prefix(z) -> str:
    path = z.store_path.path
    return f"{path}/" if path else ""


def _parse_key(z, key: str, prefix: str, grid) -> tuple | None:
    """The chunk coordinates a listed store key names, or None (metadata, other)."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    numbers = [p for p in rest.replace(".", "/").split("/") if p.isdigit()]
    coords = tuple(int(p) for p in numbers)
    if len(coords) != len(grid) or z.metadata.encode_chunk_key(coords) != rest:
        return None
    return coords if all(c < n for c, n in zip(coords, grid)) else None


async def _list(store, prefix):
    return [key async for key in store.list_prefix(prefix)]


def _sync(coroutine):
    from zarr.core.sync import sync
    return sync(coroutine)


def stored_keys(z: zarr.Array) -> list[tuple[int, ...]]:
    """The coordinates of the chunks (shards) that ``z``'s store holds, sorted."""
    grid = tuple(-(-n // c) for n, c in zip(z.shape, _key_grid(z)))
    prefix = _prefix(z)
    keys = _sync(_list(z.store_path.store, prefix))
    return sorted(c for c in (_parse_key(z, k, prefix, grid) for k in keys) if c is not None)


async def _gather_get(store, keys):
    from zarr.core.buffer import default_buffer_prototype
    prototype = default_buffer_prototype()
    buffers = await asyncio.gather(*(store.get(k, prototype=prototype) for k in keys))
    return [None if b is None else b.to_bytes() for b in buffers]


async def _gather_set(store, items):
    from zarr.core.buffer import default_buffer_prototype
    make = default_buffer_prototype().buffer.from_bytes
    await asyncio.gather(*(store.set(k, make(p)) for k, p in items))


def _progress(total: int, what: str, progress):
    from tqdm.auto import tqdm
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    return tqdm(total=total, desc=what, unit="chunk", disable=disable)


def _open(source, path):
    zarr = _zarr()
    if isinstance(source, zarr.Array):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    return zarr.open_array(source, path=path, mode="r") if path else zarr.open_array(source, mode="r")


def _check_dtype(dtype) -> np.dtype:
    try:
        return layout.normalize_dtype(np.dtype(dtype))
    except (ArrayDtypeError, TypeError) as exc:
        raise ArrayDtypeError(f"a zarr array of dtype {dtype} cannot be stored in neoarray "
                              f"({exc}); cast it to a fixed-size dtype first (for strings: "
                              "numpy 'U' or 'S' of a fixed width)") from None


# ---------------------------------------------------------------------- zarr -> neoarray

def from_zarr(source: zarr.Array | str | os.PathLike | Any, out: core.ndarray | None = None, *,
              path: str | None = None, connection: Connection | None = None,
              chunks: ShapeLike | None = None, codec: CodecLike = "same", codec_level: int | None = None,
              order: OrderLike | None = None, progress: bool | None = None) -> core.ndarray:
    """Copy a zarr array into a neoarray, chunk by chunk; return the neoarray.

    Parameters
    ----------
    source : zarr.Array, str, path or zarr store
        The array, or where to open it (read only).
    path : str, optional
        The array's name inside a store or group.
    out : ndarray, optional
        The array written (same shape; items cast under ``same_kind``).  Default: a
        new array with the zarr array's dtype, chunk shape (``chunks`` for others),
        fill value, order, attributes and codec.
    connection : ZODB Connection, optional
        The new array is added to it before any chunk is written, so a large copy
        spills to savepoints instead of staying in memory; store it somewhere
        (``connection.root()["a"] = ...``) and commit.  Without it (and without
        ``out``) the new array is detached: fine for what fits in memory.
    chunks : int or tuple of int, optional
        Chunk shape of a new array (default: the zarr array's; another one decodes
        and re-encodes every chunk).
    codec : 'same' or a codec (see :class:`ndarray`)
        ``'same'``: the zarr array's compressor when neoarray has it (chunks then
        pass through compressed), else none.
    codec_level : int, optional
        Compression level of ``codec``.
    order : {'C', 'F'}, optional
        Default: the zarr array's.
    progress : bool, optional
        A tqdm progress bar of the chunks (default: when stderr is a terminal).

    Returns
    -------
    ndarray
        ``out``, or the new array (in ``connection`` when given).

    Raises
    ------
    ImportError
        zarr is not installed (``pip install 'neoarray[zarr]'``).
    ArrayDtypeError
        The zarr dtype has no fixed item size (strings of Python objects...).
    ArrayShapeError
        ``out`` has another shape.
    """
    z = _open(source, path)
    dtype = _check_dtype(z.dtype)
    zl = layout_of(z)
    if out is None:
        spec = (None if zl.codec == _UNKNOWN else zl.codec) if codec == "same" else codec
        fill = None if z.fill_value is None else z.fill_value
        out = core.ndarray(z.shape, dtype, order or zl.order, chunks=chunks or tuple(z.chunks),
                           fill_value=fill, codec=spec, codec_level=codec_level)
        out.attrs = dict(z.attrs)
        if connection is not None:
            connection.add(out)
    elif tuple(out.shape) != tuple(z.shape):
        raise ArrayShapeError(f"cannot copy a zarr array of shape {z.shape} into a neoarray "
                              f"of shape {out.shape}")
    passing = zl.passes_to(out) and tuple(z.chunks) == tuple(out.chunks)
    keys = stored_keys(z)
    with _progress(len(keys), "from_zarr", progress) as bar:
        if passing:
            _pass_into(z, out, keys, bar)
        else:
            _decode_into(z, out, keys, bar)
    return out


def _batches(keys, chunk_nbytes):
    return fetch.iter_batches(keys, lambda _: chunk_nbytes, config.fetch_limit_bytes())


def _pass_into(z, out, keys, bar):
    prefix, store = _prefix(z), z.store_path.store
    for batch in _batches(keys, out._chunk_nbytes):
        names = [prefix + z.metadata.encode_chunk_key(k) for k in batch]
        for key, payload in zip(batch, _sync(_gather_get(store, names))):
            if payload is not None:
                _put_payload(out, key, payload)
            bar.update(1)


def _payload_fits(out, key, payload) -> bool:
    """Whether ``payload`` decodes as a chunk of ``out`` (declared size; fill padding)."""
    spec, nbytes = out.codec, out._chunk_nbytes
    if spec is None and len(payload) != nbytes:
        return False
    if spec is not None and spec[0] == codecs.NUMCODECS:
        codec_id = json.loads(spec[1])["id"]
        if codecs.declared_raw_bytes(codec_id, payload) != nbytes:
            return False
    extent = layout.chunk_extent(key, out.shape, out.chunks)
    if extent == tuple(out.chunks):
        return True
    raw = codec_from_spec(spec).decode(payload)
    if len(raw) != nbytes:
        return False
    chunk = np.frombuffer(raw, dtype=out.dtype).reshape(out.chunks, order=out.order)
    expected = out._fill_chunk()
    inside = tuple(slice(0, e) for e in extent)
    expected[inside] = chunk[inside]
    return expected.tobytes(order="A") == np.asarray(chunk).tobytes(order="A")


def _put_payload(out, key, payload):
    """Store a compressed chunk as it is, or decoded and encoded when it does not fit."""
    if not _payload_fits(out, key, payload):
        raw = codec_from_spec(out.codec).decode(payload)       # ValueError: not a chunk at all
        items = np.frombuffer(raw, dtype=out.dtype)
        if items.size != math.prod(out.chunks):
            raise ArrayValueError(f"zarr chunk {key} decodes to {len(raw)} bytes, not a chunk "
                                  f"of {out.chunks} items of {out.dtype}")
        inside = tuple(slice(0, e) for e in layout.chunk_extent(key, out.shape, out.chunks))
        chunk = out._fill_chunk()                   # the padding holds the fill value
        chunk[inside] = items.reshape(out.chunks, order=out.order)[inside]
        out._store_chunk(key, chunk, out._tree.get(key))
        return
    out._put_payload(key, payload, out._tree.get(key))


def _decode_into(z, out, keys, bar):
    key_grid = _key_grid(z)
    for key in keys:
        region = layout.chunk_region(key, z.shape, key_grid)
        out[region] = z[region]
        bar.update(1)


# ---------------------------------------------------------------------- neoarray -> zarr

def _compressors(spec, dtype, zarr_format: int):
    """The zarr ``compressors`` argument writing what neoarray codec ``spec`` reads."""
    zarr = _zarr()
    if spec is None:
        return None
    if spec[0] == "zlib":
        if zarr_format == 2:
            return codecs.load_numcodecs().Zlib(level=spec[1])
        return zarr.codecs.Zlib(level=spec[1])
    config = json.loads(spec[1])
    if zarr_format == 2:
        return codecs.load_numcodecs().get_codec(config)
    name = config.pop("id")
    if name == "zstd":
        return zarr.codecs.ZstdCodec(level=config["level"], checksum=config.get("checksum", False))
    if name == "blosc":
        shuffle = {v: k for k, v in _SHUFFLES.items()}.get(config["shuffle"], "shuffle")
        return zarr.codecs.BloscCodec(cname=config["cname"], clevel=config["clevel"],
                                      shuffle=shuffle, blocksize=config["blocksize"],
                                      typesize=dtype.itemsize)
    return zarr.codecs.LZ4(**config)


def _zarr_attrs(values: dict) -> dict:
    """Attributes as JSON values (numpy values as lists or Python scalars)."""
    def plain(v):
        if isinstance(v, (np.ndarray, np.generic)):
            return v.tolist()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    out = {k: plain(v) for k, v in values.items()}
    try:
        json.dumps(out, allow_nan=True)
    except TypeError as exc:
        raise ArrayValueError(f"zarr attributes are JSON values: {exc}") from None
    return out


def _create(array, store, path, zarr_format, overwrite):
    zarr = _zarr()
    dtype = array.dtype
    kwargs = {"compressors": _compressors(array.codec, dtype, zarr_format)}
    if zarr_format == 2:
        kwargs.update(order=array.order, filters=None)
    else:
        if array.order == "F" and array.ndim > 1:
            kwargs["filters"] = [zarr.codecs.TransposeCodec(order=tuple(reversed(range(array.ndim))))]
        if dtype.fields is None and dtype.itemsize > 1 and dtype.byteorder != "|":
            big = dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")
            kwargs["serializer"] = zarr.codecs.BytesCodec(endian="big" if big else "little")
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    attributes = _zarr_attrs(dict(array.attrs))
    try:
        return zarr.create_array(store, name=path, shape=array.shape, dtype=dtype,
                                 chunks=array.chunks, fill_value=array.fill_value,
                                 zarr_format=zarr_format, overwrite=overwrite,
                                 attributes=attributes, **kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        if "exists" in str(exc).lower() or type(exc).__name__ == "ContainsArrayError":
            raise
        raise ArrayDtypeError(f"zarr format {zarr_format} cannot store this array (dtype "
                              f"{dtype}, shape {array.shape}): {exc}") from None


def to_zarr(array: core.ndarray, store: str | os.PathLike | Any, *, path: str | None = None,
            zarr_format: int = 3, overwrite: bool = False, progress: bool | None = None) -> zarr.Array:
    """Copy ``array`` into a new zarr array, chunk by chunk; return the zarr array.

    Parameters
    ----------
    array : ndarray
        The array copied (its connection's snapshot).
    store : str, path or zarr store
        Where the zarr array is made.
    path : str, optional
        The zarr array's name inside the store.
    zarr_format : {3, 2}
        zarr's format version.
    overwrite : bool
        Replace an array already there (zarr's ``ContainsArrayError`` otherwise).
    progress : bool, optional
        A tqdm progress bar of the chunks (default: when stderr is a terminal).

    Returns
    -------
    zarr.Array
        The new zarr array.  It gets the array's dtype, chunk shape, fill value,
        order, attributes and codec; the stored chunks pass through compressed (see
        the module docstring), and only them: unwritten chunks stay unwritten.

    Raises
    ------
    ArrayValueError
        ``zarr_format`` is neither 2 nor 3.
    ImportError
        zarr is not installed (``pip install 'neoarray[zarr]'``).
    """
    if zarr_format not in (2, 3):
        raise ArrayValueError(f"zarr_format is 2 or 3, not {zarr_format!r}")
    z = _create(array, store, path, zarr_format, overwrite)
    keys = list(array.chunk_keys())
    passing = layout_of(z).passes_to(array) and tuple(z.chunks) == tuple(array.chunks)
    with _progress(len(keys), "to_zarr", progress) as bar:
        if passing:
            _pass_out(array, z, keys, bar)
        else:
            for key, block in array._stored_blocks():
                z[layout.chunk_region(key, array.shape, array.chunks)] = block
                bar.update(1)
    return z


def _pass_out(array, z, keys, bar):
    prefix, store, tree = _prefix(z), z.store_path.store, array._tree
    for batch in _batches(keys, array._chunk_nbytes):
        payloads = fetch.submit([tree[k] for k in batch], array.colour)()
        items = [(prefix + z.metadata.encode_chunk_key(k), bytes(memoryview(p)))
                 for k, p in zip(batch, payloads)]
        _sync(_gather_set(store, items))
        bar.update(len(batch))
