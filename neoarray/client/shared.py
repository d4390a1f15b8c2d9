"""The databases a process opens on clusters named by plain options: one per cluster.

Jobs' worker processes, Dask workers and array handles (:mod:`neoarray.array.handles`)
receive *how* to reach a cluster, never a connection: the options of
:meth:`NeoStorage.client_options` (master addresses, cluster name, cache budget, and
credentials by reference: the paths of the TLS files, never their bytes).
:func:`shared_db` opens one ``ZODB.DB`` per ``(master, cluster)`` the first time it is
asked and keeps it; at most :data:`SHARED_DBS_MAX` are kept, the least recently used
one beyond that is closed.  The options of the first caller for a cluster win.  A
database the process opened itself on that cluster and made known with
:func:`remember` (the array handles' do) is used instead while it is open.
"""
from __future__ import annotations

import collections
import threading
import weakref

import ZODB

from .storage import NeoStorage

SHARED_DBS_MAX = 8                  # clusters a process keeps a database open on
HISTORICAL_POOL_SIZE = 64           # snapshot connections a shared database keeps without a warning

_lock = threading.Lock()
_dbs: collections.OrderedDict = collections.OrderedDict()
_known: weakref.WeakValueDictionary = weakref.WeakValueDictionary()     # the process's own


def source_key(source: dict) -> tuple[str, str]:
    """``(master, cluster)``: what names a cluster in :func:`shared_db`."""
    return source["master"], source["cluster"]


def is_open(db) -> bool:
    """Whether ``db`` and its storage are still open (``DB.close`` replaces ``storage``)."""
    storage = getattr(db, "storage", None)
    return hasattr(storage, "lastTransaction") and not getattr(storage, "_closed", False)


def remember(db, source: dict) -> None:
    """Let :func:`shared_db` answer ``db`` (not kept alive) for the cluster of ``source``."""
    with _lock:
        _known[source_key(source)] = db


def shared_db(source: dict):
    """This process's database on the cluster of ``source`` (opened once, kept)."""
    key = source_key(source)
    with _lock:
        db = _known.get(key)
        if db is not None and is_open(db):
            return db
        db = _dbs.get(key)
        if db is not None and is_open(db):
            _dbs.move_to_end(key)
            return db
        db = _dbs[key] = _open(source)
        evicted = []
        while len(_dbs) > SHARED_DBS_MAX:
            evicted.append(_dbs.popitem(last=False)[1])
    for old in evicted:
        old.close()
    return db


def _open(source: dict):
    options = {k: v for k, v in source.items() if k not in ("master", "cluster")}
    storage = NeoStorage(source["master"], source["cluster"], **options)
    return ZODB.DB(storage, historical_pool_size=HISTORICAL_POOL_SIZE)


def close_shared_dbs() -> None:
    """Close the databases :func:`shared_db` opened (a worker process ends)."""
    with _lock:
        dbs = list(_dbs.values())
        _dbs.clear()
    for db in dbs:
        db.close()
