"""Random kill -9 of the master and of the storage node while a client commits.

Checks the cluster core's promise: every transaction that ``tpc_finish`` acknowledged
is still there, with its data, after every node restarted; and no tid goes backwards;
with replicas, ``neoctl check`` finds every copy identical; and no ``tpc_finish``
that raised ``NotCommitted`` committed after all.  Most faults kill the
master, some aimed at the client's vote or ``tpc_finish`` or at a restarted master's
recovery (``moments.py``); the test ends with a line counting the kills.
The test prints its seed; ``NEOARRAY_SEED=<seed>`` replays it and
``NEOARRAY_FAULTS=<n>`` sets how many faults are injected (3 by default, so that the
default run stays short; the ``slow`` marker selects it for longer runs).
"""
import collections
import os
import random
import threading
import time

import pytest
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

from neoarray.cluster import LocalCluster
from neoarray.errors import NeoError, NotCommitted
from neoarray.ids import Z64
from tests.cluster_helpers import neoctl, wait_settled

from .moments import Tally, kill_master_at, master_moment

FAULTS = int(os.environ.get("NEOARRAY_FAULTS", "3"))
OBJECTS = 8


def commit_one(storage, oid, value, serial, phase=lambda name: None):
    t = TransactionMetaData()
    storage.tpc_begin(t)
    try:
        storage.store(oid, serial, zodb_pickle(MinPO(value)), "", t)
        phase("vote")
        storage.tpc_vote(t)
        phase("finish")
        return storage.tpc_finish(t)
    except BaseException:
        storage.tpc_abort(t)
        raise
    finally:
        phase("idle")


class Workload:
    """Commits counter values to OBJECTS objects, remembering what was acknowledged."""

    def __init__(self, storage, oids):
        self.storage, self.oids = storage, oids
        self.acked: dict[bytes, tuple[int, bytes]] = {}
        self.serials = {oid: Z64 for oid in oids}
        self.stop = threading.Event()
        self.failures = 0
        self.refused: list[tuple[bytes, int]] = []       # (oid, value) of tpc_finish said NotCommitted
        self.errors: collections.Counter = collections.Counter()     # failed attempts by exception
        self.commits = 0
        self.value = 0
        self.phase = "idle"         # "vote", "finish": in that call (where kills are aimed)

    def _phase(self, name: str) -> None:
        self.phase = name

    def run(self):
        while not self.stop.is_set():
            self.value += 1
            oid = self.oids[self.value % len(self.oids)]
            try:
                tid = commit_one(self.storage, oid, self.value, self.serials[oid], self._phase)
            except (NeoError, Exception) as exc:      # node gone: the commit may or may not have happened
                self.failures += 1
                self.errors[type(exc).__name__] += 1
                if isinstance(exc, NotCommitted):      # a promise, checked at the end
                    self.refused.append((oid, self.value))
                time.sleep(0.01)                   # not a busy loop while the cluster recovers
                self._refresh(oid)
                continue
            self.serials[oid] = tid
            self.acked[oid] = (self.value, tid)
            self.commits += 1

    def _refresh(self, oid):
        while not self.stop.is_set():
            try:
                self.serials[oid] = self.storage.loadBefore(oid, b"\x7f" + b"\xff" * 7)[1]
                return
            except Exception:
                time.sleep(0.1)


