"""Many clients on one cluster: neoarray side by side with ZEO (loopback).

A workflow engine starts many workers, each with its own client.  For each storage,
``--clients`` clients (default 100) are opened one after the other in this process,
then every client commits ``--commits`` small transactions (each its own object, so
no conflicts), all clients at once, one thread each:

``connect_ms_first`` / ``connect_ms_last``  ms to open the first and the last tenth
                      of the clients (median of each): a server doing work per
                      existing client on each join shows up as a growing figure.
``concurrent_commits`` commits/s of all clients together.
``storage_fsyncs_per_commit`` (neoarray) fsyncs of the storage node per commit while
                      they ran: below the 1 of a lone client's commit when commits
                      arriving together share an fsync (group commit, ``neoarray/kv.py``).

Storages: ``neoarray-1s-net`` (``LocalCluster``, 1 storage node, every load over
gRPC) and ``zeo`` (a real ``runzeo`` process over a FileStorage).  Before the
master served event streams on threads of their own, neoarray could not open a 32nd
client (the event streams held every request worker of the master); before it left
clients out of the pushed view, the time to open a client grew with the number open.

Output: one JSON object per figure on stdout (``{"bench", "storage", "value",
"unit"}``), then ``{"summary": ...}`` with the neoarray/ZEO ratios (> 1: neoarray
does better; for connection times, ZEO's time over neoarray's).

Run::

    python benchmarks/clients_bench.py                    # 100 clients, 20 commits each
    python benchmarks/clients_bench.py --clients 300 --commits 5
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.POSException import ReadConflictError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.zodb_bench import NeoTarget, ZeoTarget


def open_clients(target, count: int) -> tuple[list, list[float]]:
    storages, times_ms = [], []
    for _ in range(count):
        started = time.perf_counter()
        storages.append(target.writer())
        times_ms.append((time.perf_counter() - started) * 1000)
    return storages, times_ms


def open_db(storage):
    """``ZODB.DB(storage)``, once the client sees the root another client created: a
    ZEO client learns of it from its invalidation stream, which may lag behind (its
    first transaction then raises ReadConflictError; neoarray's ``sync`` asks the master)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return ZODB.DB(storage, pool_size=1)
        except ReadConflictError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def concurrent_commits(target, storages, commits: int) -> float:
    """Every client commits ``commits`` transactions at once; commits/s of them all."""
    dbs = [open_db(s) for s in storages]
    try:
        with dbs[0].transaction() as conn:          # one object per client, created first
            for i in range(len(dbs)):
                conn.root()[f"client-{i}"] = PersistentMapping(n=0)
        errors, start = [], threading.Barrier(len(dbs) + 1)

        def work(i, db):
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            try:
                start.wait()
                for n in range(commits):
                    tm.begin()
                    conn.root()[f"client-{i}"]["n"] = n + 1
                    tm.commit()
            except Exception as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
            finally:
                conn.close()
        threads = [threading.Thread(target=work, args=(i, db)) for i, db in enumerate(dbs)]
        for t in threads:
            t.start()
        start.wait()
        began = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
        check = ZODB.DB(target.writer())     # a new client: what is committed, not a stale view
        try:
            with check.transaction() as conn:
                values = [conn.root()[f"client-{i}"]["n"] for i in range(len(dbs))]
        finally:
            check.close()
        assert values == [commits] * len(dbs), "a commit is missing"
        return len(dbs) * commits / elapsed
    finally:
        for db in dbs:
            db.close()


def storage_fsyncs(target) -> float:
    """fsyncs so far of the storage nodes of a ``NeoTarget`` started with metrics."""
    from benchmarks.commit_costs import scrape
    return sum(scrape(address, ("neoarray_storage_fsyncs_total",)).get("neoarray_storage_fsyncs_total", 0.0)
               for name, address in target.cluster.metrics_addresses().items() if name != "master")


def measure(target, clients: int, commits: int) -> list[dict]:
    with target:
        storages, times = open_clients(target, clients)
        tenth = max(1, clients // 10)
        neo = isinstance(target, NeoTarget)
        fsyncs = storage_fsyncs(target) if neo else 0.0
        rate = concurrent_commits(target, storages, commits)
        out = [{"bench": "connect_ms_first", "value": round(statistics.median(times[:tenth]), 2), "unit": "ms"},
               {"bench": "connect_ms_last", "value": round(statistics.median(times[-tenth:]), 2), "unit": "ms"},
               {"bench": "concurrent_commits", "value": round(rate, 1), "unit": "commits/s"}]
        if neo:     # the clients' commits and the one that made their objects
            per_commit = (storage_fsyncs(target) - fsyncs) / (clients * commits + 1)
            out.append({"bench": "storage_fsyncs_per_commit", "value": round(per_commit, 3), "unit": "fsyncs"})
    for rec in out:
        rec.update(storage=target.name, clients=clients)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--commits", type=int, default=20, help="commits per client")
    opts = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="clients-bench-")
    try:
        results = {}
        for target in (NeoTarget("neoarray-1s-net", workdir, 1, 0, local_reads=False, metrics=True),
                       ZeoTarget(workdir)):
            for rec in measure(target, opts.clients, opts.commits):
                print(json.dumps(rec), flush=True)
                results[(rec["storage"], rec["bench"])] = rec["value"]
        neo, zeo = "neoarray-1s-net", "zeo"
        summary = {f"{b}_neo_vs_zeo": round(results[(zeo, b)] / results[(neo, b)], 3)
                   for b in ("connect_ms_first", "connect_ms_last")}
        summary["concurrent_commits_neo_vs_zeo"] = round(
            results[(neo, "concurrent_commits")] / results[(zeo, "concurrent_commits")], 3)
        summary.update(clients=opts.clients, commits_per_client=opts.commits, cpus=os.cpu_count())
        print(json.dumps({"summary": summary}), flush=True)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
