"""The master's partition-table administration (``neoctl add|tweak|drop|kill|set replicas``).

An object of ``Master`` (``master/node.py``: ``master.admin``), given the master, whose
table, nodes and commit queue it changes: every change is made under the master's
lock, persisted (``_persist_pt``, ``_persist_members``) before anyone is told, pushed
to the storage nodes given new cells (``Master.push_table``: so they know at once
which partitions they catch up, see ``storage_node/node.py``) and then broadcast to
clients with the new ptid.  It owns the members added without cells.

What a tweak changes, and when the FEEDING cells it leaves go, is decided by
``master/table_core.py`` (without I/O, shared with the simulation); this object
holds the lock around it and does the I/O.
"""
from __future__ import annotations

import logging
import time

from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.states import READABLE, ClusterState, NodeState, NodeType

from . import table_core
from .flow import view_refusal

log = logging.getLogger("neoarray.master")

DROP_WAIT_S = 5.0             # drop waits this long for older-view transactions to finish
NODE_IDS_PER_REQUEST_MAX = 10_000


class TableAdmin:
    """``neoctl add|tweak|drop|kill|set replicas`` on the table of ``master``."""

    def __init__(self, master):
        self.m = master
        self.added_members: set[int] = set(master.state_db.get("members", []))   # maybe without cells

    # -- views ------------------------------------------------------------------------
    def members(self) -> set[int]:
        """Storage nodes that are part of the cluster (with or without cells)."""
        return self.m.pt.nodes() | self.added_members

    def _storage(self, nid: int, what: str):
        node = self.m.nodes.get(nid)
        if node is None or node.type != NodeType.STORAGE:
            raise RequestRefused(f"{what}: S{nid} is not a storage node of this cluster")
        return node

    def _require_running(self, what: str) -> None:
        if self.m.cluster_state != ClusterState.RUNNING:
            raise ClusterUnavailable(f"{what}: cluster is {self.m.cluster_state}, not RUNNING")

    def _persist_members(self) -> None:
        self.m.state_db.put(members=sorted(self.added_members))

    # -- add --------------------------------------------------------------------------
    def add_nodes(self, node_ids, everyone: bool) -> list[int]:
        """PENDING storage nodes become part of the cluster (no cells yet)."""
        if len(node_ids) > NODE_IDS_PER_REQUEST_MAX:
            raise RequestRefused(f"{len(node_ids)} node ids, at most {NODE_IDS_PER_REQUEST_MAX}")
        if everyone == bool(node_ids):
            raise RequestRefused("add: name nodes or ask for all pending nodes, not both or neither")
        with self.m.lock:
            if not self.m.pt.rows:
                raise ClusterUnavailable("add: the cluster has no partition table yet (start it first)")
            if everyone:
                node_ids = sorted(n.node_id for n in self.m.nodes.values()
                                  if n.type == NodeType.STORAGE and n.state == NodeState.PENDING)
            for nid in node_ids:
                node = self._storage(nid, "add")
                if node.state != NodeState.PENDING:
                    why = "is already part of the cluster" if nid in self.members() else f"is {node.state}"
                    raise RequestRefused(f"add: S{nid} {why}, not PENDING")
            self.added_members |= set(node_ids)
            self._persist_members()
            for nid in node_ids:
                self.m.nodes[nid].set_state(NodeState.RUNNING, time.monotonic())
                log.info("storage node S%d added to the cluster", nid)
        if node_ids:
            self.m.broadcast_cluster()
        return sorted(node_ids)

    # -- tweak ------------------------------------------------------------------------
    def tweak(self, exclude, dry_run: bool) -> list[tuple[int, int, str, str]]:
        """Spread cells evenly over the running members not in ``exclude``; returns the
        cell changes (applied unless ``dry_run``)."""
        with self.m.lock:
            self._require_running("tweak")
            for nid in exclude:
                if self._storage(nid, "tweak").node_id not in self.members():
                    raise RequestRefused(f"tweak: S{nid} is not part of the cluster")
            running = self.m.running_storages() & self.members()
            hosts = {n: self.m.nodes[n].host for n in running - set(exclude)}
            rows, diff = table_core.plan(self.m.pt, hosts, running)
            if dry_run or not diff:
                return diff
            new_cells, gone = table_core.apply(self.m.pt, self.m.catchup, rows, diff, self.m.running_storages(),
                                               self.m.last_committed, self.m.commits.queue, self.m.partitions)
            _log_fed(gone)
            self.m._persist_pt()
            log.info("tweak: %d cell changes (ptid %d)", len(diff), self.m.pt.ptid)
        self.m.push_table(new_cells)
        self.m.broadcast_cluster()
        return diff

    def drop_fed(self) -> bool:
        """Remove FEEDING cells whose replacements caught up (under the lock; the caller
        persists and broadcasts when True): ``table_core.drop_fed``."""
        gone = table_core.drop_fed(self.m.pt, self.m.catchup, self.m.running_storages(), self.m.commits.queue,
                                   self.m.partitions)
        _log_fed(gone)
        return bool(gone)

    def _older_views_touch(self, p: int) -> bool:
        return table_core.older_views_touch(self.m.pt, self.m.commits.queue, self.m.partitions, p)

    def view_covers(self, txn) -> str | None:
        """Why ``txn`` cannot be finished safely (None: it can): ``flow.view_refusal``."""
        return view_refusal(self.m.pt, self.m.partitions, txn)

    # -- drop, kill, replicas -------------------------------------------------------------
    def drop_node(self, nid: int) -> list[tuple[int, int, str, str]]:
        """Remove every cell of ``nid`` and its membership; refused when a partition
        would lose its last readable or UP_TO_DATE copy."""
        deadline = time.monotonic() + DROP_WAIT_S
        while True:
            with self.m.lock:
                self._require_running("drop")
                node = self._storage(nid, "drop")
                if nid not in self.members():
                    raise RequestRefused(f"drop: S{nid} is not part of the cluster")
                why = self.m.pt.drop_refusal(nid, self.m.running_storages())
                if why:
                    raise RequestRefused(f"drop: refused: {why} (tweak first to move its cells)")
                mine = [p for p, row in enumerate(self.m.pt.rows) if nid in row]
                if not any(self._older_views_touch(p) for p in mine):
                    return self._drop(node, mine)
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"drop: transactions with an older view of S{nid}'s partitions "
                                         f"still finishing after {DROP_WAIT_S} s; retry")
            time.sleep(0.05)

    def _drop(self, node, mine) -> list[tuple[int, int, str, str]]:
        nid = node.node_id
        diff = [(p, nid, self.m.pt.rows[p][nid], "") for p in mine]
        for p in mine:
            self.m.pt.remove(nid, p)
            self.m.catchup.forget(nid, p)
        self.m.pt.ptid += 1
        self.drop_fed()
        self.m._persist_pt()
        self.added_members.discard(nid)
        self._persist_members()
        if node.state == NodeState.RUNNING:
            node.set_state(NodeState.PENDING, time.monotonic())
        elif node.state == NodeState.DOWN:
            del self.m.nodes[nid]
            self.m._drop_channel(nid)
            self.m._persist_nodes()
        log.info("S%d dropped from the partition table (%d cells, ptid %d)", nid, len(mine), self.m.pt.ptid)
        self.m.broadcast_cluster()
        return diff

    def kill_node(self, nid: int) -> None:
        """Ask a running storage node to shut down, unless it holds the last readable
        copy of a partition on a running node."""
        with self.m.lock:
            node = self._storage(nid, "kill")
            if node.state not in (NodeState.RUNNING, NodeState.PENDING):
                raise RequestRefused(f"kill: S{nid} is {node.state}, not running")
            others = self.m.running_storages() - {nid}
            if self.m.cluster_state == ClusterState.RUNNING:
                for p, row in enumerate(self.m.pt.rows):
                    if row.get(nid) in READABLE and not self.m.pt.readable(p, others):
                        raise RequestRefused(f"kill: refused: S{nid} holds the last readable copy of "
                                             f"partition {p}")
        self.m.shutdown_storage(nid)
        log.info("S%d asked to shut down", nid)

    def set_replicas(self, replicas: int) -> int:
        """Change the wanted extra copies (``tweak`` applies it); returns the new ptid."""
        with self.m.lock:
            if not self.m.pt.rows:
                raise ClusterUnavailable("set replicas: the cluster has no partition table yet")
            count = len(self.members())
            if not 0 <= replicas < count:
                raise RequestRefused(f"set replicas: {replicas} out of range 0..{count - 1} "
                                     f"(the cluster has {count} storage nodes)")
            self.m.pt.replicas = replicas
            self.m.pt.ptid += 1
            self.m._persist_pt()
            self.m.state_db.put(replicas=replicas)
            ptid = self.m.pt.ptid
            log.info("replicas set to %d (ptid %d): tweak to apply", replicas, ptid)
        self.m.broadcast_cluster()
        return ptid


def _log_fed(gone) -> None:
    for n, p in gone:
        log.info("S%d no longer feeds partition %d: cell dropped", n, p)
