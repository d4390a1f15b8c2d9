"""Mutual TLS, roles and the admin token on real clusters of processes (127.0.0.1).

Refusals shown: no certificate, a certificate from another CA, a wrong cluster name,
a non-admin calling an Admin RPC (certificate role, and no token without TLS), a
reader storing (on the master and on a storage node directly, and through ZODB)."""
import os
import pickle
import stat
import subprocess
import sys
import time
import types

import grpc
import pytest
import transaction
import ZODB
from ZODB.POSException import ReadOnlyError

from neoarray import security, wire
from neoarray.admin import AdminClient
from neoarray.client import NeoStorage
from neoarray.client.config import resolve_uri
from neoarray.errors import AccessDenied, ClusterNameMismatch, ClusterUnavailable
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import standby_pb2
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.states import NodeState, NodeType
from tests.cluster_helpers import neoctl, storage_of_index, wait_settled
from tests.conftest import running_cluster

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """1 master and 2 storages (replicas=1), every port on mutual TLS."""
    yield from running_cluster(tmp_path_factory.mktemp("tls") / "c", storages=2, replicas=1, tls=True)


@pytest.fixture(scope="module")
def committed(tls_cluster):
    """A value committed through ZODB.DB by a client certificate; returns it."""
    db = ZODB.DB(tls_cluster.open_storage())
    try:
        with db.transaction() as conn:
            conn.root()["greeting"] = "hello over TLS"
    finally:
        db.close()
    return "hello over TLS"


def assert_reads(storage, committed) -> None:
    """Read the committed greeting through ``ZODB.DB(storage)``, then close it."""
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            assert conn.root()["greeting"] == committed
    finally:
        db.close()


def _ctl(*args):
    return subprocess.run([sys.executable, "-m", "neoarray.ctl", *args],
                          check=False, capture_output=True, text=True, timeout=120)


def _storage_address(cluster) -> str:
    admin = cluster.admin()
    try:
        return next(n.address for n in admin.nodes() if n.type is NodeType.STORAGE)
    finally:
        admin.close()


def wait_down(cluster, node_id, timeout_s=60.0):
    """Wait until the master has marked storage node ``node_id`` DOWN."""
    admin = cluster.admin()
    deadline = time.monotonic() + timeout_s
    try:
        while not any(n.node_id == node_id and n.state is NodeState.DOWN for n in admin.nodes()):
            assert time.monotonic() < deadline, f"S{node_id} not DOWN after {timeout_s} s"
            time.sleep(0.1)
    finally:
        admin.close()


def _master(cluster, role):
    return mrpc.MasterStub(wire.open_channel(cluster.address, cluster.cluster, tls=cluster.tls_of(role)))


def _storage(cluster, role):
    channel = wire.open_channel(_storage_address(cluster), cluster.cluster, tls=cluster.tls_of(role))
    return srpc.StorageStub(channel)


# ---------------------------------------------------------------- the happy path

def test_tls_cluster_commits_and_reads_through_zodb(tls_cluster, committed):
    assert_reads(tls_cluster.open_storage(local_reads=False), committed)   # reads over TLS, not LMDB


def test_generated_keys_are_private(tls_cluster):
    for role in (*security.ROLES, security.CA_NAME):
        mode = stat.S_IMODE(os.stat(os.path.join(tls_cluster.tls_dir, f"{role}.key")).st_mode)
        assert mode == 0o600, (role, oct(mode))
    assert stat.S_IMODE(os.stat(tls_cluster.token_file).st_mode) == 0o600


def test_neoctl_works_with_the_admin_certificate(tls_cluster, committed):
    assert neoctl(tls_cluster, "print", "cluster").strip() == "RUNNING"
    assert neoctl(tls_cluster, "--json", "check")["ok"] is True        # CheckRecords: admin only
    tls = tls_cluster.tls_of("admin")                                   # explicit files, no token
    out = _ctl("-a", tls_cluster.address, "-c", tls_cluster.cluster, "--ca", tls.ca_path,
               "--cert", tls.cert_path, "--key", tls.key_path, "print", "node")
    assert out.returncode == 0, out.stderr
    assert "STORAGE" in out.stdout


def test_process_workers_get_the_certificate(tls_cluster, committed):
    """Jobs' process workers reopen a client from ``client_options``: TLS included."""
    first = tls_cluster.open_storage()
    try:
        options = first.client_options()
    finally:
        first.close()
    assert options["cert"] == tls_cluster.tls_of("client").cert_path
    assert_reads(NeoStorage(**options), committed)


# ---------------------------------------------------------------- refusals

