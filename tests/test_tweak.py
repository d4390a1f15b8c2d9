"""neoctl add / tweak / drop / kill / set replicas on a real cluster, under load.

Real processes on 127.0.0.1: a master and 2 storage nodes, replicas=1.  Client
threads keep committing a known workload (a counter per thread and a shared one,
incremented with retries, and a list per thread appended to) while a third node is
started, added and given cells, an old node is dropped and the table tweaked again:
no acknowledged commit may be lost, and every replica must end identical.
"""
import threading
import time

import pytest
import transaction
import ZODB
from persistent import Persistent
from persistent.list import PersistentList
from ZODB.POSException import ConflictError, POSError, StorageError

from neoarray import wire
from neoarray.cluster import LocalCluster
from neoarray.errors import NeoError
from neoarray.proto import storage_pb2 as spb
from tests.cluster_helpers import (
    letters,
    neoctl,
    storage_of_index,
    wait_cells,
    wait_settled,
)

PARTITIONS = 6
THREADS = 3


class Counter(Persistent):
    value = 0


class Workload:
    """``THREADS`` threads committing through ZODB until stopped; a commit whose
    outcome is unknown (an error at finish) is looked for in the thread's list."""

    def __init__(self, cluster):
        self.db = ZODB.DB(cluster.open_storage())
        with self.db.transaction() as conn:
            root = conn.root()
            root["shared"] = Counter()
            for t in range(THREADS):
                root[f"c{t}"], root[f"l{t}"] = Counter(), PersistentList()
        self.stop = threading.Event()
        self.acked = [0] * THREADS
        self.retries = [0] * THREADS
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(THREADS)]
        for th in self.threads:
            th.start()

    def _run(self, t: int) -> None:
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            i = 0
            while not self.stop.is_set():
                if self._commit(tm, conn, t, i):
                    i += 1
                    self.acked[t] = i
        except (AssertionError, POSError, NeoError) as exc:    # seen by the test thread
            self.errors.append(exc)
        finally:
            conn.close()

    def _commit(self, tm, conn, t: int, i: int) -> bool:
        for attempt in range(200):
            try:
                tm.begin()
                root = conn.root()
                root[f"c{t}"].value += 1
                root["shared"].value += 1
                root[f"l{t}"].append(i)
                tm.commit()
                return True
            except (ConflictError, StorageError, NeoError):
                tm.abort()
                self.retries[t] += 1
                tm.begin()
                conn.sync()
                if i in conn.root()[f"l{t}"]:        # committed after all
                    tm.abort()
                    return True
                tm.abort()
                time.sleep(0.01 * min(attempt, 10))
        raise AssertionError(f"thread {t} could not commit item {i}")

    def progress(self) -> int:
        return sum(self.acked)

    def finish(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(60)
        assert not self.errors, self.errors

    def verify(self) -> None:
        with self.db.transaction() as conn:
            root = conn.root()
            for t in range(THREADS):
                items = list(root[f"l{t}"])
                assert items == list(range(len(items))), f"thread {t}: duplicated or lost appends"
                assert len(items) >= self.acked[t] and len(items) <= self.acked[t] + 1
                assert root[f"c{t}"].value == len(items)
            assert root["shared"].value == sum(len(root[f"l{t}"]) for t in range(THREADS))
        self.db.close()


def wait_progress(work: Workload, more: int = 10, timeout_s: float = 30.0) -> None:
    target = work.progress() + more
    deadline = time.monotonic() + timeout_s
    while work.progress() < target:
        assert time.monotonic() < deadline, f"workload stalled at {work.progress()} commits"
        assert not work.errors, work.errors
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(str(tmp_path / "cluster"), storages=2, replicas=1, partitions=PARTITIONS,
                     node_timeout_s=3.0)
    c.start()
    yield c
    c.stop()


def keys_held(cluster, address: str) -> int:
    """Object and transaction keys the storage node at ``address`` holds, over every partition."""
    admin = cluster.admin()
    try:
        stub = admin.storage_stub(address)
        return sum(len(wire.call(stub.ReplicaKeys, spb.ReplicaKeysRequest(
            partition=p, table=table, max_tid=b"\xff" * 8, keys_max=1000), 10.0).keys)
            for p in range(PARTITIONS) for table in (spb.REPLICA_TRANSACTIONS, spb.REPLICA_OBJECTS))
    finally:
        admin.close()


def wait_no_keys(cluster, address: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (held := keys_held(cluster, address)) != 0:
        assert time.monotonic() < deadline, f"{held} keys still held at {address}"
        time.sleep(0.2)


def test_add_tweak_drop_tweak_under_load_loses_nothing(cluster):
    s1, _ = storage_of_index(cluster, 0)
    s2, _ = storage_of_index(cluster, 1)
    work = Workload(cluster)
    try:
        wait_progress(work)
        cluster.start_storage(2)
        s3, _ = storage_of_index(cluster, 2)
        nodes = {n["id"]: n["state"] for n in neoctl(cluster, "--json", "print", "node")["nodes"]}
        assert nodes[f"S{s3}"] == "PENDING"
        assert "not part of the cluster" in neoctl(cluster, "tweak", f"S{s3}", status=1)
        assert neoctl(cluster, "add", "all").strip() == f"Nodes added: S{s3}"
        assert "not PENDING" in neoctl(cluster, "add", f"S{s3}", status=1)

        before = letters(cluster)
        plan = neoctl(cluster, "--json", "tweak", "-n")
        assert plan["applied"] is False and len(plan["changes"]) == 8      # 4 moved: 4 O + 4 F
        assert letters(cluster) == before
        assert "Planned (not applied)" in neoctl(cluster, "tweak", "-n")
        done = neoctl(cluster, "--json", "tweak")
        assert done["applied"] is True and done["changes"] == plan["changes"]
        wait_progress(work)
        cells = wait_settled(cluster)
        assert {n: row.count("U") for n, row in cells.items()} == {s1: 4, s2: 4, s3: 4}
        assert neoctl(cluster, "tweak").strip() == "No change done."
        assert neoctl(cluster, "--json", "tweak", "-n")["changes"] == []

        wait_progress(work)
        asked = neoctl(cluster, "drop", f"S{s1}", status=1)      # no terminal, no --yes: nothing changes
        assert "its 4 cell(s) leave the partition table" in asked and "--yes" in asked
        assert letters(cluster)[s1].count(".") == PARTITIONS - 4
        assert "dropped (4 cells removed)" in neoctl(cluster, "drop", f"S{s1}", "--yes")
        assert s1 not in letters(cluster)
        assert "not part of the cluster" in neoctl(cluster, "drop", f"S{s1}", "--yes", status=1)
        neoctl(cluster, "tweak")
        wait_progress(work)
        cells = wait_settled(cluster)
        assert cells == {s2: "U" * PARTITIONS, s3: "U" * PARTITIONS}
        wait_progress(work)
    finally:
        work.finish()
    work.verify()
    assert sum(work.acked) > 50
    nodes = {n["id"]: n["state"] for n in neoctl(cluster, "--json", "print", "node")["nodes"]}
    assert nodes[f"S{s1}"] == "PENDING"
    report = neoctl(cluster, "--json", "check")
    assert report["ok"] is True and report["problems"] == 0
    wait_no_keys(cluster, storage_of_index(cluster, 0)[1])     # S1's data of dropped cells is gone
    assert neoctl(cluster, "kill", f"S{s1}", "--yes").strip() == f"S{s1} asked to shut down"
    cluster.storage_procs[0].wait(30)


def test_refusals_of_drop_kill_and_set_replicas(cluster):
    s1, _ = storage_of_index(cluster, 0)
    s2, _ = storage_of_index(cluster, 1)
    assert "out of range 0..1" in neoctl(cluster, "set", "replicas", "2", status=1)
    assert "is negative" in neoctl(cluster, "set", "replicas", "-1", status=1)
    assert "bad storage node" in neoctl(cluster, "drop", "X9", status=1)
    assert "S99 is not a storage node" in neoctl(cluster, "drop", "S99", status=1)
    assert "need at least 2" not in neoctl(cluster, "tweak")
    asked = neoctl(cluster, "set", "replicas", "0", status=1)    # fewer copies: what goes, then --yes
    assert f"the next tweak removes {PARTITIONS} copies" in asked and "--yes" in asked
    assert neoctl(cluster, "--json", "print", "pt")["replicas"] == 1
    assert neoctl(cluster, "--json", "set", "replicas", "0", "--yes")["replicas"] == 0
    tweak = neoctl(cluster, "--json", "tweak")
    assert sorted(c["to"] for c in tweak["changes"]) == ["F"] * PARTITIONS
    going = {f"  partition {c['partition']}: {c['node']}" for c in tweak["changes"]}
    assert going == {line for line in asked.splitlines() if line.startswith("  partition ")}
    cells = wait_settled(cluster)
    assert sorted(row.count("U") for row in cells.values()) == [3, 3]
    assert neoctl(cluster, "--json", "set", "replicas", "1")["replicas"] == 1
    neoctl(cluster, "tweak")
    wait_settled(cluster)

    cluster.kill_storage(1)                     # S2 down: its cells go OUT_OF_DATE
    wait_cells(cluster, s2, "O" * PARTITIONS, timeout_s=20)
    err = neoctl(cluster, "drop", f"S{s1}", "--yes", status=1)
    assert "holds the last readable copy of partition 0" in err
    assert "last readable copy" in neoctl(cluster, "kill", f"S{s1}", "--yes", status=1)
    assert "is DOWN, not running" in neoctl(cluster, "kill", f"S{s2}", "--yes", status=1)
    assert "need at least 2" in neoctl(cluster, "tweak", status=1)
    assert "dropped" in neoctl(cluster, "drop", f"S{s2}", "--yes")       # a dead node is forgotten
    nodes = {n["id"] for n in neoctl(cluster, "--json", "print", "node")["nodes"]}
    assert f"S{s2}" not in nodes
    assert "out of range 0..0" in neoctl(cluster, "set", "replicas", "1", status=1)


def test_finish_refused_when_every_readable_copy_is_newer_than_the_clients_view(tmp_path):
    """replicas=0: a transaction voted on S1 before ``tweak`` moves its partition to S3
    cannot be finished once S3 is the only copy (S3 never saw its stores): the master
    refuses it with a clear message, nothing of it is visible, and a retry commits."""
    from ZODB import POSException
    from ZODB.tests.MinPO import MinPO
    from ZODB.tests.StorageTestBase import zodb_pickle

    from neoarray.ids import Z64, u64
    from tests.conftest import running_cluster
    gen = running_cluster(tmp_path / "c", storages=2, replicas=0, partitions=PARTITIONS)
    cluster = next(gen)
    try:
        cluster.start_storage(2)
        s3, _ = storage_of_index(cluster, 2)
        neoctl(cluster, "add", "all")
        moved = {c["partition"] for c in neoctl(cluster, "--json", "tweak", "-n")["changes"]
                 if c["node"] == f"S{s3}"}
        assert moved
        s = cluster.open_storage()
        oid = next(o for o in iter(s.new_oid, None) if u64(o) % PARTITIONS in moved)
        t = transaction.Transaction()
        s.tpc_begin(t)
        s.store(oid, Z64, zodb_pickle(MinPO("lost?")), "", t)
        s.tpc_vote(t)                                   # voted on the old copy only

        neoctl(cluster, "tweak")
        wait_settled(cluster)                           # S3 caught up, the old cells dropped
        assert all(letters(cluster)[s3][p] == "U" for p in moved)
        with pytest.raises(POSException.StorageError, match="partition table changed under"):
            s.tpc_finish(t)
        s.tpc_abort(t)
        with pytest.raises(POSException.POSKeyError):
            s.load(oid)

        t = transaction.Transaction()                   # the retry, with the new view, commits
        s.tpc_begin(t)
        s.store(oid, Z64, zodb_pickle(MinPO("kept")), "", t)
        s.tpc_vote(t)
        tid = s.tpc_finish(t)
        assert s.load(oid)[1] == tid
        s.close()
    finally:
        gen.close()
