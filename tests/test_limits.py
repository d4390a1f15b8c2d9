"""Limits refused clearly over real gRPC: a cluster of processes started with small
limits; each refusal is a ``LimitExceeded`` (RESOURCE_EXHAUSTED) whose message names
the limit and its value, and the nodes keep serving afterwards."""
import os
import subprocess
import sys
import time

import pytest
import xxhash
import ZConfig
import ZODB
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle

from neoarray import wire
from neoarray.client.config import parse_uri
from neoarray.errors import LimitExceeded
from neoarray.ids import Z64, p64
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import storage_pb2 as spb
from tests.cluster_helpers import neoctl
from tests.conftest import ROOT, running_cluster

STORAGE_LIMITS = ("--message-bytes-max", str(1 << 20), "--objects-per-store-max", "5",
                  "--objects-per-transaction-max", "8", "--transactions-per-client-max", "2",
                  "--transaction-bytes-max", "300000", "--unvoted-bytes-per-client-max", "400000",
                  "--loads-per-batch-max", "10", "--space-reserve-bytes", "0")
MASTER_LIMITS = ("--message-bytes-max", str(1 << 20), "--oids-per-request-max", "10",
                 "--transactions-per-client-max", "2", "--objects-per-transaction-max", "8")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("limits"), storages=1, partitions=2,
                               master_args=MASTER_LIMITS, storage_args=STORAGE_LIMITS)


def open_storage(cluster, **kw):
    """A client asking fewer oids at once than the master's oids_per_request_max."""
    return cluster.open_storage(oids_per_batch=5, **kw)


@pytest.fixture
def storage(cluster):
    s = open_storage(cluster)
    yield s
    s.close()


def record(oid: bytes, data: bytes) -> spb.ObjectRecord:
    return spb.ObjectRecord(oid=oid, serial=Z64, data=data, checksum=xxhash.xxh3_64_intdigest(data))


def node_stub(storage):
    nid = next(iter(storage._link.running))
    return storage._link.storage(nid)


def store(storage, ttid: bytes, records):
    return wire.call(node_stub(storage).Store, spb.StoreRequest(
        ttid=ttid, node_id=storage.node_id, objects=records), 30, "store")


def ttid_of(storage, n: int) -> bytes:
    return p64((storage.node_id << 32) | (1 << 31) | n)


def abort(storage, ttid: bytes):
    wire.call(node_stub(storage).AbortTransaction, spb.AbortTransactionRequest(ttid=ttid), 30)


def oids(n: int, first: int = 1000) -> list[bytes]:
    return [p64(first + i) for i in range(n)]


def assert_still_serving(storage):
    """A plain ZODB commit and read-back through the same nodes."""
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            conn.root()["alive"] = MinPO(42)
        with db.transaction() as conn:
            assert conn.root()["alive"].value == 42
    finally:
        db.close()


def test_objects_per_store(storage):
    with pytest.raises(LimitExceeded, match="6 objects in one store, objects_per_store_max=5"):
        store(storage, ttid_of(storage, 1), [record(o, b"x") for o in oids(6)])
    assert_still_serving(storage)


def test_objects_per_transaction_across_stores(storage):
    ttid = ttid_of(storage, 2)
    store(storage, ttid, [record(o, b"x") for o in oids(5)])
    with pytest.raises(LimitExceeded, match="would store 10 objects on this node, "
                                            "objects_per_transaction_max=8"):
        store(storage, ttid, [record(o, b"x") for o in oids(5, 2000)])
    abort(storage, ttid)
    assert_still_serving(storage)


def test_transaction_bytes(storage):
    ttid = ttid_of(storage, 3)
    store(storage, ttid, [record(p64(3000), b"a" * 200_000)])
    with pytest.raises(LimitExceeded, match="transaction_bytes_max=300000"):
        store(storage, ttid, [record(p64(3001), b"b" * 200_000)])
    abort(storage, ttid)
    assert_still_serving(storage)


def test_unvoted_bytes_per_client(storage):
    first, second = ttid_of(storage, 4), ttid_of(storage, 5)
    store(storage, first, [record(p64(4000), b"a" * 250_000)])
    with pytest.raises(LimitExceeded, match="unvoted_bytes_per_client_max=400000"):
        store(storage, second, [record(p64(4001), b"b" * 250_000)])
    abort(storage, first)
    store(storage, second, [record(p64(4001), b"b" * 250_000)])    # room again
    abort(storage, second)
    assert_still_serving(storage)


