"""One database per process per cluster, bounded (neoarray/client/shared.py)."""

import pytest
import ZODB

from neoarray.client import shared
from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("shared"), partitions=2)


def _source(cluster, host="127.0.0.1"):
    storage = cluster.open_storage()
    try:
        source = storage.client_options()
    finally:
        storage.close()
    source["master"] = source["master"].replace("127.0.0.1", host)
    return source


def test_one_database_per_cluster_least_recently_used_closed(neo, monkeypatch):
    monkeypatch.setattr(shared, "SHARED_DBS_MAX", 1)
    first = shared.shared_db(_source(neo))
    try:
        assert shared.shared_db(_source(neo)) is first
        other = shared.shared_db(_source(neo, "localhost"))    # another name: another key
        assert other is not first and shared.is_open(other)
        assert not shared.is_open(first)                       # beyond the bound: closed
        assert shared.shared_db(_source(neo, "localhost")) is other
    finally:
        shared.close_shared_dbs()
    assert not shared.is_open(other)


def test_a_known_database_is_used_while_open(neo):
    source = _source(neo)
    own = ZODB.DB(neo.open_storage())
    shared.remember(own, source)
    try:
        assert shared.shared_db(source) is own
        own.close()
        opened = shared.shared_db(source)                     # closed: one of its own
        assert opened is not own and shared.is_open(opened)
    finally:
        shared.close_shared_dbs()
