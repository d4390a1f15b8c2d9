"""``neoarray-master``: run the primary master of a cluster."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from neoarray import security, wire
from neoarray.errors import NeoError
from neoarray.limits import add_limit_flags, check_limits
from neoarray.metrics import bind_arg
from neoarray.proto import master_pb2_grpc as rpc

from . import metrics as master_metrics
from .node import Limits, Master

# gRPC handlers hand work between threads: a short GIL switch interval cuts latency
SWITCH_INTERVAL_S = 0.0002
from .service import AdminServicer, MasterServicer

# limits settable from the command line (--name-with-dashes), each >= 1
LIMIT_FLAGS = ("message_bytes_max", "transactions_per_client_max", "oids_per_request_max",
               "objects_per_transaction_max", "events_per_client_max", "finished_remembered_max")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoarray-master", description=__doc__)
    p.add_argument("--cluster", required=True, help="cluster name; peers with another name are refused")
    p.add_argument("--bind", default="127.0.0.1:0", help="host:port to listen on (port 0: any free port)")
    p.add_argument("--data", required=True, help="directory of the master's durable state")
    p.add_argument("--partitions", type=int, default=12, help="number of partitions (fixed at creation)")
    p.add_argument("--replicas", type=int, default=0, help="extra copies of each partition")
    p.add_argument("--storages", type=int, default=1,
                   help="storage nodes to wait for before creating the partition table")
    p.add_argument("--node-timeout-s", type=float, default=5.0, help="heartbeat silence that marks a node DOWN")
    add_limit_flags(p, Limits, LIMIT_FLAGS, {
        "message_bytes_max": "largest gRPC request or reply the master takes or sends",
        "transactions_per_client_max": "transactions one client may have begun at the master",
        "oids_per_request_max": "oids handed out by one NewOids request",
        "objects_per_transaction_max": "oids one finished transaction may name",
        "events_per_client_max": "events queued for a client before it is disconnected as too slow",
        "finished_remembered_max": "finished transactions remembered for clients asking their tid"})
    p.add_argument("--address-file", help="write the bound address to this file once listening")
    p.add_argument("--metrics-bind", type=bind_arg,
                   help="host:port to serve Prometheus metrics on, at /metrics (port 0: any free port; "
                        "default: no metrics)")
    p.add_argument("--metrics-address-file", help="write the bound metrics address to this file")
    p.add_argument("--log-file", help="log here instead of standard error")
    p.add_argument("--log-level", default="INFO")
    security.add_arguments(p, token_help="file holding the admin token: Admin RPCs (neoctl) without "
                           "it (or, with TLS, without an admin certificate) are refused")
    return p.parse_args(argv)


def serve(opts) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(filename=opts.log_file, level=opts.log_level,
                        format="%(asctime)s %(levelname)s M %(name)s: %(message)s")
    if opts.partitions < 1 or opts.replicas < 0:
        sys.exit("--partitions must be >= 1 and --replicas >= 0")
    tls = security.tls_of(opts)
    limits = Limits(node_timeout_s=opts.node_timeout_s, **check_limits(opts, LIMIT_FLAGS))
    master = Master(opts.data, opts.cluster, opts.partitions, opts.replicas, opts.storages, limits, tls=tls)
    metrics = master_metrics.exporter(master) if opts.metrics_bind else None
    server = wire.make_server(opts.cluster, message_bytes_max=limits.message_bytes_max,
                              interceptors=metrics.interceptors() if metrics else (),
                              access=security.AccessGuard(security.token_of(opts)))
    control = MasterServicer(master)
    rpc.add_MasterServicer_to_server(control, server)
    rpc.add_AdminServicer_to_server(AdminServicer(master, control), server)
    address = wire.bind(server, opts.bind, tls)
    if metrics:     # before the server starts: a metrics port in use stops nothing running
        metrics.serve(opts.metrics_bind, opts.metrics_address_file)
    server.start()
    done = threading.Event()
    master.on_stop = done.set
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=master.monitor, daemon=True, name="monitor").start()
    threading.Thread(target=master.unlocker, daemon=True, name="unlocker").start()
    logging.getLogger("neoarray.master").info("master of cluster %r listening on %s", opts.cluster, address)
    if opts.address_file:
        _write_atomic(opts.address_file, address)
    done.wait()
    if metrics:
        metrics.stop()
    master.stopped.set()
    server.stop(grace=0.2).wait()   # client event streams never end by themselves
    master.state_db.close()
    return 0


def _write_atomic(path: str, text: str) -> None:
    import os
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    try:
        return serve(parse_args(argv))
    except (NeoError, OSError) as exc:
        print(f"neoarray-master: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
