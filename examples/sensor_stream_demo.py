"""A live sensor feed streamed into arrays, watched on the dashboard, with alerts.

Runs the real commands, each its own process, as an operator would:

1. ``neoarray cluster up DIR --storages 2 --replicas 1`` (a new or kept directory);
2. ``neoarray ingest`` with a mapping that stores each reading's time and value in the
   arrays ``sensor.time`` and ``sensor.value`` (HTTP input, Prometheus metrics);
3. ``neoarray dashboard`` plotting ``sensor.value`` (a min/max envelope computed on the
   storage nodes, refreshed as appends arrive) and scraping the ingestion rates;
4. a synthetic feed: a random walk sampled ``--rate`` times a second, with a jump of
   ``--jump`` (relative) every ``--jump-every`` readings, POSTed in batches of 100;
5. the alert job: every second it reads the readings stored since its last pass (one
   reading back, for the rate) and flags each relative change above ``--limit`` with
   ``neoarray.kernels.alerts``, the seeds' rate-variation example.

It stops everything after ``--seconds`` (or Ctrl-C) and says how many readings were
sent, stored and flagged.  Every jump is flagged and nothing else: the feed's steps
are far below the limit.

    python examples/sensor_stream_demo.py                  # 60 s, in a temporary directory
    python examples/sensor_stream_demo.py --dir /tmp/sensors --seconds 0    # until Ctrl-C

Needs ``pip install -c constraints.txt -e '.[dashboard]'`` (Bokeh) for the dashboard.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MAPPING = """\
[[routes]]
match = "sensor.*"
array = "sensor"
layout = "columns"            # root["sensor.time"], root["sensor.value"]
fields = [["time", "f8", "@time"], ["value", "f8"]]
"""
BATCH_RECORDS = 100
START_TIMEOUT_S = 120.0


def neoarray_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "neoarray.cli", *args]


class Processes:
    """The demo's child processes: each in its own process group, all stopped (SIGINT,
    then SIGKILL) when the demo ends, however it ends."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.procs):         # the cluster last
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")


