"""neoarray among PyData peers: Dask sums over a distributed cluster, and numcodecs codecs
against zarr, on the same data in one run.

Data: a smooth float64 field plus noise, rounded to 1e-3 (what measured values look
like: compressible, not trivially), 1-D, chunks of ``--chunk-mib``.

* ``dask-sum``: ``A.to_dask().sum()`` of a neoarray array stored on a local cluster (1
  master, 1 storage node, no compression), computed by a Dask distributed
  ``LocalCluster`` of ``--dask-workers`` worker processes (1 thread each): every task
  unpickles the array's handle and reads its chunk from the cluster.  Peer:
  ``dask.array.from_zarr`` over a zarr v3 copy on local disk (same chunks, no
  compression either), on the same Dask cluster.  ``--gib`` of data (default 4 GiB).
* ``codec-write`` / ``codec-read`` / ``codec-ratio``: for each codec (zlib level 6,
  blosc lz4 level 5 with byte shuffle, zstd level 0 = numcodecs' default, lz4), write
  ``--codec-gib`` of the data into a new neoarray array with that codec (commits of
  16 chunks) and read it back (a fresh connection, client cache off), against a zarr
  v3 array on local disk with the same compressor and configuration (built from the
  neoarray codec spec by ``neoarray.array.zarrs``, what ``A.to_zarr`` writes).  Rates
  in MB/s (1e6 bytes of raw items per second); ratio = raw bytes / compressed chunk
  bytes (neoarray: the stored chunk payloads; zarr: the chunk files).

Figures are medians of ``--repeat`` runs after one warm-up run (reads; each write is
a new array).  The page cache is warm for both sides.  stdout: one JSON line per
figure, a summary line of the ratios neoarray : peer, and a Markdown table.

    python benchmarks/pydata_bench.py                  # 4 GiB for the Dask sum, 1 GiB per codec
    python benchmarks/pydata_bench.py --gib 0.25       # small: codecs on min(--gib, --codec-gib)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.timing import median_of

MIB = 1 << 20
CODECS = ("zlib", "blosc", "zstd", "lz4")
SLAB_CHUNKS = 16                    # chunks per write (and per commit) and per read


def emit(rows, bench, system, value, unit, **extra):
    row = {"bench": bench, "system": system, "value": round(value, 4), "unit": unit, **extra}
    rows.append(row)
    print(json.dumps(row), flush=True)


def make_data(n, chunk_items):
    """Smooth field + noise, rounded to 1e-3, built a chunk at a time."""
    x = np.empty(n, dtype=np.float64)
    rng = np.random.default_rng(7)
    for start in range(0, n, chunk_items):
        i = np.arange(start, min(n, start + chunk_items), dtype=np.float64)
        field = 20.0 + 10.0 * np.sin(i * 2e-5) + 3.0 * np.sin(i * 7e-4)
        x[start:start + i.size] = np.round(field + rng.normal(0.0, 0.05, i.size), 3)
    return x


def slabs(n, chunk_items):
    step = SLAB_CHUNKS * chunk_items
    return [(s, min(n, s + step)) for s in range(0, n, step)]


# ---------------------------------------------------------------------- (a) Dask sums

def dask_sums(args, workdir, x, db, rows):
    import dask.array as da
    import distributed
    import transaction
    import zarr

    import neoarray.array as na
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    a = conn.root()["a"] = na.zeros(x.shape, chunks=(args.chunk_items,))
    for start, stop in slabs(x.size, args.chunk_items):
        a[start:stop] = x[start:stop]
        tm.commit()
    path = os.path.join(workdir, "sum.zarr")
    z = zarr.create_array(path, shape=x.shape, chunks=(args.chunk_items,), dtype=x.dtype,
                          compressors=None, zarr_format=3)
    for start, stop in slabs(x.size, args.chunk_items):
        z[start:stop] = x[start:stop]
    expected = float(np.sum(x))
    cluster = distributed.LocalCluster(n_workers=args.dask_workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        peers = {"neoarray": a.to_dask(), "dask.array/zarr": da.from_zarr(path)}
        for system, darr in peers.items():
            seconds, total = median_of(args.repeat, lambda d=darr: float(client.compute(d.sum()).result()), warm=True)
            if not np.isclose(total, expected, rtol=1e-9):
                raise SystemExit(f"{system}: sum {total}, numpy says {expected}")
            emit(rows, "dask-sum", system, x.nbytes / seconds / 1e9, "GB/s",
                 seconds=round(seconds, 4), tasks=darr.npartitions, workers=args.dask_workers)
    finally:
        client.close()
        cluster.close()
        tm.abort()
        conn.close()


# ---------------------------------------------------------------------- (b) codecs

def neo_codec(args, db, storage_read, x, codec, rows):
    import transaction

    import neoarray.array as na
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    names = []

    def write():
        name = f"{codec}-{len(names)}"
        names.append(name)
        a = conn.root()[name] = na.zeros(x.shape, chunks=(args.chunk_items,), codec=codec)
        for start, stop in slabs(x.size, args.chunk_items):
            a[start:stop] = x[start:stop]
            tm.commit()
        return a
    seconds, a = median_of(args.repeat, write)
    emit(rows, "codec-write", f"neoarray/{codec}", x.nbytes / seconds / 1e6, "MB/s",
         seconds=round(seconds, 4))
    stored = sum(len(chunk.payload) for chunk in a._tree.values())
    emit(rows, "codec-ratio", f"neoarray/{codec}", x.nbytes / stored, "x", stored_bytes=stored)
    spec = a.codec
    tm.abort()
    conn.close()

    import ZODB
    rdb = ZODB.DB(storage_read())
    rtm = transaction.TransactionManager()
    rconn = rdb.open(rtm)
    b = rconn.root()[names[-1]]

    def read():
        total = 0.0
        for start, stop in slabs(x.size, args.chunk_items):
            total += float(b[start:stop].sum())
        rconn.cacheMinimize()
        return total
    seconds, total = median_of(args.repeat, read, warm=True)
    if not np.isclose(total, float(np.sum(x)), rtol=1e-9):
        raise SystemExit(f"neoarray/{codec}: read back a different sum")
    emit(rows, "codec-read", f"neoarray/{codec}", x.nbytes / seconds / 1e6, "MB/s",
         seconds=round(seconds, 4))
    rtm.abort()
    rconn.close()
    rdb.close()
    conn = db.open(tm)
    for name in names:                  # bounded disk: these arrays go, and pack removes them
        del conn.root()[name]
    tm.commit()
    conn.close()
    db.pack()
    return spec


def zarr_codec(args, workdir, x, codec, spec, rows):
    import zarr

    from neoarray.array import zarrs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # numcodecs codecs outside the zarr 3 spec: known
        compressor = zarrs._compressors(spec, x.dtype, 3)
    paths = []

    def write():
        path = os.path.join(workdir, f"{codec}-{len(paths)}.zarr")
        paths.append(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = zarr.create_array(path, shape=x.shape, chunks=(args.chunk_items,), dtype=x.dtype,
                                  compressors=compressor, filters=None, zarr_format=3)
        for start, stop in slabs(x.size, args.chunk_items):
            z[start:stop] = x[start:stop]
        return path
    seconds, path = median_of(args.repeat, write)
    emit(rows, "codec-write", f"zarr/{codec}", x.nbytes / seconds / 1e6, "MB/s",
         seconds=round(seconds, 4))
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                 for f in files if f != "zarr.json")
    emit(rows, "codec-ratio", f"zarr/{codec}", x.nbytes / stored, "x", stored_bytes=stored)
    z = zarr.open_array(path, mode="r")

    def read():
        return sum(float(z[start:stop].sum()) for start, stop in slabs(x.size, args.chunk_items))
    seconds, total = median_of(args.repeat, read, warm=True)
    if not np.isclose(total, float(np.sum(x)), rtol=1e-9):
        raise SystemExit(f"zarr/{codec}: read back a different sum")
    emit(rows, "codec-read", f"zarr/{codec}", x.nbytes / seconds / 1e6, "MB/s",
         seconds=round(seconds, 4))
    for old in paths:
        shutil.rmtree(old, ignore_errors=True)


def codec_runs(args, workdir, cluster, x, rows):
    import ZODB
    db = ZODB.DB(cluster.open_storage())
    try:
        for codec in args.codecs:
            spec = neo_codec(args, db, lambda: cluster.open_storage(cache_bytes_max=0), x, codec, rows)
            zarr_codec(args, workdir, x, codec, spec, rows)
    finally:
        db.close()


# ---------------------------------------------------------------------- main

def summary_of(rows):
    by = {(r["bench"], r["system"]): r["value"] for r in rows}
    ratios = {}
    neo, peer = by.get(("dask-sum", "neoarray")), by.get(("dask-sum", "dask.array/zarr"))
    if neo and peer:
        ratios["dask-sum"] = round(neo / peer, 3)
    for bench in ("codec-write", "codec-read", "codec-ratio"):
        for (b, system), value in by.items():
            if b == bench and system.startswith("neoarray/"):
                codec = system.split("/", 1)[1]
                other = by.get((bench, f"zarr/{codec}"))
                if other:
                    ratios[f"{bench}/{codec}"] = round(value / other, 3)
    return ratios


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=4.0, help="data of the Dask sums")
    p.add_argument("--codec-gib", type=float, default=1.0, help="data per codec (at most --gib)")
    p.add_argument("--chunk-mib", type=float, default=8.0)
    p.add_argument("--dask-workers", type=int, default=2)
    p.add_argument("--codecs", default=",".join(CODECS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip", choices=("dask", "codecs"), action="append", default=[])
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    args = p.parse_args(argv)
    args.codecs = [c for c in args.codecs.split(",") if c]
    if set(args.codecs) - set(CODECS):
        p.error(f"unknown codecs {sorted(set(args.codecs) - set(CODECS))} (known: {', '.join(CODECS)})")
    if args.gib <= 0 or args.repeat < 1:
        p.error("--gib must be > 0 and --repeat >= 1")
    args.chunk_items = max(1, int(args.chunk_mib * MIB) // 8)
    n = int(args.gib * (1 << 30)) // 8
    n_codec = min(n, int(args.codec_gib * (1 << 30)) // 8)
    workdir = tempfile.mkdtemp(prefix="neoarray-pydata-bench-", dir=args.dir)
    rows: list = []

    import ZODB

    from neoarray.cluster import LocalCluster
    cluster = LocalCluster(os.path.join(workdir, "neo"), storages=1, replicas=0)
    cluster.start()
    try:
        x = make_data(n, args.chunk_items)
        print(json.dumps({"setup": "data", "gib": round(x.nbytes / (1 << 30), 3),
                          "codec_gib": round(n_codec * 8 / (1 << 30), 3), "chunk_mib": args.chunk_mib,
                          "cpus": os.cpu_count(), "repeat": args.repeat}), flush=True)
        if "dask" not in args.skip:
            db = ZODB.DB(cluster.open_storage())
            try:
                dask_sums(args, workdir, x, db, rows)
            finally:
                db.close()
        if "codecs" not in args.skip:
            codec_runs(args, workdir, cluster, x[:n_codec], rows)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"summary": {"neoarray_vs_peer": summary_of(rows)}}), flush=True)
    print("| bench | system | value | unit |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['bench']} | {r['system']} | {r['value']} | {r['unit']} |")


if __name__ == "__main__":
    main()