def test_transactions_per_client_on_storage(storage):
    ttids = [ttid_of(storage, 10 + i) for i in range(3)]
    for ttid in ttids[:2]:
        store(storage, ttid, [record(p64(5000), b"x")])
    with pytest.raises(LimitExceeded, match="transactions_per_client_max=2"):
        store(storage, ttids[2], [record(p64(5001), b"x")])
    for ttid in ttids[:2]:
        abort(storage, ttid)
    assert_still_serving(storage)


def test_loads_per_batch(storage):
    request = spb.LoadManyRequest(loads=[spb.LoadRequest(oid=o) for o in oids(11)])
    with pytest.raises(LimitExceeded, match="11 loads in one batch, loads_per_batch_max=10"):
        wire.call(node_stub(storage).LoadMany, request, 30, "load")
    assert_still_serving(storage)


def test_vote_check_list_length(storage):
    ttid = ttid_of(storage, 20)
    request = spb.VoteRequest(ttid=ttid, node_id=storage.node_id,
                              checks=[spb.ObjectCheck(oid=o, serial=Z64) for o in oids(9)])
    with pytest.raises(LimitExceeded, match="9 checked objects, objects_per_transaction_max=8"):
        wire.call(node_stub(storage).Vote, request, 30, "vote")
    assert_still_serving(storage)


def test_message_bytes_on_storage_node(storage):
    with pytest.raises(LimitExceeded, match="larger than max.*message_bytes_max"):
        store(storage, ttid_of(storage, 21), [record(p64(6000), b"z" * (2 << 20))])
    assert_still_serving(storage)


def test_master_limits(storage):
    master = storage._link.master
    with pytest.raises(LimitExceeded, match="11 oids asked, oids_per_request_max=10"):
        wire.call(master.NewOids, mpb.NewOidsRequest(count=11), 30, "new oids")
    with pytest.raises(LimitExceeded, match="names 9 objects, objects_per_transaction_max=8"):
        wire.call(master.Finish, mpb.FinishRequest(node_id=storage.node_id, ttid=ttid_of(storage, 22),
                                                   oids=oids(9)), 30, "finish")
    begun = []
    with pytest.raises(LimitExceeded, match="transactions_per_client_max=2"):
        for i in range(3):      # restore-style begins go through the master
            begun.append(wire.call(master.Begin, mpb.BeginRequest(
                node_id=storage.node_id, tid=p64((1 << 60) + i)), 30, "begin").ttid)
    for ttid in begun:
        wire.call(master.Abort, mpb.AbortRequest(node_id=storage.node_id, ttid=ttid), 30)
    with pytest.raises(LimitExceeded, match="larger than max.*message_bytes_max"):
        wire.call(master.Finish, mpb.FinishRequest(node_id=storage.node_id, ttid=ttid_of(storage, 23),
                                                   oids=[b"o" * (2 << 20)]), 30, "finish")
    assert_still_serving(storage)


def test_client_objects_per_transaction(cluster):
    storage = open_storage(cluster, objects_per_transaction_max=3)
    try:
        t = TransactionMetaData()
        storage.tpc_begin(t)
        for oid in oids(3, 7000):
            storage.store(oid, Z64, zodb_pickle(MinPO(1)), "", t)
        with pytest.raises(LimitExceeded, match="objects_per_transaction_max=3"):
            storage.store(p64(7003), Z64, zodb_pickle(MinPO(1)), "", t)
        storage.tpc_abort(t)
        assert_still_serving(storage)
    finally:
        storage.close()


def test_client_limits_validated(cluster):
    with pytest.raises(ValueError, match="store_batch_bytes_max must be > 0, not 0"):
        open_storage(cluster, store_batch_bytes_max=0)
    with pytest.raises(ValueError, match="message_bytes_max must be <= 2147483647"):
        open_storage(cluster, message_bytes_max=1 << 40)


def test_client_limit_keys_from_uri_and_zconfig(cluster):
    kw, _ = parse_uri(f"neoarray://{cluster.address}/{cluster.cluster}?message_bytes_max=65536"
                      f"&objects_per_transaction_max=5&store_batch_bytes_max=1024&transactions_max=2")
    assert kw["message_bytes_max"] == 65536 and kw["objects_per_transaction_max"] == 5
    with pytest.raises(ValueError, match="bad value 'many' for transactions_max"):
        parse_uri(f"neoarray://{cluster.address}/{cluster.cluster}?transactions_max=many")
    schema = ZConfig.loadSchemaFile(__import__("io").StringIO(
        '<schema><import package="ZODB"/><import package="neoarray"/>'
        '<section type="ZODB.storage" name="*" attribute="storage"/></schema>'))
    conf, _ = ZConfig.loadConfigFile(schema, __import__("io").StringIO(
        f"<neoarray>\n master {cluster.address}\n cluster {cluster.cluster}\n"
        f" message-bytes-max 2MB\n objects-per-transaction-max 2\n transactions-max 3\n</neoarray>\n"))
    storage = conf.storage.open()
    try:
        assert storage.objects_per_transaction_max == 2 and storage._slots._initial_value == 3
        t = TransactionMetaData()
        storage.tpc_begin(t)
        storage.store(p64(8000), Z64, zodb_pickle(MinPO(1)), "", t)
        storage.store(p64(8001), Z64, zodb_pickle(MinPO(1)), "", t)
        with pytest.raises(LimitExceeded, match="objects_per_transaction_max=2"):
            storage.store(p64(8002), Z64, zodb_pickle(MinPO(1)), "", t)
        storage.tpc_abort(t)
    finally:
        storage.close()