def test_channel_without_certificate_is_refused(tls_cluster):
    with open(tls_cluster.tls_of("admin").ca_path, "rb") as f:
        ca = f.read()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    for channel in (grpc.secure_channel(tls_cluster.address, no_cert),
                    grpc.insecure_channel(tls_cluster.address)):
        with channel, pytest.raises(grpc.RpcError) as err:
            mrpc.AdminStub(channel).GetClusterState(
                cpb.Empty(), timeout=TIMEOUT_S, metadata=((wire.CLUSTER_KEY, tls_cluster.cluster),))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ClusterUnavailable, match="no master answers"):
        NeoStorage(tls_cluster.address, tls_cluster.cluster, connect_timeout_s=2)


def test_certificate_from_another_ca_is_refused(tls_cluster, tmp_path):
    other = security.generate(str(tmp_path / "other"), tls_cluster.cluster)
    admin = AdminClient(tls_cluster.address, tls_cluster.cluster, TIMEOUT_S,
                        tls=security.TLSConfig.in_dir(other, "admin"))
    try:
        with pytest.raises(ClusterUnavailable):
            admin.cluster_state()
    finally:
        admin.close()
    stub = srpc.StorageStub(wire.open_channel(_storage_address(tls_cluster), tls_cluster.cluster,
                                              tls=security.TLSConfig.in_dir(other, "client")))
    with pytest.raises(ClusterUnavailable):
        wire.call(stub.Load, spb.LoadRequest(oid=bytes(8)), TIMEOUT_S)


def test_wrong_cluster_name_is_refused_with_a_clear_message(tls_cluster):
    admin = AdminClient(tls_cluster.address, "another-cluster", TIMEOUT_S,
                        tls=tls_cluster.tls_of("admin"), admin_token=tls_cluster.admin_token)
    try:
        with pytest.raises(ClusterNameMismatch, match="serves cluster .* the request was for 'another-cluster'"):
            admin.cluster_state()
    finally:
        admin.close()
    stub = srpc.StorageStub(wire.open_channel(_storage_address(tls_cluster), "another-cluster",
                                              tls=tls_cluster.tls_of("client")))
    with pytest.raises(ClusterNameMismatch, match="cluster name mismatch"):
        wire.call(stub.Load, spb.LoadRequest(oid=bytes(8)), TIMEOUT_S)


def test_client_certificate_cannot_call_admin_rpcs(tls_cluster):
    admin = AdminClient(tls_cluster.address, tls_cluster.cluster, TIMEOUT_S, tls=tls_cluster.tls_of("client"))
    try:
        with pytest.raises(AccessDenied, match="GetNodes needs the role admin; the peer's certificate carries client"):
            admin.nodes()
        with pytest.raises(AccessDenied, match="SetClusterState"):
            admin.set_cluster_state("STOPPING")
    finally:
        admin.close()
    tls = tls_cluster.tls_of("client")
    out = _ctl("-a", tls_cluster.address, "-c", tls_cluster.cluster, "--ca", tls.ca_path,
               "--cert", tls.cert_path, "--key", tls.key_path, "print", "cluster")
    assert out.returncode == 1 and "needs the role admin" in out.stderr, out.stderr
    with pytest.raises(AccessDenied, match="CheckRecords needs the role admin"):
        wire.call(_storage(tls_cluster, "client").CheckRecords, spb.CheckRecordsRequest(), TIMEOUT_S)


def test_only_the_master_and_storages_use_their_rpcs(tls_cluster):
    storage = _storage(tls_cluster, "admin")
    with pytest.raises(AccessDenied, match="Lock needs the role master"):
        wire.call(storage.Lock, spb.LockRequest(ttid=bytes(8), tid=bytes(8)), TIMEOUT_S)
    with pytest.raises(AccessDenied, match="ReplicaKeys needs the role storage"):
        wire.call(storage.ReplicaKeys, spb.ReplicaKeysRequest(), TIMEOUT_S)
    with pytest.raises(AccessDenied, match="RecordStamp needs the role master"):   # rule A's witness order
        wire.call(storage.RecordStamp, cpb.Stamp(epoch=1, version=1), TIMEOUT_S)
    master = _master(tls_cluster, "client")
    with pytest.raises(AccessDenied, match="Identify as a storage node needs the role storage"):
        wire.call(master.Identify, mpb.IdentifyRequest(type=cpb.STORAGE, address="127.0.0.1:1"), TIMEOUT_S)
    with pytest.raises(AccessDenied, match="Heartbeat needs the role storage"):
        wire.call(master.Heartbeat, mpb.HeartbeatRequest(node_id=1), TIMEOUT_S)


