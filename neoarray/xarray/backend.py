"""The xarray engine ``"neoarray"``: datasets stored in groups, opened lazily.

``xarray.open_dataset(target, engine="neoarray", group=...)`` with ``target`` one of
:mod:`.sources` (a ``ZODB.DB``, a ``neoarray://HOST:PORT/CLUSTER?path=NAME`` URI,
or the data directory of ``neoarray.open(path)``) reads the group's metadata
(variables, dims, coordinates, attributes) in one snapshot and gives a Dataset
whose variables read nothing until indexed: each read indexes the stored array,
which fetches only the chunks the selection touches.

Variables of a neoarray cluster read through a
:class:`~neoarray.array.handles.Snapshot` (the array's handle: oid and snapshot
tid): thread-safe (each thread opens its own historical connection) and
picklable as a few hundred bytes, so Dask's threads, processes and distributed
workers all read the same snapshot.  With ``chunks=`` xarray makes Dask arrays
over them; ``chunks={}`` follows the stored chunk grid (``preferred_chunks``).
Variables of another ZODB storage (FileStorage, MappingStorage) read through the
connection that opened them, one read at a time; they do not pickle (store them
in a neoarray cluster for other processes).

What is stored is given back as it was written (:func:`neoarray.xarray.to_neoarray`
stores values, not netCDF's encodings), so there is no CF decoding here.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import transaction
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .. import datasets
from ..array import handles
from ..array.errors import ArrayHandleError
from . import sources

INDEXING = indexing.IndexingSupport.OUTER_1VECTOR     # numpy's rules give outer results


class _LockedReader:
    """Reads of an array of a storage without handles: one at a time, through the
    connection that loaded it (kept open until the dataset is closed)."""

    def __init__(self, array, lock):
        self._array, self._lock = array, lock

    def __getitem__(self, key):
        with self._lock:
            return self._array[key]

    def __reduce__(self):
        raise ArrayHandleError("this variable comes from a ZODB storage that is not a neoarray "
                               "cluster: it is read in this process only (store the dataset in "
                               "a neoarray cluster to read it from other processes)")


class NeoarrayBackendArray(BackendArray):
    """A lazily read stored array: shape and dtype known, items read when indexed.

    Thread-safe and picklable: its reader is the array's handle (or, for a database
    without a cluster behind it, the array read under the dataset's lock).

    Parameters
    ----------
    reader : object
        ``reader[key]`` reads the items of a basic index ``key``.
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        The array's dtype.
    """

    __slots__ = ("_reader", "dtype", "shape")

    def __init__(self, reader: Any, shape: Iterable[int], dtype: np.typing.DTypeLike) -> None:
        self._reader = reader
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, INDEXING, self._raw)

    def _raw(self, key):
        return np.asarray(self._reader[key])

    def __getstate__(self):
        return self._reader, self.shape, self.dtype

    def __setstate__(self, state):
        self._reader, self.shape, self.dtype = state


def _reader(array, lock):
    handle = handles.handle_of(array)      # a committed snapshot: never uncommitted changes
    if handle is None:
        return _LockedReader(array, lock)
    return handles.Snapshot(handle, array.shape, array.dtype, array.chunks)


def _variable(stored: datasets.Variable, lock) -> xr.Variable:
    array = stored.data
    data = indexing.LazilyIndexedArray(
        NeoarrayBackendArray(_reader(array, lock), array.shape, array.dtype))
    encoding = {"chunks": array.chunks, "preferred_chunks": dict(zip(stored.dims, array.chunks)),
                "dtype": array.dtype, "neoarray_codec": array.codec,
                "neoarray_fill_value": array.fill_value, "neoarray_order": array.order}
    return xr.Variable(stored.dims, data, datasets.python_attrs(stored.attrs), encoding)


def read_group(db: Any, path: str,
               drop_variables: str | Iterable[str] | None = ()) -> tuple[xr.Dataset, Callable[[], None]]:
    """``(dataset, close)`` of the group at ``path`` in ``db`` (a ``ZODB.DB``), read in one
    snapshot; ``close()`` lets its connection go."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    lock = threading.Lock()
    try:
        tm.begin()      # synced: what another client committed before is in the snapshot
        group = datasets.locate(conn.root(), path)
        drop = set([drop_variables] if isinstance(drop_variables, str) else drop_variables or ())
        variables = {name: _variable(v, lock) for name, v in group.variables.items()
                     if name not in drop}
        ds = xr.Dataset(variables, attrs=datasets.python_attrs(group.attrs))
        ds = ds.set_coords([c for c in group.coords if c in variables])
    except BaseException:
        tm.abort()
        conn.close()
        raise
    keep = getattr(db.storage, "client_options", None) is None     # locked readers use conn

    def close():
        if keep:
            with lock:
                tm.abort()
                conn.close()
    if not keep:
        tm.abort()
        conn.close()
    return ds, close


