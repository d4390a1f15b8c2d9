"""ZODB storage benchmark: neoarray side by side with ZEO (loopback) and FileStorage.

What it measures, for each storage, as the median of ``--reps`` (default 3) repetitions,
all figures as throughputs (higher is better):

``small_commits``     commits/s: one transaction per commit, each changing one small
                      ``PersistentMapping`` through ``ZODB.DB`` and ``transaction``.
``empty_commits``     commits/s: empty two-phase commits (``tpc_begin``, ``tpc_vote``,
                      ``tpc_finish`` of a transaction that stores nothing) straight on
                      the storage: the protocol's own cost (1,000 / this = ms each).
``add_1000``          objects/s: transactions each adding 1,000 new small persistent
                      objects (plus the holder list and the root, not counted).
``update_1000``       objects/s: transactions each changing 1,000 existing objects.
``cold_loads``        loads/s: ``storage.load(oid)`` one by one on objects written by
                      ``add_1000``, after emptying the storage-level cache (neoarray:
                      ``storage._cache.clear()``; ZEO: a fresh ``ClientStorage`` with an
                      empty in-memory cache; FileStorage: in process, OS page cache warm).
``cold_loads_batch``  loads/s: the same oids, cold, in one batch (neoarray ``load_many``;
                      ZEO ``prefetch`` followed by the loads; FileStorage: n/a).
``cached_loads``      loads/s: the same oids again through the warm storage-level cache
                      (neoarray client cache, ZEO client cache, FileStorage direct).

Storages: ``neoarray-1s`` (``LocalCluster`` with 1 storage node, replicas=0),
``neoarray-1s-net`` (the same, with ``local_reads=False``: every load crosses gRPC,
as for a client on another host), ``neoarray-1s-net-tls`` (the same over mutual TLS, every call
checked against the roles of the caller's certificate), ``neoarray-1s-net-metrics`` (the same
without TLS, every node and the client serving Prometheus metrics), ``neoarray-2s-r1``
(2 storage nodes, replicas=1), ``zeo`` (a real ``runzeo`` process on
127.0.0.1 over a FileStorage in a temporary directory) and ``filestorage`` (in process).
Each storage runs alone: its processes are stopped before the next one starts.

Output: one JSON object per figure on stdout
(``{"bench": ..., "storage": ..., "value": ..., "unit": ...}``), then one summary
object with the ratios neoarray/ZEO and neoarray/FileStorage per figure (> 1 means
neoarray is faster), and a markdown table on stderr.

Run::

    python benchmarks/zodb_bench.py                 # full run
    python benchmarks/zodb_bench.py --quick         # CI smoke run (well under a minute)
    python benchmarks/zodb_bench.py --json-out results.json
    python benchmarks/zodb_bench.py --profile       # also cProfile neoarray's commit loop
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import transaction  # noqa: E402
import ZODB  # noqa: E402
from persistent.list import PersistentList  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402
from ZODB.Connection import TransactionMetaData  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import maxtid  # noqa: E402

BENCHES = [  # (name, unit)
    ("small_commits", "commits/s"),
    ("empty_commits", "commits/s"),
    ("add_1000", "objects/s"),
    ("update_1000", "objects/s"),
    ("cold_loads", "loads/s"),
    ("cold_loads_batch", "loads/s"),
    ("cached_loads", "loads/s"),
]
UNITS = dict(BENCHES)
NEO_ROWS = ("neoarray-1s", "neoarray-1s-net", "neoarray-1s-net-tls", "neoarray-1s-net-metrics",
            "neoarray-2s-r1")
PEERS = {"zeo": "zeo", "filestorage": "filestorage"}   # ratio key suffix -> row
OBJECTS_PER_TXN = 1000

_CHILDREN: list[subprocess.Popen] = []   # killed at exit whatever happens


# ------------------------------------------------------------------ process hygiene

def _kill_children() -> None:
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(10)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)   # unwinds through every ``finally``


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ZEO server exited ({proc.returncode}): {open(log).read()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ZEO server did not listen on 127.0.0.1:{port} within {timeout_s} s")


# ------------------------------------------------------------------ storages under test
#
# Each target is a context manager yielding an object with:
#   name            row name
#   writer()        a fresh storage for ZODB.DB (commits, adds, updates)
#   cold_reader()   a storage whose storage-level cache is empty, ready for loads
#   batch_load(storage, oids)  one batched cold load, or None when unsupported

class NeoTarget:
    def __init__(self, name, workdir, storages, replicas, local_reads=True, tls=False, metrics=False):
        self.name, self.workdir = name, workdir
        self.storages, self.replicas = storages, replicas
        self.local_reads = local_reads
        self.tls, self.metrics = tls, metrics
        self.cluster = self._reader = None

    def __enter__(self):
        from neoarray.cluster import LocalCluster
        self.cluster = LocalCluster(os.path.join(self.workdir, self.name), storages=self.storages,
                                    replicas=self.replicas, partitions=12, log_level="WARNING",
                                    tls=self.tls or None, metrics=self.metrics)
        try:
            self.cluster.start()
        except BaseException:
            self.cluster.stop(5)
            raise
        for proc in [self.cluster.master_proc, *self.cluster.storage_procs.values()]:
            _CHILDREN.append(proc)
        return self

    def __exit__(self, *exc):
        try:
            if self._reader is not None:
                self._reader.close()
        finally:
            self.cluster.stop(10)

    def _open(self):
        extra = {"metrics_bind": "127.0.0.1:0"} if self.metrics else {}
        return self.cluster.open_storage(cache_bytes_max=64 << 20, local_reads=self.local_reads, **extra)

    def writer(self):
        return self._open()

    def cold_reader(self):
        if self._reader is None:
            self._reader = self._open()
        self._reader._cache.clear()
        return self._reader

    batch_name = "load_many"

    @staticmethod
    def batch_load(storage, oids):
        found = storage.load_many(oids, maxtid)
        assert len(found) == len(oids), f"load_many returned {len(found)} of {len(oids)}"


class ZeoTarget:
    name = "zeo"
    batch_name = "prefetch + load"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "zeo")
        self.proc = self._reader = None
        self.port = None

    def __enter__(self):
        os.makedirs(self.dir)
        self.port = _free_port()
        log = os.path.join(self.dir, "zeo.log")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ZEO.runzeo", "-a", f"127.0.0.1:{self.port}",
                 "-f", os.path.join(self.dir, "Data.fs")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _CHILDREN.append(self.proc)
        try:
            _wait_port(self.port, self.proc, log)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._close_reader()
        finally:
            self._stop()

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _client(self):
        from ZEO.ClientStorage import ClientStorage
        return ClientStorage(("127.0.0.1", self.port), wait_timeout=30)

    def _close_reader(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def writer(self):
        return self._client()

    def cold_reader(self):
        """A fresh client: its in-memory cache (``client=None``) starts empty."""
        self._close_reader()
        self._reader = self._client()
        return self._reader

    @staticmethod
    def batch_load(storage, oids):
        storage.prefetch(oids, maxtid)
        for oid in oids:   # waits on the prefetches in flight, then reads the cache
            storage.load(oid)


class FileStorageTarget:
    name = "filestorage"
    batch_name = None
    batch_load = None

    def __init__(self, workdir):
        self.path = os.path.join(workdir, "fs", "Data.fs")
        self._reader = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path))
        return self

    def __exit__(self, *exc):
        if self._reader is not None:
            self._reader.close()

    def writer(self):
        return FileStorage(self.path)

    def cold_reader(self):
        """FileStorage has no object cache: reads go through the (warm) OS page cache."""
        if self._reader is None:
            self._reader = FileStorage(self.path, read_only=True)
        return self._reader


# ------------------------------------------------------------------ measurements

def _median(fn, reps):
    """Run ``fn`` (returning a throughput) ``reps`` times: (median, all runs)."""
    runs = [fn(rep) for rep in range(reps)]
    return statistics.median(runs), runs


def bench_small_commits(tm, root, n):
    def run(rep):
        counter = root["counter"]
        t0 = time.perf_counter()
        for i in range(n):
            counter["n"] = i
            tm.commit()
        return n / (time.perf_counter() - t0)
    return run


def bench_empty_commits(storage, n):
    def run(rep):
        t0 = time.perf_counter()
        for _ in range(n):
            meta = TransactionMetaData()
            storage.tpc_begin(meta)
            storage.tpc_vote(meta)
            storage.tpc_finish(meta)
        return n / (time.perf_counter() - t0)
    return run


def bench_add(tm, root, txns, holders):
    """Each transaction hangs 1,000 new objects on a fresh ``PersistentList`` under root."""
    def run(rep):
        t0 = time.perf_counter()
        for t in range(txns):
            holder = PersistentList(PersistentMapping({"v": i}) for i in range(OBJECTS_PER_TXN))
            root[f"batch-{rep}-{t}"] = holder
            tm.commit()
            holders.append(holder)
        return txns * OBJECTS_PER_TXN / (time.perf_counter() - t0)
    return run


def bench_update(tm, holders, txns):
    def run(rep):
        t0 = time.perf_counter()
        for holder in holders[:txns]:
            for obj in holder:
                obj["v"] += 1
            tm.commit()
        return txns * OBJECTS_PER_TXN / (time.perf_counter() - t0)
    return run


def load_each(storage, oids):
    for oid in oids:
        storage.load(oid)


def bench_loads(target, oids, reps):
    """cold, cached and (where supported) cold batch loads, each a median of ``reps``."""
    cold, cached, batch = [], [], []
    for _ in range(reps):
        reader = target.cold_reader()
        cold.append(_rate(load_each, reader, oids))
        cached.append(_rate(load_each, reader, oids))
        if target.batch_load is not None:
            reader = target.cold_reader()
            batch.append(_rate(target.batch_load, reader, oids))
    out = {"cold_loads": cold, "cached_loads": cached}
    if batch:
        out["cold_loads_batch"] = batch
    return out


def _rate(fn, storage, oids):
    t0 = time.perf_counter()
    fn(storage, oids)
    return len(oids) / (time.perf_counter() - t0)


def run_target(target, cfg) -> dict:
    """All figures for one storage: {bench: (median, runs)}."""
    results = {}
    db = ZODB.DB(target.writer(), cache_size=100_000)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        root = conn.root()
        root["counter"] = PersistentMapping()
        tm.commit()
        results["small_commits"] = _median(bench_small_commits(tm, root, cfg.commits), cfg.reps)
        results["empty_commits"] = _median(bench_empty_commits(db.storage, cfg.commits), cfg.reps)
        holders = []
        results["add_1000"] = _median(bench_add(tm, root, cfg.txns, holders), cfg.reps)
        results["update_1000"] = _median(bench_update(tm, holders, cfg.txns), cfg.reps)
        oids = [obj._p_oid for holder in holders for obj in holder][:cfg.loads]
        conn.close()
    finally:
        db.close()
    for bench, runs in bench_loads(target, oids, cfg.reps).items():
        results[bench] = statistics.median(runs), runs
    return results


def profile_neo_commits(workdir, n) -> str:
    """cProfile (client side, main thread) of the small-commit loop on a 1-node cluster."""
    with NeoTarget("neoarray-profile", workdir, 1, 0) as target:
        db = ZODB.DB(target.writer())
        try:
            tm = transaction.TransactionManager()
            root = db.open(tm).root()
            root["counter"] = PersistentMapping()
            tm.commit()
            prof = cProfile.Profile()
            prof.enable()
            bench_small_commits(tm, root, n)(0)
            prof.disable()
        finally:
            db.close()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(15)
    return buf.getvalue()


# ------------------------------------------------------------------ reporting

def records(all_results: dict) -> list[dict]:
    out = []
    for bench, unit in BENCHES:
        for storage, results in all_results.items():
            if bench in results:
                value, runs = results[bench]
                out.append({"bench": bench, "storage": storage, "value": round(value, 1),
                            "unit": unit, "runs": [round(r, 1) for r in runs]})
    return out


def summary(all_results: dict) -> dict:
    """Per figure and neoarray row: neoarray / peer (throughputs, so > 1 = neoarray better)."""
    ratios = {}
    for bench, _ in BENCHES:
        per_row = {}
        for neo in NEO_ROWS:
            if bench not in all_results.get(neo, {}):
                continue
            mine = all_results[neo][bench][0]
            per_row[neo] = {f"vs_{short}": (round(mine / all_results[peer][bench][0], 3)
                                            if bench in all_results.get(peer, {}) else None)
                            for short, peer in PEERS.items()}
        ratios[bench] = per_row
    return ratios


def markdown(all_results: dict, ratios: dict, cfg) -> str:
    storages = list(all_results)
    ratio_cols = [(neo, short) for neo in NEO_ROWS if neo in storages for short in PEERS]
    head = ["bench", "unit", *storages, *(f"{n}/{PEERS[s]}" for n, s in ratio_cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bench, unit in BENCHES:
        cells = [bench, unit]
        for s in storages:
            cells.append(f"{all_results[s][bench][0]:,.0f}" if bench in all_results[s] else "n/a")
        for neo, short in ratio_cols:
            r = ratios[bench].get(neo, {}).get(f"vs_{short}")
            cells.append(f"{r:.3g}" if r is not None else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"medians of {cfg.reps} runs; {cfg.commits} commits; {cfg.txns} x "
              f"{OBJECTS_PER_TXN}-object transactions; {cfg.loads} loads. Batch: neoarray "
              "load_many, ZEO prefetch + load. FileStorage in process, page cache warm. "
              "Ratios > 1: neoarray faster."]
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N for CI smoke runs")
    p.add_argument("--json-out", metavar="FILE", help="also write all results as one JSON file")
    p.add_argument("--commits", type=int, help="small commits per run (default 500, quick 50)")
    p.add_argument("--txns", type=int, help="1,000-object transactions per run (default 5, quick 2)")
    p.add_argument("--loads", type=int, help="oids loaded per run (default 2000, quick 500)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure (median)")
    p.add_argument("--only", nargs="+", choices=[*NEO_ROWS, "zeo", "filestorage"],
                   help="run only these storages")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile neoarray's small-commit loop (client side) to stderr")
    cfg = p.parse_args(argv)
    quick = cfg.quick
    cfg.commits = cfg.commits or (50 if quick else 500)
    cfg.txns = cfg.txns or (2 if quick else 5)
    cfg.loads = min(cfg.loads or (500 if quick else 2000), cfg.txns * OBJECTS_PER_TXN)
    return cfg


def targets(workdir, only):
    all_targets = [
        ("neoarray-1s", lambda: NeoTarget("neoarray-1s", workdir, 1, 0)),
        ("neoarray-1s-net", lambda: NeoTarget("neoarray-1s-net", workdir, 1, 0, local_reads=False)),
        ("neoarray-1s-net-tls", lambda: NeoTarget("neoarray-1s-net-tls", workdir, 1, 0, local_reads=False,
                                                  tls=True)),
        ("neoarray-1s-net-metrics", lambda: NeoTarget("neoarray-1s-net-metrics", workdir, 1, 0,
                                                      local_reads=False, metrics=True)),
        ("neoarray-2s-r1", lambda: NeoTarget("neoarray-2s-r1", workdir, 2, 1)),
        ("zeo", lambda: ZeoTarget(workdir)),
        ("filestorage", lambda: FileStorageTarget(workdir)),
    ]
    return [(name, make) for name, make in all_targets if not only or name in only]


def main(argv=None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_kill_children)
    workdir = tempfile.mkdtemp(prefix="zodb-bench-")
    all_results = {}
    try:
        for name, make in targets(workdir, cfg.only):
            t0 = time.perf_counter()
            with make() as target:
                all_results[name] = run_target(target, cfg)
            print(f"# {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for rec in records({name: all_results[name]}):
                print(json.dumps(rec), flush=True)
        ratios = summary(all_results)
        print(json.dumps({"summary": ratios}), flush=True)
        print(markdown(all_results, ratios, cfg), file=sys.stderr, flush=True)
        if cfg.json_out:
            with open(cfg.json_out, "w") as f:
                json.dump({"config": {k: getattr(cfg, k) for k in ("quick", "commits", "txns", "loads", "reps")},
                           "results": records(all_results), "summary": ratios}, f, indent=1)
        if cfg.profile:
            print(profile_neo_commits(workdir, cfg.commits), file=sys.stderr, flush=True)
    finally:
        _kill_children()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
