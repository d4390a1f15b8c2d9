"""A storage node's runtime: its backend, its server, and its link to the master."""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from neoarray import security, wire
from neoarray.errors import AccessDenied, ClusterUnavailable, NeoError, RequestRefused
from neoarray.kv import LMDBStore, MemoryStore
from neoarray.masters import learn_masters, next_address, parse_masters
from neoarray.states import ClusterState
from neoarray.transport.server import FRAME_SLACK_BYTES, FramedServer
from neoarray.transport.server import Limits as FramedLimits

from . import calls
from .backend import Backend
from .dropper import PartitionDropper, partitions_of
from .fencing import EpochFence
from .manager import TransactionManager
from .replication import Replicator
from .service import StorageServicer

log = logging.getLogger("neoarray.storage")


@dataclass
class Limits:
    """Bounds of a storage node; ``neoarray-storage --NAME-WITH-DASHES`` sets each
    (``LIMIT_FLAGS`` of ``__main__``).  Exceeding one is refused with a message naming it."""
    message_bytes_max: int = wire.MESSAGE_BYTES_MAX   # one gRPC request or reply
    loads_per_batch_max: int = 10_000
    objects_per_store_max: int = 100_000
    objects_per_transaction_max: int = 1_000_000      # records one transaction stores here
    transactions_per_client_max: int = 64             # transactions of one client storing here
    unvoted_bytes_per_client_max: int = 16 << 30      # stored, not yet voted, per client
    transactions_per_batch_max: int = 10_000
    oids_per_batch_max: int = 100_000
    reduce_oids_per_batch_max: int = 256      # chunks in one Reduce request
    reduce_histogram_bins_max: int = 1 << 16  # bins of a histogram reduced on the node
    envelope_summary_bytes_max: int = 64 << 20  # chunk summaries kept for envelopes (storage_node/summaries.py)
    transaction_bytes_max: int = 8 << 30
    blob_chunk_bytes_max: int = 4 << 20       # one chunk of a blob (clients send 1 MiB by default)
    map_bytes_max: int = 1 << 40
    # space kept free for locks and aborts (storage_node/space.py): stores, votes and
    # replication are refused with StorageFull before they would use it
    space_reserve_bytes: int = 64 << 20
    heartbeat_interval_s: float = 1.0
    identify_retry_first_s: float = 0.05       # doubled up to heartbeat_interval_s while not identified
    # transactions held (stored or voted) this long are reported in heartbeats, at
    # most this many at once: the master answers which are dead (master/commit.py)
    pending_report_age_s: float = 5.0
    pending_reports_max: int = 1_000
    vote_sync: bool = True
    rpc_timeout_s: float = 30.0
    # replica check and repair (neoctl check): keys scanned / data bytes verified per
    # CheckRecords batch, records written per RepairRecords request
    check_records_per_batch_max: int = 10_000
    check_bytes_per_batch_max: int = 64 << 20
    repair_records_per_batch_max: int = 10_000
    # replication (catch-up of OUT_OF_DATE cells, see storage_node/replication.py)
    replication_bytes_per_s: int = 0             # copy rate of this node; 0: unlimited
    replication_batch_records_max: int = 1_000   # keys listed / records asked per request
    replication_batch_bytes_max: int = 4 << 20   # data bytes per ReplicaRecords reply
    replication_retry_delay_s: float = 0.5       # first back-off when no source answers
    replication_retry_delay_max_s: float = 10.0
    replication_log_interval_s: float = 10.0     # progress lines per partition, at most one per
    drop_rows_per_batch_max: int = 10_000        # rows of a partition no longer held, per deletion
    # gRPC serving (``wire.make_server``): request workers, each reading the message it
    # serves (requests in memory <= rpc_workers_max * message_bytes_max); calls open at
    # once, more are refused
    rpc_workers_max: int = 32
    rpcs_pending_max: int = 256
    # framed data plane (neoarray/transport/server.py): connections at once, a thread each
    data_connections_max: int = 1_000


