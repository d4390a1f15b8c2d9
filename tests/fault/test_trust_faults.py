"""Random kill -9 of masters and storage nodes run by hand, with clients committing.

Two masters (a primary and a standby), 3 storage nodes with replicas=1, 4 partitions,
every node started from its ``neoarray-master``/``neoarray-storage`` command line and
restarted with the same one (``hand_cluster.py``).  Two clients commit the workload of
``test_replicated_kills.Client`` (own counter, own append-only log, a shared counter:
three objects in different partitions, and conflicts between the clients) while a
reader reads them over and over.  At moments drawn from a seeded RNG one fault:

- ``storage``: a storage node killed, back after 0.1-3 s;
- ``master``: the primary killed, back after 0.1-1.5 s (before the standby takes over),
  at a random moment, while a client waits for its vote or ``tpc_finish``, or twice,
  the second time while it recovers (``moments.py``);
- ``storage+master``: a storage node killed, then the primary within a second;
- ``takeover``: the primary killed and kept down until the standby took over, then
  restarted (it becomes the new primary's standby);
- ``freeze storage``: a storage node stopped (SIGSTOP) for 0.5-4 s, then let go on
  (SIGCONT): past the node timeout (2 s) its master has marked it lost meanwhile, and
  it wakes with its votes and its view of an older table;
- ``freeze master``: the primary stopped for 0.5-6 s at a random moment or while a
  client waits for its vote or ``tpc_finish``: past about 2.5 s the standby takes
  over, and the old primary wakes in the middle of what it was doing (a Finish, its
  Lock orders), fenced by the storages, and steps down (exit status 3; it is
  restarted before the next fault).

A storage node is killed only once every cell is UP_TO_DATE again (never the last
readable copy).  After each fault, once the cluster is RUNNING, every client must
commit again within ``COMMIT_AGAIN_S``.  At the end: every acknowledged transaction
is there with all its objects (atomicity); every revision of the workload's objects
is one a client committed (nothing else); counters and logs are exact; the reader
never saw a value go back; ``neoctl check`` finds the copies identical and every
transaction complete.

Prints its seed, and each fault; ``NEOARRAY_SEED=<seed>`` replays the schedule and
``NEOARRAY_FAULTS=<n>`` sets how many faults (6 by default: one of each kind).
"""
import json
import os
import random
import threading
import time

import pytest
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

from neoarray.admin import AdminClient
from neoarray.client import NeoStorage
from neoarray.ids import Z64, p64, u64
from neoarray.proto import standby_pb2

from .hand_cluster import HandCluster
from .moments import Tally, aim_at_phase, master_moment, wait_for_state
from .test_replicated_kills import Client, check_acked, check_current, stop_clients

KINDS = ("storage", "master", "storage+master", "takeover", "freeze storage", "freeze master")
FAULTS = int(os.environ.get("NEOARRAY_FAULTS", str(len(KINDS))))
FREEZE_MOMENTS = ("any", "vote", "finish")
CLIENTS = 2
STORAGES = 3
PARTITIONS = 4
NODE_TIMEOUT_S = 2.0
COMMIT_AGAIN_S = 60.0       # a client commits again this soon after the cluster is RUNNING


class Reader:
    """Reads every workload object at its latest snapshot, over and over; records a
    value that went back (a counter lower, a log shorter, than already seen)."""

    def __init__(self, storage, oids: dict, stop: threading.Event):
        self.storage, self.oids, self.stop = storage, oids, stop
        self.seen: dict[bytes, int] = {}
        self.reads = 0
        self.failure: str | None = None

    def run(self) -> None:
        while not self.stop.is_set() and self.failure is None:
            try:
                self.storage.sync()
                before = p64(u64(self.storage.lastTransaction()) + 1)
                for name, oid in self.oids.items():
                    data, _, _ = self.storage.loadBefore(oid, before)
                    value = zodb_unpickle(data).value
                    size = len(value) if name.startswith("log") else value
                    if size < self.seen.get(oid, 0):
                        self.failure = f"{name} went back from {self.seen[oid]} to {size}"
                    self.seen[oid] = max(size, self.seen.get(oid, 0))
                self.reads += 1
            except Exception:   # noqa: BLE001 - the cluster is down: read again
                time.sleep(0.1)


