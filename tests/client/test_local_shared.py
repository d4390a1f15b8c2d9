"""Two clients of one process over a co-located cluster both read its LMDB in place:
they share one read-only environment per directory (neoarray/client/local.py)."""

import time

import transaction
import ZODB

from neoarray.client import local
from tests.conftest import running_cluster


def _local_paths(storage, wait_s=10.0):
    deadline = time.monotonic() + wait_s
    while not storage._local.readers and time.monotonic() < deadline:
        time.sleep(0.05)
    return {reader.kv.path for reader in storage._local.readers.values()}


def test_two_databases_in_one_process_both_read_locally(tmp_path):
    for cluster in running_cluster(tmp_path / "neo", storages=1, partitions=2):
        first = ZODB.DB(cluster.open_storage())
        second = ZODB.DB(cluster.open_storage())
        try:
            paths = _local_paths(first._storage)
            assert paths and _local_paths(second._storage) == paths
            path = next(iter(paths))
            assert local.shared_users(path) == 2
            tm = transaction.TransactionManager()
            conn = first.open(tm)
            conn.root()["x"] = b"written by the first client"
            tm.commit()
            conn.close()
            second._storage.sync()
            tm2 = transaction.TransactionManager()
            conn2 = second.open(tm2)
            assert conn2.root()["x"] == b"written by the first client"
            conn2.close()
            first.close()       # the environment stays open for the second client
            assert local.shared_users(path) == 1
            assert second._storage._local.readers
            tm2 = transaction.TransactionManager()
            conn2 = second.open(tm2)
            conn2.cacheMinimize()
            assert conn2.root()["x"] == b"written by the first client"
            conn2.close()
        finally:
            first.close()
            second.close()
        assert local.shared_users(path) == 0
