"""``neoarray``: run a local cluster, or the demo.

    neoarray cluster up DIR [--storages N] [--replicas R] [--partitions P] [--standby-masters M]
                            [--metrics] [--tls] [--dashboard [HOST:PORT]]
        start a master (and M standby masters) and N storage nodes as local processes
        serving DIR, print the master addresses (and with ``--metrics`` each node's
        Prometheus endpoint), and stop them on Ctrl-C or ``neoctl --dir DIR stop``;
        with ``--tls`` (remembered by DIR) a CA and certificates are made in DIR/tls
        and every node talks mutual TLS.
    neoarray demo [DIR]
        store objects and an array (``prices``) in an embedded cluster and read them back;
        without DIR, in a temporary directory removed afterwards.
    neoarray job run ...
        run a parallel reduction or map_blocks job and print a JSON result
        (see ``neoarray job run --help`` and :mod:`neoarray.jobs.cli`).
    neoarray import PATH|--source-config FILE (--dir DIR | -a HOST:PORT -c NAME) [--follow]
        copy a FileStorage or any ZODB storage, whole history and blobs, into a running
        cluster, verified, resumable (:mod:`neoarray.importing`).
    neoarray dashboard (--dir DIR | -a HOST:PORT -c NAME) [--bind HOST:PORT] [--scrape URL]...
        serve a live web page of the cluster, its jobs, ingestion and arrays
        (:mod:`neoarray.dashboard`).
    neoarray ingest --mapping FILE (--dir DIR | -a HOST:PORT -c NAME) [--forward ADDR]
                    [--http ADDR] [--mqtt ADDR --mqtt-topic T]
        append records streamed over fluentd's Forward protocol, MQTT or HTTP to arrays,
        in group commits acknowledged once durable (``neoarray.ingest.service``).
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time

from .errors import NeoError


def cluster_up(opts) -> int:
    from .cluster import LocalCluster
    c = LocalCluster(opts.dir, storages=opts.storages, replicas=opts.replicas, partitions=opts.partitions,
                     metrics=opts.metrics or bool(opts.dashboard), tls=opts.tls,
                     standby_masters=opts.standby_masters)
    dashboard = None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        c.start()
        print(f"cluster {c.cluster!r} RUNNING; master at {c.masters}", flush=True)
        tls = c.tls_of("client")
        extra = "".join(f", {k}={v!r}" for k, v in tls.options().items()) if tls else ""
        print(f"  python: neoarray.open(master={c.masters!r}, cluster={c.cluster!r}{extra})", flush=True)
        print(f"  admin:  neoctl --dir {opts.dir} print node", flush=True)
        for i in sorted(c.storage_procs):
            name = c.storage_name(i)
            print(f"  {name}: data {c.storage_dir(i)}, log {c.log_path(name)}", flush=True)
        for node, address in c.metrics_addresses().items():
            print(f"  metrics: {node} http://{address}/metrics", flush=True)
        if opts.dashboard:
            from .dashboard.cli import make_server
            dashboard = make_server(parse_args(["dashboard", "--dir", opts.dir, "--bind", opts.dashboard]))
            dashboard.start()
            login = "login?token=$(cat DIR/admin.token)" if dashboard.state.policy.token else ""
            print(f"  dashboard: {dashboard.url}{login.replace('DIR', opts.dir)}", flush=True)
        while not stop.wait(0.5):
            masters = [c.master_proc, *c.standby_procs.values()]
            if any(p.poll() == 0 for p in masters) or all(p.poll() is not None for p in masters):
                # neoctl stop (a master exits with 0), or every master died
                print(f"master exited with status {c.master_proc.poll()}", flush=True)
                break
    finally:
        if dashboard is not None:
            dashboard.stop()
        c.stop()
    print("cluster stopped", flush=True)
    return 0


def demo(opts) -> int:
    """The demo, in ``opts.dir`` (kept) or in a temporary directory (removed after)."""
    if opts.dir:
        _demo(opts.dir)
        print(f"cluster stopped; run again (neoarray demo {opts.dir}) to see the data persist")
        return 0
    path = tempfile.mkdtemp(prefix="neoarray-demo-")
    try:
        _demo(path, kept=False)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    print(f"cluster stopped and {path} removed; to keep the data and see it again, give a "
          f"directory: neoarray demo ./neoarray-demo")
    return 0


def _demo(path: str, kept: bool = True) -> None:
    import transaction
    from persistent.mapping import PersistentMapping

    import neoarray
    t0 = time.perf_counter()
    with neoarray.open(path) as db:
        print(f"embedded cluster at {path} up in {time.perf_counter() - t0:.2f} s")
        conn = db.open()
        root = conn.root()
        runs = root.setdefault("runs", PersistentMapping())
        n = len(runs)
        runs[n] = PersistentMapping(when=time.time(), squares=[i * i for i in range(10)])
        transaction.commit()
        conn.close()
        conn = db.open()
        stored = conn.root()["runs"]
        print(f"stored run {n}; the database holds {len(stored)} run(s)")
        print(f"read back run {n}: squares = {list(stored[n]['squares'])}")
        assert list(stored[n]["squares"]) == [i * i for i in range(10)]
        conn.close()
        _demo_prices(db, path if kept else None)
        print(f"last transaction: 0x{db.storage.lastTransaction().hex()}")


def _demo_prices(db, path: str | None):
    """An array of prices (a random walk) and a parallel job over it; the command to
    run another job on it when the data is kept in ``path``."""
    import numpy as np
    import transaction

    import neoarray
    from neoarray import jobs
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        root = conn.root()
        if "prices" not in root:
            steps = np.random.default_rng(len(root.get("runs", ()))).normal(0, 0.0002, 4_000_000)
            root["prices"] = neoarray.asarray(100 * np.exp(np.cumsum(steps)))
            tm.commit()
        prices = root["prices"]
        result = jobs.reduce(prices, "std", stats=True)
        print(f"array 'prices': {prices.shape[0]:,} float64 in {len(list(prices.chunk_keys()))} "
              f"chunks; std = {result.value:.4f} (a {result.stats['pieces']}-piece job, "
              f"{result.stats['gbps']} GB/s)")
        if path:
            print(f"  next: neoarray job run --dir {path} --array prices --reduce histogram --bins 8")
    finally:
        tm.abort()
        conn.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="neoarray", description="Run a local neoarray cluster, the demo, a "
                                "parallel job, or an import from FileStorage/ZEO; neoctl administers a running "
                                "cluster.")
    p.add_argument("--version", action="version", version=f"neoarray {sys.modules[__package__].__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    cl = sub.add_parser("cluster", help="local clusters")
    clsub = cl.add_subparsers(dest="action", required=True)
    up = clsub.add_parser("up", help="start a local multi-process cluster",
                          description="Start a master (and standby masters) and storage nodes as local "
                                      "processes serving DIR; Ctrl-C or neoctl --dir DIR stop stops them.")
    up.add_argument("dir", metavar="DIR", help="the cluster's directory: made if missing; an existing one "
                                              "keeps its data, cluster name, partitions and replicas")
    up.add_argument("--storages", type=int, default=1, help="storage nodes to start (default: %(default)s)")
    up.add_argument("--replicas", type=int, default=0,
                    help="extra copies of each partition, on other storage nodes, for a new DIR (later: "
                         "neoctl set replicas; default: %(default)s)")
    up.add_argument("--partitions", type=int, default=12,
                    help="partitions the data is spread over, for a new DIR (fixed then; "
                         "default: %(default)s)")
    up.add_argument("--metrics", action="store_true",
                    help="give each node a Prometheus metrics port on 127.0.0.1 and print them (default: off)")
    up.add_argument("--tls", action="store_true", default=None,
                    help="mutual TLS on every port, with a CA and certificates made in DIR/tls (default: "
                         "off for a new DIR; a DIR made with --tls keeps it)")
    up.add_argument("--dashboard", metavar="HOST:PORT", nargs="?", const="127.0.0.1:8050", default=None,
                    help="also serve neoarray dashboard there (default 127.0.0.1:8050; implies --metrics)")
    up.add_argument("--standby-masters", type=int, default=0,
                    help="standby masters to start (each takes over when the primary is gone; "
                         "default: %(default)s)")
    d = sub.add_parser("demo", help="store and read back objects on an embedded cluster")
    d.add_argument("dir", nargs="?", help="data directory, kept (default: a temporary one, removed after)")
    from .jobs.cli import add_parser
    add_parser(sub)
    from .importing.cli import add_parser as add_import_parser
    add_import_parser(sub)
    from .dashboard.cli import add_parser as add_dashboard_parser
    add_dashboard_parser(sub)
    from .ingest.service import add_parser as add_ingest_parser
    add_ingest_parser(sub)
    return p.parse_args(argv)


def main(argv=None) -> int:
    opts = parse_args(argv)
    try:
        if opts.command == "cluster":
            return cluster_up(opts)
        if opts.command == "job":
            from .jobs.cli import main as job_main
            return job_main(opts)
        if opts.command == "dashboard":
            from .dashboard.cli import main as dashboard_main
            return dashboard_main(opts)
        if opts.command == "import":
            from .importing.cli import main as import_main
            return import_main(opts)
        if opts.command == "ingest":
            from .ingest.service import main as ingest_main
            return ingest_main(opts)
        return demo(opts)
    except NeoError as exc:
        print(f"neoarray: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
