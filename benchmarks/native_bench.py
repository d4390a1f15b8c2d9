"""Mapped views (``neoarray.vm``): first-touch fault cost, scans, write-back, peak RSS.

One process, one LocalCluster (1 master, 1 storage node on this host, so the client
reads its LMDB directly), under each fault mechanism (``uffd``: userfaultfd with
SIGBUS; ``mprotect``: the unprivileged fallback):

* ``fault_us``: one first touch of a chunk, per chunk size (1-D float64, slab
  layout: the chunk's bytes go straight into the pages), chunks touched in random
  order (no readahead), data in the client's cache or the storage node's LMDB, into
  ``fresh`` memory (never touched by the process) or ``recycled`` memory (the pages
  of evicted units, as in a scan); ``source=cache``: every chunk in the reader's cache
  before each run (a raw chunk's pages move from the cache into the view: no copy;
  ``fresh``: the budget holds every chunk, ``recycled``: 4 of them);
  ``source=lmdb``: none in it (read in the node's LMDB, copied once into the cache's
  page block); ``source=network``: none in it, read by a third client without local
  reads (as on another host: received straight into page blocks); ``source=memory``:
  the same from a detached
  array's chunks, in this process's memory (the mechanism alone, without the client's
  read path); ``source=memory-zstd``: the same chunks compressed with zstd (the
  decompression included); ``loader_share``: the share of the touches that reached
  the Python loader (the others the fault handler served alone, or readahead had
  loaded); ``fault_us_per_2mib`` scales
  it to 2 MiB (wendelin.core published 269-291 us per 2 MiB page); ``zero_fault_us``:
  one unit of an unwritten chunk (the shared zero page);
* ``scan``: ``numpy.sum`` over a view of the whole array (budget a quarter of it)
  against ``A[...].sum()`` and against ``numpy.memmap`` of the same bytes in a file
  (page cache warm), in GB/s, with ``ratio_vs_getitem`` (goal >= 0.8) and
  ``ratio_vs_memmap``;
* ``write_back``: ``transaction.commit()`` of a writable view whose every page was
  written, in GB/s, against ``A[...] = data; commit()``;
* ``peak_rss``: the scan's peak RSS above the process's RSS before it (VmHWM after
  ``clear_refs``), in MiB, with the budget.

stdout: one JSON line per figure (``bench``, ``system``, ``value``, ``unit``); medians
of ``--repeats`` runs.

    python benchmarks/native_bench.py            # 512 MiB array
    python benchmarks/native_bench.py --quick    # 64 MiB
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MIB = 1 << 20


def emit(bench, system, value, unit, **extra):
    print(json.dumps({"bench": bench, "system": system, "value": round(value, 4),
                      "unit": unit, **extra}), flush=True)


def median_time(func, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def status_bytes(name):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))


class Bench:
    def __init__(self, args, workdir):
        import transaction
        import ZODB

        from neoarray.cluster import LocalCluster
        self.args, self.workdir = args, workdir
        self.cluster = LocalCluster(os.path.join(workdir, "neo"), storages=1, replicas=0)
        self.cluster.start()
        self.db = ZODB.DB(self.cluster.open_storage())
        self.tm = transaction.TransactionManager()
        self.root = self.db.open(self.tm).root()
        # faults and scans read through a second client, as a reader process would
        # (its chunks are ghosts, read from the node's LMDB in place)
        self.reader_db = ZODB.DB(self.cluster.open_storage())
        self.reader_tm = transaction.TransactionManager()
        self.reader_root = self.reader_db.open(self.reader_tm).root()
        # and a client that reads everything over the network (as on another host)
        self.remote_db = ZODB.DB(self.cluster.open_storage(local_reads=False))
        self.remote_tm = transaction.TransactionManager()
        self.remote_root = self.remote_db.open(self.remote_tm).root()

    def warm(self, A):
        """A callable putting every chunk of ``A`` into its client's cache (a read of
        all of it)."""
        def read():
            self.reader_tm.begin()
            A[...]
        return read

    def remote(self, name):
        self.remote_db._storage.sync()
        self.remote_tm.begin()
        return self.remote_root[name]

    def close(self):
        self.tm.abort()
        self.reader_tm.abort()
        self.remote_tm.abort()
        self.remote_db.close()
        self.reader_db.close()
        self.db.close()
        self.cluster.stop()

    def reader(self, name):
        self.reader_db._storage.sync()      # it knows of the last commit
        self.reader_tm.begin()
        return self.reader_root[name]

    def array(self, name, nbytes, chunk_bytes, data=True):
        import neoarray.array as na
        n = nbytes // 8
        A = self.root[name] = na.ndarray((n,), dtype="float64", chunks=(chunk_bytes // 8,))
        if data:
            step = 16 * MIB // 8
            for start in range(0, n, step):
                A[start:start + step] = np.arange(start, min(n, start + step), dtype=np.float64)
                self.tm.savepoint()
        self.tm.commit()
        return A

    def faults(self, mode):
        import neoarray.array as na
        rng = np.random.default_rng(0)
        for chunk_kib in (64, 256, 1024, 2048, 4096):
            chunk = chunk_kib * 1024
            count = max(8, min(64, self.args.fault_mib * MIB // chunk))
            self.array(f"fault{chunk_kib}", count * chunk, chunk)
            stored = self.reader(f"fault{chunk_kib}")
            detached = na.ndarray(stored.shape, chunks=stored.chunks)
            detached[...] = np.arange(stored.size, dtype=np.float64)
            compressed = na.ndarray(stored.shape, chunks=stored.chunks, codec="zstd")
            compressed[...] = detached[...]
            order = rng.permutation(count)
            items = chunk // 8
            remote = self.remote(f"fault{chunk_kib}")
            for source, A, memory, budget, before in (
                    ("storage", stored, "fresh", count * chunk, None),
                    ("storage", stored, "recycled", 4 * chunk, None),
                    ("cache", stored, "fresh", count * chunk, self.warm(stored)),
                    ("cache", stored, "recycled", 4 * chunk, self.warm(stored)),
                    ("lmdb", stored, "recycled", 4 * chunk, self.reader_db),
                    ("network", remote, "recycled", 4 * chunk, self.remote_db),
                    ("memory", detached, "recycled", 4 * chunk, None),
                    ("memory-zstd", compressed, "recycled", 4 * chunk, None)):
                # fresh: every unit lands in memory never touched before; recycled: the
                # budget holds 4 units, so units go into the pages of evicted ones (a
                # scan's steady state).  storage: the reader client's chunks, read
                # through its cache (the first repeat from the node's LMDB); cache: all
                # in the client's cache before each repeat; lmdb, network: none in the
                # cache before each repeat (a client without local reads for network)
                per_fault, loader = [], []
                for _ in range(self.args.repeats):
                    if callable(before):
                        before()
                    elif before is not None:
                        before._storage._cache.clear()
                    with A.mapped(mode=mode, budget_bytes=budget) as v:
                        t0 = time.perf_counter()
                        for i in order:
                            v[i * items]
                        per_fault.append((time.perf_counter() - t0) / count)
                        loader.append(next(iter(A._v_views)).stats()["faults"] / count)
                us = statistics.median(per_fault) * 1e6
                emit("fault_us", mode, us, "us", chunk_kib=chunk_kib, memory=memory, source=source,
                     loader_share=round(statistics.median(loader), 3))
                emit("fault_us_per_2mib", mode, us * (2 * MIB) / chunk, "us", chunk_kib=chunk_kib,
                     memory=memory, source=source, wendelin_core_us=280)
        self.array("zeros", 64 * 2 * MIB, 2 * MIB, data=False)
        Z = self.reader("zeros")
        with Z.mapped(mode=mode) as v:
            t0 = time.perf_counter()
            for i in range(64):
                v[i * (2 * MIB // 8)]
            emit("zero_fault_us", mode, (time.perf_counter() - t0) / 64 * 1e6, "us", chunk_kib=2048)

    def scan(self, mode, A, memmap_path):
        nbytes = A.nbytes
        budget = nbytes // 4
        expected = (A.size - 1) * A.size / 2

        def view_sum():
            with A.mapped(mode=mode, budget_bytes=budget) as v:
                assert float(np.sum(v)) == expected

        def getitem_sum():
            assert float(A[...].sum()) == expected

        def memmap_sum():
            assert float(np.memmap(memmap_path, dtype="float64", mode="r").sum()) == expected
        memmap_sum()        # page cache warm
        results = {name: nbytes / median_time(f, self.args.repeats) / 1e9
                   for name, f in (("view", view_sum), ("getitem", getitem_sum),
                                   ("memmap", memmap_sum))}
        emit("scan", f"view-{mode}", results["view"], "GB/s",
             ratio_vs_getitem=round(results["view"] / results["getitem"], 3),
             ratio_vs_memmap=round(results["view"] / results["memmap"], 3))
        emit("scan", "getitem", results["getitem"], "GB/s")
        emit("scan", "memmap", results["memmap"], "GB/s")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_bytes("VmRSS:")
        view_sum()
        emit("peak_rss", f"view-{mode}", (status_bytes("VmHWM:") - before) / MIB, "MiB",
             budget_mib=budget / MIB, array_mib=nbytes / MIB)

    def write_back(self, mode, A):
        nbytes = A.nbytes
        rates, direct = [], []
        for r in range(self.args.repeats):
            with A.mapped(mode=mode, writable=True, budget_bytes=nbytes,
                          dirty_bytes_max=nbytes) as v:
                v[:] += 1.0
                t0 = time.perf_counter()
                self.tm.commit()
                rates.append(nbytes / (time.perf_counter() - t0) / 1e9)
            data = np.full(A.shape, float(r), dtype=np.float64)
            t0 = time.perf_counter()
            A[...] = data
            self.tm.commit()
            direct.append(nbytes / (time.perf_counter() - t0) / 1e9)
        emit("write_back", f"view-{mode}", statistics.median(rates), "GB/s",
             ratio_vs_setitem=round(statistics.median(rates) / statistics.median(direct), 3))
        emit("write_back", "setitem", statistics.median(direct), "GB/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the scanned array")
    parser.add_argument("--fault-mib", type=int, default=64, help="bytes faulted per chunk size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 16 MiB faulted, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.fault_mib, args.repeats = 64, 16, 1
    from neoarray import vm
    modes = [m for m in vm.MODES if vm.available()[m]]
    workdir = tempfile.mkdtemp(prefix="native-bench-")
    bench = Bench(args, workdir)
    try:
        for mode in modes:
            bench.faults(mode)
        A = bench.array("scan", args.mib * MIB, 2 * MIB)
        path = os.path.join(workdir, "scan.f64")
        np.arange(A.size, dtype=np.float64).tofile(path)
        for mode in modes:
            bench.scan(mode, bench.reader("scan"), path)
        for mode in modes:
            bench.write_back(mode, A)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
