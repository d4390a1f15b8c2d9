"""Random kill -9 of the master and of the storage node while a client commits.

Checks the cluster core's promise: every transaction that ``tpc_finish`` acknowledged
is still there, with its data, after every node restarted; and no tid goes backwards.
The test prints its seed; ``NEOARRAY_SEED=<seed>`` replays it and
``NEOARRAY_FAULTS=<n>`` sets how many faults are injected (3 by default, so that the
default run stays short; the ``slow`` marker selects it for longer runs).
"""
import os
import random
import threading
import time

import pytest
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

from neoarray.cluster import LocalCluster
from neoarray.errors import NeoError
from neoarray.ids import Z64

FAULTS = int(os.environ.get("NEOARRAY_FAULTS", "3"))
OBJECTS = 8


def commit_one(storage, oid, value, serial):
    t = TransactionMetaData()
    storage.tpc_begin(t)
    try:
        storage.store(oid, serial, zodb_pickle(MinPO(value)), "", t)
        storage.tpc_vote(t)
        return storage.tpc_finish(t)
    except BaseException:
        storage.tpc_abort(t)
        raise


class Workload:
    """Commits counter values to OBJECTS objects, remembering what was acknowledged."""

    def __init__(self, storage, oids):
        self.storage, self.oids = storage, oids
        self.acked: dict[bytes, tuple[int, bytes]] = {}
        self.serials = {oid: Z64 for oid in oids}
        self.stop = threading.Event()
        self.failures = 0
        self.commits = 0
        self.value = 0

    def run(self):
        while not self.stop.is_set():
            self.value += 1
            oid = self.oids[self.value % len(self.oids)]
            try:
                tid = commit_one(self.storage, oid, self.value, self.serials[oid])
            except (NeoError, Exception):      # node gone: the commit may or may not have happened
                self.failures += 1
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
        injected = []
        for _ in range(FAULTS):
            time.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(["master", *range(storages)])     # a storage by index
            injected.append(victim if victim == "master" else cluster.storage_name(victim))
            if victim == "master":
                cluster.kill_master()
                time.sleep(rng.uniform(0.0, 0.5))
                cluster.start_master()
            else:
                index = victim
                cluster.kill_storage(index)
                time.sleep(rng.uniform(0.0, 0.5))
                cluster.start_storage(index)
            cluster.wait_state("RUNNING", 60)
        time.sleep(1.0)
        work.stop.set()
        thread.join(60)
        assert not thread.is_alive()
        print(f"faults injected: {injected}; commits acknowledged: {work.commits}; failed attempts: {work.failures}")
        assert work.acked, "no commit was acknowledged at all"
        storage.close()
        cluster.kill_master()
        for index in range(storages):
            cluster.kill_storage(index)
        cluster.start()
        check = cluster.open_storage()
        try:
            tids = {t.tid for t in check.iterator()}
            for oid, (value, tid) in work.acked.items():
                assert tid in tids, f"acknowledged tid 0x{tid.hex()} lost (seed {seed})"
                data, serial = check.load(oid)
                assert serial >= tid, f"oid 0x{oid.hex()} went back before an acknowledged commit (seed {seed})"
                if serial == tid:
                    assert zodb_unpickle(data).value == value
        finally:
            check.close()
    finally:
        cluster.stop()