def test_storage_node_with_a_client_certificate_is_refused(tls_cluster, tmp_path):
    tls = tls_cluster.tls_of("client")
    out = subprocess.run([sys.executable, "-m", "storage_node", "--cluster", tls_cluster.cluster,
                          "--master", tls_cluster.address, "--data", str(tmp_path / "s"),
                          "--ca", tls.ca_path, "--cert", tls.cert_path, "--key", tls.key_path],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Identify as a storage node needs the role storage" in out.stderr


def test_reader_certificate_reads_but_cannot_write(tls_cluster, committed):
    master, storage = _master(tls_cluster, "reader"), _storage(tls_cluster, "reader")
    for method, request in ((master.Begin, mpb.BeginRequest(node_id=1)),
                            (master.NewOids, mpb.NewOidsRequest(count=1)),
                            (master.Finish, mpb.FinishRequest(node_id=1, ttid=bytes(8))),
                            (storage.Store, spb.StoreRequest(ttid=bytes(8), node_id=1)),
                            (storage.Vote, spb.VoteRequest(ttid=bytes(8))),
                            (storage.StoreBlobChunk, spb.StoreBlobChunkRequest(ttid=bytes(8), oid=bytes(8))),
                            (storage.Pack, spb.PackRequest())):
        with pytest.raises(ReadOnlyError, match="needs the role admin or client; the peer's certificate carries reader"):
            wire.call(method, request, TIMEOUT_S)
    # it claims to be a writer; the nodes go by its certificate
    db = ZODB.DB(NeoStorage(**tls_cluster.storage_kwargs("reader"), read_only=False, local_reads=False))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        assert conn.root()["greeting"] == committed
        conn.root()["greeting"] = "overwritten"
        with pytest.raises(ReadOnlyError):
            tm.commit()
        tm.abort()
        conn.close()
    finally:
        db.close()


def test_replication_catch_up_over_tls(tls_cluster, committed):
    """A storage node that missed commits copies them from its peer (storage role) and
    the master marks its cells UP_TO_DATE again (master role orders, over TLS)."""
    victim, _ = storage_of_index(tls_cluster, 1)
    tls_cluster.kill_storage(1)
    wait_down(tls_cluster, victim)
    db = ZODB.DB(tls_cluster.open_storage(local_reads=False))
    try:
        with db.transaction() as conn:
            conn.root()["while_down"] = list(range(100))
    finally:
        db.close()
    tls_cluster.start_storage(1)
    cells = wait_settled(tls_cluster, timeout_s=120)
    assert all(set(row) == {"U"} for row in cells.values()), cells
    assert neoctl(tls_cluster, "--json", "check")["ok"] is True


def test_more_certificates_from_the_cluster_ca(tls_cluster):
    ops = security.issue_into(tls_cluster.tls_dir, "ops", ["admin"])
    admin = AdminClient(tls_cluster.address, tls_cluster.cluster, TIMEOUT_S, tls=ops)
    try:
        assert admin.cluster_state() == "RUNNING"
    finally:
        admin.close()
    assert stat.S_IMODE(os.stat(ops.key_path).st_mode) == 0o600
    nobody = security.issue_into(tls_cluster.tls_dir, "nobody", [])
    stub = srpc.StorageStub(wire.open_channel(_storage_address(tls_cluster), tls_cluster.cluster, tls=nobody))
    with pytest.raises(AccessDenied, match="Load needs the role .*; the peer's certificate carries no neoarray role"):
        wire.call(stub.Load, spb.LoadRequest(oid=bytes(8)), TIMEOUT_S)


# ---------------------------------------------------------------- without TLS: the admin token

@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("plain") / "c")


def test_admin_token_is_required_without_tls(plain_cluster, tmp_path):
    c = plain_cluster
    assert not c.tls
    bare = AdminClient(c.address, c.cluster, TIMEOUT_S)
    wrong = AdminClient(c.address, c.cluster, TIMEOUT_S, admin_token="not-the-token")
    try:
        for admin in (bare, wrong):
            with pytest.raises(AccessDenied, match="GetClusterState is an admin RPC: it needs the cluster's admin token"):
                admin.cluster_state()
    finally:
        bare.close()
        wrong.close()
    out = _ctl("-a", c.address, "-c", c.cluster, "print", "cluster")
    assert out.returncode == 1 and "admin token" in out.stderr, out.stderr
    out = _ctl("-a", c.address, "-c", c.cluster, "--token-file", c.token_file, "print", "cluster")
    assert out.returncode == 0 and out.stdout.strip() == "RUNNING", out.stderr
    assert neoctl(c, "print", "cluster").strip() == "RUNNING"          # --dir finds the token
    # a plain client still reads and writes through the Master and Storage services
    db = ZODB.DB(c.open_storage())
    try:
        with db.transaction() as conn:
            conn.root()["x"] = 1
    finally:
        db.close()


