"""ZODB's own storage test mixins against NeoStorage on a real cluster of processes.

Each test gets a fresh cluster: 1 master and 2 storage nodes with replicas=1, so every
write goes to two nodes and every read to one of them.
"""
import os
import shutil
import tempfile
import unittest

import pytest

import ZODB
import ZODB.tests.testZODB
from ZODB.tests import (BasicStorage, ConflictResolution, HistoryStorage, IteratorStorage,
                        MTStorage, PackableStorage, PersistentStorage, ReadOnlyStorage,
                        RecoveryStorage, RevisionStorage, StorageTestBase, Synchronization,
                        TransactionalUndoStorage)

from neoarray.cluster import LocalCluster


def start_cluster(path):
    return LocalCluster(path, storages=2, replicas=1, partitions=4, node_timeout_s=3.0).start()


class ClusterTestBase(StorageTestBase.StorageTestBase):
    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self._dir = tempfile.mkdtemp(prefix="neoarray-test-")
        self._cluster = start_cluster(os.path.join(self._dir, "src"))
        self.open()

    def open(self, read_only=False):
        self._storage = self._cluster.open_storage(read_only=read_only)

    def tearDown(self):
        self._storage.close()
        self._cluster.stop()       # before the base class removes its temporary directory
        StorageTestBase.StorageTestBase.tearDown(self)
        shutil.rmtree(self._dir, ignore_errors=True)


class NeoStorageTests(
    ClusterTestBase,
    BasicStorage.BasicStorage,
    TransactionalUndoStorage.TransactionalUndoStorage,
    RevisionStorage.RevisionStorage,
    PackableStorage.PackableStorageWithOptionalGC,
    PackableStorage.PackableUndoStorage,
    Synchronization.SynchronizedStorage,
    ConflictResolution.ConflictResolvingStorage,
    ConflictResolution.ConflictResolvingTransUndoStorage,
    HistoryStorage.HistoryStorage,
    IteratorStorage.IteratorStorage,
    IteratorStorage.ExtendedIteratorStorage,
    PersistentStorage.PersistentStorage,
    MTStorage.MTStorage,
    ReadOnlyStorage.ReadOnlyStorage,
):
    pass


class NeoRecoveryTests(ClusterTestBase, RecoveryStorage.RecoveryStorage):
    def setUp(self):
        ClusterTestBase.setUp(self)
        self._dst_cluster = start_cluster(os.path.join(self._dir, "dst"))
        self._dst = self._dst_cluster.open_storage()

    def tearDown(self):
        self._dst.close()
        self._dst_cluster.stop()
        ClusterTestBase.tearDown(self)

    def new_dest(self):
        self._dst.close()
        return self._dst_cluster.open_storage()


class NeoZODBTests(ZODB.tests.testZODB.ZODBTests):
    def setUp(self):
        ZODB.tests.util.TestCase.setUp(self)
        self._dir = tempfile.mkdtemp(prefix="neoarray-test-")
        self._cluster = start_cluster(os.path.join(self._dir, "c"))
        self._storage = self._cluster.open_storage()
        self._db = ZODB.DB(self._storage)

    def tearDown(self):
        self._db.close()
        self._cluster.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
        ZODB.tests.util.TestCase.tearDown(self)



# -- blobs: ZODB's reusable IBlobStorage suite (ZODB.tests.testblob) -----------------------
# Each storage that a test creates by name gets its own cluster (1 master, 2 storage nodes,
# replicas=1) in the test's directory; a name created again opens a new client of the
# same cluster with the blob cache directory given (as a FileStorage reopened).  The
# suite's packing doctest is left out: it checks that pack removes files from the blob
# directory, which for neoarray is a cache (pack frees the chunks on the storage nodes:
# tests/test_blobs.py).

_blob_clusters: dict[str, LocalCluster] = {}
_blob_root: list[str] = []       # the directory of the clusters of the running test


def _blob_storage(name, blob_dir):
    cluster = _blob_clusters.get(name)
    if cluster is None:     # outside the test's directory: the clusters stop after its teardown
        cluster = _blob_clusters[name] = start_cluster(os.path.join(_blob_root[0], name))
    return cluster.open_storage(blob_cache_dir=os.path.abspath(blob_dir))


def _blob_cases():
    import ZODB.tests.testblob
    suite = ZODB.tests.testblob.storage_reusable_suite(
        "Neo", _blob_storage, test_blob_storage_recovery=True, test_packing=False, test_undo=True)

    def flat(s):
        for t in s:
            yield from (flat(t) if isinstance(t, unittest.TestSuite) else [t])
    return list(flat(suite))


_BLOB_CASES = _blob_cases()


@pytest.mark.parametrize("case", _BLOB_CASES, ids=[c.id().rsplit(".", 2)[-1] if "/" not in c.id()
                                                   else os.path.basename(c.id()) for c in _BLOB_CASES])
def test_zodb_blob_suite(case):
    result = unittest.TestResult()
    _blob_root[:] = [tempfile.mkdtemp(prefix="neoarray-blob-test-")]
    try:
        case.run(result)
    finally:
        for cluster in _blob_clusters.values():
            cluster.stop()
        _blob_clusters.clear()
        shutil.rmtree(_blob_root.pop(), ignore_errors=True)
    problems = [text for _, text in result.errors + result.failures if not _root_only(text)]
    assert not problems, "\n".join(problems)


# a doctest example that expects a read-only file to refuse writing, which root may do,
# and the later read of that file (root truncated it)
_ROOT_ONLY_EXAMPLES = ("open(blob.committed(), 'w')", "open(blob_storage.loadBlob(blob._p_oid, oldserial))")


def _root_only(failure: str) -> bool:
    """Whether every failed example of a doctest ``failure`` fails only for running as root."""
    if os.geteuid() != 0:
        return False
    examples = failure.split("Failed example:")[1:]
    return bool(examples) and all(any(e in ex for e in _ROOT_ONLY_EXAMPLES) for ex in examples)
