"""A typed client of the master's Admin service (used by ``neoctl`` and ``LocalCluster``).

``master`` may list several masters (``host:port,host:port``): a call that gets
UNAVAILABLE (a standby, naming the primary, or a master that is gone) is tried on the
next address, once around the list; when every address failed, the error says what is
wrong with each connection (``diagnose``: nothing listening, TLS on one side only, a
certificate from another CA).

What it hands its callers are plain values: the states of ``neoarray.states`` and
the tables and nodes of ``neoarray.views``; the messages stay in
``neoarray/admin_calls.py``.
"""
from __future__ import annotations

from . import admin_calls as calls
from . import diagnose, security, wire
from .errors import ClusterUnavailable
from .ids import Z64, p64, u64
from .masters import next_address, parse_masters
from .states import ClusterState, NodeState, NodeType
from .views import NodeView, ReplicationRates, TableChange, TableView, Truncated

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
        self.stub = calls.admin_stub(self.channel)
        self.timeout = rpc_timeout_s
        self.cluster = cluster
        self._storage_channels: list = []

    def _call(self, call, *args, timeout_s: float | None = None):
        """``call(stub, *args, timeout_s, where)`` (a function of ``admin_calls``) on
        the master in use, else on the next ones of the list."""
        for left in range(len(self.masters) - 1, -1, -1):
            try:
                return call(self.stub, *args, timeout_s or self.timeout, self.master)
            except ClusterUnavailable as exc:
                if not left:     # what is wrong with the connection, if that is it
                    raise ClusterUnavailable(diagnose.explain(exc, self.masters, self.tls)) from None
                self._next_master()

    def _next_master(self) -> None:
        self.master = next_address(self.masters, self.master)
        self.channel.close()
        self.channel = wire.open_channel(self.master, self.cluster, tls=self.tls, admin_token=self.admin_token)
        self.stub = calls.admin_stub(self.channel)

    def ids(self) -> dict:
        """``{"last_oid", "last_tid", "last_ptid"}`` of the cluster."""
        last_oid, last_tid, ptid = self._call(calls.ids)
        return {"last_oid": last_oid or Z64, "last_tid": last_tid or Z64, "last_ptid": ptid}

    def partition_table(self) -> TableView:
        """The partition table."""
        return self._call(calls.partition_table)

    def nodes(self) -> list[NodeView]:
        """Every node the master knows (clients and admin connections included)."""
        return self._call(calls.nodes)

    def cluster_state(self) -> ClusterState:
        """The cluster state (a ``str``: ``"RUNNING"``, ...)."""
        return self._call(calls.cluster_state)

    def set_cluster_state(self, state: str) -> ClusterState:
        """Ask for ``state``, ``"RUNNING"`` or ``"STOPPING"``: the state after the change."""
        return self._call(calls.set_cluster_state, ClusterState(state))

    # -- partition-table administration ------------------------------------------------
    def add_nodes(self, node_ids: list[int], everyone: bool = False) -> list[int]:
        """Let PENDING storage nodes ``node_ids`` (``everyone``: all) join: the ids added."""
        return self._call(calls.add_nodes, node_ids, everyone)

    def tweak(self, exclude: list[int] = (), dry_run: bool = False) -> TableChange:
        """Spread the cells evenly, emptying the nodes ``exclude`` (``dry_run``: plan only)."""
        return self._call(calls.tweak, exclude, dry_run)

    def drop_node(self, node_id: int) -> TableChange:
        """Remove storage node ``node_id`` and its cells."""
        return self._call(calls.drop_node, node_id)

    def kill_node(self, node_id: int) -> None:
        """Ask storage node ``node_id`` to shut down."""
        self._call(calls.kill_node, node_id)

    def set_replicas(self, replicas: int) -> TableChange:
        """Set the extra copies wanted of each partition (``tweak`` applies it)."""
        return self._call(calls.set_replicas, replicas)

    # -- operations ---------------------------------------------------------------------
    def truncate(self, tid: bytes, timeout_s: float) -> Truncated:
        """Delete every transaction after ``tid`` on every storage node."""
        return self._call(calls.truncate, tid, timeout_s=timeout_s)

    def set_replication_rate(self, bytes_per_s: int, node_ids: list[int] = ()) -> ReplicationRates:
        """Set the catch-up rate of ``node_ids`` (none: every node and those joining later)."""
        return self._call(calls.set_replication_rate, bytes_per_s, node_ids)

    def count_transactions(self, after: bytes, until: bytes, count_max: int) -> int | None:
        """How many transactions have ``after < tid <= until``, at most ``count_max``
        (more are not counted), read in pages from one readable copy of each partition
        on a running node; None when a partition has none."""
        running = {n.node_id: n.address for n in self.nodes()
                   if n.type is NodeType.STORAGE and n.state is NodeState.RUNNING}
        by_node: dict[int, list[int]] = {}
        for p, row in enumerate(self.partition_table().rows):
            readers = sorted(n for n in row.readable() if n in running)
            if not readers:
                return None
            by_node.setdefault(readers[0], []).append(p)
        count = 0
        for nid, partitions in sorted(by_node.items()):
            stub, cursor = self.storage_stub(running[nid]), p64(u64(after) + 1)
            while count < count_max:
                page = calls.transaction_tids(stub, partitions, cursor, until, TRANSACTIONS_PER_PAGE,
                                              self.timeout, f"Transactions on S{nid}")
                if not page:
                    break
                count += len(page)
                cursor = p64(u64(page[-1]) + 1)
        return min(count, count_max)

    def storage_stub(self, address: str):
        """A stub of the storage node at ``address`` (``neoctl check`` reads and repairs
        copies directly), on a channel closed with this client."""
        channel = wire.open_channel(address, self.cluster, tls=self.tls)
        self._storage_channels.append(channel)
        return calls.storage_stub(channel)

    def close(self) -> None:
        """Close the channels to the master and to storage nodes."""
        for channel in self._storage_channels:
            channel.close()
        self.channel.close()
