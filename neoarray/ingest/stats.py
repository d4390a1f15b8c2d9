"""The figures of an ingest service, and their Prometheus collector.

======================================================  ==================================
``neoarray_ingest_records_received_total{input}``       records taken in (queued)
``neoarray_ingest_records_committed_total{input}``      records durably committed (and
                                                        then acknowledged)
``neoarray_ingest_records_rejected_total{input}``       bad records, refused with a reason
``neoarray_ingest_units_duplicate_total{input}``        units resent after being committed
                                                        (acknowledged, stored once)
``neoarray_ingest_backpressure_total{input}``           units refused or made to wait for
                                                        room in the queue
``neoarray_ingest_batches_total``                       group commits
``neoarray_ingest_commit_failures_total``               group commits that failed (their
                                                        units were not acknowledged)
``neoarray_ingest_commit_seconds_total``                time spent in group commits
``neoarray_ingest_queue_records``                       records waiting for a commit
``neoarray_ingest_lag_seconds``                         age of the oldest waiting record
======================================================  ==================================
"""
from __future__ import annotations

import collections
import threading

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Stats:
    """Counters of an ingest service, by input (``unit.source``); thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.by_input = collections.defaultdict(lambda: collections.Counter())
        self.batches = 0
        self.failures = 0
        self.commit_s = 0.0

    def received(self, source, n):
        with self._lock:
            self.by_input[source]["received"] += n

    def rejected(self, source, n=1):
        """Records refused before they reached a unit (undecodable, unauthenticated)."""
        with self._lock:
            self.by_input[source]["rejected"] += n

    def backpressure(self, source):
        with self._lock:
            self.by_input[source]["backpressure"] += 1

    def failed(self):
        with self._lock:
            self.failures += 1

    def committed_batch(self, units, plan, elapsed_s):
        with self._lock:
            self.batches += 1
            self.commit_s += elapsed_s
            for unit, out in zip(units, plan.outcomes):
                c = self.by_input[unit.source]
                c["committed"] += out.committed
                c["rejected"] += len(out.rejected)
                c["duplicate"] += out.duplicate

    def snapshot(self) -> dict:
        with self._lock:
            return {"inputs": {k: dict(v) for k, v in self.by_input.items()}, "batches": self.batches,
                    "failures": self.failures, "commit_s": self.commit_s}


class IngestCollector(Collector):
    """Prometheus view of ``stats`` and of ``queued()`` (the committer's lag)."""

    COUNTERS = (("records_received", "received", "records taken in"),
                ("records_committed", "committed", "records durably committed"),
                ("records_rejected", "rejected", "bad records refused with a reason"),
                ("units_duplicate", "duplicate", "units resent after their commit (stored once)"),
                ("backpressure", "backpressure", "units refused or made to wait for room"))

    def __init__(self, stats: Stats, queued):
        self.stats, self.queued = stats, queued

    def collect(self):
        snap = self.stats.snapshot()
        for name, key, doc in self.COUNTERS:
            c = CounterMetricFamily(f"neoarray_ingest_{name}", f"ingest: {doc}", labels=["input"])
            for source, counts in snap["inputs"].items():
                c.add_metric([source], counts.get(key, 0))
            yield c
        yield CounterMetricFamily("neoarray_ingest_batches", "ingest: group commits", value=snap["batches"])
        yield CounterMetricFamily("neoarray_ingest_commit_failures", "ingest: failed group commits",
                                  value=snap["failures"])
        yield CounterMetricFamily("neoarray_ingest_commit_seconds", "ingest: time in group commits",
                                  value=snap["commit_s"])
        records, lag_s = self.queued()
        yield GaugeMetricFamily("neoarray_ingest_queue_records", "ingest: records waiting for a commit",
                                value=records)
        yield GaugeMetricFamily("neoarray_ingest_lag_seconds", "ingest: age of the oldest waiting record",
                                value=lag_s)
