"""``neoarray-master``: run a master of a cluster (the primary, or a standby that takes over).

``--standby-of A[,B...]``: start as a standby of the primary among those masters
(it follows its state and takes over when it has been unreachable for the node
timeout).  ``--masters A[,B...]``: the other masters of the cluster; a master
started with it asks them first and becomes a standby of one that answers as
primary (an old primary restarted after a takeover), else it starts as primary.
A primary that a newer master replaced steps down: exit status 3.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from neoarray import wire
from neoarray.errors import NeoError
from neoarray.proto import master_pb2_grpc as rpc
from neoarray.proto import standby_pb2_grpc as srpc

from . import standby
from .node import Limits, Master

# gRPC handlers hand work between threads: a short GIL switch interval cuts latency
SWITCH_INTERVAL_S = 0.0002
from .service import AdminServicer, MasterServicer

log = logging.getLogger("neoarray.master")


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
    p.add_argument("--masters", default="", help="host:port[,host:port...] of the other masters: "
                   "become a standby of one that is primary, else start as primary")
    p.add_argument("--standby-of", default="", help="host:port[,host:port...]: start as a standby "
                   "master following the primary among these (takes over when it is gone)")
    p.add_argument("--address-file", help="write the bound address to this file once listening")
    p.add_argument("--log-file", help="log here instead of standard error")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def serve(opts) -> int:
    """Run until stopped: as a standby first when told to (or when another master is
    primary), then as the primary.  Exit status 3: stepped down for a newer master."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(filename=opts.log_file, level=opts.log_level,
                        format="%(asctime)s %(levelname)s M %(name)s: %(message)s")
    if opts.partitions < 1 or opts.replicas < 0:
        sys.exit("--partitions must be >= 1 and --replicas >= 0")
    peers = standby.parse_masters(opts.standby_of or opts.masters, "--standby-of/--masters") \
        if (opts.standby_of or opts.masters) else []
    server = wire.make_server(opts.cluster)
    router = standby.RoleRouter()
    server.add_generic_rpc_handlers((router,))
    address = wire.bind(server, opts.bind)
    peers = [a for a in peers if a != address]
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    as_standby = bool(opts.standby_of) or bool(peers and standby.find_primary(peers, opts.cluster, 2.0)[0])
    if as_standby and not _follow(opts, server, router, address, peers, done):
        server.stop(grace=0.2).wait()
        return 0
    return _primary(opts, server, router, address, peers, done, started=as_standby)


def _follow(opts, server, router, address: str, peers: list[str], done: threading.Event) -> bool:
    """Serve as a standby until stopped (False) or until taking over (True)."""
    follower = standby.StandbyFollower(opts.data, opts.cluster, peers, address, opts.node_timeout_s)
    router.switch(standby.standby_handlers(follower))
    server.start()
    log.info("standby master of cluster %r listening on %s (masters: %s)", opts.cluster, address, peers)
    _announce(opts, address)
    if not follower.follow(done):
        follower.close()
        return False
    follower.take_over()
    return True


def _primary(opts, server, router, address: str, peers: list[str], done: threading.Event,
             started: bool) -> int:
    """Serve as the primary until stopped or replaced."""
    master = Master(opts.data, opts.cluster, opts.partitions, opts.replicas, opts.storages,
                    Limits(node_timeout_s=opts.node_timeout_s))
    control = MasterServicer(master)
    publisher = standby.StatePublisher(master, ack_timeout_s=opts.node_timeout_s / 2)
    router.switch(standby.handlers_of((rpc.add_MasterServicer_to_server, control),
                                      (rpc.add_AdminServicer_to_server, AdminServicer(master, control)),
                                      (srpc.add_StandbyServicer_to_server, publisher)))
    exit_status = [0]

    def step_down(why: str) -> None:
        log.error("a newer master took over (%s): stepping down", why)
        exit_status[0] = 3
        done.set()
    master.on_stop = done.set
    master.on_step_down = step_down
    if not started:
        server.start()
        _announce(opts, address)
    threading.Thread(target=master.monitor, daemon=True, name="monitor").start()
    threading.Thread(target=master.unlocker, daemon=True, name="unlocker").start()
    threading.Thread(target=standby.watch_peers, daemon=True, name="peers",
                     args=(master, lambda: list(dict.fromkeys(peers + publisher.known)), opts.cluster,
                           opts.node_timeout_s, step_down)).start()
    log.info("master of cluster %r listening on %s (epoch %d)", opts.cluster, address, master.epoch)
    done.wait()
    master.stopped.set()
    server.stop(grace=0.2).wait()   # client event streams never end by themselves
    master.state_db.close()
    return exit_status[0]


def _announce(opts, address: str) -> None:
    if opts.address_file:
        _write_atomic(opts.address_file, address)


def _write_atomic(path: str, text: str) -> None:
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
