"""Prometheus metrics of every node, scraped over HTTP from real processes.

A cluster of processes on 127.0.0.1 started with metrics (``LocalCluster(metrics=True)``)
and a client serving its own (``NeoStorage(metrics_bind=...)``): commits and reads go
through ZODB, then each ``/metrics`` is read with ``urllib`` and parsed with
``prometheus_client``'s parser, and the figures must have moved by what was done.
"""
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import transaction
import ZODB
import ZODB.config
from persistent.mapping import PersistentMapping
from prometheus_client.parser import text_string_to_metric_families

from master.metrics import tid_seconds
from neoarray import NeoStorage, metrics, wire
from neoarray.client.config import parse_uri
from neoarray.errors import ClusterNameMismatch, RequestRefused
from neoarray.kv import LMDBStore, MemoryStore
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from tests.cluster_helpers import storage_ids, storage_of_index, wait_cells
from tests.conftest import ROOT, running_cluster

MASTER, STORAGE = "neoarray.v1.Master", "neoarray.v1.Storage"
COMMITS = 3
BLOB_BYTES = 5_000
RATE_BYTES_PER_S = 5_000


def scrape(address: str) -> dict:
    """``{(sample name, ((label, value), ...)): value}`` of one ``/metrics``."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent: not counted yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def grew(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests(service: str, method: str, code: str = "OK") -> dict:
    return {"service": service, "method": method, "code": code}


def scrape_all(cluster, client) -> dict:
    out = {node: scrape(address) for node, address in cluster.metrics_addresses().items()}
    out["client"] = scrape(client.metrics_address)
    return out


def wait_metric(address: str, name: str, accept, timeout_s: float = 60.0, **labels) -> float:
    """Scrape until ``accept(value)``; the value then."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = value(scrape(address), name, **labels)
        if accept(got):
            return got
        assert time.monotonic() < deadline, f"{name}{labels} stayed {got} for {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("metrics") / "cluster", storages=2, replicas=1,
                               node_timeout_s=3.0, metrics=True)


def test_every_node_counts_requests_errors_latency_bytes_and_its_state(cluster):
    writer = ZODB.DB(cluster.open_storage())
    reader_storage = cluster.open_storage(metrics_bind="127.0.0.1:0", local_reads=False)
    reader = ZODB.DB(reader_storage)
    assert set(cluster.metrics_addresses()) == {"master", "S1", "S2"}     # named as neoctl does
    before = scrape_all(cluster, reader_storage)

    conn = writer.open()
    for i in range(COMMITS):              # each: the root changes, one new object
        conn.root()[f"k{i}"] = PersistentMapping(v=i)
        transaction.commit()
    conn.close()

    rconn = reader.open()                  # misses: the root was invalidated, the objects are new
    transaction.begin()                    # a storage sync: every commit above is visible (ZODB's
                                           # open alone does not sync, see Connection.open)
    assert [rconn.root()[f"k{i}"]["v"] for i in range(COMMITS)] == list(range(COMMITS))
    rconn.cacheMinimize()                  # hits: the same revisions again, from the client cache
    assert [rconn.root()[f"k{i}"]["v"] for i in range(COMMITS)] == list(range(COMMITS))
    rconn.close()
    refused_requests(cluster)
    after = scrape_all(cluster, reader_storage)

    check_master(before["master"], after["master"], writer.storage.lastTransaction())
    storages = [cluster.storage_name(i) for i in range(2)]
    for node in storages:
        check_storage(before[node], after[node])
    loads = sum(grew(before[n], after[n], "neoarray_rpc_server_requests_total", **requests(STORAGE, "Load"))
                for n in storages)
    check_client(before["client"], after["client"], reader_storage, loads)
    for node, samples in after.items():
        role = node if node in ("client", "master") else "storage"
        assert total(samples, "neoarray_node_info", role=role, cluster=cluster.cluster) == 1

    address = reader_storage.metrics_address
    reader.close()
    writer.close()
    with pytest.raises(urllib.error.URLError):   # closing the storage stops its HTTP server
        scrape(address)


def refused_requests(cluster) -> None:
    """One request of another cluster to the master, one batch too large to a storage."""
    with wire.open_channel(cluster.address, "another-cluster") as channel, pytest.raises(ClusterNameMismatch):
        wire.call(mrpc.AdminStub(channel).GetClusterState, cpb.Empty(), 30.0)
    _, address = storage_of_index(cluster, 0)
    with wire.open_channel(address, cluster.cluster) as channel, \
            pytest.raises(RequestRefused, match="loads_per_batch_max"):
        wire.call(srpc.StorageStub(channel).LoadMany,
                  spb.LoadManyRequest(loads=[spb.LoadRequest()] * 10_001), 30.0)


