"""The master of the simulation: the real ``ClusterCore`` (``master/cluster.py``),
``CommitCore``, ``CommitFlow``, ``IdAllocator`` (with the simulated time),
``PartitionTable`` and ``CatchUp``, called as ``master/node.py`` and
``master/committing.py`` call them, with the simulated clock; the processes of its
cluster events are in ``simulation/cluster.py``.

Its durable state (``disk``: the storage nodes, the id reservations, the partition
table, the next node id) is what ``master/state.py`` persists, written by the cores'
``persist(**values)``; a crash loses everything else, and the restarted master
reloads it, as ``Master._load_state`` does.  A client's session is its node id of
this master's run, live while its event stream is (``clients``, the master's
subscribers): a restarted master knows none (the client identifies again and gets a
new id).
"""
from __future__ import annotations

import logging

from master import flow as fl
from master.cluster import (
    BROADCAST,
    TRY_START,
    ClusterCore,
    ClusterViews,
    DropChannel,
    Identity,
    Settle,
)
from master.commit import CommitCore, owner_of
from master.core import IdAllocator, PartitionTable
from master.flow import CommitFlow
from master.replication import CatchUp
from neoarray.errors import OutcomeUnknown, RequestRefused
from neoarray.ids import Z64
from neoarray.states import ClusterState, NodeType

from . import cluster
from .world import Call, Sleep

EPOCH_S = 1_700_000_000.0     # the simulated clock's 0, as a time of day (tids)
LOCK_S = 1.0
FINISH_WAIT_S = 3.0
PENDING_TIMEOUT_S = 30.0
UNLOCKS_PER_BATCH_MAX = 64
NODES_MAX = 10_000

# the cores' log lines are left to the trace (their warnings would flood the output)
logging.getLogger("neoarray.master").addHandler(logging.NullHandler())


def storage_address(nid: int) -> str:
    """The address storage ``nid`` gives when it identifies (``host:port``)."""
    return f"s{nid}:{1000 + nid}"


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


