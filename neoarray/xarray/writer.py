"""Storing an xarray Dataset: :func:`to_neoarray` (and ``ds.neoarray.to(...)``).

Every variable becomes a :class:`neoarray.ndarray` in a :class:`neoarray.datasets.Group`,
with its dims and attributes; the group records which variables are coordinates
and the dataset's attributes.  All of it is written in one ZODB transaction: other
readers see the whole dataset or nothing.

Memory stays bounded whatever the dataset's size:

* a Dask-backed variable is computed and written in groups of at most
  ``neoarray.array.config.fetch_limit_bytes()`` bytes of blocks
  (:func:`neoarray.array.from_dask`), by the current Dask scheduler;
* a lazily opened variable (any xarray backend) is read and written one slab of
  whole chunk rows at a time (at most ``fetch_limit_bytes()`` bytes, or one chunk row);
* the chunks written stay in memory up to ``config.unsaved_limit_bytes()`` (a quarter
  of ``memory_bytes_max``); beyond, the transaction takes a savepoint that moves them
  to ZODB's temporary file.

Values are stored as they are: no netCDF (CF) encoding, so what
``xarray.open_dataset(..., engine="neoarray")`` gives back is identical, datetimes
included.  Variables of Python objects are stored when they hold only ``str`` (as
fixed-width unicode) or only ``bytes``; other objects are refused.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import transaction
import xarray as xr
from ZODB.Connection import Connection

from .. import datasets
from ..array import config, from_dask
from ..array.core import ndarray
from . import sources

MODES = ("w-", "w")
ENCODING_KEYS = ("chunks", "codec", "codec_level", "fill_value", "order")


def _encoding_of(name, variable, encoding: dict, defaults: dict) -> dict:
    given = dict(encoding.get(name) or {})
    unknown = set(given) - set(ENCODING_KEYS)
    if unknown:
        raise datasets.DatasetError(f"unknown encoding key(s) {sorted(unknown)} for variable "
                                    f"{name!r} (known: {', '.join(ENCODING_KEYS)})")
    options = {k: v for k, v in defaults.items() if v is not None}
    options.update(given)
    if "chunks" not in options:
        options["chunks"] = _chunks_of(variable)
    return options


def _chunks_of(variable):
    """The chunk shape a variable suggests: its Dask blocks' first sizes, or the one it
    was read with (``encoding['chunks']``); None for neoarray's default."""
    if variable.chunks is not None:
        return tuple(max(1, c[0]) for c in variable.chunks)
    chunks = variable.encoding.get("chunks")
    if isinstance(chunks, tuple) and len(chunks) == variable.ndim and all(
            isinstance(c, (int, np.integer)) and c > 0 for c in chunks):
        return tuple(int(c) for c in chunks)
    return None


def _storable(name, variable):
    """``(variable, dtype)`` with Python objects made fixed-width str or bytes."""
    dtype = variable.dtype
    if dtype.kind not in "OT":
        return variable, dtype
    if variable.chunks is not None:
        raise datasets.DatasetError(
            f"variable {name!r} holds Python objects in a Dask array: cast it to a fixed-size "
            "dtype first (ds[name] = ds[name].astype(str) or a numeric dtype)")
    values = np.asarray(variable.values)
    for kind, type_ in (("U", str), ("S", bytes)):
        if all(isinstance(v, type_) for v in values.flat):
            fixed = values.astype(kind) if values.size else values.astype(f"{kind}1")
            return variable.copy(data=fixed), fixed.dtype
    raise datasets.DatasetError(
        f"variable {name!r} holds Python objects that are not all str or all bytes: cast it "
        "to a fixed-size dtype first")


