"""A typed client of the master's Admin service (used by ``neoctl`` and ``LocalCluster``).

``master`` may list several masters (``host:port,host:port``): a call that gets
UNAVAILABLE (a standby, naming the primary, or a master that is gone) is tried on the
next address, once around the list; when every address failed, the error says what is
wrong with each connection (``diagnose``: nothing listening, TLS on one side only, a
certificate from another CA).
"""
from __future__ import annotations

from . import diagnose, security, wire
from .errors import ClusterUnavailable
from .ids import Z64, p64, u64
from .masters import next_address, parse_masters
from .proto import common_pb2 as cpb
from .proto import master_pb2 as mpb
from .proto import master_pb2_grpc as mrpc
from .proto import storage_pb2 as spb
from .proto import storage_pb2_grpc as srpc
from .proto_states import CLUSTER_NAMES, NODE_PREFIX, READABLE_PB

TRANSACTIONS_PER_PAGE = 100            # metadata with oid lists: pages stay small


def partition_ranges(numbers) -> str:
    """``0-3,7``: sorted partition numbers, runs collapsed, for people."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "-"


class AdminClient:
    """The Admin service of ``master`` (one address, or a list with standby masters);
    its credential is an admin certificate (``tls``) or the cluster's admin token,
    sent with every call."""

    def __init__(self, master: str, cluster: str, rpc_timeout_s: float = 10.0,
                 tls: security.TLSConfig | None = None, admin_token: str | None = None):
        self.tls = tls
        self.admin_token = admin_token
        self.masters = parse_masters(master, "master")
        self.master = self.masters[0]          # the address in use
        self.channel = wire.open_channel(self.master, cluster, tls=tls, admin_token=admin_token)
        self.stub = mrpc.AdminStub(self.channel)
        self.timeout = rpc_timeout_s
        self.cluster = cluster
        self._storage_channels: list = []

    def _call(self, name, request=None, timeout_s: float | None = None):
        """Call ``name`` on the master in use, else on the next ones of the list."""
        for left in range(len(self.masters) - 1, -1, -1):
            try:
                return wire.call(getattr(self.stub, name), request or cpb.Empty(), timeout_s or self.timeout,
                                 f"{name} on {self.master}")
            except ClusterUnavailable as exc:
                if not left:     # what is wrong with the connection, if that is it
                    raise ClusterUnavailable(diagnose.explain(exc, self.masters, self.tls)) from None
                self._next_master()

    def _next_master(self) -> None:
        self.master = next_address(self.masters, self.master)
        self.channel.close()
        self.channel = wire.open_channel(self.master, self.cluster, tls=self.tls, admin_token=self.admin_token)
        self.stub = mrpc.AdminStub(self.channel)

    def ids(self) -> dict:
        r = self._call("GetIds")
        return {"last_oid": r.last_oid or Z64, "last_tid": r.last_tid or Z64, "last_ptid": r.ptid}

    def partition_table(self) -> cpb.PartitionTable:
        return self._call("GetPartitionTable")

    def nodes(self) -> list:
        return list(self._call("GetNodes").nodes)

    def cluster_state(self) -> str:
        return CLUSTER_NAMES[self._call("GetClusterState").state]

    def set_cluster_state(self, state: str) -> str:
        value = {v: k for k, v in CLUSTER_NAMES.items()}[state]
        return CLUSTER_NAMES[self._call("SetClusterState", mpb.SetClusterStateRequest(state=value)).state]

    # -- partition-table administration ------------------------------------------------
    def add_nodes(self, node_ids: list[int], everyone: bool = False) -> list[int]:
        reply = self._call("AddNodes", mpb.AddNodesRequest(node_ids=node_ids, all=everyone))
        return list(reply.node_ids)

    def tweak(self, exclude: list[int] = (), dry_run: bool = False) -> mpb.TableChangeReply:
        return self._call("Tweak", mpb.TweakRequest(exclude_node_ids=list(exclude), dry_run=dry_run))

    def drop_node(self, node_id: int) -> mpb.TableChangeReply:
        return self._call("DropNode", mpb.NodeRequest(node_id=node_id))

    def kill_node(self, node_id: int) -> None:
        self._call("KillNode", mpb.NodeRequest(node_id=node_id))

    def set_replicas(self, replicas: int) -> mpb.TableChangeReply:
        return self._call("SetReplicas", mpb.SetReplicasRequest(replicas=replicas))

    # -- operations ---------------------------------------------------------------------
    def truncate(self, tid: bytes, timeout_s: float) -> mpb.TruncateReply:
        return self._call("Truncate", mpb.TruncateRequest(tid=tid), timeout_s)

    def set_replication_rate(self, bytes_per_s: int, node_ids: list[int] = ()) -> mpb.SetReplicationRateReply:
        return self._call("SetReplicationRate", mpb.SetReplicationRateRequest(
            bytes_per_s=bytes_per_s, node_ids=list(node_ids)))

    def count_transactions(self, after: bytes, until: bytes, count_max: int) -> int | None:
        """How many transactions have ``after < tid <= until``, at most ``count_max``
        (more are not counted), read in pages from one readable copy of each partition
        on a running node; None when a partition has none."""
        running = {n.node_id: n.address for n in self.nodes()
                   if n.type == cpb.STORAGE and n.state == cpb.RUNNING}
        by_node: dict[int, list[int]] = {}
        for p, row in enumerate(self.partition_table().rows):
            readers = sorted(c.node_id for c in row.cells if c.state in READABLE_PB and c.node_id in running)
            if not readers:
                return None
            by_node.setdefault(readers[0], []).append(p)
        count = 0
        for nid, partitions in sorted(by_node.items()):
            stub, cursor = self.storage_stub(running[nid]), p64(u64(after) + 1)
            while count < count_max:
                page = wire.call(stub.Transactions, spb.TransactionsRequest(
                    partitions=partitions, min_tid=cursor, max_tid=until, limit=TRANSACTIONS_PER_PAGE),
                    self.timeout, f"Transactions on S{nid}").transactions
                if not page:
                    break
                count += len(page)
                cursor = p64(u64(page[-1].tid) + 1)
        return min(count, count_max)

    def storage_stub(self, address: str):
        """A stub of the storage node at ``address`` (``neoctl check`` reads and repairs
        copies directly), on a channel closed with this client."""
        channel = wire.open_channel(address, self.cluster, tls=self.tls)
        self._storage_channels.append(channel)
        return srpc.StorageStub(channel)

    def close(self) -> None:
        for channel in self._storage_channels:
            channel.close()
        self.channel.close()


def node_name(node) -> str:
    return f"{NODE_PREFIX.get(node.type, '?')}{node.node_id}"
