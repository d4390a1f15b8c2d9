"""Hot-set hit rate under full scans: the coloured cache against one plain LRU.

One process, one local cluster (1 master, 1 storage node), two arrays:

* ``hot``: ``--hot-mib`` MiB in chunks of ``--hot-chunk-kib`` KiB, colour ``hot``,
  read one random element at a time (each read needs its chunk);
* ``scan``: ten times the whole cache (``--scan-factor``), colour ``scan``, read
  chunk after chunk, in full, ``--scans`` times.

Each hot chunk is read once first (not counted: the figure is retention, not
compulsory misses).  Then hot reads and scanned chunks alternate (``--hot-reads-per-chunk`` hot reads after
each scanned chunk), on one thread, so every read is attributed exactly.  The same
workload runs twice in the same run, on two clients with the same budget
(``--cache-mib``):

* ``coloured``: the default colours (meta 10% LRU, hot 60% S3-FIFO, scan 30% FIFO);
* ``lru``: one LRU colour of the whole budget, every colour name aliased to it.

Clients read over gRPC (``local_reads=False``): with reads of a co-located node's
LMDB in place, the scan colour would not even copy its records, which would flatter
the coloured cache.

stdout: one JSON line per cache (hot hit rate, hits, misses, per-colour statistics),
then a summary line.  The goal is a hot hit rate of at least 95% with colours.

    python benchmarks/cache_bench.py            # 32 MiB cache, 320 MiB scanned x 3
    python benchmarks/cache_bench.py --quick
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


def build(cluster, args):
    """Write the two arrays; return their shapes (items)."""
    import transaction
    import ZODB

    import neoarray.array as na
    db = ZODB.DB(cluster.open_storage(cache_bytes_max=0, local_reads=False))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    hot_items = args.hot_mib * MIB // 8
    scan_items = int(args.scan_factor * args.cache_mib) * MIB // 8
    hot = na.zeros((hot_items,), chunks=(args.hot_chunk_kib * 1024 // 8,))
    hot.colour = "hot"
    hot[...] = np.arange(hot_items, dtype=np.float64)
    scan = na.zeros((scan_items,), chunks=(args.scan_chunk_mib * MIB // 8,))
    scan.colour = "scan"
    conn.root()["hot"], conn.root()["scan"] = hot, scan
    tm.commit()
    step = scan.chunks[0] * 16          # commit every 16 chunks: bounded transactions
    for start in range(0, scan_items, step):
        stop = min(start + step, scan_items)
        scan[start:stop] = np.arange(start, stop, dtype=np.float64)
        tm.commit()
    conn.close()
    db.close()
    return hot_items, scan_items


def run(cluster, args, name, storage_kwargs):
    """Run the workload on a fresh client; return its JSON-ready result."""
    import transaction
    import ZODB
    storage = cluster.open_storage(cache_bytes_max=args.cache_mib * MIB, local_reads=False,
                                   **storage_kwargs)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    hot, scan = conn.root()["hot"], conn.root()["scan"]
    hot_colour = storage._cache.colour("hot").name
    rng = np.random.default_rng(args.seed)
    chunk = scan.chunks[0]
    for start in range(0, hot.shape[0], hot.chunks[0]):     # warm-up, not counted:
        hot[start]                                          # the hot set is read once
    hits = misses = 0
    started = time.perf_counter()
    for _ in range(args.scans):
        for start in range(0, scan.shape[0], chunk):
            scan[start:start + chunk].sum()
            for _ in range(args.hot_reads_per_chunk):
                i = int(rng.integers(0, hot.shape[0]))
                before = storage.cache_stats()["colours"][hot_colour]["misses"]
                assert hot[i] == float(i)
                if storage.cache_stats()["colours"][hot_colour]["misses"] == before:
                    hits += 1
                else:
                    misses += 1
    seconds = time.perf_counter() - started
    stats = storage.cache_stats()
    tm.abort()
    conn.close()
    db.close()
    return {"cache": name, "hot_hit_rate": round(hits / max(1, hits + misses), 4),
            "hot_hits": hits, "hot_misses": misses, "seconds": round(seconds, 2),
            "bytes_max": stats["bytes_max"], "colours": stats["colours"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-mib", type=int, default=32)
    p.add_argument("--hot-mib", type=int, default=8, help="hot set size (fits the hot quota)")
    p.add_argument("--hot-chunk-kib", type=int, default=256)
    p.add_argument("--scan-factor", type=float, default=10.0, help="scanned array / cache size")
    p.add_argument("--scan-chunk-mib", type=int, default=1)
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--hot-reads-per-chunk", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="16 MiB cache, 4 MiB hot set, 2 scans")
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    args = p.parse_args(argv)
    if args.quick:
        args.cache_mib, args.hot_mib, args.scans = 16, 4, 2
    return args


def main(argv=None):
    from neoarray.cluster import LocalCluster
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="neoarray-cache-bench-", dir=args.dir)
    cluster = LocalCluster(os.path.join(workdir, "neo"), storages=1, replicas=0)
    try:
        cluster.start()
        hot_items, scan_items = build(cluster, args)
        print(json.dumps({"workload": {"cache_bytes_max": args.cache_mib * MIB,
                                       "hot_bytes": hot_items * 8, "scan_bytes": scan_items * 8,
                                       "scans": args.scans,
                                       "hot_reads_per_chunk": args.hot_reads_per_chunk}}), flush=True)
        results = {}
        for name, kwargs in (
                ("coloured", {}),
                ("lru", {"cache_colours": [("lru", 1, "lru")],
                         "cache_colour_aliases": {"meta": "lru", "hot": "lru", "scan": "lru"}})):
            results[name] = run(cluster, args, name, kwargs)
            print(json.dumps(results[name]), flush=True)
        coloured, lru = results["coloured"]["hot_hit_rate"], results["lru"]["hot_hit_rate"]
        print(json.dumps({"summary": {"hot_hit_rate_coloured": coloured, "hot_hit_rate_lru": lru,
                                      "goal_hot_hit_rate": 0.95, "goal_met": coloured >= 0.95}}),
              flush=True)
        print(f"| cache | hot hit rate |\n|---|---|\n| coloured | {coloured:.4f} |\n"
              f"| one LRU | {lru:.4f} |", file=sys.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
