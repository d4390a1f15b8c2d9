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

import copy
import logging

from master import flow as fl
from master import table_core
from master.cluster import (
    ACKED_KEYS,
    BROADCAST,
    EPOCH_ROUND,
    PRIMARY_NOW,
    STANDBY_FIRST,
    TAKE_OVER_RECHECK_S,
    TRY_START,
    ClusterCore,
    ClusterViews,
    DropChannel,
    Identity,
    Settle,
    follows_state,
    known_stamp,
    may_take_over,
    must_take_over,
    must_witness,
    newer_primary,
    start_role,
    state_stamp,
    take_over,
    unwitnessed,
)
from master.commit import CommitCore, owner_of
from master.core import IdAllocator, PartitionTable
from master.flow import CommitFlow
from master.replication import CatchUp
from neoarray.errors import (
    ClusterUnavailable,
    OutcomeUnknown,
    RequestRefused,
    StaleCopy,
    Unwitnessed,
)
from neoarray.ids import Z64
from neoarray.states import ClusterState, NodeType

from . import cluster
from .world import Call, Sleep, StaleEpoch

EPOCH_S = 1_700_000_000.0     # the simulated clock's 0, as a time of day (tids)
LOCK_S = 1.0
FINISH_WAIT_S = 3.0
PENDING_TIMEOUT_S = 30.0
UNLOCKS_PER_BATCH_MAX = 64
NODES_MAX = 10_000
FOLLOW_WAIT_S = 1.0           # a FollowState long poll (``standby.FOLLOW_WAIT_MS``)
FOLLOW_POLL_S = 0.1           # how often a held FollowState looks for a newer state
PRIMARY, STANDBY = "primary", "standby"

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
    ids_class = SimIds          # a test may give a faulty one

    def __init__(self, world, checker, partitions: int, replicas: int, storages: list[int],
                 name: str = "M", peers=()):
        self.world, self.checker = world, checker
        self.name, self.peers = name, list(peers)      # peers: the other masters
        self.partitions = partitions
        self.storage_ids = sorted(storages)
        self.standby_of = name != "M"        # started with ``--standby-of`` (else ``--masters``)
        self.asks_peers = False              # the first start of the first master is alone
        self.disk = {}
        if not self.standby_of:
            pt = PartitionTable.create(partitions, replicas, self.storage_ids)
            nodes = {str(n): [NodeType.STORAGE, storage_address(n), f"s{n}"] for n in self.storage_ids}
            self.disk = {"cluster": "sim", "epoch": 1, "next_node_id": max(storages) + 1, "oid_reserved": 0,
                         "tid_reserved": Z64, "pt": pt.to_doc(), "nodes": nodes}
        self.up, self.epoch = False, 0
        self.role = self.stub_epoch = None
        self.on_step_down = None
        self.run, self.version, self.followers = "", 0, {}
        self.following, self.held = None, ("", 0)

    def persist(self, **values) -> None:
        """``MasterState.put`` (the durable ``version`` raised with every write) and
        ``StatePublisher._changed``: the followers' acknowledgement, then rule A."""
        self.disk.update(values)
        self.disk["version"] = self.disk.get("version", 0) + 1
        self.version += 1
        if ACKED_KEYS & set(values):
            acked = self._wait_acked()
            if must_witness(self.cluster_core.confirmed(), self.peers, acked):
                self.witness()

    def witness(self) -> None:
        """``Master.witness``, its round trips taken as instantaneous (as the followers'
        acknowledgement): every running storage up and not cut off from this master
        records the state's stamp with its real ``EpochFence.record``; any other is
        lost; a refusal (a newer epoch) makes this master step down before it acts."""
        stamp = (self.stub_epoch, self.disk["version"])
        running = sorted(self.running_storages())
        lost = []
        for nid in running:
            peer = self.world.actors[f"S{nid}"]
            if not peer.up or {peer.name, self.name} & self.world.faults.isolated:
                lost.append(nid)
                continue
            refusal = peer.record_stamp(self.name, stamp)
            if refusal is not None:
                self.fenced(refusal)
                raise StaleEpoch(refusal)
        if unwitnessed(running, lost):
            why = f"stamp {stamp}: no running storage (S{running}) recorded it: not acting on it"
            self.step_down(why)
            raise Unwitnessed(why)
        if lost:
            self.log(f"stamp {stamp}: S{lost} did not record it, lost")
        for nid in lost:
            self.storage_lost(nid)

    def stale(self, why: StaleCopy) -> None:
        """``Master.stale``: a take-over from a stale copy steps down (rule B), marked
        stale with the newer stamp: it restarts as a standby."""
        self.disk["stale"], self.disk["stale_stamp"] = str(why), why.stamp
        self.step_down(f"stale copy: {why}")

    def start(self) -> None:
        """Start as ``master/__main__.py``'s ``serve``: a standby first when started
        with ``--standby-of``, or when another master answers as primary; else (or once
        it takes over) the primary."""
        self.up = True
        self.epoch += 1
        self.role = self.stub_epoch = None
        self.run, self.version = f"{self.name}.{self.epoch}", 0       # (``standby.RUN``)
        self.followers: dict[str, list] = {}      # name -> [version acknowledged, last seen]
        self.following, self.held = None, ("", 0)
        if not self.peers:
            self.become_primary()
        else:
            self.world.spawn(self.name, self.boot())

    def boot(self):
        found = self.asks_peers and not self.standby_of and (yield from self.find_primary(-1)) is not None
        role = start_role(self.standby_of, self.asks_peers, found, stale=bool(self.disk.get("stale")))
        self.asks_peers = True          # (the first master's first start is alone)
        if role == STANDBY_FIRST:
            yield from self.follow()
        if role != PRIMARY_NOW and self.disk.get("cluster") is not None:
            values = take_over(self.disk.get("epoch", 0), self.disk.get("oid_reserved", 0),
                               self.disk.get("tid_reserved", Z64), self.disk.get("next_node_id", 1),
                               token=self.world.rng.randrange(1, EPOCH_ROUND), version=self.disk.get("version", 0),
                               taken_over_from=self.disk.get("taken_over_from"))
            self.disk.update(values)        # (``StandbyFollower.take_over``)
            self.disk["version"] = self.disk.get("version", 0) + 1
            self.log(f"takes over with epoch {values['epoch']}")
        self.become_primary()

    def become_primary(self) -> None:
        """Start from the durable state (``Master._load_state``)."""
        d = self.disk
        self.role, self.stub_epoch = PRIMARY, d.get("epoch", 1)
        first_node_id = d["next_node_id"]
        self.ids = self.ids_class(self.checker, self.persist, d["oid_reserved"], d["oid_reserved"],
                                  d["tid_reserved"], d["tid_reserved"])
        self.commits = CommitCore(first_node_id, PENDING_TIMEOUT_S, 10_000, 10_000)
        self.catchup = CatchUp()
        self.cluster_core = ClusterCore(
            PartitionTable.from_doc(d["pt"]), d["nodes"], first_node_id, storages_expected=len(self.storage_ids),
            node_timeout_s=cluster.NODE_TIMEOUT_S, nodes_max=NODES_MAX, now_s=self.world.now,
            persist=self.persist, ids=self.ids, commits=self.commits, catchup=self.catchup,
            copy_stamp=d.get("taken_over_from"))
        self.flow = CommitFlow(self)
        self.clients: set[int] = set()      # sessions: clients whose event stream is open
        self.to_unlock: dict[int, list] = {}
        self.settling: set[int] = set()
        self.world.spawn(self.name, self.main())
        if self.peers:
            self.world.spawn(self.name, self.watch_peers())

    def crash(self) -> None:
        self.up = False
        self.epoch += 1

    def fenced(self, why: str) -> None:
        """A storage refused this master's epoch (``Master.fenced``): it steps down."""
        self.step_down(why)

    def step_down(self, why: str) -> None:
        """The process exits (status 3); its supervisor starts it again."""
        self.log(f"steps down: {why}")
        self.crash()
        if self.on_step_down is not None:
            self.on_step_down(self)

    # -- standby masters (``master/standby.py``) ------------------------------------------
    def find_primary(self, higher_than: int):
        """The first peer answering as primary above ``higher_than`` (``find_primary``)."""
        for peer in self.peers:
            reply = yield Call(peer, "role", (), cluster.RPC_S)
            if reply is not None and reply.ok and newer_primary(*reply.value, higher_than):
                return peer
        return None

    def follow(self):
        """``StandbyFollower.follow``: returns when it must take over."""
        self.role = STANDBY
        last_contact = self.world.now
        while True:
            if self.following is None:
                self.following = yield from self.find_primary(self.disk.get("epoch", 0) - 1)
            if self.following is not None:
                reply = yield Call(self.following, "follow_state", (self.name, *self.held),
                                   cluster.RPC_S + FOLLOW_WAIT_S)
                if reply is not None and reply.ok and self.hold(*reply.value):
                    last_contact = self.world.now
                    continue
                self.following = None
            followed = may_take_over(self.disk.get("cluster") is not None, bool(self.disk.get("stale")))
            if must_take_over(followed, self.world.now - last_contact, cluster.NODE_TIMEOUT_S,
                              self.world.rng.uniform(0, 0.5)) and (yield from self._no_primary_twice()):
                return
            yield Sleep(0.2)

    def _no_primary_twice(self):
        """``StandbyFollower._must_take_over``'s two rounds of Role calls,
        ``TAKE_OVER_RECHECK_S`` apart: True when no primary answered either."""
        for again in (False, True):
            if again:
                yield Sleep(TAKE_OVER_RECHECK_S)
            if (yield from self.find_primary(self.disk.get("epoch", 0) - 1)) is not None:
                return False
        return True

    def hold(self, run: str, version: int, doc: dict, epoch: int) -> bool:
        """Keep a primary's state (``StandbyFollower._poll``); False from an older one."""
        d = self.disk
        held = known_stamp(state_stamp(d.get("epoch", 0), d.get("version", 0), d.get("taken_over_from")),
                           d.get("stale_stamp"))
        if not follows_state(epoch, d.get("epoch", 0), doc.get("taken_over_from"), held):
            return False
        if run != self.held[0] or version > self.held[1]:
            # never an older version of the same run: the primary's acknowledgement
            # (``_wait_acked``) hands a follower the new state at once, while the reply
            # to its last FollowState, with an older version, may still be on its way;
            # the real follower's polls are one after the other, so it never sees one
            # older than it holds (seed 1105452 with stores in votes and tweaks: a copy
            # went back to a table without a cell marked OUT_OF_DATE, then taken over)
            self.disk, self.held = copy.deepcopy(doc), (run, version)
        return True

    def follow_state(self, follower: str, run: str, version: int):
        """``StatePublisher.FollowState``: the state once newer than ``version`` (a long
        poll of at most ``FOLLOW_WAIT_S``)."""
        seen = self.followers.setdefault(follower, [0, self.world.now])
        seen[1] = self.world.now
        if run == self.run:
            seen[0] = max(seen[0], version)
            deadline = self.world.now + FOLLOW_WAIT_S
            while version >= self.version and self.world.now < deadline:
                yield Sleep(FOLLOW_POLL_S)
        return self.run, self.version, copy.deepcopy(self.disk), self.stub_epoch

    def _wait_acked(self) -> set[str]:
        """``StatePublisher._wait_acked``, its wait taken as instantaneous: a follower
        that is up, following this master (or looking for a primary: it finds this one
        within ``ack_timeout_s``) and not cut off from it holds the new state
        before the master goes on; any other is no longer waited for (as after
        ``ack_timeout_s``)."""
        for name, (acked, seen_s) in sorted(self.followers.items()):
            peer = self.world.actors[name]
            if self.world.now - seen_s > cluster.NODE_TIMEOUT_S or not (
                    peer.up and peer.role == STANDBY and peer.following in (self.name, None)
                    and not {name, self.name} & self.world.faults.isolated):
                del self.followers[name]
            elif acked < self.version and peer.hold(self.run, self.version, self.disk, self.stub_epoch):
                self.followers[name][0] = self.version
        return {name for name, (acked, _) in self.followers.items() if acked >= self.version}

    def watch_peers(self):
        """``standby.watch_peers``: a master answering as primary with a newer epoch took
        over; this one steps down."""
        while True:
            yield Sleep(cluster.NODE_TIMEOUT_S)
            newer = yield from self.find_primary(self.stub_epoch)
            if newer is not None:
                self.step_down(f"{newer} is primary with a newer epoch")
                return

    def tweak(self, exclude) -> None:
        """``TableAdmin.tweak`` (``neoctl tweak``, excluding ``exclude``), by an
        operator at a drawn time: every storage node is a member here (a master that
        is down answers nothing: neoctl gets an error)."""
        if not self.up or self.role != PRIMARY or self.cluster_state != ClusterState.RUNNING:
            return
        running = self.running_storages()
        hosts = {n: f"s{n}" for n in running - set(exclude)}
        try:
            rows, diff = table_core.plan(self.pt, hosts, running)
        except RequestRefused as exc:
            self.log(f"tweak excluding {sorted(exclude)} refused: {exc}")
            return
        if not diff:
            return
        table_core.apply(self.pt, self.catchup, rows, diff, running, self.last_committed, self.commits.queue,
                         self.partitions)
        self.persist_pt()
        self.log(f"tweak excluding {sorted(exclude)}: table {self.table()} (ptid {self.pt.ptid})")

    def log(self, text: str) -> None:
        self.world.log(f"{self.name}: {text}")

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
    def handle(self, kind: str, payload: tuple, src: str, epoch: int | None = None):
        if self.role is None:
            raise ClusterUnavailable(f"{self.name} is starting: nothing listens yet")
        if kind == "role":
            return self.role == PRIMARY, self.disk.get("epoch", 0)
        if self.role != PRIMARY:
            raise ClusterUnavailable(f"{self.name} is a standby: the primary is at {self.following}")
        if kind == "follow_state":
            return self.follow_state(*payload)
        if kind == "heartbeat":         # (``MasterServicer.Heartbeat``)
            nid, pending, done = payload
            if not self.cluster_core.heartbeat(nid, self.world.now):
                raise RequestRefused(f"S{nid} is not running for this master: identify again")
            tasks = cluster.replication_report(self, nid, done)
            # the epoch: the storage obeys the verdicts only when its fence admits it
            return cluster.pending_verdicts(self, nid, pending), tasks, self.stub_epoch
        if kind == "identify":
            return self.identify(*payload)
        if kind == "unsubscribe":       # a client cancelled its event stream
            self.session_ended(payload[0])
            return None
        client = payload[0]
        if client not in self.clients:
            raise RequestRefused(f"C{client} has no session with this master: identify again")
        if kind == "view":
            running = self.running_storages()
            return self.cluster_state, [dict(r) for r in self.pt.rows], self.pt.ptid, running
        if kind == "final_status" and (decided := self.commits.decided(payload[1])) is not None:
            return decided                                  # (``Master.final_status``)
        if kind == "finish":
            try:
                self.cluster_core.require_running()
            except ClusterUnavailable as exc:      # (``Committing._queue_finish``)
                storages = set(payload[3]) & self.cluster_core.storage_ids()
                self.carry_out(self.flow.refuse_finish(client, payload[1], storages, exc).actions)
                raise
            return self.finish(*payload)
        self.cluster_core.require_running()
        if kind == "new_oids":
            return self.ids.new_oids(payload[1])
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

    def identify(self, typ: str, nid: int, last_tid: bytes = Z64, last_oid: bytes = Z64, stamp=(0, 0)) -> int:
        """``Master.identify`` (a client's event stream opens with it: ``Master.subscribe``)."""
        if typ == "storage":
            node = self.nodes.get(nid)
            self.log(f"S{nid} joined (it was {node and node.state}), cluster {self.cluster_state}")
            who = Identity(NodeType.STORAGE, nid, storage_address(nid), f"s{nid}", last_oid=last_oid,
                           last_tid=last_tid, stamp=stamp)
        else:
            who = Identity(NodeType.CLIENT)
        try:
            nid, actions = self.cluster_core.identify(who, self.world.now)
        except StaleCopy as exc:
            self.stale(exc)
            raise
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
