"""A storage node's Prometheus figures, read from the live node at scrape time.

=========================================================  ================================
``neoarray_storage_map_size_bytes``                        the LMDB map: the most the node
                                                           can hold (0 in memory)
``neoarray_storage_used_bytes``                            bytes of LMDB pages in use
``neoarray_storage_records{table}``                        entries of each database
                                                           (``obj``: object revisions,
                                                           ``trans``: transactions, ...)
``neoarray_storage_transactions{state}``                   ``open`` (stored or voted, not
                                                           locked), ``voted`` (holding its
                                                           write locks), ``locked`` (final,
                                                           waiting for the master's unlock)
``neoarray_storage_partitions``                            partitions of the cluster
``neoarray_storage_fsyncs_total``                          fsyncs of the store (vote, lock,
                                                           catch-up, pack...)
``neoarray_storage_write_transactions_total``              LMDB write transactions
``neoarray_storage_dropped_behind_bytes_total``            bulk data dropped from the OS page
                                                           cache once on disk (drop-behind,
                                                           ``neoarray/kv.py``)
``neoarray_storage_replication_records_total``             records copied by catch-up
``neoarray_storage_replication_bytes_total``               bytes received by catch-up
``neoarray_storage_replication_cells_pending``             OUT_OF_DATE cells of this node
                                                           still catching up
``neoarray_storage_replication_rate_limit_bytes_per_second``  its copy rate limit (0: none)
=========================================================  ================================
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from neoarray.metrics import MetricsExporter


class StorageCollector(Collector):
    """Reads the node's store, transaction manager and replicator per scrape."""

    def __init__(self, node):
        self.node = node

    def collect(self):
        usage = self.node.backend.kv.usage()
        yield from self._store(usage)
        yield self._transactions(usage["entries"].get("locked", 0))
        yield GaugeMetricFamily("neoarray_storage_partitions", "partitions of the cluster",
                                value=self.node.backend.partitions or 0)
        yield from self._replication()
        kv = self.node.backend.kv
        yield CounterMetricFamily("neoarray_storage_fsyncs", "fsyncs of the store", value=kv.syncs)
        yield CounterMetricFamily("neoarray_storage_write_transactions", "LMDB write transactions",
                                  value=kv.write_transactions)
        yield CounterMetricFamily("neoarray_storage_dropped_behind_bytes",
                                  "bulk data dropped from the page cache once on disk",
                                  value=kv.dropped_bytes)

    @staticmethod
    def _store(usage: dict):
        yield GaugeMetricFamily("neoarray_storage_map_size_bytes", "LMDB map size: the most this node holds",
                                value=usage["map_bytes"])
        yield GaugeMetricFamily("neoarray_storage_used_bytes", "bytes of LMDB pages in use",
                                value=usage["used_bytes"])
        records = GaugeMetricFamily("neoarray_storage_records", "entries of each database", labels=["table"])
        for table, count in sorted(usage["entries"].items()):
            records.add_metric([table], count)
        yield records

    def _transactions(self, locked: int) -> GaugeMetricFamily:
        manager = self.node.manager
        with manager.mutex:
            open_, voted = len(manager.owners), len(manager.held)
        g = GaugeMetricFamily("neoarray_storage_transactions", "transactions in two-phase commit here",
                              labels=["state"])
        g.add_metric(["open"], open_)
        g.add_metric(["voted"], voted)
        g.add_metric(["locked"], locked)
        return g

    def _replication(self):
        r = self.node.replicator
        with r.mutex:
            pending = len(r.tasks)
        yield CounterMetricFamily("neoarray_storage_replication_records", "records copied by catch-up",
                                  value=r.records_copied)
        yield CounterMetricFamily("neoarray_storage_replication_bytes", "bytes received by catch-up",
                                  value=r.bytes_copied)
        yield GaugeMetricFamily("neoarray_storage_replication_cells_pending", "OUT_OF_DATE cells of this "
                                "node still catching up", value=pending)
        yield GaugeMetricFamily("neoarray_storage_replication_rate_limit_bytes_per_second", "catch-up copy "
                                "rate limit (0: unlimited)", value=r.pacer.bytes_per_s)


def exporter(cluster: str) -> MetricsExporter:
    """A storage process's metrics, before its node exists (the RPC interceptor goes
    into the node's server); ``attach`` adds the node's figures."""
    return MetricsExporter("storage", cluster)


def attach(metrics: MetricsExporter, node) -> None:
    """Add ``node``'s figures and name (``S<id>``, read at scrape time) to ``metrics``."""
    metrics.register(StorageCollector(node))
    metrics.node_name = lambda: f"S{node.node_id}" if node.node_id else "S?"