def wait_line(proc: subprocess.Popen, needle: str, what: str) -> str:
    """The first line of ``proc``'s output that contains ``needle``; the other lines are
    echoed (a thread keeps reading them afterwards, so the pipe never fills)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in proc.stdout:
        print(f"  | {line.rstrip()}", flush=True)
        if needle in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return line
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"{what} did not start (exit status {proc.poll()})")


def wait_file(path: str, proc: subprocess.Popen, what: str) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit status {proc.poll()})")
        time.sleep(0.1)
    with open(path) as f:
        return json.load(f)


class Feed:
    """A random walk around 20.0 with small steps, and a jump of ``jump`` every
    ``jump_every`` readings, POSTed to the ingestion service at ``rate`` per second."""

    def __init__(self, url: str, rate: int, jump: float, jump_every: int, seed: int = 7):
        self.url, self.rate, self.jump, self.jump_every = url, rate, jump, jump_every
        self.rng = np.random.default_rng(seed)
        self.value, self.sent, self.jumps = 20.0, 0, 0
        self.stop = threading.Event()
        self.error: Exception | None = None

    def batch(self) -> list[dict]:
        out = []
        for _ in range(BATCH_RECORDS):
            self.sent += 1
            if self.sent % self.jump_every == 0:
                self.value *= 1 + self.jump * (1 if self.rng.random() < 0.5 else -1)
                self.jumps += 1
            else:
                self.value *= 1 + self.rng.normal(0, 0.001)
            out.append({"value": float(self.value)})
        return out

    def run(self) -> None:
        interval_s = BATCH_RECORDS / self.rate
        next_s = time.monotonic()
        try:
            while not self.stop.is_set():
                body = json.dumps(self.batch()).encode()
                request = urllib.request.Request(self.url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as reply:
                    reply.read()        # 200 once the batch is durably committed
                next_s += interval_s
                self.stop.wait(max(0.0, next_s - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - reported by the demo
            self.error = exc


class AlertJob:
    """Flags relative changes above ``limit`` in the readings stored since its last pass."""

    def __init__(self, cluster_dir: str, limit: float):
        import neoarray
        from neoarray.ctl import resolve
        master, cluster = resolve(argparse.Namespace(dir=cluster_dir, address=None, cluster=None))
        self.db = neoarray.open(master=master, cluster=cluster)
        self.limit = limit
        self.seen = 0               # readings checked
        self.alerts: list[tuple[int, float, float]] = []     # (index, time, relative change)

    def run_once(self) -> list[tuple[int, float, float]]:
        import transaction

        from neoarray.kernels import alerts
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            # begin: the storage syncs with the cluster, so every batch the ingest
            # committed before this pass is seen (a connection only opened reads at the
            # last commit its client has heard of, which may be one behind: ZODB syncs
            # when a transaction begins, not when a connection opens)
            tm.begin()
            root = conn.root()
            if "sensor.value" not in root:
                return []
            values, times = root["sensor.value"], root["sensor.time"]
            stop = min(len(values), len(times))
            if stop <= self.seen:
                return []
            start = max(self.seen - 1, 0)            # one reading back: its rate
            x = np.asarray(values[start:stop])
            t = np.asarray(times[start:stop])
            new = []
            for i in alerts(x[1:], self.limit, halo=x[:1], offset=1) if start else alerts(x, self.limit):
                new.append((start + int(i), float(t[i]), float(x[i] / x[i - 1] - 1)))
            self.seen = stop
            self.alerts.extend(new)
            return new
        finally:
            tm.abort()
            conn.close()

    def close(self) -> None:
        self.db.close()


def report(alerts: list, limit: float) -> None:
    for index, t, change in alerts:
        print(f"ALERT reading {index} at {time.strftime('%H:%M:%S', time.localtime(t))}: "
              f"{change:+.1%} (limit {limit:.0%})", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="the cluster's directory (kept; default: a temporary one, removed)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to stream (0: until Ctrl-C)")
    p.add_argument("--rate", type=int, default=2_000, help="readings per second (default: %(default)s)")
    p.add_argument("--jump", type=float, default=0.08, help="relative size of a jump (default: %(default)s)")
    p.add_argument("--jump-every", type=int, default=5_000, help="readings between jumps (default: %(default)s)")
    p.add_argument("--limit", type=float, default=0.05, help="the alert threshold (default: %(default)s)")
    p.add_argument("--storages", type=int, default=2)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--dashboard", default="127.0.0.1:8050", metavar="HOST:PORT",
                   help="where the dashboard serves (port 0: any free one; default: %(default)s)")
    opts = p.parse_args(argv)
    if opts.rate < BATCH_RECORDS or not 0 < opts.limit < opts.jump:
        p.error(f"give --rate >= {BATCH_RECORDS} and 0 < --limit < --jump")
    workdir = opts.dir or tempfile.mkdtemp(prefix="neoarray-sensors-")
    cluster_dir = os.path.join(workdir, "cluster") if not opts.dir else opts.dir
    procs, feed, job = Processes(), None, None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(f"starting a cluster in {cluster_dir}", flush=True)
        cluster = procs.start("cluster", neoarray_command(
            "cluster", "up", cluster_dir, "--storages", str(opts.storages), "--replicas", str(opts.replicas),
            "--metrics"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_line(cluster, "RUNNING", "neoarray cluster up")

        mapping = os.path.join(workdir, "sensors.toml")
        with open(mapping, "w") as f:
            f.write(MAPPING)
        ready = os.path.join(workdir, "ingest.ready")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ready)
        ingest = procs.start("ingest", neoarray_command(
            "ingest", "--mapping", mapping, "--dir", cluster_dir, "--http", "127.0.0.1:0",
            "--metrics-bind", "127.0.0.1:0", "--group-ms", "20", "--ready-file", ready))
        addresses = wait_file(ready, ingest, "neoarray ingest")
        print(f"ingest: {json.dumps(addresses)}", flush=True)

        dashboard = procs.start("dashboard", neoarray_command(
            "dashboard", "--dir", cluster_dir, "--bind", opts.dashboard, "--array", "sensor.value",
            "--scrape", f"http://{addresses['metrics']}/metrics"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = wait_line(dashboard, "dashboard at", "neoarray dashboard")
        url = line.split("dashboard at ", 1)[1].split()[0]
        token = os.path.join(cluster_dir, "admin.token")
        if os.path.exists(token):           # the cluster's admin token signs the browser in
            with open(token) as f:
                url += f"login?token={f.read().strip()}"
        print(f"open {url} to watch the readings arrive", flush=True)

        feed = Feed(f"http://{addresses['http']}/ingest/sensor.room", opts.rate, opts.jump, opts.jump_every)
        feeder = threading.Thread(target=feed.run, daemon=True)
        feeder.start()
        job = AlertJob(cluster_dir, opts.limit)
        began = time.monotonic()
        while not stop.wait(1.0):
            procs.check()
            if feed.error is not None:
                raise RuntimeError(f"the feed failed: {feed.error}")
            report(job.run_once(), opts.limit)
            if opts.seconds and time.monotonic() - began >= opts.seconds:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if feed is not None:
            feed.stop.set()
            feeder.join(60)                     # its last batch answered: committed
        try:
            if job is not None:
                report(job.run_once(), opts.limit)      # the readings stored since the last look
                stored = job.seen
                print(f"summary: sent {feed.sent} readings, {stored} stored, {feed.jumps} jumps, "
                      f"{len(job.alerts)} alerts", flush=True)
                job.close()
        finally:
            procs.stop()
            if not opts.dir:
                shutil.rmtree(workdir, ignore_errors=True)
                print(f"stopped; {workdir} removed (give --dir to keep the data)", flush=True)
            else:
                print(f"stopped; the data stays in {cluster_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
