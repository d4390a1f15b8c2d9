"""The master's Prometheus figures, read from the live ``Master`` at scrape time.

=====================================================  =====================================
``neoarray_master_cluster_state{state}``               1 for the current cluster state, 0
                                                       for the others
``neoarray_master_nodes{type, state}``                 nodes known, by type and state
``neoarray_master_cells{node, state}``                 cells of the partition table per
                                                       storage node (``S<id>``) and state
                                                       (UP_TO_DATE, OUT_OF_DATE, FEEDING,
                                                       CORRUPTED)
``neoarray_master_partitions``                         partitions (fixed at creation)
``neoarray_master_replicas``                           extra copies wanted per partition
``neoarray_master_ptid``                               partition table version
``neoarray_master_commits_total``                      transactions finished (acknowledged)
                                                       since this master started
``neoarray_master_last_tid_timestamp_seconds``         the time of the last committed TID
                                                       (0: none yet)
``neoarray_master_last_oid``                           the last OID handed out
``neoarray_master_transactions{state}``                ``open`` (begun, not finishing) and
                                                       ``finishing`` (waiting for locks or
                                                       for their turn)
``neoarray_master_event_subscribers``                  clients and admins following the
                                                       invalidation stream
``neoarray_master_state_fsyncs_total``                 fsynced writes of the master's state
                                                       (ids reserved, partition table, nodes)
=====================================================  =====================================
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from ZODB.TimeStamp import TimeStamp

from neoarray.ids import Z64
from neoarray.metrics import MetricsExporter
from neoarray.states import CellState, ClusterState, NodeState, NodeType


def tid_seconds(tid: bytes) -> float:
    """The unix time of a TID (0.0 for the zero TID)."""
    return 0.0 if tid == Z64 else TimeStamp(tid).timeTime()


class MasterCollector(Collector):
    """Reads one consistent snapshot of ``master`` (under its lock) per scrape."""

    def __init__(self, master):
        self.master = master

    def _snapshot(self) -> dict:
        m = self.master
        with m.lock:
            return {"state": m.cluster_state,
                    "nodes": [(n.type, n.state) for n in m.nodes.values()],
                    "rows": [dict(row) for row in m.pt.rows],
                    "partitions": m.partitions, "replicas": m.pt.replicas, "ptid": m.pt.ptid,
                    "commits": m.commits_finished, "last_tid": m.last_committed,
                    "last_oid": m.ids.last_oid, "open": len(m.commits.begun), "finishing": len(m.commits.queue),
                    "subscribers": len(m.subscribers), "state_writes": m.state_db.writes}

    def collect(self):
        s = self._snapshot()
        yield _state_set(s["state"])
        yield _nodes(s["nodes"])
        yield _cells(s["rows"])
        for name, key, doc in (("partitions", "partitions", "partitions of the cluster"),
                               ("replicas", "replicas", "extra copies wanted per partition"),
                               ("ptid", "ptid", "partition table version"),
                               ("last_oid", "last_oid", "the last OID handed out"),
                               ("event_subscribers", "subscribers", "nodes following the event stream")):
            yield GaugeMetricFamily(f"neoarray_master_{name}", doc, value=s[key])
        yield CounterMetricFamily("neoarray_master_commits", "transactions finished since this master "
                                  "started", value=s["commits"])
        yield CounterMetricFamily("neoarray_master_state_fsyncs", "fsynced writes of the master's state",
                                  value=s["state_writes"])
        yield GaugeMetricFamily("neoarray_master_last_tid_timestamp_seconds", "unix time of the last "
                                "committed TID", value=tid_seconds(s["last_tid"]))
        txns = GaugeMetricFamily("neoarray_master_transactions", "transactions in two-phase commit",
                                 labels=["state"])
        txns.add_metric(["open"], s["open"])
        txns.add_metric(["finishing"], s["finishing"])
        yield txns


def _state_set(current: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily("neoarray_master_cluster_state", "1 for the cluster's state", labels=["state"])
    for state in ClusterState:
        g.add_metric([state.value], 1 if state == current else 0)
    return g


def _nodes(nodes: list[tuple[str, str]]) -> GaugeMetricFamily:
    counts = {(NodeType.STORAGE.value, state.value): 0 for state in NodeState}
    for typ, state in nodes:
        key = (str(typ), str(state))
        counts[key] = counts.get(key, 0) + 1
    g = GaugeMetricFamily("neoarray_master_nodes", "nodes known to the master", labels=["type", "state"])
    for (typ, state), count in sorted(counts.items()):
        g.add_metric([typ, state], count)
    return g


def _cells(rows: list[dict[int, CellState]]) -> GaugeMetricFamily:
    counts: dict[int, dict[CellState, int]] = {}
    for row in rows:
        for nid, state in row.items():
            per_node = counts.setdefault(nid, dict.fromkeys(CellState, 0))
            per_node[state] += 1
    g = GaugeMetricFamily("neoarray_master_cells", "cells of the partition table", labels=["node", "state"])
    for nid, per_node in sorted(counts.items()):
        for state, count in per_node.items():
            g.add_metric([f"S{nid}", state.name], count)
    return g


def exporter(master) -> MetricsExporter:
    """The master process's metrics: RPCs served, outgoing traffic, ``MasterCollector``."""
    metrics = MetricsExporter("master", master.cluster, lambda: "M")
    metrics.register(MasterCollector(master))
    return metrics