def check_master(before: dict, after: dict, last_tid: bytes) -> None:
    finish = requests(MASTER, "Finish")
    assert grew(before, after, "neoarray_rpc_server_requests_total", **finish) == COMMITS
    assert grew(before, after, "neoarray_master_commits_total") == COMMITS
    labels = {"service": MASTER, "method": "Finish"}
    assert grew(before, after, "neoarray_rpc_server_latency_seconds_count", **labels) == COMMITS
    assert grew(before, after, "neoarray_rpc_server_latency_seconds_bucket", le="+Inf", **labels) == COMMITS
    assert grew(before, after, "neoarray_rpc_server_latency_seconds_sum", **labels) > 0
    assert grew(before, after, "neoarray_rpc_server_request_bytes_total", **labels) > 0
    assert grew(before, after, "neoarray_rpc_server_response_bytes_total", **labels) >= 8 * COMMITS
    refused = requests("neoarray.v1.Admin", "GetClusterState", "FAILED_PRECONDITION")
    assert grew(before, after, "neoarray_rpc_server_requests_total", **refused) == 1
    assert grew(before, after, "neoarray_rpc_server_errors_total", **refused) == 1
    assert total(after, "neoarray_rpc_server_errors_total", service=MASTER) == 0
    assert value(after, "neoarray_master_cluster_state", state="RUNNING") == 1
    assert value(after, "neoarray_master_cluster_state", state="RECOVERING") == 0
    assert value(after, "neoarray_master_nodes", type="STORAGE", state="RUNNING") == 2
    assert total(after, "neoarray_master_cells", state="UP_TO_DATE") == 8     # 4 partitions x 2 copies
    assert total(after, "neoarray_master_cells", state="OUT_OF_DATE") == 0
    assert value(after, "neoarray_master_partitions") == 4
    assert value(after, "neoarray_master_replicas") == 1
    assert value(after, "neoarray_master_last_tid_timestamp_seconds") == tid_seconds(last_tid)
    assert value(after, "neoarray_master_last_oid") >= COMMITS
    assert value(after, "neoarray_master_transactions", state="open") == 0
    assert value(after, "neoarray_master_state_fsyncs_total") >= 1      # at least its creation


def check_storage(before: dict, after: dict) -> None:
    """Both nodes hold every partition (replicas=1): every commit reached both."""
    for method in ("Vote", "Lock"):
        assert grew(before, after, "neoarray_rpc_server_requests_total", **requests(STORAGE, method)) == COMMITS
        assert grew(before, after, "neoarray_rpc_server_latency_seconds_count",
                    service=STORAGE, method=method) == COMMITS
    assert grew(before, after, "neoarray_rpc_server_request_bytes_total", service=STORAGE, method="Vote") > 0
    assert grew(before, after, "neoarray_storage_records", table="obj") == 2 * COMMITS
    assert grew(before, after, "neoarray_storage_records", table="trans") == COMMITS
    assert value(after, "neoarray_storage_used_bytes") > 0
    assert value(after, "neoarray_storage_map_size_bytes") == 1 << 40
    assert value(after, "neoarray_storage_partitions") == 4
    assert value(after, "neoarray_storage_transactions", state="voted") == 0
    assert value(after, "neoarray_storage_replication_records_total") == 0
    assert value(after, "neoarray_storage_replication_cells_pending") == 0
    assert value(after, "neoarray_rpc_client_calls_total") > 0          # its heartbeats to the master
    # every commit has two voters, so it is durable at vote and at lock: at least two
    # fsyncs; its vote (which carries its stores) and its lock are LMDB write transactions
    assert grew(before, after, "neoarray_storage_fsyncs_total") >= 2 * COMMITS
    assert grew(before, after, "neoarray_storage_write_transactions_total") >= 2 * COMMITS
    assert value(after, "neoarray_storage_dropped_behind_bytes_total") == 0     # small records stay cached


def check_client(before: dict, after: dict, storage, loads: float) -> None:
    stats = storage.cache_stats()
    misses = grew(before, after, "neoarray_client_cache_misses_total", colour="meta")
    hits = grew(before, after, "neoarray_client_cache_hits_total", colour="meta")
    assert misses >= COMMITS + 1 and hits >= COMMITS + 1
    assert misses == loads, "every miss was one Load served by a storage node"
    for colour, figures in stats["colours"].items():
        for key in ("hits", "misses", "evictions"):
            assert value(after, f"neoarray_client_cache_{key}_total", colour=colour) == figures[key]
        assert value(after, "neoarray_client_cache_bytes", colour=colour) == figures["bytes"]
        assert value(after, "neoarray_client_cache_quota_bytes", colour=colour) == figures["quota_bytes"]
    assert value(after, "neoarray_client_cache_bytes", colour="meta") > 0
    assert value(after, "neoarray_client_cache_bytes_max") == stats["bytes_max"]
    assert grew(before, after, "neoarray_rpc_client_calls_total") >= loads + COMMITS
    assert value(after, "neoarray_rpc_client_received_bytes_total") <= wire.traffic()["received_bytes"]
    assert grew(before, after, "neoarray_rpc_client_received_bytes_total") > 0


