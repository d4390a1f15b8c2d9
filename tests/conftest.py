import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from neoarray.cluster import LocalCluster


def running_cluster(path, storages=1, replicas=0, partitions=4, **options):
    """Yield a started LocalCluster over ``path``; stop it afterwards (fixture body)."""
    cluster = LocalCluster(str(path), storages=storages, replicas=replicas, partitions=partitions,
                           **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(tmp_path):
    """A real cluster of processes on 127.0.0.1: 1 master, 2 storages, replicas=1."""
    c = LocalCluster(str(tmp_path / "cluster"), storages=2, replicas=1, partitions=4, node_timeout_s=3.0)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def storage(cluster):
    s = cluster.open_storage()
    yield s
    s.close()
