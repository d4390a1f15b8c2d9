"""``neoarray-master``: run the primary master of a cluster."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from neoarray import security, wire
from neoarray.errors import NeoError
from neoarray.proto import master_pb2_grpc as rpc

from .node import Limits, Master

# gRPC handlers hand work between threads: a short GIL switch interval cuts latency
SWITCH_INTERVAL_S = 0.0002
from .service import AdminServicer, MasterServicer


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
    p.add_argument("--address-file", help="write the bound address to this file once listening")
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
    master = Master(opts.data, opts.cluster, opts.partitions, opts.replicas, opts.storages,
                    Limits(node_timeout_s=opts.node_timeout_s), tls=tls)
    server = wire.make_server(opts.cluster, access=security.AccessGuard(security.token_of(opts)))
    control = MasterServicer(master)
    rpc.add_MasterServicer_to_server(control, server)
    rpc.add_AdminServicer_to_server(AdminServicer(master, control), server)
    address = wire.bind(server, opts.bind, tls)
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
    except NeoError as exc:
        print(f"neoarray-master: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
