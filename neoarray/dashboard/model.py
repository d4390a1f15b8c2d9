"""What the dashboard shows, decided from what was gathered: no I/O here.

Inputs are plain values: the master's answers (nodes, partition table, cluster state,
last ids), Prometheus text scraped from the nodes and from other endpoints (the
ingestion service), the contents of job state directories.  :class:`Rates` turns
counters sampled over time into per-second rates; :func:`cluster_view`,
:func:`node_metrics`, :func:`ingestion_view` and :func:`job_progress` give the
JSON-ready dicts the page draws.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..states import READABLE, CellState, ClusterState
from ..views import NodeView, TableView, running_storages

SERIES_MAX = 2000            # samples kept from one scrape (the rest are ignored)
INGEST_PATTERN = "ingest"    # scraped metric names shown as ingestion figures


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple            # sorted (key, value) pairs
    value: float
    kind: str                # counter, gauge, ... (the family's type)

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


def parse_metrics(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, at most :data:`SERIES_MAX`;
    ValueError for text that is not one."""
    out: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith(("_created", "_bucket")):
                    continue
                out.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value), family.type))
                if len(out) >= SERIES_MAX:
                    return out
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not Prometheus metrics text: {exc}") from None
    return out


class Rates:
    """Per-second rates of counters sampled at successive times (one previous value per
    series: the memory is bounded by the series seen, at most ``series_max``)."""

    def __init__(self, series_max: int = 10 * SERIES_MAX):
        self.series_max = series_max
        self._last: dict[tuple, tuple[float, float]] = {}

    def rate(self, key: tuple, value: float, now_s: float) -> float | None:
        """The rate of series ``key`` since its previous value; None the first time
        (or after a reset: the counter went down, the process restarted)."""
        previous = self._last.get(key)
        if previous is None and len(self._last) >= self.series_max:
            self._last.pop(next(iter(self._last)))
        self._last[key] = (now_s, value)
        if previous is None:
            return None
        t0, v0 = previous
        if now_s <= t0 or value < v0:
            return None
        return (value - v0) / (now_s - t0)


def _node_doc(n: NodeView) -> dict:
    return {"id": n.name, "type": n.type.value, "address": n.address, "state": n.state.value,
            "since_s": n.state_since}


def cluster_view(state: ClusterState, nodes: list[NodeView], pt: TableView, ids: dict, master: str) -> dict:
    """Nodes, cells per partition and node, replication progress, and health."""
    docs = sorted((_node_doc(n) for n in nodes), key=lambda d: (d["id"][0], int(d["id"][1:] or 0)))
    if not any(d["type"] == "MASTER" and d["address"] == master for d in docs):
        docs.insert(0, {"id": "M0", "type": "MASTER", "address": master, "state": "RUNNING",
                        "since_s": 0.0})
    storages = sorted({c.node_id for row in pt.rows for c in row.cells})
    running = running_storages(nodes)
    cells = [{"partition": p, **{f"S{nid}": next((c.state.letter for c in row.cells
                                                   if c.node_id == nid), ".") for nid in storages}}
             for p, row in enumerate(pt.rows)]
    total = sum(len(row.cells) for row in pt.rows)
    up_to_date = sum(1 for row in pt.rows for c in row.cells if c.state is CellState.UP_TO_DATE)
    unreadable = [p for p, row in enumerate(pt.rows)
                  if not any(c.state in READABLE and c.node_id in running for c in row.cells)]
    state_name = state.value
    return {"state": state_name, "nodes": docs, "storages": [f"S{n}" for n in storages],
            "cells": cells, "partitions": len(pt.rows), "replicas": pt.replicas, "ptid": pt.ptid,
            "cells_total": total, "cells_up_to_date": up_to_date,
            "replication_progress": (up_to_date / total) if total else 1.0,
            "partitions_unreadable": unreadable,
            "last_tid": ids["last_tid"].hex(), "last_oid": ids["last_oid"].hex(),
            "attention": bool(state_name != "RUNNING" or unreadable or up_to_date < total)}


def _first(samples, name, default=None):
    return next((s.value for s in samples if s.name == name), default)


def node_metrics(endpoint: str, samples: list[Sample], rates: Rates, now_s: float) -> dict:
    """What one node's metrics say: its name and role, commits/s (master), storage
    use and replication (storage nodes)."""
    info = next((s for s in samples if s.name == "neoarray_node_info"), None)
    node = info.label("node", "?") if info else "?"
    role = info.label("role", "?") if info else "?"
    doc = {"endpoint": endpoint, "node": node, "role": role}
    commits = _first(samples, "neoarray_master_commits_total")
    if commits is not None:
        doc["commits_total"] = commits
        doc["commits_per_s"] = rates.rate((endpoint, "commits"), commits, now_s)
    used = _first(samples, "neoarray_storage_used_bytes")
    if used is not None:
        size = _first(samples, "neoarray_storage_map_size_bytes", 0.0)
        doc.update(used_bytes=used, map_size_bytes=size,
                   used_fraction=(used / size) if size else None,
                   replication_cells_pending=_first(samples, "neoarray_storage_replication_cells_pending"))
        copied = _first(samples, "neoarray_storage_replication_bytes_total")
        if copied is not None:
            doc["replication_bytes_per_s"] = rates.rate((endpoint, "replication"), copied, now_s)
    return doc


def ingestion_view(endpoint: str, samples: list[Sample], rates: Rates, now_s: float,
                   pattern: str = INGEST_PATTERN) -> list[dict]:
    """The samples of ``endpoint`` whose name matches ``pattern``: counters with their
    rate per second, gauges (a lag, a queue) with their value."""
    match = re.compile(pattern)
    out = []
    for s in samples:
        if not match.search(s.name) or s.name.endswith(("_sum", "_count")):
            continue
        labels = ",".join(f"{k}={v}" for k, v in s.labels)
        doc = {"endpoint": endpoint, "metric": s.name, "labels": labels, "value": s.value}
        if s.kind == "counter" or s.name.endswith("_total"):
            doc["per_s"] = rates.rate((endpoint, s.name, s.labels), s.value, now_s)
        out.append(doc)
    return out


def job_progress(path: str, spec: dict | None, pieces_total: int, pieces_done: int,
                 error: str | None = None) -> dict:
    """One job state directory: what it computes and how far it is."""
    doc = {"path": path, "pieces_total": pieces_total, "pieces_done": pieces_done,
           "progress": (pieces_done / pieces_total) if pieces_total else 0.0}
    if error:
        doc.update(state="unreadable", error=error)
        return doc
    spec = spec or {}
    doc["job"] = f"{spec.get('kind', '?')} {spec.get('op', '?')}"
    doc["state"] = "finished" if pieces_total and pieces_done >= pieces_total else "running"
    return doc


def envelope_doc(name: str, length: int, starts, mins, maxs) -> dict:
    """The JSON of an envelope: bucket centres (x) and the minima and maxima (NaN: None)."""
    def clean(values):
        return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]
    xs = ((starts[:-1] + starts[1:] - 1) / 2.0).tolist()
    return {"array": name, "length": int(length), "x": xs,
            "min": clean(mins.astype(float)), "max": clean(maxs.astype(float)),
            "start": int(starts[0]) if len(starts) else 0, "stop": int(starts[-1]) if len(starts) else 0}
