"""What one small commit costs each process: CPU, context switches, fsyncs, LMDB
write transactions; neoarray side by side with ZEO in the same run.

A client commits ``--commits`` small transactions (one 1-key ``PersistentMapping``
changed each time, as ``zodb_bench.py``'s small commits), one after the other.  For
every process of the storage (the client, which is this process; the master and
each storage node; ZEO's server) the script reads before and after, from ``/proc``:

``cpu_user_ms`` / ``cpu_sys_ms``   CPU time per commit (user / kernel), all threads
``context_switches``              voluntary + involuntary switches per commit, all
                                  threads: about twice the number of times one of its
                                  threads went to sleep and was woken
``threads``                       threads of the process at the end

and for neoarray's nodes, from their Prometheus metrics:

``fsyncs``                        per commit: storage ``neoarray_storage_fsyncs_total``,
                                  master ``neoarray_master_state_fsyncs_total``
``write_transactions``            LMDB write transactions per commit (storage nodes)

and, as process ``disk``, from ``/proc/diskstats`` for the device holding the
storages' files (all processes and the filesystem's journal: what the fsyncs wait for):

``writes`` / ``write_kib``        write requests and KiB written per commit

Storages: ``neoarray-1s-net`` (1 storage node, remote client: ``local_reads=False``),
``neoarray-2s-r1`` (2 storage nodes, replicas=1, remote client) and ``zeo`` (a
``runzeo`` process over FileStorage).  Each storage is measured ``--reps`` times, the
order of storages alternating between rounds; figures are medians.

Output: one JSON object per figure (``{"bench": "commit_costs", "storage", "process",
"figure", "value", "unit"}``), then ``{"summary": ...}`` with, per neoarray storage,
CPU ms per commit of all processes together and its ratio to ZEO's (> 1: neoarray
costs more), and the commits/s seen while measuring.

Run::

    python benchmarks/commit_costs.py                 # 1,000 commits, 3 rounds
    python benchmarks/commit_costs.py --commits 200 --reps 1
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
import urllib.request

import transaction
import ZODB
from persistent.mapping import PersistentMapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.zodb_bench import NeoTarget, ZeoTarget

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
WARMUP_COMMITS = 50


def proc_counters(pid: int) -> dict:
    """CPU seconds (user, sys) of the whole process, and context switches summed over
    its live threads (``/proc/PID/task/*/status``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    switches, threads = 0, 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except FileNotFoundError:       # a thread that ended meanwhile
            continue
        threads += 1
    return {"user_s": int(fields[11]) / CLOCK_TICKS_PER_S, "sys_s": int(fields[12]) / CLOCK_TICKS_PER_S,
            "switches": switches, "threads": threads}


def disk_of(path: str) -> str | None:
    """The name of the block device (as ``/proc/diskstats`` names it) holding ``path``,
    or None (not a block device: tmpfs, overlay)."""
    dev = os.stat(path).st_dev
    try:
        with open(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent") as f:
            return next((line.split("=", 1)[1].strip() for line in f if line.startswith("DEVNAME=")), None)
    except FileNotFoundError:
        return None


def disk_counters(name: str) -> dict:
    """Write requests completed and KiB written by device ``name`` (``/proc/diskstats``:
    every process's, the filesystem's journal included)."""
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == name:
                return {"writes": int(fields[7]), "write_kib": int(fields[9]) / 2}
    return {"writes": 0, "write_kib": 0.0}


def scrape(address: str, names: tuple[str, ...]) -> dict[str, float]:
    """The values of the metric samples ``names`` at ``http://address/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                out[sample.name] = sample.value
    return out


NODE_METRICS = {"master": ("neoarray_master_state_fsyncs_total",),
                "storage": ("neoarray_storage_fsyncs_total", "neoarray_storage_write_transactions_total")}


class Processes:
    """The processes of one storage target, by name, and how to read their counters."""

    def __init__(self, target, disk: str | None = None):
        self.pids = {"client": os.getpid()}
        self.disk = disk
        self.metrics: dict[str, str] = {}
        if isinstance(target, NeoTarget):
            cluster = target.cluster
            self.pids["master"] = cluster.master_proc.pid
            self.pids.update(cluster.storage_pids())
            self.metrics = cluster.metrics_addresses()
        else:
            self.pids["zeo-server"] = target.proc.pid

    def read(self) -> dict[str, dict]:
        out = {name: proc_counters(pid) for name, pid in self.pids.items()}
        for name, address in self.metrics.items():
            kind = "master" if name == "master" else "storage"
            values = scrape(address, NODE_METRICS[kind])
            if kind == "master":
                out[name]["fsyncs"] = values.get("neoarray_master_state_fsyncs_total", 0.0)
            else:
                out[name]["fsyncs"] = values.get("neoarray_storage_fsyncs_total", 0.0)
                out[name]["write_transactions"] = values.get("neoarray_storage_write_transactions_total", 0.0)
        if self.disk:
            out["disk"] = disk_counters(self.disk)
        return out


def measure(target, commits: int, disk: str | None = None) -> tuple[dict[str, dict], float]:
    """Per process figures per commit, and commits/s, for ``commits`` small commits;
    with ``disk`` (the device of the storages' files), what it wrote per commit."""
    db = ZODB.DB(target.writer())
    try:
        conn = db.open()
        root = conn.root()
        root["costs"] = PersistentMapping()
        transaction.commit()
        for i in range(WARMUP_COMMITS):
            root["costs"]["k"] = i
            transaction.commit()
        procs = Processes(target, disk)
        before = procs.read()
        started = time.perf_counter()
        for i in range(commits):
            root["costs"]["k"] = i
            transaction.commit()
        elapsed_s = time.perf_counter() - started
        after = procs.read()
        conn.close()
    finally:
        db.close()
    figures = {}
    for name in after:
        a, b = after[name], before[name]
        if name == "disk":
            figures[name] = {key: (a[key] - b[key]) / commits for key in ("writes", "write_kib")}
            continue
        f = {"cpu_user_ms": (a["user_s"] - b["user_s"]) * 1000 / commits,
             "cpu_sys_ms": (a["sys_s"] - b["sys_s"]) * 1000 / commits,
             "context_switches": (a["switches"] - b["switches"]) / commits,
             "threads": a["threads"]}
        for key in ("fsyncs", "write_transactions"):
            if key in a:
                f[key] = (a[key] - b[key]) / commits
        figures[name] = f
    return figures, commits / elapsed_s


UNITS = {"cpu_user_ms": "ms/commit", "cpu_sys_ms": "ms/commit", "context_switches": "per commit",
         "threads": "threads", "fsyncs": "per commit", "write_transactions": "per commit",
         "writes": "requests/commit", "write_kib": "KiB/commit"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commits", type=int, default=1000, help="small commits per round")
    p.add_argument("--reps", type=int, default=3, help="rounds (medians are reported)")
    opts = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="commit-costs-")
    makers = {"neoarray-1s-net": lambda: NeoTarget("neoarray-1s-net", workdir, 1, 0, local_reads=False,
                                                   metrics=True),
              "neoarray-2s-r1": lambda: NeoTarget("neoarray-2s-r1", workdir, 2, 1, local_reads=False,
                                                  metrics=True),
              "zeo": lambda: ZeoTarget(workdir)}
    runs: dict[str, list] = {name: [] for name in makers}
    disk = disk_of(workdir)
    try:
        with makers["neoarray-1s-net"]() as neo1, makers["neoarray-2s-r1"]() as neo2, makers["zeo"]() as zeo:
            targets = {"neoarray-1s-net": neo1, "neoarray-2s-r1": neo2, "zeo": zeo}
            order = list(targets)
            for rep in range(opts.reps):
                for name in (order if rep % 2 == 0 else order[::-1]):
                    runs[name].append(measure(targets[name], opts.commits, disk))
        totals = {}
        for name, results in runs.items():
            rate = statistics.median(r[1] for r in results)
            print(json.dumps({"bench": "commit_costs", "storage": name, "process": "all",
                              "figure": "commits_per_s", "value": round(rate, 1), "unit": "commits/s"}))
            for proc in results[0][0]:
                for figure in results[0][0][proc]:
                    value = statistics.median(r[0][proc][figure] for r in results)
                    print(json.dumps({"bench": "commit_costs", "storage": name, "process": proc,
                                      "figure": figure, "value": round(value, 3), "unit": UNITS[figure]}))
            totals[name] = statistics.median(
                sum(f["cpu_user_ms"] + f["cpu_sys_ms"] for p, f in r[0].items() if p != "disk") for r in results)
        summary = {name: {"cpu_ms_per_commit_all_processes": round(total, 3),
                          "vs_zeo": round(total / totals["zeo"], 3) if totals["zeo"] else None}
                   for name, total in totals.items()}
        summary["commits"] = opts.commits
        summary["reps"] = opts.reps
        summary["cpus"] = os.cpu_count()
        print(json.dumps({"summary": summary}), flush=True)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
