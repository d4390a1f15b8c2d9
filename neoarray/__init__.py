"""neoarray: a NEO-style distributed, transactional object store for ZODB, and
persistent numpy-like arrays far larger than memory on top of it.

``neoarray.open(path)`` is the embedded default: it starts a local master and storage
node over the directory ``path`` (or connects to ``master`` when given one) and returns
a ``ZODB.DB``; closing the database stops the nodes it started.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AccessDenied,
    ChecksumError,
    ClusterNameMismatch,
    ClusterUnavailable,
    LimitExceeded,
    NeoError,
    RequestRefused,
    StorageFull,
)

if TYPE_CHECKING:
    from .database import Database

__all__ = [
    "AccessDenied",
    "ChecksumError",
    "ClusterNameMismatch",
    "ClusterUnavailable",
    "LimitExceeded",
    "LocalCluster",
    "NeoError",
    "NeoStorage",
    "RequestRefused",
    "StorageFull",
    "alerts",
    "asarray",
    "cache_colour",
    "diff",
    "empty",
    "empty_like",
    "from_dask",
    "from_zarr",
    "full",
    "full_like",
    "jobs",
    "map_blocks",
    "moving_mean",
    "ndarray",
    "ones",
    "ones_like",
    "open",
    "zeros",
    "zeros_like",
]
__version__ = "0.1.0"


def open(path: str | None = None, *, master: str | None = None, cluster: str | None = None,
         storages: int = 1, replicas: int = 0, partitions: int = 12, tls: bool | None = None,
         **storage_options: Any) -> Database:
    """Open a ``ZODB.DB`` on a neoarray cluster (also a context manager:
    ``with neoarray.open(path) as db:`` closes it).

    Parameters
    ----------
    path : str, optional
        Data directory of an embedded cluster, started now and stopped when the
        database is closed, or when this process ends however it ends.  Reopening the
        same directory finds the same data.  A directory that another live process
        runs is refused (:class:`~neoarray.errors.DirectoryInUse` says where its
        master is); nodes that an ended process left running over it are stopped.
    master, cluster : str, optional
        Connect to a running cluster instead (both required).
    storages, replicas, partitions : int
        Shape of an embedded cluster created at ``path``.
    tls : bool, optional
        Run the embedded cluster with mutual TLS (its CA and certificates are made in
        ``path/tls`` once; default: TLS when ``path`` has them).  For a running
        cluster, give ``ca``, ``cert`` and ``key`` in ``storage_options``.
    **storage_options
        Passed to :class:`NeoStorage` (``cache_bytes_max``, ``read_only``...).

    Returns
    -------
    neoarray.database.Database
        A ``ZODB.DB`` that is also a context manager.

    Raises
    ------
    ValueError
        Neither ``path`` nor ``master`` was given, or ``master`` without ``cluster``.
    neoarray.errors.DirectoryInUse
        Another live process runs the directory ``path``.
    neoarray.errors.ClusterUnavailable
        The cluster did not start, or no master answered.
    """
    from .client import NeoStorage
    from .database import Database, open_embedded

    if master is not None:
        if not cluster:
            raise ValueError("neoarray.open(master=...) needs the cluster name too")
        return Database(NeoStorage(master, cluster, **storage_options))
    if path is None:
        raise ValueError("neoarray.open needs a data directory or a master address")
    return open_embedded(path, storages=storages, replicas=replicas, partitions=partitions, tls=tls,
                         **storage_options)


_ARRAY_NAMES = ("ndarray", "empty", "zeros", "ones", "full", "asarray",
                "empty_like", "zeros_like", "ones_like", "full_like", "diff", "moving_mean", "alerts",
                "from_dask", "from_zarr")


def __getattr__(name: str) -> Any:
    # Everything heavy loads on first use: a master or storage node process imports
    # ``neoarray.<module>`` without paying for the ZODB client, numpy and Numba.
    if name == "NeoStorage":
        from .client import NeoStorage
        return NeoStorage
    if name == "cache_colour":
        from .client.colours import cache_colour
        return cache_colour
    if name == "LocalCluster":
        from .cluster import LocalCluster
        return LocalCluster
    if name in ("map_blocks", "jobs"):
        import importlib
        jobs = importlib.import_module(".jobs", __name__)
        return jobs if name == "jobs" else jobs.map_blocks
    if name in _ARRAY_NAMES:       # neoarray.ndarray, neoarray.zeros, ... (numpy loaded lazily)
        from . import array
        return getattr(array, name)
    raise AttributeError(f"module 'neoarray' has no attribute {name!r}")
