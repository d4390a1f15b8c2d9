"""Fixtures for neoarray.array tests.

``db`` yields a ``ZODB.DB``; it is parametrized over the storages the arrays
must work on.  To run the suite on another storage, add a factory to
``STORAGE_FACTORIES`` (a callable taking a temporary directory and returning
an open storage).
"""

import os
import sys

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage


# test modules import array_helpers, also under pytest's importlib import mode
sys.path.insert(0, os.path.dirname(__file__))


def _mapping(tmp_path):
    return ZODB.MappingStorage.MappingStorage()


def _file(tmp_path):
    return ZODB.FileStorage.FileStorage(os.path.join(tmp_path, "Data.fs"))


STORAGE_FACTORIES = {"mapping": _mapping, "file": _file}


@pytest.fixture(params=sorted(STORAGE_FACTORIES))
def db(request, tmp_path):
    """A ZODB.DB over each storage of STORAGE_FACTORIES."""
    database = ZODB.DB(STORAGE_FACTORIES[request.param](tmp_path))
    yield database
    transaction.abort()
    database.close()


@pytest.fixture
def file_db(tmp_path):
    """A ZODB.DB over a FileStorage (transaction tests)."""
    database = ZODB.DB(_file(tmp_path))
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
