"""Time to draw a plot of a 10**9-point series: its min/max envelope, near the data.

One run, one machine.  A local cluster (1 master, ``--storages`` storage nodes, no
replicas) holds one float64 array of ``--items`` items (default 10**9) in chunks of
``--chunk-items``, sparse: a fully written run of ``--written`` items (normal random
numbers) from item ``--items // 10``, and ``--scattered`` single chunks written
elsewhere; the rest is never written (the fill value, 0.0).  Then, each the median of
``--repeat`` runs:

* ``neoarray/envelope-first`` (one run): the first envelope of the whole array, when
  the storage nodes summarize each chunk (minima and maxima of runs of 4,096 items,
  kept per chunk revision: ``storage_node/summaries.py``);
* ``neoarray/envelope``: ``neoarray.array.envelope.envelope`` of the whole array in
  ``--buckets`` buckets (the storage nodes reduce every stored chunk, the client adds
  the fill of the unwritten ones): what the dashboard computes for a plot of the series;
* ``neoarray/envelope-zoom``: the same for a 10**6-item window inside the written run
  (a zoom);
* ``dashboard/api``: the dashboard's ``/api/envelope`` over HTTP for the whole array
  (the envelope, the snapshot opened, the JSON);
* ``neoarray/overview-keep`` (one run): ``A.keep_overview()`` (the minima and maxima of
  every stored chunk, reduced on the nodes, in pages of 1,024 chunks) and its commit;
* ``neoarray/overview``: the whole array once it keeps the overview, in buckets of
  whole chunks (``align=True``, as the dashboard asks): each bucket from the overview's
  pages, only the chunks cut by the span's ends reduced on the nodes;
  ``neoarray/overview-exact-edges``: the same with the edges of ``bucket_starts`` (the
  chunks a bucket edge cuts, up to one per bucket, reduced on the nodes);
  ``neoarray/overview-zoom`` the zoom, ``dashboard/api-overview`` the dashboard's draw;
* ``write/plain`` and ``write/overview`` (first, alternating, medians): writing and
  committing ``--write-items`` items into a new array without and with an overview;
* ``dashboard/api-first`` and ``dashboard/api-overview-first``: the first request to a
  new dashboard server (its client cache cold);
* ``numpy``: ``neoarray.envelopes.reference`` (``np.minimum.reduceat`` and
  ``np.maximum.reduceat``) of the written run in memory (``--written`` items: what
  fits), the same bucket count.

stdout: one JSON line per system, then a summary line: the draw time of the 10**9
series, and the ratio of neoarray's whole-array envelope time to numpy's in-memory
envelope of the written items (the items neoarray had to read).

    python benchmarks/dashboard_bench.py                    # 10**9 items, 10**7 written
    python benchmarks/dashboard_bench.py --written 100000000
    python benchmarks/dashboard_bench.py --quick            # 10**8 items, 10**6 written
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.timing import median_of


def emit(rows, system, seconds, **extra):
    row = {"bench": "envelope", "system": system, "value": round(seconds, 4), "unit": "s", **extra}
    rows[system] = row
    print(json.dumps(row), flush=True)


def write_array(db, args):
    """The sparse array, committed in bounded transactions; the written run in memory."""
    import transaction

    import neoarray.array as na
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    a = na.zeros((args.items,), chunks=(args.chunk_items,))
    conn.root()["series"] = a
    tm.commit()
    rng = np.random.default_rng(42)
    first = args.items // 10
    written = np.empty(args.written)
    step = 16 * args.chunk_items
    t = time.perf_counter()
    for lo in range(0, args.written, step):
        hi = min(args.written, lo + step)
        written[lo:hi] = rng.standard_normal(hi - lo)
        a[first + lo:first + hi] = written[lo:hi]
        tm.commit()
    grid = np.arange(args.items // args.chunk_items)
    lo_chunk, hi_chunk = first // args.chunk_items, (first + args.written - 1) // args.chunk_items
    outside = grid[(grid < lo_chunk) | (grid > hi_chunk)]       # the written run stays numpy's
    for k in rng.choice(outside, size=min(args.scattered, len(outside)), replace=False):
        lo = int(k) * args.chunk_items
        a[lo:lo + args.chunk_items] = rng.standard_normal(args.chunk_items) * 3
        tm.commit()
    chunks = len(list(a.chunk_keys()))
    print(json.dumps({"setup": "written", "items": args.items, "written_run": args.written,
                      "scattered_chunks": args.scattered, "stored_chunks": chunks,
                      "chunk_items": args.chunk_items, "seconds": round(time.perf_counter() - t, 2)}),
          flush=True)
    tm.abort()
    conn.close()
    return written, first


def api(rows, cluster, make_server, parse_args, args, system):
    """The dashboard's ``/api/envelope`` of the whole array over HTTP (a server of its own)."""
    server = make_server(parse_args(["dashboard", "--dir", cluster.path, "--bind", "127.0.0.1:0"]))
    server.start()
    try:
        url = f"{server.url}api/envelope?array=series&buckets={args.buckets}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.admin_token}"})

        def fetch():
            with urllib.request.urlopen(request, timeout=120) as reply:
                return len(reply.read())
        began = time.perf_counter()
        fetch()             # a new server: its client cache cold
        emit(rows, system + "-first", time.perf_counter() - began, items=args.items)
        seconds, size = median_of(args.repeat, fetch)
        emit(rows, system, seconds, items=args.items, json_bytes=size)
    finally:
        server.stop()