@pytest.mark.parametrize("module, args, message", [
    ("storage_node", ("--objects-per-transaction-max", "0"), "--objects-per-transaction-max must be >= 1, not 0"),
    ("storage_node", ("--message-bytes-max", str(1 << 40)), "--message-bytes-max must be <= 2147483647"),
    ("storage_node", ("--map-bytes-max", str(8 << 20), "--space-reserve-bytes", str(6 << 20)),
     "--space-reserve-bytes (6291456) must be at most half of --map-bytes-max"),
    ("master", ("--transactions-per-client-max", "-1"), "--transactions-per-client-max must be >= 1, not -1"),
    ("master", ("--message-bytes-max", "0"), "--message-bytes-max must be >= 1, not 0"),
])
def test_bad_limit_flags_stop_the_node_with_a_clear_error(tmp_path, module, args, message):
    base = ["--master", "127.0.0.1:1"] if module == "storage_node" else ["--data", str(tmp_path / "m")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", module, "--cluster", "c", *base, *args],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not os.path.exists(tmp_path / "m")        # refused before any state was created


def test_master_nodes_max_bounds_its_registry(tmp_path):
    """The master knows at most ``--nodes-max`` nodes: one more client is refused with
    the limit named, and a client that leaves makes room again."""
    gen = running_cluster(tmp_path / "c", storages=1, partitions=2, master_args=("--nodes-max", "3"))
    cluster = next(gen)
    try:
        first, second = cluster.open_storage(), cluster.open_storage()     # with S1: 3 nodes
        with pytest.raises(LimitExceeded, match="nodes_max=3"):
            cluster.open_storage(connect_timeout_s=5)
        first.close()
        deadline = time.monotonic() + 30
        while True:                       # the master forgets it when its event stream ends
            try:
                third = cluster.open_storage(connect_timeout_s=5)
                break
            except LimitExceeded:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert_still_serving(third)
        third.close()
        second.close()
    finally:
        gen.close()


def test_event_streams_do_not_take_the_master_s_request_workers(tmp_path):
    """Each client holds an event stream (Subscribe) for its lifetime.  They run on
    threads of their own: with more clients than ``--rpc-workers-max``, the master still
    answers commits, storage heartbeats and neoctl, and ``--subscribers-max`` bounds
    them with a refusal naming the limit (before, the 32nd client took the last worker
    and the master answered nothing else)."""
    gen = running_cluster(tmp_path / "c", storages=1, partitions=2,
                          master_args=("--rpc-workers-max", "2", "--subscribers-max", "6"))
    cluster = next(gen)
    clients = []
    try:
        clients = [cluster.open_storage(connect_timeout_s=10) for _ in range(6)]
        with pytest.raises(LimitExceeded, match="subscribers_max=6"):
            cluster.open_storage(connect_timeout_s=5)
        nodes = {n["id"]: n["state"] for n in neoctl(cluster, "--json", "print", "node")["nodes"]}
        assert sum(1 for nid in nodes if nid.startswith("C")) == 6       # the refused one is forgotten
        assert [state for nid, state in nodes.items() if nid.startswith("S")] == ["RUNNING"]
        time.sleep(2 * cluster.node_timeout_s)       # heartbeats kept answering: still RUNNING
        assert {n["id"]: n["state"] for n in neoctl(cluster, "--json", "print", "node")["nodes"]
                if n["id"].startswith("S")} == {nid: "RUNNING" for nid in nodes if nid.startswith("S")}
        assert_still_serving(clients.pop())
        deadline = time.monotonic() + 30
        while True:                       # room again once the closed client's stream ended
            try:
                clients.append(cluster.open_storage(connect_timeout_s=5))
                break
            except LimitExceeded:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert_still_serving(clients.pop())
    finally:
        for c in clients:
            c.close()
        gen.close()
