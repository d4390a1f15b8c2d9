"""ZODB's own storage test mixins against NeoStorage on a real cluster of processes.

Each test gets a fresh cluster: 1 master and 2 storage nodes with replicas=1, so every
write goes to two nodes and every read to one of them.
"""
import os
import shutil
import tempfile

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