def write_cost(db, args, rows):
    """Seconds to write and commit ``--write-items`` items into a new array, without
    and with an overview kept (alternating, medians): what keeping one costs writers."""
    import transaction

    import neoarray.array as na
    values = np.random.default_rng(7).standard_normal(args.write_items)
    step = 16 * args.chunk_items
    times = {False: [], True: []}
    for i in range(2 * args.repeat):
        keep = bool(i % 2)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        a = conn.root()[f"w{i}"] = na.zeros((args.write_items,), chunks=(args.chunk_items,))
        if keep:
            a.keep_overview()
        tm.commit()
        began = time.perf_counter()
        for lo in range(0, args.write_items, step):
            a[lo:lo + step] = values[lo:lo + step]
            tm.commit()
        times[keep].append(time.perf_counter() - began)
        del conn.root()[f"w{i}"]
        tm.commit()
        conn.close()
    plain, kept = statistics.median(times[False]), statistics.median(times[True])
    emit(rows, "write/plain", plain, items=args.write_items)
    emit(rows, "write/overview", kept, items=args.write_items, over_plain=round(kept / plain, 3))


def run(args, workdir):
    import transaction
    import ZODB

    from neoarray import envelopes, kernels
    from neoarray.array.envelope import envelope
    from neoarray.cli import parse_args
    from neoarray.cluster import LocalCluster
    from neoarray.dashboard.cli import make_server
    kernels.warm_up()
    rows = {}
    cluster = LocalCluster(os.path.join(workdir, "neo"), storages=args.storages, replicas=0)
    cluster.start()
    try:
        db = ZODB.DB(cluster.open_storage())
        if args.write_items:
            write_cost(db, args, rows)
        written, first = write_array(db, args)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        a = conn.root()["series"]
        began = time.perf_counter()         # first draw: the nodes summarize every chunk once
        envelope(a, 0, args.items, args.buckets)        # (and Numba, connections, tree buckets warm)
        emit(rows, "neoarray/envelope-first", time.perf_counter() - began, items=args.items,
             note="the nodes compute and keep each chunk's summary")
        seconds, (_, mins, _) = median_of(args.repeat, lambda: envelope(a, 0, args.items, args.buckets))
        emit(rows, "neoarray/envelope", seconds, items=args.items, buckets=len(mins))
        # the written run's buckets: the envelope there equals numpy's on the run
        check = envelope(a, first, first + args.written, args.buckets)
        ref = envelopes.reference(written, 0, args.written, args.buckets)
        if not (np.array_equal(check[1], ref[1]) and np.array_equal(check[2], ref[2])):
            raise SystemExit("the envelope of the written run differs from numpy's")
        lo = first + args.written // 2
        seconds, _ = median_of(args.repeat, lambda: envelope(a, lo, lo + 10**6, args.buckets))
        emit(rows, "neoarray/envelope-zoom", seconds, items=10**6, buckets=args.buckets)
        api(rows, cluster, make_server, parse_args, args, "dashboard/api")

        began = time.perf_counter()
        summarized = a.keep_overview()
        tm.commit()
        emit(rows, "neoarray/overview-keep", time.perf_counter() - began, chunks=summarized,
             pages=a._overview.pages())
        envelope(a, 0, args.items, args.buckets, align=True)    # pages cached, as in a dashboard
        seconds, (_, mins, _) = median_of(args.repeat, lambda: envelope(a, 0, args.items, args.buckets,
                                                                            align=True))
        emit(rows, "neoarray/overview", seconds, items=args.items, buckets=len(mins),
             note="buckets of whole chunks, as the dashboard asks")
        seconds, (_, mins, _) = median_of(args.repeat, lambda: envelope(a, 0, args.items, args.buckets))
        emit(rows, "neoarray/overview-exact-edges", seconds, items=args.items, buckets=len(mins),
             note="the edges of bucket_starts: the chunks they cut reduced on the nodes")
        check = envelope(a, first, first + args.written, args.buckets)
        if not (np.array_equal(check[1], ref[1]) and np.array_equal(check[2], ref[2])):
            raise SystemExit("the envelope of the written run from the overview differs from numpy's")
        seconds, _ = median_of(args.repeat, lambda: envelope(a, lo, lo + 10**6, args.buckets))
        emit(rows, "neoarray/overview-zoom", seconds, items=10**6, buckets=args.buckets)
        tm.abort()
        conn.close()
        db.close()
        api(rows, cluster, make_server, parse_args, args, "dashboard/api-overview")
    finally:
        cluster.stop()
    seconds, _ = median_of(args.repeat, lambda: envelopes.reference(written, 0, args.written, args.buckets))
    emit(rows, "numpy", seconds, items=args.written, buckets=args.buckets, note="in memory")
    summary = {"items": args.items, "first_draw_s": rows["neoarray/envelope-first"]["value"],
               "draw_s": rows["neoarray/envelope"]["value"],
               "api_s": rows["dashboard/api"]["value"],
               "overview_draw_s": rows["neoarray/overview"]["value"],
               "overview_api_s": rows["dashboard/api-overview"]["value"],
               "neoarray_over_numpy_written": round(rows["neoarray/envelope"]["value"]
                                                    / rows["numpy"]["value"], 2)}
    print(json.dumps({"summary": summary}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=10**9)
    p.add_argument("--written", type=int, default=10**7, help="items of the fully written run")
    p.add_argument("--scattered", type=int, default=8, help="single chunks written elsewhere")
    p.add_argument("--chunk-items", type=int, default=1 << 17)
    p.add_argument("--buckets", type=int, default=1200)
    p.add_argument("--storages", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--write-items", type=int, default=2 * 10**7,
                   help="items written with and without an overview (0: skip)")
    p.add_argument("--quick", action="store_true", help="10**8 items, 10**6 written, 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.written, args.repeat = 10**8, 10**6, 3
    if not 0 < args.written <= args.items * 8 // 10:
        p.error("--written: 1 to 80% of --items")
    workdir = tempfile.mkdtemp(prefix="neoarray-dashboard-bench-")
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
