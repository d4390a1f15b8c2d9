"""``Database``: the ``ZODB.DB`` that ``neoarray.open`` returns, and the embedded cluster
it may own.

An embedded database (``neoarray.open(path)``) owns a :class:`~neoarray.cluster.LocalCluster`:
closing the database stops its nodes.  A process that ends without closing it stops
them too: at interpreter exit (an uncaught exception, a return from ``main``) through
``atexit``, and in every other case (``os._exit``, a signal, SIGKILL) because each node
watches its parent (:mod:`neoarray.lifeline`).
"""
from __future__ import annotations

import atexit
from typing import TYPE_CHECKING, Any

import ZODB

from .client import NeoStorage
from .cluster import LocalCluster

if TYPE_CHECKING:
    from typing_extensions import Self


class Database(ZODB.DB):
    """A ``ZODB.DB`` that is a context manager and stops its embedded cluster on close."""

    local_cluster: LocalCluster | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database, then stop the embedded cluster it owns (if any)."""
        try:
            super().close()
        finally:
            local = self.local_cluster
            if local is not None:
                atexit.unregister(local.stop)
                local.stop()


def open_embedded(path: str, storages: int, replicas: int, partitions: int, tls: bool | None,
                  **storage_options: Any) -> Database:
    """Start the cluster of ``path`` and open a database on it (see ``neoarray.open``)."""
    local = LocalCluster(path, storages=storages, replicas=replicas, partitions=partitions, tls=tls)
    atexit.register(local.stop)
    try:
        local.start()
        db = Database(NeoStorage(**local.storage_kwargs(), **storage_options))
    except BaseException:
        atexit.unregister(local.stop)
        local.stop()
        raise
    db.local_cluster = local
    return db