class MasterActor(ClusterViews):
    name = "M"
    ids_class = SimIds          # a test may give a faulty one

    def __init__(self, world, checker, partitions: int, replicas: int, storages: list[int]):
        self.world, self.checker = world, checker
        self.partitions = partitions
        self.storage_ids = sorted(storages)
        pt = PartitionTable.create(partitions, replicas, self.storage_ids)
        nodes = {str(n): [NodeType.STORAGE, storage_address(n), f"s{n}"] for n in self.storage_ids}
        self.disk = {"next_node_id": max(storages) + 1, "oid_reserved": 0, "tid_reserved": Z64,
                     "pt": pt.to_doc(), "nodes": nodes}
        self.up, self.epoch = False, 0

    def persist(self, **values) -> None:
        self.disk.update(values)

    def start(self) -> None:
        """Start from the durable state (``Master._load_state``)."""
        d = self.disk
        first_node_id = d["next_node_id"]
        self.ids = self.ids_class(self.checker, self.persist, d["oid_reserved"], d["oid_reserved"],
                                  d["tid_reserved"], d["tid_reserved"])
        self.commits = CommitCore(first_node_id, PENDING_TIMEOUT_S, 10_000, 10_000)
        self.catchup = CatchUp()
        self.cluster_core = ClusterCore(
            PartitionTable.from_doc(d["pt"]), d["nodes"], first_node_id, storages_expected=len(self.storage_ids),
            node_timeout_s=cluster.NODE_TIMEOUT_S, nodes_max=NODES_MAX, now_s=self.world.now,
            persist=self.persist, ids=self.ids, commits=self.commits, catchup=self.catchup)
        self.flow = CommitFlow(self)
        self.clients: set[int] = set()      # sessions: clients whose event stream is open
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

    def persist_pt(self) -> None:
        self.cluster_core.persist_table()

    def running_storages(self) -> set[int]:
        return self.cluster_core.running_storages()

    def live_session(self, nid: int) -> bool:
        """``nid`` is a client whose event stream is open (``Master.live_session``)."""
        return nid in self.clients

    def cluster_actions(self, actions) -> None:
        """Carry out the cluster core's actions (``Master._cluster_actions``): no
        channels to drop nor views to push here."""
        for action in actions:
            if isinstance(action, Settle):
                cluster.settle_unreported(self, action.node_id)
            elif action == TRY_START:
                self.world.spawn(self.name, cluster.try_start(self))
            else:
                assert isinstance(action, DropChannel) or action == BROADCAST, action

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
        if kind == "heartbeat":         # (``MasterServicer.Heartbeat``)
            nid, pending, done = payload
            if not self.cluster_core.heartbeat(nid, self.world.now):
                raise RequestRefused(f"S{nid} is not running for this master: identify again")
            tasks = cluster.replication_report(self, nid, done)
            return cluster.pending_verdicts(self, nid, pending), tasks
        if kind == "identify":
            return self.identify(*payload)
        client = payload[0]
        if client not in self.clients:
            raise RequestRefused(f"C{client} has no session with this master: identify again")
        if kind == "view":
            running = self.running_storages()
            return self.cluster_state, [dict(r) for r in self.pt.rows], self.pt.ptid, running
        self.cluster_core.require_running()
        if kind == "new_oids":
            return self.ids.new_oids(payload[1])
        if kind == "finish":
            return self.finish(*payload)
        if kind == "final_status":
            ttid = payload[1]
            return self.commits.final_status(ttid, self.live_session(owner_of(ttid)))
        if kind == "abort":
            client, ttid, storages = payload
            self.commits.check_abort(client, ttid, self.live_session)
            self.carry_out(self.flow.settle())
            self.carry_out([fl.AbortOn(ttid, tuple(sorted(set(storages) & self.cluster_core.storage_ids())))])
            return None
        raise RequestRefused(f"unknown request {kind!r}")

    def identify(self, typ: str, nid: int, last_tid: bytes = Z64, last_oid: bytes = Z64) -> int:
        """``Master.identify`` (a client's event stream opens with it: ``Master.subscribe``)."""
        if typ == "storage":
            node = self.nodes.get(nid)
            self.log(f"S{nid} joined (it was {node and node.state}), cluster {self.cluster_state}")
            who = Identity(NodeType.STORAGE, nid, storage_address(nid), f"s{nid}", last_oid=last_oid,
                           last_tid=last_tid)
        else:
            who = Identity(NodeType.CLIENT)
        nid, actions = self.cluster_core.identify(who, self.world.now)
        if typ != "storage":
            self.clients.add(nid)
        self.cluster_actions(actions)
        return nid

    def finish(self, client: int, ttid: bytes, oids, storages, view_ptid: int):
        """The Finish of ``Committing.finish``, with simulated Lock orders."""
        bad = [s for s in storages if s not in self.cluster_core.storage_ids()]
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
            self.storage_lost(nid)
        self.carry_out(self.flow.lock_answers(txn, refused, failed))
        deadline = self.world.now + FINISH_WAIT_S
        while not txn.done.is_set() and self.world.now < deadline:
            yield Sleep(0.05)
        if not txn.done.is_set():
            raise OutcomeUnknown(f"finish of 0x{ttid.hex()}: not complete yet; ask for its outcome")
        if txn.error is not None:
            raise txn.error
        return txn.tid

    def storage_lost(self, nid: int) -> None:
        """``Master.storage_lost``."""
        actions = self.cluster_core.storage_lost(nid, "simulated", self.world.now)
        if actions:
            self.log(f"S{nid} lost")
        self.cluster_actions(actions)

    def session_ended(self, nid: int) -> None:
        """Client ``nid``'s event stream closed (``Master.unsubscribe``): what it does
        not finish is dead, its stores and votes are dropped."""
        if nid not in self.clients:
            return
        self.log(f"session of C{nid} ended")
        self.clients.discard(nid)
        self.cluster_core.session_ended(nid)
        keep = self.commits.session_ended(nid)
        self.carry_out(self.flow.settle())
        for sid in sorted(self.running_storages()):
            self.world.send(self.name, f"S{sid}", "abort_node", (nid, keep), 0)

    # -- the master's own process ----------------------------------------------------------
    def main(self):
        while True:
            yield Sleep(0.25)
            if self.cluster_state == ClusterState.RECOVERING:
                yield from cluster.try_start(self)
            for nid in self.cluster_core.silent(self.world.now):
                self.storage_lost(nid)
            batches, self.to_unlock = self.to_unlock, {}
            for nid, ttids in sorted(batches.items()):
                for i in range(0, len(ttids), UNLOCKS_PER_BATCH_MAX):
                    self.world.send(self.name, f"S{nid}", "unlock", (ttids[i:i + UNLOCKS_PER_BATCH_MAX],), 0)
