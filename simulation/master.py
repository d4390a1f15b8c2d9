"""The master of the simulation: the real ``CommitCore``, ``CommitFlow``,
``IdAllocator`` (with the simulated time), ``PartitionTable`` and ``CatchUp``; the
cluster events of ``simulation/cluster.py``.

Its durable state (``disk``: the id reservations, the partition table, the next
node id) is what ``master/state.py`` persists; a crash loses everything else, and
the restarted master reloads it, as ``Master._load_state`` does.  A client's session
is its node id of this master's run: a restarted master knows none (the client
identifies again and gets a new id).
"""
from __future__ import annotations

from master import flow as fl
from master.commit import CommitCore, owner_of
from master.core import IdAllocator, PartitionTable
from master.flow import CommitFlow
from master.replication import CatchUp
from neoarray.errors import ClusterUnavailable, OutcomeUnknown, RequestRefused
from neoarray.ids import Z64
from neoarray.states import ClusterState, NodeState

from . import cluster
from .world import Call, Sleep

EPOCH_S = 1_700_000_000.0     # the simulated clock's 0, as a time of day (tids)
LOCK_S = 1.0
FINISH_WAIT_S = 3.0
PENDING_TIMEOUT_S = 30.0
UNLOCKS_PER_BATCH_MAX = 64


class SimIds(IdAllocator):
    """The real allocator, telling the checker every id it hands out."""

    def __init__(self, checker, *args):
        IdAllocator.__init__(self, *args)
        self.checker = checker

    def new_oids(self, count: int) -> list[bytes]:
        oids = IdAllocator.new_oids(self, count)
        self.checker.handed_out("oid", oids)
        return oids

    def _hand_out(self, tid: bytes) -> bytes:
        tid = IdAllocator._hand_out(self, tid)
        self.checker.handed_out("tid", [tid])
        return tid