class Faults:
    """Draws and injects the faults; ``log`` names each, ``tally`` counts the kills.

    Three faults in four kill the master: at a random moment, while the client waits
    for its vote or for ``tpc_finish``, or (``recovery``) once and then again soon
    after its restart, before it is RUNNING; or while a storage node is down."""

    KINDS = ("master", "master", "storage", "storage+master")

    def __init__(self, cluster, rng: random.Random, work: Workload):
        self.cluster, self.rng, self.work = cluster, rng, work
        self.log: list[str] = []
        self.tally = Tally()

    def inject(self) -> None:
        kind = self.rng.choice(self.KINDS)
        index = self.rng.randrange(self.cluster.storages)
        name = self.cluster.storage_name(index)
        if kind == "master":
            self._master(master_moment(self.rng))
        elif kind == "storage":
            self.cluster.kill_storage(index)
            self.tally.killed("storage")
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.cluster.start_storage(index)
            self.log.append(name)
        else:
            self.cluster.kill_storage(index)
            self.tally.killed("storage")
            time.sleep(self.rng.uniform(0.0, 1.0))
            self.cluster.kill_master()
            self.tally.killed("master", "storage down")
            time.sleep(self.rng.uniform(0.0, 0.5))
            first = self.rng.choice(["master", "storage"])
            self.log.append(f"{name}+master, {first} back first")
            if first == "storage":
                self.cluster.start_storage(index)
            self.cluster.start_master()
            if first == "master":
                time.sleep(self.rng.uniform(0.0, 0.5))
                self.cluster.start_storage(index)
        self.cluster.wait_state("RUNNING", 60)

    def _master(self, moment: str) -> None:
        down_s = self.rng.uniform(0.0, 0.5)
        moment = kill_master_at(self.cluster, self.tally, self.rng, moment, lambda: self.work.phase, down_s, 0.5)
        self.log.append(f"master at {moment}")


def check_replicas(cluster) -> None:
    """Every replica identical (``neoctl check``), once no cell is catching up."""
    wait_settled(cluster, 120)
    report = neoctl(cluster, "--json", "check")
    assert report["ok"] is True and report["problems"] == 0, report


@pytest.mark.slow
@pytest.mark.parametrize("storages,replicas", [(1, 0), (2, 1)])
def test_random_kills_lose_no_acknowledged_transaction(tmp_path, storages, replicas):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} faults={FAULTS}")
    rng = random.Random(seed)
    cluster = LocalCluster(str(tmp_path / "c"), storages=storages, replicas=replicas, partitions=4,
                           node_timeout_s=2.0)
    cluster.start()
    storage = cluster.open_storage(rpc_timeout_s=10.0, connect_timeout_s=60.0)
    try:
        oids = [storage.new_oid() for _ in range(OBJECTS)]
        work = Workload(storage, oids)
        thread = threading.Thread(target=work.run, daemon=True)
        thread.start()
        faults = Faults(cluster, rng, work)
        started = time.monotonic()
        for n in range(FAULTS):
            time.sleep(rng.uniform(0.2, 0.8))
            faults.inject()
            print(f"fault {n + 1}/{FAULTS}: {faults.log[-1]} (t={time.monotonic() - started:.1f}s)")
        time.sleep(1.0)
        work.stop.set()
        thread.join(60)
        assert not thread.is_alive()
        print(f"faults injected: {faults.log}; commits acknowledged: {work.commits}; failed attempts: {work.failures} {dict(work.errors)}")
        assert work.acked, "no commit was acknowledged at all"
        storage.close()
        if replicas:
            check_replicas(cluster)
        cluster.kill_master()
        for index in range(storages):
            cluster.kill_storage(index)
        cluster.start()
        check = cluster.open_storage()
        try:
            tids, written = set(), set()
            for t in check.iterator():
                tids.add(t.tid)
                written.update((r.oid, zodb_unpickle(r.data).value) for r in t)
            refused = [(oid.hex(), v) for oid, v in work.refused if (oid, v) in written]
            assert not refused, f"committed after tpc_finish said NotCommitted: {refused} (seed {seed})"
            for oid, (value, tid) in work.acked.items():
                assert tid in tids, f"acknowledged tid 0x{tid.hex()} lost (seed {seed})"
                data, serial = check.load(oid)
                assert serial >= tid, f"oid 0x{oid.hex()} went back before an acknowledged commit (seed {seed})"
                if serial == tid:
                    assert zodb_unpickle(data).value == value
        finally:
            check.close()
        print(faults.tally.line(work.commits))
    finally:
        cluster.stop()