def open_dataset(target: Any, group: str | None = None,
                 drop_variables: str | Iterable[str] | None = None) -> xr.Dataset:
    """The dataset stored at ``group`` of ``target``, opened lazily.

    ``xarray.open_dataset(target, engine="neoarray", group=...)`` calls this.

    Parameters
    ----------
    target : ZODB.DB, str or path
        An open database, a ``neoarray://HOST:PORT/CLUSTER`` URI (``?path=NAME`` may
        give the group) or the data directory of ``neoarray.open(path)`` (opened once
        per process, closed with the last dataset using it).
    group : str, optional
        The group's path (``"name/child"``), joined to the URI's ``path``.
    drop_variables : str or iterable of str, optional
        Variables not opened.

    Returns
    -------
    xarray.Dataset
        Variables backed by :class:`NeoarrayBackendArray`, read as of one snapshot;
        ``ds.close()`` lets the connection and database go.

    Raises
    ------
    neoarray.datasets.DatasetError
        No group was named, or nothing (or no group) is stored at the path.
    """
    opened, uri_path = sources.open_for_reading(target)
    try:
        path = sources.join_paths(uri_path, group)
        if not path:
            raise datasets.DatasetError(
                "name the dataset's group: group='NAME' (or path=NAME in a neoarray:// URI)")
        ds, close = read_group(opened.db, path, drop_variables)
    except BaseException:
        opened.release()
        raise

    ds.set_close(_Closer(close, opened.release))
    return ds


class _Closer:
    """What ``ds.close()`` calls: the connection and database the dataset holds are let
    go, once.  A dataset pickled to another process holds nothing there: its copy
    closes nothing."""

    def __init__(self, *steps):
        self._steps = steps

    def __call__(self):
        steps, self._steps = self._steps, ()
        for step in steps:
            step()

    def __reduce__(self):
        return _Closer, ()


class NeoarrayBackendEntrypoint(BackendEntrypoint):
    """``engine="neoarray"``: groups of a neoarray database (see :mod:`neoarray.xarray`)."""

    description = "Open datasets stored in a neoarray (ZODB) database, lazily"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                     group: str | None = None) -> xr.Dataset:
        """:func:`neoarray.xarray.open_dataset` (``filename_or_obj``: its ``target``)."""
        if isinstance(filename_or_obj, os.PathLike):
            filename_or_obj = os.fspath(filename_or_obj)
        return open_dataset(filename_or_obj, group=group, drop_variables=drop_variables)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether ``filename_or_obj`` is a ``ZODB.DB``, a ``neoarray://`` URI or a
        neoarray data directory (it has ``master.address``)."""
        import ZODB
        if isinstance(filename_or_obj, ZODB.DB) or sources.is_uri(filename_or_obj):
            return True
        if isinstance(filename_or_obj, (str, os.PathLike)):
            path = os.fspath(filename_or_obj)
            return os.path.isfile(os.path.join(path, "master.address"))
        return False
