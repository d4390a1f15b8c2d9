"""A 2-node cluster per module (``neo``) and a DB on it (``db``), for the envelope tests;
modules that need another cluster define their own ``neo``."""
import pytest
import transaction
import ZODB

from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def neo(tmp_path_factory, request):
    yield from running_cluster(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), storages=2)


@pytest.fixture
def db(neo):
    database = ZODB.DB(neo.open_storage())
    yield database
    transaction.abort()
    database.close()
