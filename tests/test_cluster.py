"""Integration: a real cluster of processes on 127.0.0.1, end to end."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

import neoarray
from neoarray import wire
from neoarray.errors import ChecksumError, ClusterNameMismatch, ClusterUnavailable
from neoarray.ids import Z64
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc


def commit_objects(storage, values, serials=None):
    """Commit one transaction storing ``{oid: value}``; returns the tid."""
    t = TransactionMetaData()
    storage.tpc_begin(t)
    for oid, value in values.items():
        storage.store(oid, (serials or {}).get(oid, Z64), zodb_pickle(MinPO(value)), "", t)
    storage.tpc_vote(t)
    return storage.tpc_finish(t)


def value_of(storage, oid):
    return zodb_unpickle(storage.load(oid)[0]).value


def test_wrong_cluster_name_is_refused(cluster):
    with pytest.raises(ClusterNameMismatch, match="cluster name mismatch"):
        neoarray.NeoStorage(cluster.address, "some-other-cluster", connect_timeout_s=5)


def test_store_with_bad_checksum_is_refused(cluster, storage):
    oid = storage.new_oid()
    t = TransactionMetaData()
    storage.tpc_begin(t)
    ttid = storage._txns[id(t)].ttid
    node = next(iter(storage._link.running))
    stub = srpc.StorageStub(wire.open_channel(storage._link.addresses[node], cluster.cluster))
    record = spb.ObjectRecord(oid=oid, serial=Z64, data=b"payload", checksum=12345)
    with pytest.raises(ChecksumError, match="does not match its checksum"):
        wire.call(stub.Store, spb.StoreRequest(ttid=ttid, objects=[record]), 10)
    storage.tpc_abort(t)
    with pytest.raises(POSException.POSKeyError):
        storage.load(oid)


def test_malformed_requests_get_clear_statuses(cluster, storage):
    node = next(iter(storage._link.running))
    channel = wire.open_channel(storage._link.addresses[node], cluster.cluster)
    stub = srpc.StorageStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Load(spb.LoadRequest(oid=b"short"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "oid must be 8 bytes" in err.value.details()
    raw = channel.unary_unary("/neoarray.v1.Storage/Load")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff garbage", timeout=10)
    assert err.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    # the node is still serving
    oid = storage.new_oid()
    commit_objects(storage, {oid: 1})
    assert value_of(storage, oid) == 1


def test_invalidations_reach_other_clients(cluster):
    db1 = ZODB.DB(cluster.open_storage())
    db2 = ZODB.DB(cluster.open_storage())
    try:
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        c1, c2 = db1.open(tm1), db2.open(tm2)
        c1.root()["counter"] = PersistentMapping(n=1)
        tm1.commit()
        tm2.begin()
        assert c2.root()["counter"]["n"] == 1
        c1.root()["counter"]["n"] = 2
        tm1.commit()
        tm2.begin()          # a new transaction sees the invalidation
        assert c2.root()["counter"]["n"] == 2
        # concurrent writers of the same object: the second gets a conflict
        c1.root()["counter"]["n"] = 3
        c2.root()["counter"]["n"] = 4
        tm1.commit()
        with pytest.raises(POSException.ConflictError):
            tm2.commit()
        tm2.abort()
        assert c2.root()["counter"]["n"] == 3
    finally:
        db1.close()
        db2.close()


def test_read_only_client_cannot_write(cluster):
    s = cluster.open_storage(read_only=True)
    try:
        with pytest.raises(POSException.ReadOnlyError):
            s.new_oid()
        with pytest.raises(POSException.ReadOnlyError):
            s.tpc_begin(TransactionMetaData())
    finally:
        s.close()


def test_kill_storage_between_vote_and_finish(cluster, storage):
    """The commit completes on the surviving replica; nothing is half visible."""
    oids = [storage.new_oid() for _ in range(8)]
    tid0 = commit_objects(storage, {oid: 0 for oid in oids})
    t = TransactionMetaData()
    storage.tpc_begin(t)
    serial = {oid: tid0 for oid in oids}
    for oid in oids:
        storage.store(oid, serial[oid], zodb_pickle(MinPO(1)), "", t)
    storage.tpc_vote(t)
    cluster.kill_storage(0)
    tid1 = storage.tpc_finish(t)
    assert {value_of(storage, oid) for oid in oids} == {1}
    other = cluster.open_storage()
    try:
        assert {value_of(other, oid) for oid in oids} == {1}
        assert other.lastTransaction() >= tid1
    finally:
        other.close()


def test_kill_storage_during_stores_aborts_cleanly(cluster, storage):
    oids = [storage.new_oid() for _ in range(4)]
    commit_objects(storage, {oid: 0 for oid in oids})
    tid_before = {oid: storage.load(oid)[1] for oid in oids}
    cluster.kill_storage(1)
    cluster_state_after_loss = cluster.admin().cluster_state()
    assert cluster_state_after_loss in ("RUNNING", "RECOVERING")
    # whatever happens to this commit, all oids move together or not at all
    try:
        commit_objects(storage, {oid: 5 for oid in oids}, tid_before)
        expected = 5
    except (ClusterUnavailable, POSException.StorageError):
        expected = 0
    assert {value_of(storage, oid) for oid in oids} == {expected}


def test_acknowledged_transactions_survive_restart_of_every_node(cluster):
    storage = cluster.open_storage()
    acked = {}
    oids = [storage.new_oid() for _ in range(20)]
    serials = {}
    for i in range(30):
        oid = oids[i % len(oids)]
        tid = commit_objects(storage, {oid: i}, serials)
        serials[oid] = tid
        acked[oid] = (i, tid)
    last_oid = max(oids)
    last_tid = storage.lastTransaction()
    storage.close()
    cluster.kill_master()
    cluster.kill_storage(0)
    cluster.kill_storage(1)
    cluster.start()
    storage = cluster.open_storage()
    try:
        for oid, (value, tid) in acked.items():
            data, serial = storage.load(oid)
            assert (zodb_unpickle(data).value, serial) == (value, tid)
        # no OID or TID handed out twice after the master's kill -9
        assert storage.new_oid() > last_oid
        assert commit_objects(storage, {storage.new_oid(): 1}) > last_tid
        assert len(list(storage.iterator())) == 31
    finally:
        storage.close()


def test_client_survives_master_restart(cluster):
    db = ZODB.DB(cluster.open_storage())
    try:
        conn = db.open()
        conn.root()["a"] = 1
        transaction.commit()
        cluster.kill_master()
        cluster.start_master()
        cluster.wait_state("RUNNING", 30)
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.root()["a"] = 2
                transaction.commit()
                break
            except (ClusterUnavailable, POSException.StorageError):
                transaction.abort()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.close()
        conn = db.open()
        assert conn.root()["a"] == 2
        conn.close()
    finally:
        db.close()


def test_concurrent_clients_commit_without_losing_increments(cluster):
    """Several threads, each with its own client, increment counters with retries."""
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["counters"] = PersistentMapping({i: 0 for i in range(3)})
    transaction.commit()
    conn.close()
    increments = 15
    committed, gave_up, errors = [0, 0, 0], [0, 0, 0], []

    def work(k):
        try:
            s = cluster.open_storage()
            d = ZODB.DB(s)
            tm = transaction.TransactionManager()
            c = d.open(tm)
            for n in range(increments):
                for _attempt in range(100):
                    try:
                        tm.begin()
                        c.root()["counters"][(k + n) % 3] += 1
                        tm.commit()
                        committed[k] += 1
                        break
                    except POSException.ConflictError:
                        tm.abort()
                else:
                    gave_up[k] += 1
            d.close()
        except Exception as exc:  # reported by the assertion below
            errors.append(f"client {k}: {exc!r}")
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    # every increment whose commit returned is there, and none is counted twice
    assert not [th for th in threads if th.is_alive()] and not errors and gave_up == [0, 0, 0], \
        (errors, gave_up)
    assert sum(committed) == 3 * increments
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    tm.begin()          # a new transaction syncs: it sees every commit that returned before it
    assert sum(conn.root()["counters"].values()) == 3 * increments
    conn.close()
    db.close()


def test_neoctl(cluster):
    def neoctl(*args):
        out = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", cluster.path, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert neoctl("print", "cluster").strip() == "RUNNING"
    ids = neoctl("print", "ids")
    assert ids.startswith("last_oid = 0x") and "last_tid = 0x" in ids and "last_ptid = 1" in ids
    pt = neoctl("print", "pt").splitlines()
    assert pt[0] == "# ptid: 1, replicas: 1"
    assert sorted(line.split()[0] for line in pt[1:]) == ["S1", "S2"]
    assert all(line.split()[2] == "UUUU" for line in pt[1:])
    nodes = json.loads(neoctl("print", "node", "--json"))["nodes"]           # --json after the command too
    assert {(n["id"], n["state"]) for n in nodes if n["type"] == "STORAGE"} == {("S1", "RUNNING"), ("S2", "RUNNING")}
    masters = [n for n in nodes if n["type"] == "MASTER"]                     # the primary is listed
    assert [(m["address"], m["primary"]) for m in masters] == [(cluster.address, True)]
    assert f"| MASTER (primary) | {cluster.address} | RUNNING" in neoctl("print", "node")
    assert json.loads(neoctl("--json", "print", "cluster")) == {"state": "RUNNING"}
    assert json.loads(neoctl("print", "cluster", "--json")) == {"state": "RUNNING"}
    bad = subprocess.run([sys.executable, "-m", "neoarray.ctl", "-a", cluster.address, "-c", "nope",
                          "print", "cluster"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "cluster name mismatch" in bad.stderr
    stopped = json.loads(neoctl("stop", "--json"))                    # the final state
    assert stopped["state"] == "STOPPED" and stopped["still_listening"] == [] and len(stopped["storages"]) == 2
    cluster.master_proc.wait(30)
    for proc in cluster.storage_procs.values():
        proc.wait(30)
    assert cluster.master_proc.returncode == 0


def test_zconfig_and_zodburi(cluster, tmp_path):
    import ZODB.config
    import zodburi
    conf = f"""
    %import neoarray
    <zodb>
      <neoarray>
        master {cluster.address}
        cluster {cluster.cluster}
        cache-size 8MB
        cache-colours meta:1:lru,hot:3:s3fifo
      </neoarray>
    </zodb>
    """
    db = ZODB.config.databaseFromString(conf)
    conn = db.open()
    conn.root()["via"] = "zconfig"
    transaction.commit()
    assert db.storage._cache.bytes_max == 8 << 20
    colours = db.storage.cache_stats()["colours"]
    assert {name: c["quota_bytes"] for name, c in colours.items()} == {"meta": 2 << 20, "hot": 6 << 20}
    conn.close()
    db.close()
    factory, dbkw = zodburi.resolve_uri(
        f"neoarray://{cluster.address}/{cluster.cluster}?read_only=true&connection_cache_size=100"
        "&cache_colours=meta:1:lru,scan:1:fifo")
    db = ZODB.DB(factory(), **dbkw)
    conn = db.open()
    assert conn.root()["via"] == "zconfig"
    assert db.storage.isReadOnly() and db.getCacheSize() == 100
    assert set(db.storage.cache_stats()["colours"]) == {"meta", "scan"}
    conn.close()
    db.close()


def test_embedded_open_and_reopen(tmp_path):
    path = str(tmp_path / "db")
    db = neoarray.open(path)
    conn = db.open()
    conn.root()["x"] = list(range(5))
    transaction.commit()
    conn.close()
    db.close()
    assert db.local_cluster.master_proc.poll() is not None
    db = neoarray.open(path)
    conn = db.open()
    assert conn.root()["x"] == list(range(5))
    conn.close()
    db.close()


@pytest.mark.parametrize("how", ["neoctl", "ctrl-c"])
def test_cluster_up_stops_cleanly(tmp_path, how):
    path = str(tmp_path / "up")
    proc = subprocess.Popen([sys.executable, "-m", "neoarray.cli", "cluster", "up", path,
                             "--storages", "2", "--replicas", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "RUNNING; master at 127.0.0.1:" in first, first + proc.stderr.read()
        address = first.rsplit(" ", 1)[-1].strip()
        name = open(os.path.join(path, "cluster.name")).read().strip()
        s = neoarray.NeoStorage(address, name)
        commit_objects(s, {s.new_oid(): 7})
        s.close()
        if how == "neoctl":
            out = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", path, "stop"],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
        else:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "cluster stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_read_views_match_loads(cluster, storage):
    oids = [storage.new_oid() for _ in range(5)]
    tid = commit_objects(storage, {oid: i for i, oid in enumerate(oids)})
    before = (int.from_bytes(tid, "big") + 1).to_bytes(8, "big")
    missing = storage.new_oid()
    with storage.read_views(oids + [missing], before) as views:
        assert set(views) == set(oids)
        for oid in oids:
            data, serial = views[oid]
            assert serial == tid and bytes(data) == storage.loadSerial(oid, tid)
    remote = cluster.open_storage(local_reads=False)
    try:
        with remote.read_views(oids, before) as views:
            assert {oid: bytes(d) for oid, (d, _) in views.items()} == {oid: storage.load(oid)[0] for oid in oids}
    finally:
        remote.close()


def test_heartbeat_of_an_unknown_node_asks_it_to_identify(cluster):
    from neoarray.proto import master_pb2 as mpb
    from neoarray.proto import master_pb2_grpc as mrpc
    stub = mrpc.MasterStub(wire.open_channel(cluster.address, cluster.cluster))
    with pytest.raises(grpc.RpcError) as err:
        stub.Heartbeat(mpb.HeartbeatRequest(node_id=999), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "must identify again" in err.value.details()


def test_prefetch_fills_the_cache(cluster):
    writer = cluster.open_storage()
    oids = [writer.new_oid() for _ in range(6)]
    tid = commit_objects(writer, {oid: i for i, oid in enumerate(oids)})
    writer.close()
    reader = cluster.open_storage(local_reads=False)
    try:
        before = (int.from_bytes(tid, "big") + 1).to_bytes(8, "big")
        reader.prefetch(oids, before)
        deadline = time.monotonic() + 10
        while reader.cache_stats()["objects"] < len(oids) and time.monotonic() < deadline:
            time.sleep(0.02)
        hits = reader.cache_stats()["hits"]
        assert [zodb_unpickle(reader.loadBefore(oid, before)[0]).value for oid in oids] == list(range(6))
        assert reader.cache_stats()["hits"] == hits + len(oids)
    finally:
        reader.close()


def test_losing_a_storage_mid_commits_is_invisible_to_the_application(cluster):
    """replicas=1: a storage node killed while a client commits costs no commit; the
    cells it missed go OUT_OF_DATE at once (not readable), it catches up when back,
    and then serves every commit alone."""
    from tests.cluster_helpers import letters, storage_ids, wait_cells
    ids = storage_ids(cluster)
    db = ZODB.DB(cluster.open_storage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()["counters"] = PersistentMapping({k: 0 for k in range(8)})
    tm.commit()
    errors, done = [], 0
    for i in range(60):
        if i == 10:
            cluster.kill_storage(0)
        try:
            conn.root()["counters"][i % 8] += 1
            tm.commit()
            done += 1
        except Exception as exc:  # noqa: BLE001 - counted: the test asserts there are none
            errors.append(repr(exc))
            tm.abort()
    assert errors == [] and done == 60
    assert "U" not in letters(cluster)[ids[0]]          # it missed commits: not readable
    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU")
    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    other = ZODB.DB(cluster.open_storage())
    try:
        assert sum(other.open().root()["counters"].values()) == 60
    finally:
        other.close()
    conn.close()
    db.close()