def _slabs(shape, chunks, itemsize):
    """Regions of whole chunk rows along axis 0, each at most ``fetch_limit_bytes()``
    bytes (or one chunk row)."""
    if not shape:
        yield ()
        return
    row_bytes = math.prod(shape[1:]) * itemsize
    rows = max(chunks[0], (config.fetch_limit_bytes() // max(1, row_bytes)) // chunks[0] * chunks[0])
    for start in range(0, shape[0], rows):
        yield (slice(start, min(shape[0], start + rows)),)


def _write(array: ndarray, variable) -> None:
    if variable.chunks is not None:
        from_dask(variable.data, out=array)
        return
    for region in _slabs(array.shape, array.chunks, array.itemsize):
        block = np.asarray(variable[region].values) if region else np.asarray(variable.values)
        array[region if region else ...] = block


def _dataset(obj) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            raise datasets.DatasetError("a DataArray is stored as a dataset of one variable "
                                        "named as it is: give it a name (da.rename('x'))")
        return obj.to_dataset()
    raise TypeError(f"to_neoarray stores an xarray Dataset or DataArray, not {type(obj).__name__}")


def write_group(conn: Connection, ds: xr.Dataset, path: str, mode: str, encoding: dict,
                defaults: dict) -> datasets.Group:
    """Store ``ds`` at ``path`` in ``conn``'s current transaction (not committed)."""
    if mode not in MODES:
        raise ValueError(f"mode is 'w-' (refuse an existing group) or 'w' (replace it), "
                         f"not {mode!r}")
    unknown = set(encoding) - set(ds.variables)
    if unknown:
        raise datasets.DatasetError(f"encoding names variables {sorted(unknown)} that the "
                                    "dataset does not have")
    root = conn.root()
    if mode == "w-" and datasets.exists(root, path):
        raise datasets.DatasetError(f"something is stored at {path!r} already: "
                                    "mode='w' replaces it")
    group = datasets.Group(attrs=ds.attrs)
    for name, xvar in ds.variables.items():
        variable, dtype = _storable(name, xvar)
        options = _encoding_of(name, variable, encoding, defaults)
        array = ndarray(variable.shape, dtype, options.pop("order", "C"), **options)
        conn.add(array)         # joined now: a long write can spill to savepoints
        _write(array, variable)
        group.add_variable(str(name), tuple(map(str, variable.dims)), array, variable.attrs,
                           coord=name in ds.coords)
    datasets.put(root, path, group)
    return group


def to_neoarray(ds: xr.Dataset | xr.DataArray, target: Any, group: str | None = None, *, mode: str = "w-",
                encoding: dict[str, dict[str, Any]] | None = None, codec: Any = None,
                codec_level: int | None = None) -> None:
    """Store the xarray Dataset (or named DataArray) ``ds`` at ``group`` of ``target``.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        The data (a DataArray needs a name); Dask-backed variables are written in
        bounded groups of blocks.
    target : ZODB.DB, ZODB Connection, str or path
        A database (opened with ``neoarray.open``...), a ``neoarray://HOST:PORT/CLUSTER``
        URI (``?path=NAME`` may give the group), the data directory of the embedded
        default, or a ZODB connection: then the writes join its current transaction
        and the caller commits; otherwise they are committed here, as one transaction.
    group : str
        Where: ``"name"`` (a key of the database root) or ``"name/child/..."`` (child
        groups, made when missing).
    mode : {'w-', 'w'}
        ``'w-'`` refuses a path where something is stored; ``'w'`` replaces it.
    encoding : dict, optional
        Per variable: ``{"temp": {"chunks": (24, 100), "codec": "zstd", "codec_level": 3,
        "fill_value": nan, "order": "C"}}``.  Default chunks: the variable's Dask block
        sizes, else neoarray's default.
    codec, codec_level : optional
        The codec of every variable without one in ``encoding`` (see
        :class:`neoarray.ndarray`).

    Raises
    ------
    neoarray.datasets.DatasetError
        Something is stored at ``group`` (mode ``'w-'``), an attribute or a variable
        cannot be stored; nothing is committed.
    """
    ds = _dataset(ds)
    defaults = {"codec": codec, "codec_level": codec_level}
    encoding = dict(encoding or {})
    if isinstance(target, Connection):
        write_group(target, ds, sources.join_paths(group), mode, encoding, defaults)
        return
    opened, uri_path = sources.open_for_writing(target)
    try:
        tm = transaction.TransactionManager()
        conn = opened.db.open(tm)
        try:
            write_group(conn, ds, sources.join_paths(uri_path, group), mode, encoding, defaults)
            tm.commit()
        finally:
            tm.abort()
            conn.close()
    finally:
        opened.release()


@xr.register_dataset_accessor("neoarray")
class NeoarrayAccessor:
    """``ds.neoarray.to(target, group, ...)``: :func:`to_neoarray` of the dataset."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def to(self, target: Any, group: str | None = None, **options: Any) -> None:
        """Store this dataset: :func:`neoarray.xarray.to_neoarray` ``(ds, target, group, **options)``."""
        to_neoarray(self._ds, target, group, **options)
