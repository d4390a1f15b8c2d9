"""The master's runtime: nodes, cluster state, the commit order and invalidations.

The shell of the master's cores, which decide without I/O: ``ClusterCore``
(``master/cluster.py``: nodes, liveness, the cluster state, verification),
``CommitCore`` (``master/commit.py``), ``IdAllocator`` and ``PartitionTable``
(``master/core.py``), ``CatchUp`` (``master/replication.py``).  ``Master`` holds the
threads, the channels to storage nodes, the event streams and the LMDB state, calls
the cores under its lock with the time, and carries out what they return.

Threads: gRPC workers call into ``Master`` under ``self.lock``; calls to storage nodes
are made outside the lock.  A monitor thread marks storages that stopped sending
heartbeats DOWN; an unlock thread sends batched ``Unlock`` orders.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass

from ZODB.POSException import ReadOnlyError

from neoarray import security, wire
from neoarray.errors import LimitExceeded, NeoError, RequestRefused, StaleCopy, StaleEpoch, Unwitnessed
from neoarray.ids import Z64, checked_id, p64
from neoarray.states import ClusterState, NodeState, NodeType
from neoarray.transport.client import FramedChannel
from neoarray.transport.client import Stub as framed_stub
from neoarray.views import (
    Cell,
    ClusterView,
    Invalidation,
    NodeView,
    ReplicaTask,
    Row,
    TableView,
)

from .calls import StorageCalls, grpc_stub
from .cluster import (
    BROADCAST,
    IDENTIFYING_TYPES,
    TRY_START,
    VIEW_NODE_TYPES,
    ClusterCore,
    ClusterViews,
    DropChannel,
    Identity,
    NodeInfo,
    Pending,
    Recovered,
    Settle,
    unwitnessed,
)
from .commit import CommitCore, Txn, owner_of
from .committing import Committing
from .core import IdAllocator, PartitionTable
from .fencing import EpochFence
from .flow import CommitFlow
from .rates import ReplicationRates
from .replication import CatchUp
from .state import MasterState
from .table_admin import TableAdmin
from .truncate import Truncation

log = logging.getLogger("neoarray.master")

PENDING_REPORTS_MAX = 10_000  # transactions one heartbeat may report (storage_node: 1,000)


@dataclass
class Limits:
    """Bounds of the master; ``neoarray-master --name-with-dashes`` sets the counts
    (``LIMIT_FLAGS`` of ``__main__``)."""
    node_timeout_s: float = 5.0
    rpc_timeout_s: float = 30.0
    lock_timeout_s: float = 600.0        # a Lock moves a whole transaction's records (GiBs for arrays)
    events_per_client_max: int = 100_000
    transactions_per_client_max: int = 64
    oids_per_request_max: int = 100_000
    finished_remembered_max: int = 100_000
    # a stored or voted transaction whose client stays connected but neither finishes
    # nor aborts it is aborted after this long (master/commit.py, rule 4)
    pending_timeout_s: float = 300.0
    dead_remembered_max: int = 100_000               # ttids decided not committed
    # cleanup orders to a storage (settle after it returns, drop a departed client's
    # transactions) are retried with doubling delays while the node stays RUNNING
    cleanup_attempts_max: int = 12
    cleanup_retry_delay_s: float = 0.1
    cleanup_retry_delay_max_s: float = 5.0
    objects_per_transaction_max: int = 1_000_000     # oids a Finish names (invalidations)
    message_bytes_max: int = wire.MESSAGE_BYTES_MAX  # one gRPC request or reply
    unlocks_per_batch_max: int = 1_000               # ttids in one Unlock order
    nodes_max: int = 10_000                          # nodes known at once (clients, storages, admins)
    # gRPC serving (``wire.make_server``): request workers, each reading the message it
    # serves (requests in memory <= rpc_workers_max * message_bytes_max); calls open at
    # once, more are refused
    rpc_workers_max: int = 32
    rpcs_pending_max: int = 256
    # clients holding an event stream (Subscribe), each on a thread of its own
    subscribers_max: int = 1_000


class Master(Committing, ClusterViews):
    def __init__(self, path: str, cluster: str, partitions: int, replicas: int,
                 storages_expected: int, limits: Limits | None = None,
                 tls: security.TLSConfig | None = None):
        self.cluster = cluster
        self.tls = tls                  # our certificate towards storage nodes (None: no TLS)
        self.limits = limits or Limits()
        self.state_db = MasterState(path)
        self.lock = threading.RLock()
        self.wall_offset_s = time.time() - time.monotonic()   # node states' ``since``: monotonic -> wall
        self._load_state(partitions, replicas, storages_expected)
        self.commits_finished = 0                 # acknowledged since start (metrics)
        self.flow = CommitFlow(self)              # the commit path's decisions (master/flow.py)
        self.subscribers: dict[int, queue.Queue] = {}
        self.channels: dict[int, tuple] = {}
        self.to_unlock: dict[int, list] = {}
        self._settling: set[int] = set()          # storages being settled (_settle_storage)
        self.pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="master-out")
        self.stopped = threading.Event()
        self.on_stop = None
        self.on_step_down = None                  # called once a newer master took over
        self.data_address = ""                    # of its framed data plane, once it listens
        self.fence = EpochFence(self)             # the epoch its orders to storages carry

    # -- durable state ----------------------------------------------------------
    def _load_state(self, partitions: int, replicas: int, storages_expected: int) -> None:
        st = self.state_db
        name = st.get("cluster")
        if name is None:
            st.put(cluster=self.cluster, partitions=partitions, replicas=replicas, next_node_id=1, epoch=1)
        elif name != self.cluster:
            raise RequestRefused(f"this master's data belongs to cluster {name!r}, not {self.cluster!r}")
        self.partitions = st.get("partitions")
        self.epoch = st.get("epoch", 1)           # master generation (master/standby.py)
        first_node_id = st.get("next_node_id", 1)    # lower ids: sessions of earlier masters
        doc = st.get("pt")
        pt = PartitionTable.from_doc(doc) if doc else PartitionTable(self.partitions, st.get("replicas"))
        self.ids = IdAllocator(self._persist, st.get("oid_reserved", 0), st.get("oid_reserved", 0),
                               st.get("tid_reserved", Z64), st.get("tid_reserved", Z64))
        # transactions being committed and the decisions about them (master/commit.py)
        self.commits = CommitCore(first_node_id, self.limits.pending_timeout_s,
                                  self.limits.finished_remembered_max, self.limits.dead_remembered_max)
        self.catchup = CatchUp()                  # OUT_OF_DATE cells: what they must copy
        self.admin = TableAdmin(self)             # neoctl add, tweak, drop, kill, set replicas
        # nodes, liveness, cluster state, verification (master/cluster.py)
        self.cluster_core = ClusterCore(
            pt, st.get("nodes", {}), first_node_id, storages_expected=storages_expected,
            node_timeout_s=self.limits.node_timeout_s, nodes_max=self.limits.nodes_max,
            now_s=time.monotonic(), persist=self._persist, ids=self.ids, commits=self.commits,
            catchup=self.catchup, members=self.admin.members, copy_stamp=st.get("taken_over_from"))
        self.truncation = Truncation(self)        # neoctl truncate
        self.rates = ReplicationRates(self.state_db, self.lock, self._storage_ids)   # (Committing)

    def _persist(self, **values) -> None:
        self.state_db.put(**values)

    def _persist_pt(self) -> None:
        self.cluster_core.persist_table()

    def _persist_nodes(self) -> None:
        self.cluster_core.persist_nodes()

    def _cluster_actions(self, actions) -> bool:
        """Carry out the cluster core's actions (under ``self.lock``); whether to
        broadcast the cluster view once the lock is released."""
        for action in actions:
            if isinstance(action, DropChannel):
                self._drop_channel(action.node_id)
            elif isinstance(action, Settle):
                self._settle_unreported(action.node_id)
            elif action == TRY_START:
                self.pool.submit(self.try_start)
        return BROADCAST in actions

    # -- views ------------------------------------------------------------------
    def running_storages(self) -> set[int]:
        return self.cluster_core.running_storages()

    def cluster_view(self) -> ClusterView:
        """The view clients and storage nodes work from: the state, the partition table,
        and the storage and master nodes.  Clients and admin connections are left out
        (``GetNodes`` lists them): nobody routes to them, and with them every client
        joining or leaving would send every other client a view growing with their
        number, O(clients²) bytes per join."""
        with self.lock:
            return ClusterView(self.cluster_state, self.table_view(),
                               tuple(self.node_view(n) for n in self.nodes.values() if n.type in VIEW_NODE_TYPES),
                               self.last_committed, p64(self.ids.last_oid))

    def table_view(self) -> TableView:
        """The partition table now (under ``self.lock``)."""
        return TableView(self.pt.ptid, self.pt.replicas, tuple(
            Row(tuple(Cell(n, s) for n, s in sorted(row.items()))) for row in self.pt.rows))

    def node_view(self, n: NodeInfo) -> NodeView:
        """Node ``n`` as the cluster shows it (under ``self.lock``): ``since`` as unix time."""
        return NodeView(n.node_id, n.type, n.address, n.state, n.host, n.since + self.wall_offset_s,
                        n.data_path, n.data_address)

    # -- nodes ------------------------------------------------------------------
    def identify(self, who: Identity) -> int:
        """Register the node that identifies as ``who``: its node id."""
        if who.type not in IDENTIFYING_TYPES:
            raise RequestRefused(f"unknown node type {who.type}")
        with self.lock:
            try:
                nid, actions = self.cluster_core.identify(who, time.monotonic())
            except StaleCopy as exc:
                self.stale(exc)
                raise
            broadcast = self._cluster_actions(actions)
        if broadcast:
            self.broadcast_cluster()
        return nid

    def storage(self, nid: int) -> StorageCalls:
        """The orders to storage ``nid`` (``master/calls.py``): over its framed data
        plane (lock and unlock orders are on every commit's path), or gRPC for a node
        that has none."""
        with self.lock:
            entry = self.channels.get(nid)
            if entry is None:
                node = self.nodes[nid]
                if node.data_address:
                    channel = FramedChannel(node.data_address, self.cluster, self.limits.message_bytes_max,
                                            tls=self.tls)
                    stub = framed_stub(channel, "neoarray.v1.Storage")
                else:
                    channel = wire.open_channel(node.address, self.cluster, tls=self.tls)
                    stub = grpc_stub(channel)
                entry = self.channels[nid] = (channel, StorageCalls(stub, self.fence))
            return entry[1]

    def _drop_channel(self, nid: int) -> None:
        entry = self.channels.pop(nid, None)
        if entry is not None and isinstance(entry[0], FramedChannel):
            entry[0].close()        # its calls in flight end first (gRPC's: left to the GC)

    def heartbeat(self, nid: int) -> bool:
        with self.lock:
            return self.cluster_core.heartbeat(nid, time.monotonic())

    def monitor(self) -> None:
        """Mark storages silent for ``node_timeout_s`` DOWN; retry starting while RECOVERING."""
        while not self.stopped.wait(0.5):
            if self.cluster_state == ClusterState.RECOVERING:
                self.try_start()
            with self.lock:
                silent = self.cluster_core.silent(time.monotonic())
            for nid in silent:
                self.storage_lost(nid, "no heartbeat")

    def storage_lost(self, nid: int, why: str) -> None:
        with self.lock:
            broadcast = self._cluster_actions(self.cluster_core.storage_lost(nid, why, time.monotonic()))
        if broadcast:
            self.broadcast_cluster()

    # -- cluster state --------------------------------------------------------------
    def try_start(self, force: bool = False) -> None:
        """RECOVERING -> VERIFYING -> RUNNING when the partition table can serve."""
        with self.lock:
            running = self.cluster_core.try_start(time.monotonic(), force)
        if running is None:
            return
        try:
            self._verify(running)
        except StaleCopy as exc:
            self.stale(exc)
            return
        except Exception as exc:
            log.warning("verification failed (%s): staying in RECOVERING", exc)
            with self.lock:
                self.cluster_core.verification_failed()
            return
        with self.lock:
            self.cluster_core.verified()
        self.broadcast_cluster()

    def _verify(self, running: list[int]) -> None:
        """Learn last ids and settle what the storages voted or locked under earlier masters."""
        for nid in running:
            self.truncation.apply_pending(nid)
        infos = {nid: self._recovery_info(nid, f"S{nid}") for nid in running}
        with self.lock:
            self.cluster_core.recovered(infos)
        self._reconcile(infos)

    def _recovery_info(self, nid: int, what: str = "") -> Recovered:
        return self.storage(nid).recovery_info(self.limits.rpc_timeout_s, what)

    def _settle_storage(self, nid: int) -> None:
        """A storage came back while RUNNING: settle what it voted or locked meanwhile."""
        def settle():
            self.truncation.apply_pending(nid)
            self._reconcile({nid: self._recovery_info(nid)})
        try:
            self._until_done(nid, settle, f"settle S{nid}")
        finally:
            with self.lock:
                self._settling.discard(nid)

    def _settle_unreported(self, nid: int) -> None:
        """A running storage that has not told this master what it holds (it joined
        while the cluster was verifying, or its settlement failed): settle it now,
        once at a time (under ``self.lock``).  Until then its transactions get no
        verdict, and an earlier master's votes elsewhere none either."""
        if nid not in self._settling:
            self._settling.add(nid)
            self.pool.submit(self._settle_storage, nid)

    def _until_done(self, nid: int, order, what: str) -> bool:
        """Run ``order()`` (calls to storage ``nid``) until it succeeds, with doubling
        delays, at most ``cleanup_attempts_max`` times, and only while the node stays
        RUNNING: right after a node re-identifies its channel may still be backing off,
        and a cleanup order that is lost leaves transaction locks held.  A node that
        is lost meanwhile is settled again when it returns."""
        delay_s = self.limits.cleanup_retry_delay_s
        for attempt in range(1, self.limits.cleanup_attempts_max + 1):
            try:
                order()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure: retried, then logged
                with self.lock:
                    node = self.nodes.get(nid)
                    alive = node is not None and node.state == NodeState.RUNNING and not self.stopped.is_set()
                if not alive or attempt == self.limits.cleanup_attempts_max:
                    log.warning("%s failed after %d attempts%s: %s", what, attempt,
                                "" if alive else " (node no longer running)", exc)
                    return False
                log.info("%s failed (%s): retrying in %.1f s", what, exc, delay_s)
            if self.stopped.wait(delay_s):
                return False
            delay_s = min(delay_s * 2, self.limits.cleanup_retry_delay_max_s)
        return False

    def _reconcile(self, infos: dict[int, Recovered]) -> None:
        """Settle what storage nodes hold (their ``RecoveryInfo``, by node): the orders
        ``ClusterCore.reconcile`` decides, then the Unlock orders and the commit queue."""
        with self.lock:
            done = self.cluster_core.reconcile(infos, self.live_session)
        for nid, ttid, tid in done.locks:
            self.storage(nid).lock(ttid, tid, self.limits.rpc_timeout_s)
            with self.lock:
                self.cluster_core.lock_done(nid, ttid)
        for nid, ttid, _ in done.aborts:
            self.storage(nid).abort_transaction(ttid, self.limits.rpc_timeout_s)
        with self.lock:
            for nid, ttids in self.cluster_core.reconciled(infos, done).items():
                self.to_unlock.setdefault(nid, []).extend(ttids)
            self._settle_queue()

    def set_cluster_state(self, state: ClusterState) -> ClusterState:
        if state == ClusterState.RUNNING:
            self.try_start(force=True)
        elif state == ClusterState.STOPPING:
            self.stop_cluster()
        else:
            raise RequestRefused(f"cannot set the cluster state to {state}")
        return self.cluster_state

    def stop_cluster(self) -> None:
        with self.lock:
            storages = self.cluster_core.stop()
        self.broadcast_cluster()
        for nid in storages:
            try:
                self.storage(nid).shutdown(5.0)
            except Exception as exc:
                log.warning("S%d did not acknowledge shutdown: %s", nid, exc)
        if self.on_stop:
            threading.Timer(0.2, self.on_stop).start()

    # -- transactions ---------------------------------------------------------------
    def require_running(self) -> None:
        self.cluster_core.require_running(self.truncation.truncating)

    def new_oids(self, count: int) -> list[bytes]:
        if count > self.limits.oids_per_request_max:
            raise LimitExceeded(f"{count} oids asked, oids_per_request_max={self.limits.oids_per_request_max}")
        if count < 1:
            raise RequestRefused(f"oid count must be >= 1, not {count}")
        with self.lock:
            self.require_running()
            return self.ids.new_oids(count)

    def require_writer(self, node: int, what: str) -> None:
        """Refuse ``what`` from a client that identified as read-only (with TLS, the
        reader role is also refused by the access table, whatever the client said)."""
        info = self.nodes.get(node)
        if info is not None and info.read_only:
            raise ReadOnlyError(f"client C{node} identified as read-only: {what} refused")

    def live_session(self, node: int) -> bool:
        """``node`` is a client of this master whose event stream is open (its session
        lasts while the stream does: ``master/commit.py``)."""
        info = self.nodes.get(node)
        return info is not None and info.type == NodeType.CLIENT and node in self.subscribers

    def replication_report(self, nid: int, done: list[tuple[int, bytes]]) -> list[ReplicaTask]:
        """A heartbeat's catch-up report, ``(partition, tid)`` each cell was copied up
        to: those copied up to their tid become UP_TO_DATE; returns the node's tasks
        (one per OUT_OF_DATE cell)."""
        changed = False
        with self.lock:
            node = self.nodes.get(nid)
            if self.cluster_state != ClusterState.RUNNING or node is None or node.state != NodeState.RUNNING:
                return []
            for partition, tid in done:
                if self.truncation.blocks(nid):
                    break       # not UP_TO_DATE before the truncation reached it
                unpublished = functools.partial(self.commits.unpublished_on, nid, partition, self.partitions)
                if len(tid) == 8 and self.catchup.replicated(self.pt, nid, partition, tid, unpublished):
                    changed = True
                    log.info("S%d caught up partition %d to tid 0x%s: UP_TO_DATE (ptid %d)",
                             nid, partition, tid.hex(), self.pt.ptid)
            changed |= self.admin.drop_fed()
            if changed:
                self._persist_pt()
            running = self.running_storages()
            tasks = [ReplicaTask(p, until, tuple((n, self.nodes[n].address) for n in sources))
                     for p, until, sources in self.catchup.tasks(self.pt, nid, running, self.last_committed)]
        if changed:
            self.broadcast_cluster()
        return tasks

    @staticmethod
    def _invalidation(txn: Txn) -> Invalidation:
        return Invalidation(txn.tid, txn.ttid, txn.oids)

    def witness(self) -> None:
        """Rule A (``master/cluster.py``): every running storage durably records the
        stamp of the state just written, before this master acts on it (a standby did
        not acknowledge it).  The orders go out together, each bounded by the node
        timeout; a storage that does not answer is lost (its cells go OUT_OF_DATE: a
        table written again, witnessed by one storage fewer, so at most as many rounds
        as storages).  A storage that follows a newer master makes this one step down
        (``StaleEpoch`` raised: the change is not acted on); so does a round in which
        no storage recorded it (``Unwitnessed``: cut off from all of them, this master
        could not tell a successor what it did)."""
        stamp = self.state_db.stamp()
        with self.lock:
            running = sorted(self.running_storages())
        timeout_s = min(self.limits.rpc_timeout_s, self.limits.node_timeout_s)
        sent, failed = {}, {}
        for nid in running:
            try:
                sent[nid] = self.storage(nid).record_stamp_sent(stamp, timeout_s)
            except NeoError as exc:
                failed[nid] = exc
        for nid, order in sent.items():
            try:
                order.result()
            except StaleEpoch:
                raise
            except NeoError as exc:
                failed[nid] = exc
        if unwitnessed(running, failed):
            why = (f"no running storage recorded the master state stamp {stamp} "
                   f"(S{', S'.join(map(str, running))}: {next(iter(failed.values()))}): not acting on it")
            log.error("stepping down: %s", why)
            if self.on_step_down is not None:
                self.on_step_down(why)
            raise Unwitnessed(why)
        for nid, exc in sorted(failed.items()):
            self.storage_lost(nid, f"did not record the master state stamp {stamp}: {exc}")

    def stale(self, why: StaleCopy) -> None:
        """Rule B: this master took over from a copy that a storage shows stale; it
        must not serve: it steps down (the master that wrote the newer state serves).
        It restarts as a standby (``cluster.start_role``) that follows no primary with
        a copy older than the newer stamp (``cluster.known_stamp``)."""
        log.error("not serving, the state this master took over is stale: %s", why)
        self.state_db.put(stale=str(why), stale_stamp=list(why.stamp) if why.stamp else None)
        if self.on_step_down is not None:
            self.on_step_down(str(why))

    def fenced(self, why: str) -> None:
        """A storage refused this master's epoch: a standby took over; step down."""
        log.error("stepping down: %s", why)
        if self.on_step_down is not None:
            self.on_step_down(why)

    def final_status(self, ttid: bytes):
        """``(tid, None)`` committed; ``(None, True)`` not committed; ``(None, False)``
        not known yet (``CommitCore.final_status``)."""
        with self.lock:
            decided = self.commits.decided(ttid)
            if decided is not None:     # a Finish refused while not RUNNING is answered too
                return decided
            self.require_running()      # before verification, a locked ttid may be unknown yet
            owner = owner_of(ttid)
            return self.commits.final_status(ttid, self.live_session(owner))

    def pending_verdicts(self, nid: int, pending: list[Pending]) -> list[tuple[bytes, bytes | None]]:
        """A heartbeat's report of transactions ``nid`` holds (stored or voted): the
        verdicts of ``CommitCore.verdict`` for those that must end, ``(ttid, tid to
        lock it as, or None: abort it)``; none before the node reported what it holds
        (``_reconcile``)."""
        if len(pending) > PENDING_REPORTS_MAX:
            raise LimitExceeded(f"{len(pending)} pending transactions reported, at most {PENDING_REPORTS_MAX}")
        for p in pending:
            checked_id(p.ttid, "pending ttid")
        with self.lock:
            verdicts, settle = self.cluster_core.pending_verdicts(nid, pending, self.live_session)
            if settle:
                self._settle_unreported(nid)
            if verdicts:
                self._settle_queue()        # a restore found dead no longer holds back later commits
        for ttid, lock_tid in verdicts:
            log.info("S%d: %s of 0x%s held by a dead transaction", nid, "lock" if lock_tid else "abort", ttid.hex())
        return verdicts

    def push_table(self, node_ids) -> None:
        """Tell nodes given new cells before clients route stores to them
        (``master/table_admin.py``)."""
        with self.lock:
            table = self.table_view()
        for nid in sorted(node_ids):
            try:
                self.storage(nid).set_partition_table(table, self.limits.rpc_timeout_s)
            except NeoError as exc:      # it learns from its next heartbeat reply
                log.warning("could not send the partition table to S%d: %s", nid, exc)

    def shutdown_storage(self, nid: int) -> None:
        """Ask storage ``nid`` to shut down (``neoctl kill``)."""
        self.storage(nid).shutdown(self.limits.rpc_timeout_s, f"shutdown of S{nid}")

    def truncate_on(self, nid: int, tid: bytes, until: bytes, check_only: bool = False) -> tuple[int, int]:
        """Order storage ``nid`` to delete the transactions in ``(tid, until]``
        (``master/truncate.py``); ``(transactions, revisions)`` it removed."""
        return self.storage(nid).truncate(tid, until, check_only, self.limits.lock_timeout_s, f"truncate on S{nid}")

    def disconnect_clients(self) -> None:
        """End the event stream of every client: each reconnects and drops its caches."""
        with self.lock:
            for nid, q in list(self.subscribers.items()):
                node = self.nodes.get(nid)
                if node is not None and node.type == NodeType.CLIENT:
                    self._push(q, None)

    def unlocker(self) -> None:
        """Send batched Unlock orders (storages forget locked-transaction records)."""
        while not self.stopped.wait(0.05):
            with self.lock:
                batches, self.to_unlock = self.to_unlock, {}
            size = self.limits.unlocks_per_batch_max
            for nid, ttids in batches.items():
                try:
                    for i in range(0, len(ttids), size):
                        self.storage(nid).unlock(ttids[i:i + size], self.limits.rpc_timeout_s)
                except Exception as exc:
                    log.debug("unlock on S%d deferred: %s", nid, exc)

    # -- subscribers ------------------------------------------------------------------
    def subscribe(self, nid: int) -> queue.Queue:
        q: queue.Queue = queue.Queue(self.limits.events_per_client_max)
        with self.lock:
            if nid not in self.nodes:
                raise RequestRefused(f"node {nid} must identify before subscribing")
            if nid not in self.subscribers and len(self.subscribers) >= self.limits.subscribers_max:
                self.cluster_core.session_ended(nid)     # a client or admin connection is forgotten
                raise LimitExceeded(f"{len(self.subscribers)} clients hold an event stream, "
                                    f"subscribers_max={self.limits.subscribers_max}: node {nid} is refused")
            old = self.subscribers.pop(nid, None)
            if old is not None:
                self._push(old, None)
            self.subscribers[nid] = q
        return q

    def unsubscribe(self, nid: int, q: queue.Queue) -> None:
        with self.lock:
            if self.subscribers.get(nid) is not q:
                return
            del self.subscribers[nid]
            in_view = self.cluster_core.session_ended(nid)
            keep = self.commits.session_ended(nid)
            storages = self.running_storages()
            self._settle_queue()            # commits may have waited for a restore of the session
        for sid in storages:
            self.pool.submit(self._until_done, sid, lambda sid=sid: self.storage(sid).abort_node(
                nid, keep, self.limits.rpc_timeout_s), f"dropping the transactions of C{nid} on S{sid}")
        if in_view:
            self.broadcast_cluster()

    def _push(self, q: queue.Queue, event) -> None:
        try:
            q.put_nowait(event)
        except queue.Full:
            log.warning("a client is too slow to read its events: disconnecting it")
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put_nowait(None)

    def broadcast_cluster(self) -> None:
        event = self.cluster_view()
        with self.lock:
            for q in self.subscribers.values():
                self._push(q, event)
