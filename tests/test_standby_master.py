"""Standby masters (master/standby.py): a standby follows the primary, refuses
clients while it lives, takes over after a kill -9, never reuses ids; the old
primary restarted follows the new one; storages refuse an older epoch."""
import signal
import threading
import time

import grpc
import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB import POSException

from master.cluster import EPOCH_ROUND
from neoarray import wire
from neoarray.admin import AdminClient
from neoarray.client.config import parse_uri
from neoarray.cluster import LocalCluster
from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import u64
from neoarray.masters import EPOCH_KEY, parse_masters
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import standby_pb2 as sbpb
from neoarray.proto import standby_pb2_grpc as sbrpc
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.states import NodeType

from .cluster_helpers import letters, neoctl, wait_settled

NODE_TIMEOUT_S = 2.0


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(str(tmp_path / "c"), storages=1, node_timeout_s=NODE_TIMEOUT_S, standby_masters=1)
    c.start(timeout_s=60)
    yield c
    c.stop()


def role(cluster, address):
    channel = wire.open_channel(address, cluster.cluster)
    try:
        return wire.call(sbrpc.StandbyStub(channel).Role, cpb.Empty(), 10, "role")
    finally:
        channel.close()


def wait_role(cluster, address, wanted, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = role(cluster, address)
            if r.role == wanted:
                return r
        except ClusterUnavailable:
            pass
        assert time.monotonic() < deadline, f"{address} did not become {sbpb.MasterRole.Name(wanted)}"
        time.sleep(0.1)


def commit_retrying(conn, change, timeout_s=90.0):
    """Apply ``change(root)`` and commit, retrying retryable failures (failover)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            change(conn.root())
            transaction.commit()
            return
        except (ClusterUnavailable, POSException.StorageError, POSException.ConflictError):
            transaction.abort()
            assert time.monotonic() < deadline, "no commit succeeded after the failover"
            time.sleep(0.2)


def test_parse_masters_names_bad_address():
    assert parse_masters("a:1, b:2,a:1") == ["a:1", "b:2"]
    with pytest.raises(RequestRefused, match="'b' is not host:port"):
        parse_masters("a:1,b")
    with pytest.raises(RequestRefused, match="empty"):
        parse_masters(" , ")
    # zodburi carries the list in the netloc
    kw, _ = parse_uri("neoarray://127.0.0.1:5551,127.0.0.1:5552/prod")
    assert kw["master"] == "127.0.0.1:5551,127.0.0.1:5552"


def test_standby_refuses_naming_the_primary(cluster):
    standby = cluster.standby_addresses[1]
    assert role(cluster, cluster.address).role == sbpb.PRIMARY
    r = role(cluster, standby)
    assert (r.role, r.primary) == (sbpb.STANDBY, cluster.address)
    admin = AdminClient(standby, cluster.cluster, admin_token=cluster.admin_token)
    try:
        with pytest.raises(ClusterUnavailable, match=f"standby.*primary is at {cluster.address}"):
            admin.cluster_state()
    finally:
        admin.close()
    channel = wire.open_channel(standby, cluster.cluster)
    try:
        with pytest.raises(ClusterUnavailable, match=f"primary is at {cluster.address}"):
            wire.call(mrpc.MasterStub(channel).NewOids, mpb.NewOidsRequest(count=1), 10)
        with pytest.raises(ClusterUnavailable, match="standby"):
            wire.call(mrpc.MasterStub(channel).Finish, mpb.FinishRequest(node_id=1, ttid=b"\0" * 8), 10)
    finally:
        channel.close()
    # neoctl over the list, standby first: it moves on to the primary, which shows the standby
    nodes = {n["address"]: n for n in neoctl(cluster, "-a", f"{standby},{cluster.address}", "--json",
                                             "print", "node")["nodes"]}
    assert nodes[standby]["type"] == "MASTER"


def test_takeover_after_kill_keeps_commits_and_never_reuses_ids(cluster):
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["log"] = PersistentMapping()
    transaction.commit()
    acked = {}
    stop, errors = threading.Event(), []

    def writer():
        wdb = ZODB.DB(cluster.open_storage())
        wconn = wdb.open()
        try:
            i = 0
            while not stop.is_set():
                obj = PersistentMapping({"i": i})
                try:
                    wconn.root()["log"][i] = obj
                    transaction.commit()
                except (ClusterUnavailable, POSException.StorageError, POSException.ConflictError):
                    transaction.abort()         # the open transaction may fail at failover
                    wconn.sync()
                    time.sleep(0.1)
                    continue
                acked[i] = (obj._p_oid, obj._p_serial)
                i += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            wconn.close()
            wdb.close()

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acked) < 5:                # some commits before the kill
        assert time.monotonic() < deadline and thread.is_alive(), f"the writer committed nothing {errors}"
        time.sleep(0.05)
    before = dict(acked)
    cluster.kill_master()                           # kill -9 of the primary
    standby = cluster.standby_addresses[1]
    assert wait_role(cluster, standby, sbpb.PRIMARY).epoch // EPOCH_ROUND == 1      # the next round
    deadline = time.monotonic() + 90
    while len(acked) < len(before) + 5:
        assert time.monotonic() < deadline and thread.is_alive(), f"no commits after takeover {errors}"
        time.sleep(0.2)
    stop.set()
    thread.join(60)
    assert not errors
    # every acknowledged commit is readable, through the new primary
    conn.sync()
    log = conn.root()["log"]
    for i, (oid, serial) in acked.items():
        assert log[i]["i"] == i and log[i]._p_oid == oid
    # ids after the takeover are above every id handed out before it
    after = {i: v for i, v in acked.items() if i not in before}
    assert min(u64(o) for o, _ in after.values()) > max(u64(o) for o, _ in before.values())
    assert min(s for _, s in after.values()) > max(s for _, s in before.values())
    # a new client and neoctl work against the address list (first master dead)
    new = cluster.open_storage()
    try:
        new_oid = new.new_oid()
        assert u64(new_oid) > max(u64(o) for o, _ in acked.values())
    finally:
        new.close()
    assert neoctl(cluster, "--json", "print", "ids")["last_tid"]
    conn.close()
    db.close()


def test_old_primary_restarted_follows_and_storages_refuse_its_epoch(cluster):
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["a"] = 1
    transaction.commit()
    cluster.kill_master()
    standby = cluster.standby_addresses[1]
    epoch = wait_role(cluster, standby, sbpb.PRIMARY).epoch
    assert epoch // EPOCH_ROUND == 1
    commit_retrying(conn, lambda root: root.__setitem__("a", 2))
    # the old primary comes back over its data directory: it must not be a second primary
    cluster.start_master()
    r = wait_role(cluster, cluster.address, sbpb.STANDBY, timeout_s=30)
    assert r.primary == standby and r.epoch == epoch
    time.sleep(NODE_TIMEOUT_S * 2)                  # it stays a standby while the new primary lives
    assert role(cluster, cluster.address).role == sbpb.STANDBY
    assert cluster.master_proc.poll() is None
    commit_retrying(conn, lambda root: root.__setitem__("a", 3))
    conn.close()
    conn = db.open()
    assert conn.root()["a"] == 3
    conn.close()
    db.close()
    # the storage learnt the new epoch from the new primary: a master call with epoch 1 is refused
    storage = next(n for n in cluster.admin().nodes() if n.type is NodeType.STORAGE)
    channel = grpc.insecure_channel(storage.address)
    metadata = (("neo-cluster", cluster.cluster), (EPOCH_KEY, "1"))
    try:
        with pytest.raises(grpc.RpcError) as err:
            srpc.StorageStub(channel).Lock(spb.LockRequest(ttid=b"\0" * 7 + b"\1", tid=b"\0" * 7 + b"\2"),
                                           metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "stale master epoch 1" in err.value.details() and f"epoch {epoch}" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            srpc.StorageStub(channel).RecoveryInfo(cpb.Empty(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        channel.close()


def test_frozen_primary_steps_down_when_it_wakes_after_a_takeover(cluster):
    """A primary cut off (here: SIGSTOP) while the standby took over must not go on as
    a second primary: it sees a master of a higher epoch and exits with status 3."""
    standby = cluster.standby_addresses[1]
    cluster.master_proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_role(cluster, standby, sbpb.PRIMARY, timeout_s=90).epoch // EPOCH_ROUND == 1
    finally:
        cluster.master_proc.send_signal(signal.SIGCONT)
    assert cluster.master_proc.wait(60) == 3
    cluster.wait_state("RUNNING", 60)
    s = cluster.open_storage()
    try:
        assert s.new_oid()
    finally:
        s.close()


def test_a_standby_cut_off_refuses_to_serve_its_stale_table(tmp_path):
    """A standby frozen past ``ack_timeout_s`` (the primary stops waiting for it) misses
    a table change: S2 lost, its cells OUT_OF_DATE, a commit acknowledged on S1 only.
    The primary has S1 record its state's stamp first (rule A).  The primary dies, the
    standby wakes and takes over with its copy (S2 still UP_TO_DATE there): S1's stamp
    shows the copy stale (rule B), it steps down (status 3) instead of serving S2's old
    data; the old primary restarted takes over and the acknowledged commit is there."""
    c = LocalCluster(str(tmp_path / "c"), storages=2, replicas=1, partitions=2, node_timeout_s=NODE_TIMEOUT_S,
                     standby_masters=1)
    c.start(timeout_s=60)
    try:
        db = ZODB.DB(c.open_storage())
        conn = db.open()
        conn.root()["a"] = 1
        transaction.commit()
        standby = c.standby_procs[1]
        standby.send_signal(signal.SIGSTOP)
        try:
            c.kill_storage(1)
            wait_lost = time.monotonic() + 60
            while "O" not in "".join(letters(c).values()):
                assert time.monotonic() < wait_lost, "the primary did not mark S2's cells OUT_OF_DATE"
                time.sleep(0.1)
            commit_retrying(conn, lambda root: root.__setitem__("a", 2))      # acknowledged on S1 only
            conn.close()
            db.close()
            c.kill_master()
        finally:
            standby.send_signal(signal.SIGCONT)
        c.start_storage(1)
        assert standby.wait(90) == 3, "the stale standby served instead of stepping down"
        with open(c.log_path("master-1")) as f:
            text = f.read()
        assert "stale" in text and "recorded the master state stamp" in text
        c.start_master()                        # the primary that wrote the newer state
        c.wait_state("RUNNING", 90)
        db = ZODB.DB(c.open_storage())
        conn = db.open()
        assert conn.root()["a"] == 2            # the acknowledged commit is not lost
        conn.close()
        db.close()
        assert set(wait_settled(c, 90).values()) == {"UU"}
    finally:
        c.stop()