class StorageNode:
    def __init__(self, path: str | None, cluster: str, master: str, bind: str = "127.0.0.1:0",
                 limits: Limits | None = None, host: str | None = None, interceptors=(),
                 tls: security.TLSConfig | None = None, admin_token: str | None = None,
                 data_bind: str = "", rpc_metrics=None):
        """``interceptors``: more gRPC server interceptors (``wire.make_server``), e.g.
        the RPC metrics of ``storage_node/metrics.py`` (``rpc_metrics``: the same figures
        for the framed data plane, listening on ``data_bind``, by default the host of
        ``bind`` and any free port)."""
        self.limits = limits or Limits()
        self.cluster = cluster
        self.tls = tls                      # our certificate, as server and towards peers
        self.admin_token = admin_token      # for GetPartitionTable on a cluster without TLS
        self.master_addresses = parse_masters(master, "master")   # the primary and its standbys
        self.master_address = self.master_addresses[0]            # the one in use
        self.host = host or socket.gethostname()
        kv = LMDBStore(path, self.limits.map_bytes_max) if path else MemoryStore()
        self.data_path = os.path.abspath(path) if path else ""
        self.backend = Backend(kv, partitions=None, vote_sync=self.limits.vote_sync,
                               space_reserve_bytes=self.limits.space_reserve_bytes)
        known = self.backend.get_config("cluster")
        if known is not None and known != cluster:
            raise RequestRefused(f"this storage's data belongs to cluster {known!r}, not {cluster!r}")
        self.node_id = self.backend.get_config("node_id", 0)
        self.ptid = self.backend.get_config("ptid", 0)
        self.fence = EpochFence(self.backend)
        lim = self.limits
        self.manager = TransactionManager(
            self.backend, lim.transaction_bytes_max, lim.objects_per_transaction_max,
            lim.transactions_per_client_max, lim.unvoted_bytes_per_client_max)
        self.server = wire.make_server(cluster, lim.rpc_workers_max, lim.message_bytes_max,
                                       interceptors=interceptors, access=security.AccessGuard(),
                                       rpcs_pending_max=lim.rpcs_pending_max)
        servicer = StorageServicer(self)
        calls.serve(servicer, self.server)
        self.address = wire.bind(self.server, bind, tls)
        self.framed = FramedServer(cluster, {"neoarray.v1.Storage": servicer}, FramedLimits(
            frame_bytes_max=lim.message_bytes_max + FRAME_SLACK_BYTES, connections_max=lim.data_connections_max),
            tls=tls, rpc_metrics=rpc_metrics)
        self.data_address = self.framed.bind(data_bind or f"{self.address.rpartition(':')[0]}:0")
        self.identified = threading.Event()
        self.stopped = threading.Event()
        self.cluster_state = ClusterState.RECOVERING
        self.replicator = Replicator(self)
        self.dropper = PartitionDropper(self, self.limits.drop_rows_per_batch_max)
        self.manager.on_written = self.dropper.written
        self._admin = None                  # master Admin stub, opened on first repair

    # -- checks used by the servicer ----------------------------------------------
    def check_readable(self) -> None:
        if not self.backend.partitions:
            raise ClusterUnavailable("storage node not yet part of a cluster")

    def check_writable(self) -> None:
        self.check_readable()

    def set_partition_table(self, pt) -> None:
        """A table pushed by the master (``neoctl tweak``): the node's new OUT_OF_DATE
        cells skip conflict checks at once, before clients store to them (the tasks of
        the next heartbeat reply then set ``catching_up`` exactly)."""
        self.ptid = pt.ptid
        self.backend.set_config(ptid=pt.ptid)
        self.manager.catching_up = self.manager.catching_up | partitions_of(pt, self.node_id, calls.OUT_OF_DATE_PB)
        self.dropper.table_changed(pt)

    def held_partitions(self) -> set[int]:
        """Partitions this node has a cell of (any state), asked of the master: the
        node keeps no copy of the partition table.  Used to refuse repairs of others."""
        return partitions_of(self._partition_table(), self.node_id)

    def _partition_table(self):
        """The master's partition table (Admin GetPartitionTable, the storage role's
        only Admin call), on a channel opened once."""
        if self._admin is None:
            self._admin = calls.admin_stub(wire.open_channel(self.master_address, self.cluster, tls=self.tls,
                                                             admin_token=self.admin_token))
        return calls.partition_table(self._admin, self.limits.rpc_timeout_s)

    def _fetch_partition_table(self) -> None:
        """A heartbeat showed a newer ptid: a change not pushed to this node (a drop,
        a FEEDING cell removed) may have taken cells from it."""
        try:
            pt = self._partition_table()
        except NeoError as exc:     # the next heartbeat asks again
            log.warning("could not read the partition table from the master: %s", exc)
            return
        if pt.ptid >= self.ptid:
            self.ptid = pt.ptid
            self.dropper.table_changed(pt)

    def request_shutdown(self) -> None:
        threading.Timer(0.1, self.stopped.set).start()

    # -- master link ------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()
        self.framed.start()
        threading.Thread(target=self._master_loop, daemon=True, name="master-link").start()
        self.replicator.start()
        self.dropper.start()

    def _identify(self, stub) -> None:
        last_tid, last_oid = self.backend.last_ids()
        reply = calls.identify(stub, self.node_id, self.address, self.host, last_tid, last_oid, self.ptid,
                               self.data_path, self.data_address, self.limits.rpc_timeout_s, self.fence.stamp)
        if self.backend.partitions and self.backend.partitions != reply.num_partitions:
            raise RequestRefused(f"the master has {reply.num_partitions} partitions, "
                                 f"this node's data {self.backend.partitions}")
        if reply.node_id != self.node_id or not self.backend.partitions:
            self.backend.set_config(cluster=self.cluster, node_id=reply.node_id,
                                    partitions=reply.num_partitions)
        self.node_id = reply.node_id
        self.cluster_state = calls.cluster_state(reply.info.state)
        self.master_addresses = learn_masters(self.master_addresses, reply.info.nodes, calls.MASTER_PB)
        # cells to catch up: their conflict checks are left to the readable copies
        self.manager.catching_up = partitions_of(reply.info.pt, self.node_id, calls.OUT_OF_DATE_PB)
        self.ptid = reply.info.pt.ptid
        self.dropper.table_changed(reply.info.pt)
        log.info("identified as S%d to the master at %s", self.node_id, self.master_address)
        self.identified.set()

    def _next_master(self, channel):
        """A channel and stub to the next address of the master list (on losing the
        primary: a standby answers UNAVAILABLE, the next address may be the new one)."""
        if channel is not None and len(self.master_addresses) < 2:
            return channel, calls.master_stub(channel)
        if channel is not None:
            self.master_address = next_address(self.master_addresses, self.master_address)
            channel.close()
            self._admin = None
        channel = wire.open_channel(self.master_address, self.cluster, tls=self.tls)
        return channel, calls.master_stub(channel)

    def _master_loop(self) -> None:
        """Identify, then send heartbeats; identify again whenever the master forgets us
        (to the next master of the list when this one does not answer as primary)."""
        channel, stub = self._next_master(None)
        lim = self.limits
        identified = False
        unheard = None                  # the last reason the master could not be reached
        wait_s = lim.identify_retry_first_s     # until identified: a master starting beside us is up soon
        while not self.stopped.is_set():
            try:
                if not identified:
                    self._identify(stub)
                    identified = True
                    wait_s = lim.heartbeat_interval_s
                pending = self.manager.pending(lim.pending_report_age_s, lim.pending_reports_max)
                reply = calls.heartbeat(stub, self.node_id, self.replicator.reports(), pending, lim.rpc_timeout_s)
                if not self.fence.obeys(reply.epoch):
                    raise ClusterUnavailable(f"the master at {self.master_address} has epoch {reply.epoch}, older "
                                             f"than {self.fence.highest} seen: its verdicts are ignored")
                self._carry_out(reply.verdicts)
                self.cluster_state = calls.cluster_state(reply.state)
                if reply.ptid != self.ptid and self.cluster_state is ClusterState.RUNNING:
                    self._fetch_partition_table()
                if reply.HasField("replication_bytes_per_s"):
                    self.replicator.pacer.set_rate(reply.replication_bytes_per_s)
                if self.cluster_state is ClusterState.RUNNING:
                    self.replicator.set_tasks(reply.replicate)
            except (RequestRefused, AccessDenied) as exc:     # retrying cannot help
                log.error("refused by the master: %s", exc)
                self.fatal = exc
                self.stopped.set()
                return
            except NeoError as exc:
                if identified:
                    log.warning("lost the master at %s (%s): identifying again", self.master_address, exc)
                    wait_s = lim.identify_retry_first_s
                elif str(exc) != unheard:       # e.g. a TLS handshake refused: say it once
                    log.warning("cannot identify to the master at %s: %s", self.master_address, exc)
                unheard = str(exc)
                identified = False
                channel, stub = self._next_master(channel)
                if self.master_address != self.master_addresses[0]:
                    continue        # try the whole list before waiting a heartbeat interval
            except Exception as exc:  # POSKeyError from NOT_FOUND: the master forgot us
                log.warning("master link: %s", exc)
                identified, wait_s = False, lim.identify_retry_first_s
            self.stopped.wait(wait_s)
            if not identified:
                wait_s = min(wait_s * 2, lim.heartbeat_interval_s)

    def _carry_out(self, verdicts) -> None:
        """The master's verdicts on transactions this node reported: abort a dead one,
        or lock one committed whose Lock this node missed."""
        for v in verdicts:
            try:
                if v.lock_tid:
                    self.manager.lock(v.ttid, v.lock_tid)
                else:
                    self.manager.abort(v.ttid)
            except NeoError as exc:       # e.g. aborted meanwhile: nothing left to do
                log.warning("verdict on 0x%s (%s): %s", v.ttid.hex(),
                            f"lock as 0x{v.lock_tid.hex()}" if v.lock_tid else "abort", exc)
            else:
                log.info("%s 0x%s: the master's verdict", "locked" if v.lock_tid else "aborted", v.ttid.hex())

    def stop(self) -> None:
        self.stopped.set()
        self.framed.stop()
        self.server.stop(grace=0.5).wait()
        self.replicator.join(5.0)      # between two batches; a pending RPC is bounded by rpc_timeout_s
        self.backend.kv.close()
