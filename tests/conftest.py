import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from neoarray.cluster import LocalCluster  # noqa: E402


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
