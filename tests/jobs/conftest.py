import pytest
import transaction
import ZODB

from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def jobs_cluster(tmp_path_factory):
    """A LocalCluster of 2 storage nodes (replicas=0) for the module."""
    yield from running_cluster(tmp_path_factory.mktemp("neo-jobs"), storages=2)


@pytest.fixture
def db(jobs_cluster):
    database = ZODB.DB(jobs_cluster.open_storage(cache_bytes_max=32 << 20))
    yield database
    database.close()


@pytest.fixture
def conn(db):
    tm = transaction.TransactionManager()
    connection = db.open(tm)
    connection.tm = tm
    yield connection
    tm.abort()
    connection.close()
