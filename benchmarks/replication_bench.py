"""Replication benchmark: catch-up rate of a returning storage node, and commits meanwhile.

One run, one machine, a ``LocalCluster`` on 127.0.0.1: a master and 2 storage nodes,
replicas=1 (every partition on both nodes), ``--partitions`` partitions.

1. ``catch_up`` (MB/s): storage node 0 is killed (SIGKILL); ``--gib`` of array data
   (default 1 GiB, ``--quick``: 64 MiB) is committed while it is down: a
   ``neoarray.array`` of uint64 random bytes, chunks of ``--chunk-mib``, committed in
   transactions of ``--txn-mib``.  The node is restarted and timed from its restart
   until every one of its cells is UP_TO_DATE (partition table polled through the
   master's Admin service).  The bytes the node logged as copied (sum of its
   ``catch-up ... ends: N records (B bytes)`` lines: ReplicaRecords replies, data plus
   record and transaction metadata) are given against the data bytes it missed.
   No client load meanwhile.
2. ``small_commits`` (commits/s): ``--threads`` client threads (one connection each,
   one ``PersistentMapping`` each, no conflicts) commit one small change per
   transaction, for ``--duration-s`` with the cluster idle (all cells UP_TO_DATE), then
   while node 0 catches up again: it is killed once more, another ``--gib`` is
   committed, it is restarted and the threads commit from its restart until its cells
   are UP_TO_DATE (at most ``--duration-s``; the window is reported).  The ratio
   busy/idle is the summary's ``commits_busy_vs_idle``; that second catch-up is
   reported as ``catch_up_under_load``.
3. ``array_write`` (MB/s, for information): the rate of the commits of the data while
   node 0 was down (one node takes the writes).

Finally node 1 is killed and a sample of the chunks of both arrays (``--verify-chunks``
each, first and last included) and the threads' last values are read back from the
caught-up node 0 alone; any mismatch aborts with an error (exit status 1).
``--replication-bytes-per-s``, ``--replication-batch-records-max`` and
``--replication-batch-bytes-max`` are passed to the restarted node.

stdout: one JSON line per figure, a summary line, a Markdown table.  The storage
nodes, the master and this client share the machine's cores: on a small machine the
commit threads and the copy compete for CPU.

    python benchmarks/replication_bench.py                 # 1 GiB missed, twice
    python benchmarks/replication_bench.py --quick         # 64 MiB, 3 s windows
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import transaction
import ZODB
from persistent.mapping import PersistentMapping

MIB = 1 << 20
SEED = 20240505
_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_PASS_END = re.compile(_LOG_TIME + r" .*partition (\d+): catch-up to tid 0x[0-9a-f]+ ends: "
                       r"(\d+) records \((\d+) bytes\) copied in ([\d.]+) s")
_PASS_START = re.compile(_LOG_TIME + r" .*partition (\d+): catch-up from tid .* starts")


class BenchError(SystemExit):
    """The benchmark cannot go on (a wrong read-back, a node that never caught up)."""

    def __init__(self, message: str):
        super().__init__(f"replication_bench: {message}")


def emit(results, bench, system, value, unit, **extra):
    row = {"bench": bench, "system": system, "value": round(value, 3), "unit": unit, **extra}
    results[f"{bench}/{system}"] = row
    print(json.dumps(row), flush=True)


# ------------------------------------------------------------------ cluster helpers

def node_id(cluster, index: int) -> int:
    with open(log_path(cluster, index)) as f:
        return int(re.findall(r"identified as S(\d+)", f.read())[-1])


def log_path(cluster, index: int) -> str:
    return cluster.log_path(cluster.storage_name(index))


def cell_letters(admin, node: int) -> str:
    pt = admin.partition_table()
    return "".join(c.state.letter for row in pt.rows for c in row.cells if c.node_id == node)


def wait_cells(admin, node: int, letter: str, partitions: int, timeout_s: float) -> float:
    """Wait until all ``partitions`` cells of ``node`` read ``letter``; returns when."""
    deadline = time.monotonic() + timeout_s
    while True:
        letters = cell_letters(admin, node)
        if letters == letter * partitions:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"S{node} cells are {letters!r} after {timeout_s:.0f} s, "
                             f"not all {letter!r}")
        time.sleep(0.05)


def parse_passes(text: str) -> dict:
    """Catch-up passes in a log excerpt: records, bytes, seconds, and the wall span
    from the first pass start to the last pass end (log timestamps)."""
    ends = _PASS_END.findall(text)
    starts = _PASS_START.findall(text)
    span = stamp(ends[-1][0]) - stamp(starts[0][0]) if ends and starts else 0.0
    return {"passes": len(ends), "records": sum(int(e[2]) for e in ends),
            "bytes": sum(int(e[3]) for e in ends), "pass_seconds": sum(float(e[4]) for e in ends),
            "copy_span_s": span, "first_start": stamp(starts[0][0]) if starts else None}


def stamp(text: str) -> float:
    """A log line's time (the nodes log local time to the millisecond)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# ------------------------------------------------------------------ data

