"""The ``neoarray dashboard`` command line."""
from __future__ import annotations

import re
import sys

from .. import security
from ..errors import NeoError

DEFAULT_BIND = "127.0.0.1:8050"


def add_parser(sub) -> None:
    d = sub.add_parser(
        "dashboard", help="serve a live web page of a cluster, its jobs, ingestion and arrays",
        description="Serve a web page showing a running cluster (nodes, cells, cluster state, "
                    "commits/s, replication, storage use), job progress, ingestion rates scraped "
                    "from Prometheus endpoints, and min/max envelopes of 1-d arrays computed on the "
                    "storage nodes.  On a secured cluster it asks for an admin credential.")
    d.add_argument("--dir", help="a local cluster's directory (as neoctl --dir): master address, "
                                 "cluster name, admin token or certificate, nodes' metrics endpoints")
    d.add_argument("-a", "--address", help="master address HOST:PORT (several: comma-separated)")
    d.add_argument("-c", "--cluster", help="cluster name")
    d.add_argument("--token-file", help="the cluster's admin token (without TLS)")
    security.add_arguments(d)
    d.add_argument("--bind", default=DEFAULT_BIND,
                   help="HOST:PORT to serve on (port 0: a free one; default: %(default)s)")
    d.add_argument("--scrape", action="append", default=[], metavar="URL",
                   help="a Prometheus endpoint to read (http://HOST:PORT/metrics or HOST:PORT): a "
                        "node's, or the ingestion service's; repeatable")
    d.add_argument("--ingest-pattern", default="ingest", metavar="REGEX",
                   help="scraped metric names shown as ingestion figures (default: %(default)s)")
    d.add_argument("--jobs", action="append", default=[], metavar="DIR",
                   help="a job state directory (neoarray job run --state-dir), or a directory of "
                        "them, whose progress to show; repeatable")
    d.add_argument("--array", action="append", default=None, metavar="NAME",
                   help="a 1-d array at the database root to plot; repeatable (default: every 1-d "
                        "array at the root)")
    d.add_argument("--refresh-s", type=float, default=1.0,
                   help="seconds between page updates (default: %(default)s)")
    d.add_argument("--timeout-s", type=float, default=5.0,
                   help="timeout of each read of the cluster or of an endpoint (default: %(default)s)")
    d.add_argument("--connections-max", type=int, default=64,
                   help="open connections at most; more are closed at accept (default: %(default)s)")
    d.add_argument("--idle-timeout-s", type=float, default=60.0,
                   help="a connection that sends no complete request head within this, or stays idle "
                        "this long between requests, is closed (default: %(default)s)")


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise NeoError(f"--bind {text!r}: give HOST:PORT (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


def make_server(opts):
    """The :class:`.web.Server` the options describe (not started)."""
    try:
        from . import auth, sources, web
    except ImportError as exc:
        raise NeoError(f"the dashboard needs Bokeh: pip install 'neoarray[dashboard]' ({exc})") from None
    if not 0.1 <= opts.refresh_s <= 3600:
        raise NeoError(f"--refresh-s {opts.refresh_s}: give 0.1 to 3600 seconds")
    if not 1 <= opts.connections_max <= 100_000:
        raise NeoError(f"--connections-max {opts.connections_max}: give 1 to 100000")
    if not 0.1 <= opts.idle_timeout_s <= 86_400:
        raise NeoError(f"--idle-timeout-s {opts.idle_timeout_s}: give 0.1 to 86400 seconds")
    host, port = parse_bind(opts.bind)
    tls = security.tls_of(opts)
    token = security.read_token(opts.token_file) if opts.token_file else None
    try:
        re.compile(opts.ingest_pattern)
    except re.error as exc:
        raise NeoError(f"--ingest-pattern {opts.ingest_pattern!r} is not a regular expression: {exc}") from None
    if opts.dir:
        try:
            master, cluster, dir_tls, dir_token = sources.credentials_of_dir(opts.dir)
        except OSError as exc:
            raise NeoError(f"--dir {opts.dir!r} is not a cluster directory (neoarray cluster up "
                           f"makes one): {exc}") from None
        master, cluster = opts.address or master, opts.cluster or cluster
        tls, token = tls or dir_tls, token or dir_token
    else:
        master, cluster = opts.address, opts.cluster
    if not master or not cluster:
        raise NeoError("give the master address and cluster name (-a, -c) or a cluster directory (--dir)")
    gatherer = sources.Gatherer(master, cluster, tls=tls, token=token, cluster_dir=opts.dir,
                                scrape=opts.scrape, jobs=opts.jobs, arrays=opts.array,
                                rpc_timeout_s=opts.timeout_s, ingest_pattern=opts.ingest_pattern)
    policy = auth.Policy(token=token, tls=tls is not None)
    return web.Server(gatherer, policy, host, port, tls=tls, title=f"neoarray {cluster}",
                      refresh_s=opts.refresh_s, connections_max=opts.connections_max,
                      idle_timeout_s=opts.idle_timeout_s)


def main(opts) -> int:
    server = make_server(opts)
    secured = ("admin token or admin certificate required" if server.state.policy.secured
               else "the cluster is not secured: anyone reaching the address sees it")
    try:
        server.start()
        print(f"dashboard at {server.url} ({secured})", flush=True)
        if server.state.policy.token:
            print(f"  open {server.url}login?token=$(cat {opts.dir or 'TOKEN_FILE'}"
                  f"{'/admin.token' if opts.dir else ''}) once to sign in", flush=True)
        server._thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("dashboard stopped", file=sys.stderr)
    return 0
