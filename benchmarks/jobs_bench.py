"""Parallel jobs: sum, std and histogram of one array through every executor, and peers.

One run, one machine, the same float64 data (``--gib``, default 4 GiB, normal
random numbers, chunks of ``--chunk-mib``):

* ``neoarray/<executor>``: ``neoarray.jobs.reduce`` of the array stored on a local
  cluster (1 master, ``--storages`` storage nodes), executors ``threads``,
  ``processes``, ``dask`` and ``storage`` (``--executors``), ``--workers`` each.
  The job client's cache holds the whole array (colour ``hot``) and is warmed by one
  untimed pass: ``threads`` and ``storage`` then read warm; the ``processes`` and
  ``dask`` workers are separate clients (``--worker-cache-mib`` each) that read the
  storage node's LMDB in place when it runs on this host; they are warmed too.
* ``numpy``: the same data in memory (``np.sum``, ``np.std``, ``np.histogram``).
* ``dask.array/zarr``: ``dask.array.from_zarr`` over a zarr copy of the data
  (``--chunk-mib`` chunks, default zarr compression), Dask's threaded scheduler
  with ``--workers`` threads, page cache warm.

Each figure is the best of ``--repeat`` runs, in GB/s of array bytes (histogram:
64 bins over a fixed range).  For the ``storage`` executor the bytes that crossed
the network (gRPC messages of the job client: requests and replies) are counted and
given as a fraction of the array's bytes.

stdout: one JSON line per (operation, system), then a summary line with the ratios
neoarray/threads : numpy (goal: at least 0.8, i.e. within 1.25x) and the storage
executor's network fraction (goal: below 1%), and a Markdown table.

    python benchmarks/jobs_bench.py                 # 4 GiB
    python benchmarks/jobs_bench.py --quick         # 256 MiB, 2 repeats
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MIB = 1 << 20
OPS = ("sum", "std", "histogram")
EXECUTORS = ("threads", "processes", "dask", "storage")
BINS, RANGE = 64, (-5.0, 5.0)


def emit(results, op, system, seconds, nbytes, **extra):
    row = {"bench": op, "system": system, "value": round(nbytes / seconds / 1e9, 4),
           "unit": "GB/s", "seconds": round(seconds, 4), **extra}
    results.setdefault(op, {})[system] = row
    print(json.dumps(row), flush=True)


def best_of(repeat, fn):
    best, value = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, value


def make_data(n, chunk_items):
    x = np.empty(n, dtype=np.float64)
    rng = np.random.default_rng(42)
    for start in range(0, n, chunk_items):
        stop = min(n, start + chunk_items)
        x[start:stop] = rng.standard_normal(stop - start)
    return x


def numpy_ops(x):
    return {"sum": lambda: float(np.sum(x)), "std": lambda: float(np.std(x)),
            "histogram": lambda: np.histogram(x, BINS, RANGE)[0]}


def check(op, got, ref):
    if op == "histogram":
        if not np.array_equal(np.asarray(got), np.asarray(ref)):
            raise SystemExit(f"histogram differs from numpy's: {got} vs {ref}")
    elif not np.isclose(got, ref, rtol=1e-9, atol=1e-6):
        raise SystemExit(f"{op} = {got}, numpy says {ref}")


def neo_runs(args, workdir, x, results, refs):
    import transaction
    import ZODB

    import neoarray.array as na
    from neoarray import kernels
    from neoarray.cluster import LocalCluster
    kernels.warm_up()
    nbytes = x.nbytes
    cluster = LocalCluster(os.path.join(workdir, "neo"), storages=args.storages, replicas=0)
    cluster.start()
    try:
        cache = int(nbytes * 1.1) + 64 * MIB
        db = ZODB.DB(cluster.open_storage(cache_bytes_max=cache))
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        a = na.zeros(x.shape, chunks=(args.chunk_items,))
        conn.root()["a"] = a
        for start in range(0, x.size, 16 * args.chunk_items):     # bounded transactions
            a[start:start + 16 * args.chunk_items] = x[start:start + 16 * args.chunk_items]
            tm.commit()
        conn.cacheMinimize()
        print(json.dumps({"setup": "neoarray written", "chunks": len(list(a.chunk_keys()))}),
              flush=True)
        for name in args.executors:
            run_executor(args, db, a, name, results, refs, nbytes)
        tm.abort()
        conn.close()
        db.close()
    finally:
        cluster.stop()


def executor_factory(args, db, name):
    """``(make, close)``: a function giving the executor of each job, and the cleanup."""
    from neoarray.jobs import executors
    worker_cache = int(args.worker_cache_mib * MIB)
    if name == "dask":
        import distributed
        client = distributed.Client(distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            dashboard_address=None))

        def close():
            cluster = client.cluster
            client.close()
            cluster.close()
        return (lambda: executors.DaskExecutor(db, scheduler=client,
                                               cache_bytes_max=worker_cache)), close
    if name == "processes":
        pool = executors.ProcessExecutor(db, workers=args.workers, cache_bytes_max=worker_cache)
        pool_close, pool.close = pool.close, lambda: None   # keep the workers between jobs
        return (lambda: pool), pool_close
    return (lambda: name), (lambda: None)


def run_executor(args, db, a, name, results, refs, nbytes):
    """Time every operation through executor ``name``."""
    from neoarray import jobs
    make, close = executor_factory(args, db, name)
    try:
        for op in OPS:
            kwargs = {"bins": BINS, "range": RANGE} if op == "histogram" else {}

            def run(op=op, kwargs=kwargs):
                return jobs.reduce(a, op, executor=make(), workers=args.workers, stats=True,
                                   **kwargs)
            run()                          # warm: caches, worker processes, Numba
            seconds, result = best_of(args.repeat, run)
            check(op, result.value[0] if op == "histogram" else result.value, refs[op])
            net = result.stats["network"]
            moved = net.get("sent_bytes", 0) + net.get("received_bytes", 0)
            emit(results, op, f"neoarray/{name}", seconds, nbytes, network_bytes=moved,
                 network_fraction=round(moved / nbytes, 8))
    finally:
        close()


def dask_zarr_runs(args, workdir, x, results, refs):
    import dask
    import dask.array as da
    import zarr
    path = os.path.join(workdir, "data.zarr")
    z = zarr.create_array(path, shape=x.shape, chunks=(args.chunk_items,), dtype=x.dtype)
    for start in range(0, x.size, 16 * args.chunk_items):
        z[start:start + 16 * args.chunk_items] = x[start:start + 16 * args.chunk_items]
    d = da.from_zarr(path)
    ops = {"sum": lambda: float(d.sum().compute()), "std": lambda: float(d.std().compute()),
           "histogram": lambda: da.histogram(d, bins=BINS, range=RANGE)[0].compute()}
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        for op in OPS:
            ops[op]()
            seconds, value = best_of(args.repeat, ops[op])
            check(op, value, refs[op])
            emit(results, op, "dask.array/zarr", seconds, x.nbytes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="256 MiB, 2 repeats")
    p.add_argument("--chunk-mib", type=float, default=8.0)
    p.add_argument("--executors", default=",".join(EXECUTORS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--storages", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker-cache-mib", type=float, default=64)
    p.add_argument("--no-peers", action="store_true", help="neoarray only")
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    args = p.parse_args(argv)
    if args.quick:
        args.gib, args.repeat = 0.25, 2
    args.executors = [e for e in args.executors.split(",") if e]
    unknown = set(args.executors) - set(EXECUTORS)
    if unknown:
        p.error(f"unknown executors {sorted(unknown)}")
    args.chunk_items = int(args.chunk_mib * MIB) // 8
    n = int(args.gib * (1 << 30)) // 8
    workdir = tempfile.mkdtemp(prefix="neoarray-jobs-bench-", dir=args.dir)
    results: dict = {}
    try:
        x = make_data(n, args.chunk_items)
        print(json.dumps({"setup": "data", "gib": round(x.nbytes / (1 << 30), 3),
                          "chunk_mib": args.chunk_mib, "workers": args.workers,
                          "cpus": os.cpu_count()}), flush=True)
        refs = {}
        for op, fn in numpy_ops(x).items():
            fn()
            seconds, refs[op] = best_of(args.repeat, fn)
            emit(results, op, "numpy", seconds, x.nbytes)
        if not args.no_peers:
            dask_zarr_runs(args, workdir, x, results, refs)
        neo_runs(args, workdir, x, results, refs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {"threads_vs_numpy": {}, "storage_network_fraction": None}
    for op in OPS:
        row = results.get(op, {})
        if "neoarray/threads" in row and "numpy" in row:
            summary["threads_vs_numpy"][op] = round(row["neoarray/threads"]["value"]
                                                    / row["numpy"]["value"], 3)
        if "neoarray/storage" in row:
            summary["storage_network_fraction"] = max(
                summary["storage_network_fraction"] or 0.0,
                row["neoarray/storage"]["network_fraction"])
    summary["goal_threads_within_1.25x_numpy"] = bool(summary["threads_vs_numpy"]) and all(
        r >= 0.8 for r in summary["threads_vs_numpy"].values())
    summary["goal_storage_network_below_1pct"] = (summary["storage_network_fraction"] is not None
                                                  and summary["storage_network_fraction"] < 0.01)
    print(json.dumps({"summary": summary}), flush=True)
    systems = sorted({s for row in results.values() for s in row})
    print("| system | " + " | ".join(f"{op} (GB/s)" for op in OPS) + " |")
    print("|---|" + "---|" * len(OPS))
    for system in systems:
        cells = [f"{results[op][system]['value']:.3f}" if system in results.get(op, {}) else "-"
                 for op in OPS]
        print(f"| {system} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
