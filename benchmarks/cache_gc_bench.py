"""What the client cache costs Python's garbage collector, and its speed per record.

A client process that caches many records (``neoarray.client.cache.ColouredCache``)
must not make every full collection of the process longer by one object per record:
ZODB triggers full collections as its objects grow, and each walks every object the
collector tracks.  For ``--records`` N records of ``--record-bytes`` bytes, committed
into a cache of each policy (``lru``, ``s3fifo``, ``fifo``), hit once each, then
collected twice (tuples of atoms are untracked by the first collection that sees
them), in one process:

``tracked_per_record``  objects the collector tracks, added per cached record
``full_gc_ms``          the median time of ``gc.collect()`` with the cache alive
``get_ns``              a cache hit (``get``), median per record
``committed_ns``        a new record put by ``committed`` (a commit's own records)

The peer, in the same run: ``dict``, the same records in a plain ``{oid: bytes}``
(what holding them costs at least).  The summary gives the cache's ``full_gc_ms``
over the peer's.  stdout: one JSON line per figure, then ``{"summary": ...}``.

    python benchmarks/cache_gc_bench.py                 # 200,000 records
    python benchmarks/cache_gc_bench.py --quick
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

POLICIES = ("lru", "s3fifo", "fifo")


def _p64(i: int) -> bytes:
    return i.to_bytes(8, "big")


def _full_gc_ms(reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _settled_count() -> int:
    gc.collect()
    gc.collect()
    return len(gc.get_objects())


def measure(kind: str, n: int, record_bytes: int, gc_reps: int) -> dict:
    """The figures of ``kind`` (a policy, or ``dict``) holding ``n`` records."""
    from neoarray.client.cache import ColouredCache
    oids = [_p64(i) for i in range(1, n + 1)]
    records = [(oid, os.urandom(record_bytes)) for oid in oids]
    before = _settled_count()
    base_ms = _full_gc_ms(gc_reps)
    t0 = time.perf_counter()
    if kind == "dict":
        holder = dict(records)
        committed_ns = (time.perf_counter() - t0) / n * 1e9
        t0 = time.perf_counter()
        for oid in oids:
            holder.get(oid)
    else:
        holder = ColouredCache(n * (record_bytes + 200), [("only", 1, kind)], default_colour="only")
        holder.committed(records, _p64(10))
        committed_ns = (time.perf_counter() - t0) / n * 1e9
        before_tid = _p64(1 << 62)
        t0 = time.perf_counter()
        for oid in oids:
            holder.get(oid, before_tid)
    get_ns = (time.perf_counter() - t0) / n * 1e9
    del records
    tracked = _settled_count() - before
    out = {"tracked_per_record": tracked / n, "full_gc_ms": _full_gc_ms(gc_reps),
           "full_gc_ms_without": base_ms, "get_ns": get_ns, "committed_ns": committed_ns}
    del holder
    gc.collect()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--record-bytes", type=int, default=100)
    p.add_argument("--gc-reps", type=int, default=5, help="full collections timed per figure (median)")
    p.add_argument("--quick", action="store_true", help="20,000 records")
    args = p.parse_args(argv)
    n = 20_000 if args.quick else args.records
    results = {}
    for kind in ("dict", *POLICIES):
        results[kind] = figures = measure(kind, n, args.record_bytes, args.gc_reps)
        for name, value in figures.items():
            print(json.dumps({"bench": "cache_gc", "system": kind, "figure": name, "value": round(value, 3),
                              "records": n}))
    peer = results["dict"]["full_gc_ms"]
    print(json.dumps({"summary": {
        "full_gc_ms_vs_dict": {k: round(results[k]["full_gc_ms"] / peer, 3) if peer else None for k in POLICIES},
        "tracked_per_record": {k: round(results[k]["tracked_per_record"], 4) for k in POLICIES},
        "records": n, "meaning": "full_gc_ms_vs_dict: a full collection with the cache alive over one with "
                                 "the same records in a plain dict (1: the cache adds nothing to collect)"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
