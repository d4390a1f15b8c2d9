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

from neoarray import lifeline, security, wire
from neoarray.errors import NeoError
from neoarray.limits import add_limit_flags, check_limits
from neoarray.masters import MASTERS_MAX
from neoarray.metrics import MetricsExporter, bind_arg
from neoarray.transport.server import FRAME_SLACK_BYTES, FramedServer
from neoarray.transport.server import Limits as FramedLimits

from . import metrics as master_metrics
from . import standby
from .cluster import STANDBY_FIRST, TAKE_OVER, start_role
from .node import Limits, Master

# gRPC handlers hand work between threads: a short GIL switch interval cuts latency
SWITCH_INTERVAL_S = 0.0002
# the main thread waits in slices: a SIGTERM delivered to another thread still runs its
# Python handler (in the main thread) within this time
SIGNAL_POLL_S = 0.5
from .service import FOLLOW_STATE, SUBSCRIBE, MasterServicer, primary_handlers

log = logging.getLogger("neoarray.master")

# limits settable from the command line (--name-with-dashes), each >= 1
LIMIT_FLAGS = ("message_bytes_max", "transactions_per_client_max", "oids_per_request_max",
               "objects_per_transaction_max", "events_per_client_max", "finished_remembered_max",
               "nodes_max", "rpc_workers_max", "rpcs_pending_max",
               "subscribers_max", "pending_timeout_s", "dead_remembered_max")
# threads beyond subscribers_max: a refused subscription, and a stream whose client is
# gone but whose thread has not noticed yet (within the keep-alive), still need one
SUBSCRIBE_THREADS_SPARE = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoarray-master", description=__doc__)
    p.add_argument("--cluster", required=True, help="cluster name; peers with another name are refused")
    p.add_argument("--bind", default="127.0.0.1:0", help="host:port to listen on (port 0: any free port)")
    p.add_argument("--data-bind", default="",
                   help="host:port of the framed data plane (clients' finish, events; default: the host of "
                        "--bind, any free port); clients learn it when they identify")
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
    add_limit_flags(p, Limits, LIMIT_FLAGS, {
        "message_bytes_max": "largest gRPC request or reply the master takes or sends",
        "transactions_per_client_max": "transactions one client may have begun at the master",
        "oids_per_request_max": "oids handed out by one NewOids request",
        "objects_per_transaction_max": "oids one finished transaction may name",
        "events_per_client_max": "events queued for a client before it is disconnected as too slow",
        "finished_remembered_max": "finished transactions remembered for clients asking their tid",
        "nodes_max": "nodes (clients, storages, admin connections) known at once; more are refused",
        "rpc_workers_max": "threads serving requests (a request's message is read by its thread)",
        "rpcs_pending_max": "calls open at once, event streams aside; more are refused",
        "subscribers_max": "clients holding an event stream, each on a thread of its own; more are refused",
        "pending_timeout_s": "a transaction stored or voted this long by a client that neither finishes "
                             "nor aborts it is aborted (its locks end)",
        "dead_remembered_max": "aborted transactions remembered, so that their Finish is refused"})
    p.add_argument("--address-file", help="write the bound address to this file once listening")
    p.add_argument("--metrics-bind", type=bind_arg,
                   help="host:port to serve Prometheus metrics on, at /metrics (port 0: any free port; "
                        "default: no metrics)")
    p.add_argument("--metrics-address-file", help="write the bound metrics address to this file")
    p.add_argument("--log-file", help="log here instead of standard error")
    p.add_argument("--log-level", default="INFO")
    lifeline.add_argument(p)
    security.add_arguments(p, token_help="file holding the admin token: Admin RPCs (neoctl) without "
                           "it (or, with TLS, without an admin certificate) are refused")
    return p.parse_args(argv)