class MasterActor:
    name = "M"
    ids_class = SimIds          # a test may give a faulty one

    def __init__(self, world, checker, partitions: int, replicas: int, storages: list[int]):
        self.world, self.checker = world, checker
        self.partitions = partitions
        self.storage_ids = sorted(storages)
        pt = PartitionTable.create(partitions, replicas, self.storage_ids)
        self.disk = {"next_node_id": max(storages) + 1, "oid_reserved": 0, "tid_reserved": Z64,
                     "pt": pt.to_doc()}
        self.up, self.epoch = False, 0

    def persist(self, **values) -> None:
        self.disk.update(values)

    def persist_pt(self) -> None:
        self.persist(pt=self.pt.to_doc())

    def start(self) -> None:
        d = self.disk
        self.pt = PartitionTable.from_doc(d["pt"])
        self.first_node_id = d["next_node_id"]
        self.ids = self.ids_class(self.checker, self.persist, d["oid_reserved"], d["oid_reserved"],
                                  d["tid_reserved"], d["tid_reserved"])
        self.commits = CommitCore(self.first_node_id, PENDING_TIMEOUT_S, 10_000, 10_000)
        self.catchup = CatchUp()
        self.flow = CommitFlow(self)
        self.nodes = {nid: NodeState.DOWN for nid in self.storage_ids}
        self.last_seen: dict[int, float] = {}
        self.clients: set[int] = set()
        self.cluster_state = ClusterState.RECOVERING
        self.last_committed = Z64
        self.started_at = self.world.now
        self.to_unlock: dict[int, list] = {}
        self.settling: set[int] = set()
        self.up = True
        self.epoch += 1
        self.world.spawn(self.name, self.main())

    def crash(self) -> None:
        self.up = False
        self.epoch += 1

    def log(self, text: str) -> None:
        self.world.log(f"M: {text}")

    def table(self) -> str:
        return " ".join("".join(f"{n}{s}" for n, s in sorted(row.items())) for row in self.pt.rows)

    def running_storages(self) -> set[int]:
        return {n for n, s in self.nodes.items() if s == NodeState.RUNNING}

    # -- actions of CommitFlow ----------------------------------------------------------
    def carry_out(self, actions) -> None:
        for a in actions:
            if isinstance(a, fl.TableChanged):
                self.persist_pt()
                self.log(f"table {self.table()} (ptid {self.pt.ptid})")
            elif isinstance(a, fl.Publish):
                self.checker.published(a.txn)
            elif isinstance(a, fl.Unlock):
                self.to_unlock.setdefault(a.node, []).append(a.ttid)
            elif isinstance(a, fl.AbortOn):
                for nid in a.nodes:
                    self.world.send(self.name, f"S{nid}", "abort", (a.ttid,), 0)
            elif isinstance(a, fl.Done):
                self.log(f"0x{a.txn.ttid.hex()}: {a.txn.outcome}")
                a.txn.done.set()

    # -- requests ------------------------------------------------------------------------
    def handle(self, kind: str, payload: tuple, src: str):
        if kind == "heartbeat":
            nid, pending, done = payload
            if self.nodes.get(nid) != NodeState.RUNNING:
                raise RequestRefused(f"S{nid} is not running for this master: identify again")
            self.last_seen[nid] = self.world.now
            return cluster.pending_verdicts(self, nid, pending), cluster.replication_report(self, nid, done)
        if kind == "identify":
            return self.identify(*payload)
        client = payload[0]
        if client not in self.clients:
            raise RequestRefused(f"C{client} has no session with this master: identify again")
        if kind == "view":
            running = self.running_storages()
            return self.cluster_state, [dict(r) for r in self.pt.rows], self.pt.ptid, running
        self.require_running()
        if kind == "new_oids":
            return self.ids.new_oids(payload[1])
        if kind == "finish":
            return self.finish(*payload)
        if kind == "final_status":
            ttid = payload[1]
            return self.commits.final_status(ttid, owner_of(ttid) in self.clients,
                                             self.commits.everyone_reported(self.pt))
        if kind == "abort":
            client, ttid, storages = payload
            self.commits.check_abort(client, ttid, lambda n: n in self.clients)
            self.carry_out(self.flow.settle())
            self.carry_out([fl.AbortOn(ttid, tuple(sorted(set(storages) & set(self.nodes))))])
            return None
        raise RequestRefused(f"unknown request {kind!r}")

    def identify(self, typ: str, nid: int, last_tid: bytes = Z64, last_oid: bytes = Z64) -> int:
        if typ == "storage":
            if nid not in self.nodes:
                raise RequestRefused(f"storage node {nid} is not known to this cluster")
            cluster.storage_joined(self, nid, last_tid, last_oid)
            return nid
        nid = self.disk["next_node_id"]
        self.persist(next_node_id=nid + 1)
        self.clients.add(nid)
        return nid

    def require_running(self) -> None:
        if self.cluster_state != ClusterState.RUNNING:
            raise ClusterUnavailable(f"cluster is {self.cluster_state}, not RUNNING")

    def finish(self, client: int, ttid: bytes, oids, storages, view_ptid: int):
        """The Finish of ``Committing.finish``, with simulated Lock orders."""
        bad = [s for s in storages if s not in self.nodes]
        if bad:
            raise RequestRefused(f"finish names unknown storage nodes {bad}")
        step = self.flow.queue_finish(client, ttid, oids, storages, view_ptid, client in self.clients,
                                      now=EPOCH_S + self.world.now)
        self.carry_out(step.actions)
        if step.error is not None:
            raise step.error
        txn = step.txn
        self.log(f"finish 0x{ttid.hex()} as 0x{txn.tid.hex()} voted on {txn.storages}, table {self.table()}")
        replies = yield [Call(f"S{n}", "lock", (ttid, txn.tid), LOCK_S) for n in txn.storages]
        failed = {n for n, r in zip(txn.storages, replies) if r is None or not r.ok}
        refused = {n for n, r in zip(txn.storages, replies) if r is not None and isinstance(r.error, RequestRefused)}
        self.log(f"lock of 0x{ttid.hex()}: failed on {sorted(failed)}, refused by {sorted(refused)}")
        for nid in sorted(failed - refused):
            cluster.storage_lost(self, nid)
        self.carry_out(self.flow.lock_answers(txn, refused, failed))
        deadline = self.world.now + FINISH_WAIT_S
        while not txn.done.is_set() and self.world.now < deadline:
            yield Sleep(0.05)
        if not txn.done.is_set():
            raise OutcomeUnknown(f"finish of 0x{ttid.hex()}: not complete yet; ask for its outcome")
        if txn.error is not None:
            raise txn.error
        return txn.tid

    # -- the master's own process ----------------------------------------------------------
    def main(self):
        while True:
            yield Sleep(0.25)
            if self.cluster_state == ClusterState.RECOVERING:
                yield from cluster.try_start(self)
            cluster.monitor(self)
            batches, self.to_unlock = self.to_unlock, {}
            for nid, ttids in sorted(batches.items()):
                for i in range(0, len(ttids), UNLOCKS_PER_BATCH_MAX):
                    self.world.send(self.name, f"S{nid}", "unlock", (ttids[i:i + UNLOCKS_PER_BATCH_MAX],), 0)
