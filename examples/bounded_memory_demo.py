"""Process an array much larger than the client cache, in bounded memory.

Writes a float64 array of ``--gib`` GiB (default 1: 16x the 64 MiB client
cache ``cache_bytes_max``) in windows, one commit each, into an embedded cluster;
then sums and averages it chunk by chunk (``A.sum()``, ``A.std()``) and computes
``B = sqrt(A)`` window by window into a new persistent array.  After each phase
it prints the peak of the process's own memory (anonymous RSS, sampled) and the
peak RSS of ``resource.getrusage``, which also counts the pages of the storage
node's LMDB file mapped by local reads (shared, reclaimable page cache).  The
former stays near a few windows plus the interpreter, whatever the array size.

    python examples/bounded_memory_demo.py [--gib 1] [--window-mib 128]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import neoarray  # noqa: E402
import neoarray.array as na  # noqa: E402

MIB = 1 << 20


def peak_rss_mib() -> float:
    """Peak resident memory: includes pages of the storage node's LMDB file that
    local reads mapped (shared page cache, reclaimable), not only our own memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class AnonSampler(threading.Thread):
    """Peak of the process's own (anonymous) resident memory, sampled every 5 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kib = 0
        self.stopped = threading.Event()

    @staticmethod
    def anon_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def run(self):
        while not self.stopped.wait(0.005):
            self.peak_kib = max(self.peak_kib, self.anon_kib())

    def peak_mib(self) -> float:
        return max(self.peak_kib, self.anon_kib()) / 1024


SAMPLER = AnonSampler()


def report(label: str, started: float, nbytes: int) -> float:
    now = time.perf_counter()
    seconds = now - started
    print(f"  {label:<30s} {seconds:6.2f} s {nbytes / seconds / 1e9:5.2f} GB/s  "
          f"peak anon {SAMPLER.peak_mib():5.0f} MiB  peak RSS {peak_rss_mib():5.0f} MiB")
    return now


def windows(n: int, rows: int):
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def write(conn, n: int, rows: int) -> None:
    """A[i] = i % 1000 / 1000, written and committed one window at a time."""
    A = conn.root()["A"] = na.zeros(n, chunks=MIB)      # 8 MiB chunks
    for lo, hi in windows(n, rows):
        A[lo:hi] = (np.arange(lo, hi) % 1000) / 1000.0
        transaction.commit()
        conn.cacheMinimize()


def sqrt_into_new_array(conn, rows: int) -> None:
    """B = sqrt(A), one window (read, compute, write, commit) at a time."""
    A = conn.root()["A"]
    B = conn.root()["B"] = na.zeros(A.shape, chunks=A.chunks)
    for lo, hi in windows(A.shape[0], rows):
        B[lo:hi] = np.sqrt(A[lo:hi])
        transaction.commit()
        conn.cacheMinimize()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--window-mib", type=int, default=128)
    p.add_argument("--cache-mib", type=int, default=64)
    args = p.parse_args(argv)
    n = int(args.gib * (1 << 30)) // 8
    rows = args.window_mib * MIB // 8
    nbytes = n * 8
    tmpdir = tempfile.mkdtemp(prefix="neoarray-bounded-")
    print(f"array: {nbytes / 2**30:.2f} GiB float64; client cache: {args.cache_mib} MiB; "
          f"window: {args.window_mib} MiB; fetch batches: {na.config.fetch_bytes_max // MIB} MiB")
    SAMPLER.start()
    print(f"  {'start':<30s} {'':22s}  peak anon {SAMPLER.peak_mib():5.0f} MiB  "
          f"peak RSS {peak_rss_mib():5.0f} MiB")
    try:
        db = neoarray.open(tmpdir, cache_bytes_max=args.cache_mib * MIB)
        try:
            conn = db.open()
            t = time.perf_counter()
            write(conn, n, rows)
            t = report("write + commit per window", t, nbytes)
            total = conn.root()["A"].sum()
            t = report(f"A.sum() = {total:.1f}", t, nbytes)
            std = conn.root()["A"].std()
            t = report(f"A.std() = {std:.6f}", t, nbytes)
            sqrt_into_new_array(conn, rows)
            t = report("B = sqrt(A), window by window", t, 2 * nbytes)
            check = conn.root()["B"].sum()
            report(f"B.sum() = {check:.1f}", t, nbytes)
            expected = np.sqrt((np.arange(1000) / 1000.0)).sum() * (n // 1000) + np.sqrt(
                np.arange(n % 1000) / 1000.0).sum()
            assert abs(check - expected) < 1e-6 * expected, (check, expected)
            print(f"client cache: {db.storage.cache_stats()}")
            conn.close()
        finally:
            db.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"peak anonymous memory {SAMPLER.peak_mib():.0f} MiB, peak RSS {peak_rss_mib():.0f} MiB "
          f"(with mapped LMDB pages) for {nbytes / 2**20:.0f} MiB of data "
          f"({2 * nbytes / 2**20:.0f} MiB written)")


if __name__ == "__main__":
    main()
