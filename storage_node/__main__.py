"""``neoarray-storage``: run a storage node over an LMDB directory."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from neoarray import lifeline, security
from neoarray.errors import NeoError
from neoarray.limits import add_limit_flags, check_limits, flag
from neoarray.metrics import bind_arg

from . import metrics as storage_metrics
from .node import Limits, StorageNode

# limits settable from the command line (--name-with-dashes), with their minimums
LIMIT_FLAGS = ("message_bytes_max", "objects_per_store_max", "objects_per_transaction_max",
               "transaction_bytes_max", "blob_chunk_bytes_max", "transactions_per_client_max", "unvoted_bytes_per_client_max",
               "loads_per_batch_max", "transactions_per_batch_max", "oids_per_batch_max",
               "reduce_oids_per_batch_max", "check_records_per_batch_max", "check_bytes_per_batch_max",
               "repair_records_per_batch_max", "space_reserve_bytes", "rpc_workers_max",
               "rpcs_pending_max", "pending_report_age_s", "pending_reports_max", "data_connections_max",
               "envelope_summary_bytes_max")
LIMIT_MINIMUMS = {"space_reserve_bytes": 0, "envelope_summary_bytes_max": 0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoarray-storage", description=__doc__)
    p.add_argument("--cluster", required=True, help="cluster name")
    p.add_argument("--master", required=True,
                   help="host:port of the master, or host:port,host:port... of the primary and its standbys")
    p.add_argument("--data", help="LMDB directory (default: memory, for tests)")
    p.add_argument("--bind", default="127.0.0.1:0", help="host:port to listen on")
    p.add_argument("--data-bind", default="",
                   help="host:port of the framed data plane (loads, stores, votes, locks; default: the "
                        "host of --bind, any free port); the node reports it to the master")
    p.add_argument("--host", help="host name reported to the master (replicas go to different hosts)")
    p.add_argument("--map-bytes-max", type=int, default=1 << 40, help="LMDB map size: the most this node holds")
    p.add_argument("--no-vote-sync", dest="vote_sync", action="store_false",
                   help="do not fsync at vote (faster commits; a machine crash between vote and "
                        "lock can lose a vote: see storage_node/backend.py)")
    p.add_argument("--replication-bytes-per-s", type=int, default=0,
                   help="most bytes per second this node copies when catching up OUT_OF_DATE cells "
                        "(0: unlimited)")
    p.add_argument("--replication-batch-records-max", type=int, default=1_000,
                   help="keys listed and records asked per replication request")
    p.add_argument("--replication-batch-bytes-max", type=int, default=4 << 20,
                   help="data bytes per replication reply (at least one record)")
    add_limit_flags(p, Limits, LIMIT_FLAGS, {
        "message_bytes_max": "largest gRPC request or reply this node takes or sends",
        "objects_per_transaction_max": "records one transaction may store on this node",
        "transactions_per_client_max": "transactions of one client holding stores on this node",
        "unvoted_bytes_per_client_max": "data bytes one client may have stored here and not yet voted",
        "space_reserve_bytes": "space kept free for locks and aborts: stores, votes and "
                               "catch-up are refused (storage full) before they would use it",
        "rpc_workers_max": "threads serving requests (a request's message is read by its thread)",
        "rpcs_pending_max": "calls open at once; more are refused",
        "pending_report_age_s": "transactions held this long are reported to the master, which says "
                                "which are dead (their locks end)",
        "pending_reports_max": "transactions reported in one heartbeat, the oldest first",
        "data_connections_max": "connections to the framed data plane at once (a thread each); more are "
                                "refused"})
    p.add_argument("--address-file", help="write the bound address to this file once listening")
    p.add_argument("--metrics-bind", type=bind_arg,
                   help="host:port to serve Prometheus metrics on, at /metrics (port 0: any free port; "
                        "default: no metrics)")
    p.add_argument("--metrics-address-file", help="write the bound metrics address to this file")
    p.add_argument("--log-file")
    p.add_argument("--log-level", default="INFO")
    lifeline.add_argument(p)
    security.add_arguments(p, token_help="file holding the cluster's admin token (a node asks the "
                           "master's Admin service for the partition table before a repair)")
    return p.parse_args(argv)


def _limits(opts) -> Limits:
    for name in ("replication_bytes_per_s", "replication_batch_records_max", "replication_batch_bytes_max"):
        value = getattr(opts, name)
        if value < (0 if name == "replication_bytes_per_s" else 1):
            raise NeoError(f"--{name.replace('_', '-')} must be "
                           f"{'>= 0' if name == 'replication_bytes_per_s' else '>= 1'}, not {value}")
    limits = check_limits(opts, LIMIT_FLAGS, LIMIT_MINIMUMS)
    if opts.map_bytes_max < 1 << 20:
        raise NeoError(f"--map-bytes-max must be >= 1 MiB, not {opts.map_bytes_max}")
    if 2 * limits["space_reserve_bytes"] > opts.map_bytes_max:
        raise NeoError(f"{flag('space_reserve_bytes')} ({limits['space_reserve_bytes']}) must be at most half "
                       f"of --map-bytes-max ({opts.map_bytes_max})")
    return Limits(**limits, map_bytes_max=opts.map_bytes_max, vote_sync=opts.vote_sync,
                  replication_bytes_per_s=opts.replication_bytes_per_s,
                  replication_batch_records_max=opts.replication_batch_records_max,
                  replication_batch_bytes_max=opts.replication_batch_bytes_max)


def main(argv=None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(filename=opts.log_file, level=opts.log_level,
                        format="%(asctime)s %(levelname)s S %(name)s: %(message)s")
    lifeline.exit_with_parent(opts.exit_with_parent)
    metrics = storage_metrics.exporter(opts.cluster) if opts.metrics_bind else None
    try:
        node = StorageNode(opts.data, opts.cluster, opts.master, opts.bind, _limits(opts), host=opts.host,
                           interceptors=metrics.interceptors() if metrics else (),
                           tls=security.tls_of(opts), admin_token=security.token_of(opts),
                           data_bind=opts.data_bind, rpc_metrics=metrics.rpc if metrics else None)
        if metrics:     # before the node starts: a metrics port in use stops nothing running
            storage_metrics.attach(metrics, node)
            metrics.serve(opts.metrics_bind, opts.metrics_address_file)
    except (NeoError, OSError) as exc:
        print(f"neoarray-storage: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: node.stopped.set())
    node.start()
    logging.getLogger("neoarray.storage").info("storage node listening on %s", node.address)
    if opts.address_file:
        tmp = opts.address_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(node.address)
        os.replace(tmp, opts.address_file)
    while not node.stopped.wait(0.5):    # a timed wait: the main thread runs signal handlers
        pass
    if metrics:
        metrics.stop()
    fatal = getattr(node, "fatal", None)
    node.stop()
    if fatal:
        print(f"neoarray-storage: {fatal}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