class Schedule:
    """Draws and injects the faults; ``log`` lists them, ``tally`` counts the kills."""

    def __init__(self, cluster: HandCluster, rng: random.Random, clients=()):
        self.cluster, self.rng, self.clients = cluster, rng, list(clients)
        self.log: list[str] = []
        self.tally = Tally()

    def inject(self, kind: str) -> None:
        c = self.cluster
        revived = c.revive()
        if revived:
            self.log.append(f"restarted {', '.join(revived)}")
            print(f"  {self.log[-1]}")
        primary = c.wait_primary()
        if kind in ("storage", "storage+master"):
            wait_all_up_to_date(c)
            victim = f"storage-{self.rng.randrange(c.storages)}"
            c.kill(victim)
            self.tally.killed("storage")
            if kind == "storage+master":
                before_s = round(self.rng.uniform(0.0, 1.0), 2)
                time.sleep(before_s)
                self._bounce(primary, round(self.rng.uniform(0.1, 1.5), 2), "storage down")
                self.log[-1] = f"{victim} killed, {before_s}s later {self.log[-1]}"
            else:
                down_s = round(self.rng.uniform(0.1, 3.0), 2)
                time.sleep(down_s)
                self.log.append(f"{victim} killed, back after {down_s}s")
            c.start(victim)
        elif kind == "master":
            self._bounce(primary, round(self.rng.uniform(0.1, 1.5), 2), master_moment(self.rng))
        elif kind == "freeze storage":
            wait_all_up_to_date(c)
            victim = f"storage-{self.rng.randrange(c.storages)}"
            frozen_s = round(self.rng.uniform(0.5, 4.0), 2)
            c.freeze(victim, frozen_s)
            self.tally.killed("frozen storage")
            self.log.append(f"{victim} frozen for {frozen_s}s")
        elif kind == "freeze master":
            frozen_s = round(self.rng.uniform(0.5, 6.0), 2)
            moment = self.rng.choice(FREEZE_MOMENTS)
            if moment != "any" and self.clients:
                client = self.rng.choice(self.clients)
                seen = aim_at_phase(lambda: client.phase, moment)
                moment = moment if seen == moment else f"{moment} missed"
            c.freeze(primary, frozen_s)
            self.tally.killed("frozen master")
            self.log.append(f"{primary} (primary) frozen at {moment} for {frozen_s}s")
        else:
            standby = next(n for n in c.procs if n.startswith("master-") and n != primary)
            wait_following(c, standby)
            c.kill(primary)
            self.tally.killed("master", "takeover")
            started = time.monotonic()
            new = c.wait_primary(60)
            self.log.append(f"{primary} killed, {new} took over after {time.monotonic() - started:.1f}s")
            time.sleep(round(self.rng.uniform(0.0, 1.0), 2))
            c.start(primary)

    def _bounce(self, name: str, down_s: float, moment: str) -> None:
        """Kill master ``name`` at ``moment`` (``vote``, ``finish``: while a client waits
        for it; ``recovery``: once, and again before it is RUNNING), restart it."""
        if moment in ("vote", "finish") and self.clients:
            client = self.rng.choice(self.clients)
            seen = aim_at_phase(lambda: client.phase, moment)
            moment = moment if seen == moment else f"{moment} missed"
        self.cluster.kill(name)
        self.tally.killed("master", "any" if moment == "recovery" else moment)
        time.sleep(down_s)
        self.cluster.start(name)
        if moment == "recovery":
            admin = AdminClient(self.cluster.master_addresses[int(name.split("-")[1])], self.cluster.cluster)
            try:
                state = wait_for_state(admin, self.rng)
            finally:
                admin.close()
            self.cluster.kill(name)
            self.tally.killed("master", f"restarted, {state}")
            self.cluster.start(name)
            moment = f"recovery, killed again when {state}"
        self.log.append(f"{name} (primary) killed at {moment}, back after {down_s}s")


def wait_following(cluster: HandCluster, name: str, timeout_s: float = 60.0) -> None:
    """Until master ``name`` is a standby following a primary (it can take over)."""
    deadline = time.monotonic() + timeout_s
    while True:
        role = cluster.role(name)
        if role is not None and role.role == standby_pb2.STANDBY and role.primary:
            return
        assert time.monotonic() < deadline, f"{name} is not a standby following the primary after {timeout_s} s"
        time.sleep(0.1)


def cell_letters(cluster: HandCluster) -> str:
    admin = cluster.admin()
    try:
        pt = admin.partition_table()
    finally:
        admin.close()
    return "".join(c.state.letter for row in pt.rows for c in row.cells)


