"""Fixtures for neoarray.array tests.

``db`` yields a ``ZODB.DB``; it is parametrized over the storages the arrays
must work on: ZODB's ``MappingStorage`` and ``FileStorage``, and ``neo``, a
:class:`~neoarray.client.NeoStorage` on a real cluster (one master and one
storage node, as local processes).  To run the suite on another storage, add a
factory to ``STORAGE_FACTORIES`` (a callable taking a temporary directory and
the pytest request, and returning an open storage).

One cluster serves the whole session (it is started the first time a test
asks for it: about a second).  A cluster cannot be emptied, so each test gets
a fresh *database* instead: a new client storage whose root mapping is
cleared before the test runs.  Objects of earlier tests stay in the cluster,
unreachable.
"""

import os
import sys

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

from tests.conftest import running_cluster

# test modules import array_helpers, also under pytest's importlib import mode
sys.path.insert(0, os.path.dirname(__file__))


def _mapping(tmp_path, request):
    return ZODB.MappingStorage.MappingStorage()


def _file(tmp_path, request):
    return ZODB.FileStorage.FileStorage(os.path.join(tmp_path, "Data.fs"))


def _neo(tmp_path, request):
    return request.getfixturevalue("neo_cluster").open_storage()


STORAGE_FACTORIES = {"mapping": _mapping, "file": _file, "neo": _neo}


@pytest.fixture(scope="session")
def neo_cluster(tmp_path_factory):
    """One LocalCluster (1 storage node, replicas=0) for the session, started lazily."""
    yield from running_cluster(tmp_path_factory.mktemp("neo-array"))


def _empty_root(database):
    """Clear the root mapping: a database reused from an earlier test looks new."""
    tm = transaction.TransactionManager()
    connection = database.open(tm)
    try:
        root = connection.root()
        if len(root):
            root.clear()
            tm.commit()
    finally:
        tm.abort()
        connection.close()


@pytest.fixture(params=sorted(STORAGE_FACTORIES))
def db(request, tmp_path):
    """A ZODB.DB with an empty root over each storage of STORAGE_FACTORIES."""
    database = ZODB.DB(STORAGE_FACTORIES[request.param](tmp_path, request))
    try:
        _empty_root(database)
        yield database
    finally:
        transaction.abort()
        database.close()


@pytest.fixture
def neo_db(neo_cluster):
    """A ZODB.DB on the session's cluster (tests of what only a cluster does: handles,
    Dask across processes, near-data reductions)."""
    database = ZODB.DB(neo_cluster.open_storage())
    yield database
    transaction.abort()
    database.close()


@pytest.fixture
def file_db(tmp_path):
    """A ZODB.DB over a FileStorage (transaction tests)."""
    database = ZODB.DB(_file(tmp_path, None))
    yield database
    database.close()


@pytest.fixture
def conn(db):
    """A connection of ``db`` with its own transaction manager."""
    tm = transaction.TransactionManager(explicit=False)
    connection = db.open(tm)
    yield connection
    tm.abort()
    connection.close()