def test_zconfig_client_serves_metrics_until_closed(cluster):
    storage = ZODB.config.storageFromString(f"""
        %import neoarray
        <neoarray>
          master {cluster.address}
          cluster {cluster.cluster}
          cache-size 3MB
          metrics-bind 127.0.0.1:0
        </neoarray>""")
    address = storage.metrics_address
    try:
        samples = scrape(address)
        assert value(samples, "neoarray_client_cache_bytes_max") == 3 << 20
        assert set(samples) >= {("neoarray_client_cache_hits_total", (("colour", c),))
                                for c in ("meta", "hot", "scan")}
    finally:
        storage.close()
    with pytest.raises(urllib.error.URLError):
        scrape(address)
    storage_kw, _ = parse_uri(f"neoarray://{cluster.address}/{cluster.cluster}?metrics_bind=127.0.0.1:0")
    assert storage_kw["metrics_bind"] == "127.0.0.1:0"     # zodburi passes it on too


def test_replication_figures_of_a_node_catching_up(tmp_path):
    for c in running_cluster(tmp_path / "cluster", storages=2, replicas=1, node_timeout_s=2.0, metrics=True):
        ids = storage_ids(c)
        db = ZODB.DB(c.open_storage())
        try:
            c.kill_storage(0)
            wait_cells(c, ids[0], "OOOO")
            master = scrape(c.metrics_addresses()["master"])
            assert value(master, "neoarray_master_cells", node=f"S{ids[0]}", state="OUT_OF_DATE") == 4
            assert value(master, "neoarray_master_nodes", type="STORAGE", state="DOWN") == 1
            s1_address = c.metrics_addresses()[c.storage_name(1)]
            fsyncs = value(scrape(s1_address), "neoarray_storage_fsyncs_total")
            conn = db.open()
            for i in range(COMMITS):     # missed by S0: the root, one object, the transaction
                conn.root()[f"blob{i}"] = PersistentMapping(data=os.urandom(BLOB_BYTES))
                transaction.commit()
            conn.close()
            # S1 is each commit's only voter: its vote is not fsynced, its lock is
            fsyncs = value(scrape(s1_address), "neoarray_storage_fsyncs_total") - fsyncs
            assert COMMITS <= fsyncs < 2 * COMMITS

            c.start_storage(0, args=("--replication-bytes-per-s", str(RATE_BYTES_PER_S)))
            address = c.metrics_addresses()[c.storage_name(0)]
            wait_metric(address, "neoarray_storage_replication_cells_pending", lambda v: v > 0)
            wait_cells(c, ids[0], "UUUU")
            wait_metric(address, "neoarray_storage_replication_cells_pending", lambda v: v == 0)
            s0 = scrape(address)
            assert value(s0, "neoarray_storage_replication_records_total") == 3 * COMMITS
            assert value(s0, "neoarray_storage_replication_bytes_total") >= BLOB_BYTES * COMMITS
            assert value(s0, "neoarray_storage_replication_rate_limit_bytes_per_second") == RATE_BYTES_PER_S
            assert total(s0, "neoarray_rpc_server_requests_total", method="ReplicaRecords") == 0
            s1 = scrape(c.metrics_addresses()[c.storage_name(1)])
            assert total(s1, "neoarray_rpc_server_requests_total", method="ReplicaRecords", code="OK") > 0
            master = scrape(c.metrics_addresses()["master"])
            assert total(master, "neoarray_master_cells", state="UP_TO_DATE") == 8
            assert total(master, "neoarray_master_cells", state="OUT_OF_DATE") == 0
        finally:
            db.close()


def test_bad_metrics_address_is_refused_with_its_name(tmp_path):
    for bad in ("nonsense", "127.0.0.1:", ":9100", "127.0.0.1:70000", "127.0.0.1:http"):
        with pytest.raises(ValueError, match="metrics bind address"):
            metrics.parse_bind(bad)
    assert metrics.parse_bind("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="'127.0.0.1:x'"):     # before any connection is tried
        NeoStorage("127.0.0.1:1", "c", metrics_bind="127.0.0.1:x")
    out = subprocess.run([sys.executable, "-m", "master", "--cluster", "c", "--data", str(tmp_path / "m"),
                          "--metrics-bind", "no-port"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=False)
    assert out.returncode == 2 and "--metrics-bind" in out.stderr and "'no-port'" in out.stderr, out.stderr


def test_store_usage_counts_entries_and_bytes(tmp_path):
    for store in (LMDBStore(str(tmp_path / "lmdb"), map_bytes_max=1 << 26), MemoryStore()):
        empty = store.usage()
        with store.write() as txn:
            for i in range(5):
                txn.put("obj", b"k%d" % i, b"v" * 100)
            txn.put("trans", b"t", b"meta")
        used = store.usage()
        assert used["entries"]["obj"] - empty["entries"]["obj"] == 5
        assert used["entries"]["trans"] - empty["entries"]["trans"] == 1
        assert used["used_bytes"] > empty["used_bytes"]
        assert used["map_bytes"] == (1 << 26 if isinstance(store, LMDBStore) else 0)
        store.close()
