"""numpy-style code on an array 16x larger than the client cache, in bounded memory.

Writes a float64 matrix ``A`` of ``--gib`` GiB (default 1: 16x the 64 MiB client cache)
into an embedded cluster, then runs plain numpy code on it with
``memory_bytes_max`` at the cache's size, so nothing may load the array whole:

    Z = (A - A.mean()) / A.std()       # a lazy expression: nothing read or stored
    Z.max(), Z[i, j]                   # computed chunk by chunk through the expression
    y = A @ x                          # a matrix-vector product, block by block
    c = np.cumsum(y)                   # a running sum with a carry across chunks
    np.percentile(A, [1, 50, 99])      # exact, in bounded selection passes
    na.store(np.sqrt(A) * 2, B)        # an expression written chunk by chunk

After each step it prints the time and the peak of the process's own memory
(anonymous RSS, sampled), which stays near the bound plus the interpreter whatever the
array's size, and checks each answer against numpy on the matrix's generating rule.

    python examples/numpy_style_demo.py [--gib 1] [--cache-mib 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import neoarray  # noqa: E402
import neoarray.array as na  # noqa: E402
from bounded_memory_demo import SAMPLER, peak_rss_mib  # noqa: E402

MIB = 1 << 20
COLUMNS = 64
PERIOD = 1000       # A[i, j] = ((i * COLUMNS + j) % PERIOD) / PERIOD


def step(label: str, started: float) -> float:
    now = time.perf_counter()
    print(f"  {label:<58s} {now - started:6.2f} s  peak anon {SAMPLER.peak_mib():5.0f} MiB  "
          f"peak RSS {peak_rss_mib():5.0f} MiB", flush=True)
    return now


def rule(lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of the matrix."""
    flat = np.arange(lo * COLUMNS, hi * COLUMNS)
    return ((flat % PERIOD) / PERIOD).reshape(hi - lo, COLUMNS)


def percentile_of_rule(items: int, q: float) -> float:
    """numpy's linear percentile of ``items`` values of the rule, from the counts of
    each value (the values are never materialised)."""
    period = np.arange(PERIOD) / PERIOD
    counts = np.full(PERIOD, items // PERIOD) + (np.arange(PERIOD) < items % PERIOD)
    last = np.cumsum(counts) - 1                    # sorted position of each value's last copy

    def at(k):
        return period[np.searchsorted(last, k)]
    position = q / 100 * (items - 1)
    low = int(np.floor(position))
    return at(low) + (position - low) * (at(min(low + 1, items - 1)) - at(low))


def write(conn, rows: int, window_rows: int):
    A = conn.root()["A"] = na.zeros((rows, COLUMNS), chunks=(MIB // COLUMNS, COLUMNS))   # 8 MiB chunks
    for lo in range(0, rows, window_rows):
        hi = min(lo + window_rows, rows)
        A[lo:hi] = rule(lo, hi)
        transaction.commit()
        conn.cacheMinimize()
    return A


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--cache-mib", type=int, default=64)
    p.add_argument("--window-mib", type=int, default=64)
    args = p.parse_args(argv)
    rows = int(args.gib * (1 << 30)) // (8 * COLUMNS)
    window_rows = max(1, args.window_mib * MIB // (8 * COLUMNS))
    bound = args.cache_mib * MIB
    tmpdir = tempfile.mkdtemp(prefix="neoarray-numpy-style-")
    print(f"A: {rows} x {COLUMNS} float64, {rows * COLUMNS * 8 / 2**30:.2f} GiB; client cache and "
          f"memory_bytes_max: {args.cache_mib} MiB")
    SAMPLER.start()
    try:
        db = neoarray.open(tmpdir, cache_bytes_max=bound)
        try:
            conn = db.open()
            t = time.perf_counter()
            A = write(conn, rows, window_rows)
            t = step("write A, one commit per window", t)
            # what numpy says on the generating rule (one period, repeated)
            items = rows * COLUMNS
            period = (np.arange(PERIOD) % PERIOD) / PERIOD
            whole, rest = divmod(items, PERIOD)
            mean = (period.sum() * whole + period[:rest].sum()) / items
            with na.configure(memory_bytes_max=bound):
                Z = (A - A.mean()) / A.std()
                t = step(f"Z = (A - A.mean()) / A.std(): {type(Z).__name__}, nothing stored", t)
                assert abs(A.mean() - mean) < 1e-9
                z_max = float(Z.max())
                t = step(f"Z.max() = {z_max:.6f}", t)
                i = rows // 2
                assert np.allclose(Z[i], (rule(i, i + 1)[0] - A.mean()) / A.std())
                x = np.linspace(-1.0, 1.0, COLUMNS)
                y = A @ x
                t = step(f"y = A @ x: {type(y).__name__} of shape {y.shape}", t)
                assert np.allclose(y[:5], rule(0, 5) @ x) and np.allclose(y[-3:], rule(rows - 3, rows) @ x)
                c = np.cumsum(y)
                t = step(f"c = np.cumsum(y): c[-1] = {float(c[-1]):.4f}", t)
                assert np.isclose(float(c[-1]), float(y.sum()))
                q = np.percentile(A, [1, 50, 99])
                t = step(f"np.percentile(A, [1, 50, 99]) = {np.round(q, 4).tolist()}", t)
                assert np.allclose(q, [percentile_of_rule(items, v) for v in (1, 50, 99)])
                B = conn.root()["B"] = na.zeros(A.shape, chunks=A.chunks)
                conn.add(B)     # attached now: a long write spills to savepoints, in bounded memory
                na.store(np.sqrt(A) * 2, B)
                t = step("na.store(np.sqrt(A) * 2, B)", t)
                transaction.commit()
                t = step("commit", t)
                assert np.allclose(B[-2:], np.sqrt(rule(rows - 2, rows)) * 2)
            conn.close()
        finally:
            db.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"peak anonymous memory {SAMPLER.peak_mib():.0f} MiB for a {rows * COLUMNS * 8 / 2**20:.0f} MiB array "
          f"(memory_bytes_max {args.cache_mib} MiB)")


if __name__ == "__main__":
    main()