def wait_all_up_to_date(cluster: HandCluster, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cluster.wait_state("RUNNING", max(0.1, deadline - time.monotonic()))
            letters = cell_letters(cluster)
            if set(letters) == {"U"} and len(letters) == PARTITIONS * 2:
                return
        except Exception:   # noqa: BLE001 - a master restarting: ask again
            pass
        assert time.monotonic() < deadline, f"cells not all UP_TO_DATE within {timeout_s} s"
        time.sleep(0.1)


def wait_commits(clients, since: dict, timeout_s: float) -> None:
    """Every client acknowledged a commit after ``since`` (its count then)."""
    deadline = time.monotonic() + timeout_s
    while any(c.commits <= since[c.index] for c in clients):
        assert not any(c.failure for c in clients), [c.failure for c in clients]
        late = [c.index for c in clients if c.commits <= since[c.index]]
        assert time.monotonic() < deadline, \
            f"clients {late} did not commit within {timeout_s} s after the cluster was RUNNING"
        time.sleep(0.05)


def initial_objects(storage) -> dict:
    oids = {name: storage.new_oid() for name in ["shared"] + [f"{n}{k}" for k in range(CLIENTS)
                                                            for n in ("counter", "log")]}
    t = TransactionMetaData()
    storage.tpc_begin(t)
    for name, oid in oids.items():
        storage.store(oid, Z64, zodb_pickle(MinPO([] if name.startswith("log") else 0)), "", t)
    storage.tpc_vote(t)
    storage.tpc_finish(t)
    return oids


def check_nothing_else(storage, clients, oids: dict) -> None:
    """Every revision of a workload object is the initial one or one a client's commit
    wrote (acknowledged, or settled after an unknown outcome)."""
    committed = {tid for c in clients for (_, tid) in c.acked}
    for name, oid in oids.items():
        history = [h["tid"] for h in storage.history(oid, size=1_000_000)]
        extra = [tid for tid in history[:-1] if tid not in committed]
        assert not extra, f"{name}: revisions no client committed: {[t.hex() for t in extra]}"


@pytest.mark.slow
def test_random_kills_of_masters_and_storages_run_by_hand(tmp_path):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} faults={FAULTS}")
    rng = random.Random(seed)
    cluster = HandCluster(str(tmp_path), storages=STORAGES, replicas=1, partitions=PARTITIONS,
                          node_timeout_s=NODE_TIMEOUT_S)
    cluster.start_all()
    storages = []
    stop = threading.Event()
    threads = []
    try:
        options = dict(rpc_timeout_s=10.0, connect_timeout_s=60.0, busy_wait_s_max=20.0)
        storages = [NeoStorage(**cluster.storage_kwargs(), local_reads=k == 0, **options) for k in range(CLIENTS + 1)]
        oids = initial_objects(storages[0])
        clients = [Client(k, storages[k], oids, stop) for k in range(CLIENTS)]
        reader = Reader(storages[CLIENTS], oids, stop)
        threads = [threading.Thread(target=w.run, daemon=True) for w in (*clients, reader)]
        for th in threads:
            th.start()
        schedule = Schedule(cluster, rng, clients)
        kinds = [KINDS[n % len(KINDS)] if n < len(KINDS) else rng.choice(KINDS) for n in range(FAULTS)]
        rng.shuffle(kinds)
        started = time.monotonic()
        for n, kind in enumerate(kinds):
            time.sleep(rng.uniform(0.2, 1.5))
            schedule.inject(kind)
            cluster.wait_state("RUNNING", 120)
            print(f"fault {n + 1}/{FAULTS}: {schedule.log[-1]} (t={time.monotonic() - started:.1f}s)")
            wait_commits(clients, {c.index: c.commits for c in clients}, COMMIT_AGAIN_S)
            assert reader.failure is None, reader.failure
        wait_all_up_to_date(cluster)
        time.sleep(0.5)
        stop_clients(stop, threads, clients)
        print(f"reader reads={reader.reads}")
        assert reader.failure is None, reader.failure
        for c in clients:
            c.settle_last()
        fresh = NeoStorage(**cluster.storage_kwargs(), local_reads=False, cache_bytes_max=0)
        try:
            check_acked(fresh, clients)
            check_current(fresh, clients, oids)
            check_nothing_else(fresh, clients, oids)
        finally:
            fresh.close()
        report = cluster.neoctl("--json", "check")
        assert report.returncode == 0, report.stdout + report.stderr
        summary = json.loads(report.stdout)
        assert summary["ok"] is True and summary["problems"] == 0, summary
        print(schedule.tally.line(sum(c.commits for c in clients)))
    finally:
        stop.set()
        for th in threads:
            th.join(10)
        for s in storages:
            s.close()
        cluster.stop()