def chunk_data(phase: int, index: int, items: int) -> np.ndarray:
    """Chunk ``index`` of the array of ``phase``: random bytes, reproducible."""
    rng = np.random.default_rng([SEED, phase, index])
    return np.frombuffer(rng.bytes(items * 8), dtype=np.uint64)


def write_array(db, name: str, phase: int, args) -> tuple[int, float]:
    """Commit ``args.gib`` of data as array ``name``; returns (bytes, seconds)."""
    import neoarray.array as na
    items, nchunks = args.chunk_items, args.nchunks
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    started = time.perf_counter()
    a = na.zeros((items * nchunks,), dtype=np.uint64, chunks=(items,))
    conn.root()[name] = a
    per_txn = max(1, args.txn_mib // args.chunk_mib)
    for first in range(0, nchunks, per_txn):
        for i in range(first, min(nchunks, first + per_txn)):
            a[i * items:(i + 1) * items] = chunk_data(phase, i, items)
        tm.commit()
        conn.cacheMinimize()
    seconds = time.perf_counter() - started
    conn.close()
    return items * nchunks * 8, seconds


# ------------------------------------------------------------------ small commits

class SmallCommits:
    """``threads`` threads, each committing one change of its own mapping per transaction."""

    def __init__(self, db, threads: int):
        self.db, self.threads = db, threads
        self.last: dict[int, int] = {}
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()["counters"] = PersistentMapping({k: PersistentMapping(n=0) for k in range(threads)})
        tm.commit()
        conn.close()

    def start(self):
        """Start the threads; returns ``stop()``, giving the sorted commit times."""
        stop, times, errors = threading.Event(), [], []
        workers = [threading.Thread(target=self._run, args=(k, stop, times, errors), daemon=True)
                   for k in range(self.threads)]
        for w in workers:
            w.start()

        def finish():
            stop.set()
            for w in workers:
                w.join(60)
            if errors:
                raise BenchError(f"a commit thread failed: {errors[0]!r}")
            return sorted(times)
        return finish

    def _run(self, k, stop, times, errors):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            m = conn.root()["counters"][k]
            n = m["n"]
            while not stop.is_set():
                n += 1
                m["n"] = n
                tm.commit()
                times.append(time.monotonic())      # list.append is atomic
                self.last[k] = n
        except Exception as exc:  # noqa: BLE001 (reported by finish())
            errors.append(exc)
            tm.abort()
        finally:
            conn.close()


def rate(times, start, stop) -> tuple[float, int]:
    n = sum(1 for t in times if start <= t <= stop)
    return (n / (stop - start) if stop > start else 0.0), n


# ------------------------------------------------------------------ phases

class Bench:
    def __init__(self, args, workdir):
        from neoarray.cluster import LocalCluster
        self.args = args
        self.cluster = LocalCluster(os.path.join(workdir, "cluster"), storages=2, replicas=1,
                                    partitions=args.partitions, node_timeout_s=2.0)
        self.results: dict = {}
        self.admin = self.writer = self.committer = None

    def __enter__(self):
        self.cluster.start()
        self.admin = self.cluster.admin()
        self.ids = {i: node_id(self.cluster, i) for i in range(2)}
        self.writer = ZODB.DB(self.cluster.open_storage(cache_bytes_max=128 * MIB))
        self.committer = ZODB.DB(self.cluster.open_storage(cache_bytes_max=64 * MIB))
        return self

    def __exit__(self, *exc):
        for db in (self.writer, self.committer):
            if db is not None:
                db.close()
        if self.admin is not None:
            self.admin.close()
        self.cluster.stop(10)

    def node_options(self) -> list[str]:
        a = self.args
        out = []
        for name in ("replication_bytes_per_s", "replication_batch_records_max",
                     "replication_batch_bytes_max"):
            if getattr(a, name) is not None:
                out += ["--" + name.replace("_", "-"), str(getattr(a, name))]
        return out

    def miss(self, phase: int, name: str) -> int:
        """Kill node 0 and commit an array without it; returns the data bytes."""
        self.cluster.kill_storage(0)
        wait_cells(self.admin, self.ids[0], "O", self.args.partitions, 60)
        nbytes, seconds = write_array(self.writer, name, phase, self.args)
        if phase == 0:
            emit(self.results, "array_write", "1 of 2 nodes up", nbytes / seconds / 1e6, "MB/s",
                 seconds=round(seconds, 3), bytes=nbytes, txn_mib=self.args.txn_mib,
                 chunk_mib=self.args.chunk_mib)
        return nbytes

    def catch_up(self, bench: str, missed: int, on_restart=None) -> tuple[float, float]:
        """Restart node 0 and time it until UP_TO_DATE; returns (restart, done) times."""
        path = log_path(self.cluster, 0)
        offset = os.path.getsize(path)
        started, wall0 = time.monotonic(), time.time()
        if on_restart is not None:
            on_restart()
        self.cluster.start_storage(0, args=self.node_options())
        done = wait_cells(self.admin, self.ids[0], "U", self.args.partitions, self.args.timeout_s)
        seconds = done - started
        time.sleep(0.2)                        # the last log lines
        with open(path) as f:
            f.seek(offset)
            p = parse_passes(f.read())
        if p["passes"] == 0:
            raise BenchError(f"node 0 logged no catch-up pass in {path}")
        emit(self.results, bench, "neoarray-2s-r1", p["bytes"] / seconds / 1e6, "MB/s",
             seconds=round(seconds, 3), copied_bytes=p["bytes"], missed_bytes=missed,
             copied_vs_missed=round(p["bytes"] / missed, 4),
             missed_MB_per_s=round(missed / seconds / 1e6, 3), records=p["records"],
             passes=p["passes"], pass_seconds=round(p["pass_seconds"], 3),
             copy_span_s=round(p["copy_span_s"], 3),
             restart_to_first_pass_s=round(p["first_start"] - wall0, 3) if p["first_start"] else None,
             copy_span_MB_per_s=round(p["bytes"] / p["copy_span_s"] / 1e6, 3) if p["copy_span_s"] else None)
        return started, done

    def run(self):
        a = self.args
        load = SmallCommits(self.committer, a.threads)
        # 1. catch-up with no client load
        missed = self.miss(0, "a")
        self.catch_up("catch_up", missed)
        # 2. commits idle (all cells UP_TO_DATE), then while node 0 catches up again
        finish = load.start()
        time.sleep(0.5)                                 # warm
        t0 = time.monotonic()
        time.sleep(a.duration_s)
        t1 = time.monotonic()
        idle, n_idle = rate(finish(), t0, t1)
        emit(self.results, "small_commits", "idle", idle, "commits/s", commits=n_idle,
             window_s=a.duration_s, threads=a.threads)
        missed_b = self.miss(1, "b")
        box = {}
        started, done = self.catch_up("catch_up_under_load", missed_b,
                                      on_restart=lambda: box.update(finish=load.start()))
        times = box["finish"]()
        stop = min(done, started + a.duration_s)
        busy, n_busy = rate(times, started, stop)
        emit(self.results, "small_commits", "replicating", busy, "commits/s", commits=n_busy,
             window_s=round(stop - started, 3), threads=a.threads,
             note="window: node 0 restart until its cells are UP_TO_DATE, at most --duration-s")
        # 3. node 0 alone must hold everything
        self.verify(load)

    def verify(self, load):
        a = self.args
        self.cluster.kill_storage(1)
        wait_cells(self.admin, self.ids[1], "O", a.partitions, 60)
        db = ZODB.DB(self.cluster.open_storage(cache_bytes_max=64 * MIB))
        checked = 0
        try:
            conn = db.open(transaction.TransactionManager())
            root = conn.root()
            for k, n in load.last.items():
                if root["counters"][k]["n"] != n:
                    raise BenchError(f"counter {k} reads {root['counters'][k]['n']} from node 0 "
                                     f"alone, {n} was committed")
            rng = np.random.default_rng(SEED)
            sample = sorted({0, a.nchunks - 1, *rng.integers(0, a.nchunks, max(0, a.verify_chunks - 2))})
            for phase, name in enumerate("ab"):
                arr = root[name]
                for i in sample:
                    got = arr[i * a.chunk_items:(i + 1) * a.chunk_items]
                    if not np.array_equal(got, chunk_data(phase, i, a.chunk_items)):
                        raise BenchError(f"array {name!r} chunk {i} read from node 0 alone differs "
                                         f"from what was committed")
                    checked += 1
                conn.cacheMinimize()
            conn.close()
        finally:
            db.close()
        print(json.dumps({"verified": "node 0 alone", "chunks": checked,
                          "counters": len(load.last)}), flush=True)


def summarize(results):
    cu, cl = results["catch_up/neoarray-2s-r1"], results["catch_up_under_load/neoarray-2s-r1"]
    idle, busy = results["small_commits/idle"]["value"], results["small_commits/replicating"]
    summary = {
        "catch_up_MB_per_s": cu["value"], "catch_up_seconds": cu["seconds"],
        "copied_vs_missed": cu["copied_vs_missed"],
        "catch_up_under_load_MB_per_s": cl["value"],
        "commits_idle_per_s": round(idle, 1), "commits_replicating_per_s": round(busy["value"], 1),
        "commits_busy_vs_idle": round(busy["value"] / idle, 3) if idle else None,
        "busy_window_s": round(busy["window_s"], 3),
        "verified": True, "cpus": os.cpu_count(),
    }
    print(json.dumps({"summary": summary}), flush=True)
    print("| figure | value | unit | notes |")
    print("|---|---|---|---|")
    for key, label in (("catch_up", "catch-up, no load"), ("catch_up_under_load", "catch-up, commits running")):
        r = results[key + "/neoarray-2s-r1"]
        print(f"| {label} | {r['value']:.1f} | MB/s | {r['copied_bytes'] / 1e6:.1f} MB copied "
              f"/ {r['missed_bytes'] / 1e6:.1f} MB missed in {r['seconds']:.2f} s |")
    print(f"| small commits, idle | {idle:.1f} | commits/s | all cells UP_TO_DATE |")
    print(f"| small commits, replicating | {busy['value']:.1f} | commits/s | "
          f"{busy['window_s']:.2f} s window; busy/idle {summary['commits_busy_vs_idle']} |")
    w = results["array_write/1 of 2 nodes up"]
    print(f"| array writes, 1 node down | {w['value']:.1f} | MB/s | {w['txn_mib']} MiB transactions |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0, help="data node 0 misses, each time")
    p.add_argument("--quick", action="store_true", help="64 MiB, 3 s windows")
    p.add_argument("--chunk-mib", type=int, default=4)
    p.add_argument("--txn-mib", type=int, default=64, help="data per transaction")
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--threads", type=int, default=2, help="small-commit client threads")
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--verify-chunks", type=int, default=16, help="chunks read back per array")
    p.add_argument("--timeout-s", type=float, default=900.0, help="longest catch-up accepted")
    p.add_argument("--replication-bytes-per-s", type=int, default=None)
    p.add_argument("--replication-batch-records-max", type=int, default=None)
    p.add_argument("--replication-batch-bytes-max", type=int, default=None)
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    args = p.parse_args(argv)
    if args.quick:
        args.gib, args.duration_s = 1 / 16, 3.0
    args.chunk_items = args.chunk_mib * MIB // 8
    args.nchunks = max(1, round(args.gib * 1024 / args.chunk_mib))
    workdir = tempfile.mkdtemp(prefix="neoarray-replication-bench-", dir=args.dir)
    print(json.dumps({"setup": "cluster", "storages": 2, "replicas": 1, "partitions": args.partitions,
                      "gib": round(args.nchunks * args.chunk_mib / 1024, 4), "chunk_mib": args.chunk_mib,
                      "txn_mib": args.txn_mib, "threads": args.threads, "cpus": os.cpu_count()}),
          flush=True)
    try:
        with Bench(args, workdir) as bench:
            bench.run()
            results = bench.results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summarize(results)


if __name__ == "__main__":
    main()