def test_master_refuses_commits_of_a_read_only_client(plain_cluster):
    storage = plain_cluster.open_storage(read_only=True)
    try:
        master = storage._link.master
        with pytest.raises(ReadOnlyError, match=f"client C{storage.node_id} identified as read-only: Begin"):
            wire.call(master.Begin, mpb.BeginRequest(node_id=storage.node_id, tid=b""), TIMEOUT_S)
        with pytest.raises(ReadOnlyError, match="Finish refused"):
            wire.call(master.Finish, mpb.FinishRequest(node_id=storage.node_id, ttid=(1).to_bytes(8, "big")),
                      TIMEOUT_S)
    finally:
        storage.close()


def test_cluster_up_tls_takes_one_flag(tmp_path):
    path = str(tmp_path / "up")
    proc = subprocess.Popen([sys.executable, "-m", "neoarray.cli", "cluster", "up", path, "--tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "RUNNING; master at 127.0.0.1:" in first, first + proc.stderr.read()
        assert "cert=" in proc.stdout.readline()           # the python line names the files
        assert os.path.exists(os.path.join(path, "tls", "ca.crt"))
        up = types.SimpleNamespace(path=path)                # what neoctl(cluster) reads
        assert neoctl(up, "print", "cluster").strip() == "RUNNING"
        assert neoctl(up, "stop").startswith("cluster STOPPED")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- no processes

def test_access_table_names_every_rpc():
    services = [mpb.DESCRIPTOR.services_by_name[n] for n in ("Master", "Admin")]
    services.append(spb.DESCRIPTOR.services_by_name["Storage"])
    services.append(standby_pb2.DESCRIPTOR.services_by_name["Standby"])
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert methods == set(security.ACCESS)
    assert all(roles <= set(security.ROLES) and roles for roles in security.ACCESS.values())


def test_refusal_rules():
    admin_rpc, store = "/neoarray.v1.Admin/GetNodes", "/neoarray.v1.Storage/Store"
    assert security.refusal(admin_rpc, None, token_ok=False, token_required=False) is None
    assert "admin token" in security.refusal(admin_rpc, None, token_ok=False, token_required=True)
    assert security.refusal(admin_rpc, frozenset({"client"}), token_ok=True, token_required=True) is None
    assert security.refusal(store, frozenset(), False, False).startswith(security.DENIED_PREFIX)
    assert security.refusal(store, frozenset({"reader"}), False, False).startswith(security.READ_ONLY_PREFIX)
    assert "no entry in the access table" in security.refusal("/neoarray.v1.Storage/Nope", None, False, False)
    for error in (AccessDenied("x"), security.SecurityError("y")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)


def test_tls_configuration_errors_name_what_is_wrong(tmp_path):
    assert security.TLSConfig.of(None, None, None) is None
    with pytest.raises(security.SecurityError, match="missing: key"):
        security.TLSConfig.of("ca.crt", "c.crt", None)
    tls = security.TLSConfig.of(str(tmp_path / "ca.crt"), str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    with pytest.raises(security.SecurityError, match="cannot read the CA certificate .*ca.crt"):
        tls.load()
    with pytest.raises(security.SecurityError, match="unknown roles"):
        security.issue(*security.make_ca("x"), "x", ["superuser"])
    out = subprocess.run([sys.executable, "-m", "master", "--cluster", "x", "--data", str(tmp_path / "m"),
                          "--ca", str(tmp_path / "ca.crt")], check=False, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "TLS needs ca, cert and key together; missing: cert, key" in out.stderr


def test_zconfig_and_zodburi_open_tls_clients(tls_cluster, committed):
    import ZODB.config
    tls = tls_cluster.tls_of("reader")
    storages = [ZODB.config.storageFromString(f"""%import neoarray
    <neoarray>
      master {tls_cluster.address}
      cluster {tls_cluster.cluster}
      ca {tls.ca_path}
      cert {tls.cert_path}
      key {tls.key_path}
    </neoarray>""")]
    factory, _ = resolve_uri(f"neoarray://{tls_cluster.address}/{tls_cluster.cluster}"
                             f"?ca={tls.ca_path}&cert={tls.cert_path}&key={tls.key_path}")
    storages.append(factory())
    for storage in storages:
        assert_reads(storage, committed)