def serve(opts) -> int:
    """Run until stopped: as a standby first when told to (or when another master is
    primary), then as the primary.  Exit status 3: stepped down for a newer master."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(filename=opts.log_file, level=opts.log_level,
                        format="%(asctime)s %(levelname)s M %(name)s: %(message)s")
    lifeline.exit_with_parent(opts.exit_with_parent)
    if opts.partitions < 1 or opts.replicas < 0:
        sys.exit("--partitions must be >= 1 and --replicas >= 0")
    peers = standby.parse_masters(opts.standby_of or opts.masters, "--standby-of/--masters") \
        if (opts.standby_of or opts.masters) else []
    opts.tls = security.tls_of(opts)
    opts.limits = Limits(node_timeout_s=opts.node_timeout_s, **check_limits(opts, LIMIT_FLAGS))
    # the master's figures are registered when it becomes primary (``_primary``)
    opts.metrics = MetricsExporter("master", opts.cluster, lambda: "M") if opts.metrics_bind else None
    lim = opts.limits
    server = wire.make_server(opts.cluster, lim.rpc_workers_max, lim.message_bytes_max,
                              interceptors=opts.metrics.interceptors() if opts.metrics else (),
                              access=security.AccessGuard(security.token_of(opts)),
                              rpcs_pending_max=lim.rpcs_pending_max,
                              long_calls={SUBSCRIBE: lim.subscribers_max + SUBSCRIBE_THREADS_SPARE,
                                          FOLLOW_STATE: 2 * MASTERS_MAX})
    router = standby.RoleRouter()
    server.add_generic_rpc_handlers((router,))
    address = wire.bind(server, opts.bind, opts.tls)
    peers = [a for a in peers if a != address]
    if opts.metrics:    # before the server starts: a metrics port in use stops nothing running
        opts.metrics.serve(opts.metrics_bind, opts.metrics_address_file)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    role = start_role(bool(opts.standby_of), bool(peers), bool(
        peers and not opts.standby_of and standby.find_primary(peers, opts.cluster, 2.0, tls=opts.tls)[0]),
        stale=bool(peers) and standby.stale_at_start(opts.data))
    as_standby = role == STANDBY_FIRST
    if role == TAKE_OVER:
        standby.take_over_at_start(opts.data, opts.cluster, peers, address, opts.node_timeout_s)
    try:
        if as_standby and not _follow(opts, server, router, address, peers, done):
            server.stop(grace=0.2).wait()
            return 0
        return _primary(opts, server, router, address, peers, done, started=as_standby)
    finally:
        if opts.metrics:
            opts.metrics.stop()


def _follow(opts, server, router, address: str, peers: list[str], done: threading.Event) -> bool:
    """Serve as a standby until stopped (False) or until taking over (True)."""
    follower = standby.StandbyFollower(opts.data, opts.cluster, peers, address, opts.node_timeout_s,
                                       tls=opts.tls)
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
                    opts.limits, tls=opts.tls)
    if opts.metrics:
        opts.metrics.register(master_metrics.MasterCollector(master))
    control = MasterServicer(master)
    framed = FramedServer(opts.cluster, {"neoarray.v1.Master": control},
                          FramedLimits(frame_bytes_max=opts.limits.message_bytes_max + FRAME_SLACK_BYTES,
                                       connections_max=opts.limits.subscribers_max + opts.limits.rpc_workers_max),
                          tls=opts.tls, admin_token=security.token_of(opts),
                          rpc_metrics=opts.metrics.rpc if opts.metrics else None)
    master.data_address = framed.bind(opts.data_bind or f"{address.rpartition(':')[0]}:0")
    framed.start()
    publisher = standby.StatePublisher(master, ack_timeout_s=opts.node_timeout_s / 2, peers=peers)
    router.switch(primary_handlers(master, control, publisher))
    exit_status = [0]

    def step_down(why: str) -> None:
        log.error("stepping down (exit status 3): %s", why)
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
                           opts.node_timeout_s, step_down, opts.tls)).start()
    log.info("master of cluster %r listening on %s, data plane on %s (epoch %d)", opts.cluster, address,
             master.data_address, master.epoch)
    while not done.wait(SIGNAL_POLL_S):     # a timed wait: the main thread runs signal handlers
        pass
    master.stopped.set()
    framed.stop()
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
    except (NeoError, OSError) as exc:
        print(f"neoarray-master: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
