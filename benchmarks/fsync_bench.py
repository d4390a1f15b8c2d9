"""What one durable commit costs the disk: the fsync each system makes per commit.

neoarray's storage node makes a small commit durable with one ``LMDBStore.sync`` (an
fdatasync of LMDB's data file, pages rewritten in place); FileStorage, under ZEO, with
an append to its file and an ``fsync``.  A sequential client cannot commit faster than
one of these per commit, so the ratios of ``zodb_bench.py``'s small commits move with
them: this script measures both side by side, alternating, on the directory given (the
disk the nodes and ZEO write to).

Then what an fsync waits for: ``scattered_N`` writes N 4 KiB pages at random places of
a preallocated file (as LMDB rewrites the pages of a commit, in place, wherever they
are) and fdatasyncs it, for N = 1, 2, 4, 8, 16: each page is a write request of its
own, and the slope is what one more page that a commit dirties costs it (the lock of
a small commit on a storage node dirties about 10; FileStorage appends 1-3 contiguous
ones).

Output: one JSON object per round and system (``{"bench": "fsync", "system", "round",
"median_ms", "p90_ms", "syncs"}``), then ``{"summary": ...}`` with the medians over the
rounds, their ratio, and ``us_per_scattered_page`` (the least-squares slope over N).

Run::

    python benchmarks/fsync_bench.py                      # in a temporary directory
    python benchmarks/fsync_bench.py --dir /var/lib/neoarray --syncs 500 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time

from neoarray.kv import LMDBStore

RECORD_BYTES = 200          # about a small commit's record
KEYS = 64                   # keys rewritten in turn (LMDB rewrites pages in place)


def lmdb_sync(store: LMDBStore, i: int) -> float:
    """Seconds of the sync that makes one small write durable."""
    with store.write() as txn:
        txn.put("config", b"fsync-bench-%d" % (i % KEYS), os.urandom(RECORD_BYTES))
    t = time.perf_counter()
    store.sync()
    return time.perf_counter() - t


def append_fsync(f, i: int) -> float:
    """Seconds of the fsync that makes one appended record durable (FileStorage)."""
    f.write(os.urandom(RECORD_BYTES))
    f.flush()
    t = time.perf_counter()
    os.fsync(f.fileno())
    return time.perf_counter() - t


PAGE_BYTES = 4096
SCATTERED_PAGES = (1, 2, 4, 8, 16)
SCATTERED_FILE_PAGES = 16384      # 64 MiB, preallocated: no write extends the file


def scattered_fsync(fd: int, pages: int, rng: random.Random) -> float:
    """Seconds of the fdatasync after ``pages`` pages written at random places."""
    page = os.urandom(PAGE_BYTES)
    for _ in range(pages):
        os.pwrite(fd, page, rng.randrange(SCATTERED_FILE_PAGES) * PAGE_BYTES)
    t = time.perf_counter()
    os.fdatasync(fd)
    return time.perf_counter() - t


def _slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _row(system: str, rnd: int, times: list[float]) -> dict:
    ordered = sorted(times)
    return {"bench": "fsync", "system": system, "round": rnd, "syncs": len(times),
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1e3, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="where to write (default: a temporary directory, removed)")
    p.add_argument("--syncs", type=int, default=300, help="syncs per round and system")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the order alternating")
    opts = p.parse_args(argv)
    if opts.syncs < 1 or opts.rounds < 1:
        p.error("--syncs and --rounds must be at least 1")
    work = tempfile.mkdtemp(prefix="fsync-bench-", dir=opts.dir)
    store = LMDBStore(os.path.join(work, "lmdb"))
    medians: dict[str, list[float]] = {"lmdb_sync": [], "append_fsync": []}
    medians.update({f"scattered_{n}": [] for n in SCATTERED_PAGES})
    rng = random.Random(0)
    fd = os.open(os.path.join(work, "scattered"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, bytes(SCATTERED_FILE_PAGES * PAGE_BYTES))
        os.fsync(fd)
        with open(os.path.join(work, "append.fs"), "ab") as f:
            runs = {"lmdb_sync": lambda i: lmdb_sync(store, i), "append_fsync": lambda i: append_fsync(f, i)}
            runs.update({f"scattered_{n}": (lambda i, n=n: scattered_fsync(fd, n, rng)) for n in SCATTERED_PAGES})
            for rnd in range(opts.rounds):
                order = list(runs) if rnd % 2 == 0 else list(reversed(runs))
                for system in order:
                    row = _row(system, rnd, [runs[system](i) for i in range(opts.syncs)])
                    medians[system].append(row["median_ms"])
                    print(json.dumps(row), flush=True)
    finally:
        os.close(fd)
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {system: statistics.median(values) for system, values in medians.items()}
    summary["lmdb_vs_append"] = round(summary["lmdb_sync"] / summary["append_fsync"], 3)
    per_page_us = _slope(SCATTERED_PAGES, [summary[f"scattered_{n}"] * 1e3 for n in SCATTERED_PAGES])
    print(json.dumps({"summary": {"median_ms": summary, "us_per_scattered_page": round(per_page_us, 1),
                                  "syncs": opts.syncs, "rounds": opts.rounds}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
