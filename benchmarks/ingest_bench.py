"""``neoarray ingest``: records per second durably acknowledged, per input, and the
latency from send to acknowledgement at a steady rate.

A ``LocalCluster`` of 2 storage nodes with replicas=1 and a ``neoarray ingest`` process
(Forward, HTTP, MQTT inputs; group commits of ``--group-records`` records or
``--group-ms`` ms) on loopback.  Records are 32 bytes once stored: ``seq`` (u8),
``sensor`` (u8), ``value`` (f8) and the event time (f8).

``forward_packed``   PackedForward chunks of ``--chunk-records`` records with a chunk
                     id each, ``--in-flight`` chunks waiting for their ack at most (what
                     fluentd's out_forward does with require_ack_response)
``forward_message``  fluent-logger (``AckingSender``): one Message mode packet per record
``http``             POST of msgpack batches of ``--chunk-records``, ``--in-flight``
                     requests at once, each answered after its commit
``mqtt``             a paho client publishing QoS 1 messages of ``--chunk-records``
                     records to Mosquitto; counted when committed (skipped without a
                     ``mosquitto`` executable)
``direct``           the baseline: one ZODB client appending the same rows itself, in
                     transactions of ``--group-records`` records (no service)
``latency``          ``--rate`` records/s as a PackedForward chunk (with its chunk id)
                     every millisecond, as out_forward sends with a 1 ms flush
                     interval: median and p99 ms from sending a chunk to its ack

Output: one JSON object per figure on stdout (``{"bench", "storage", "value",
"unit"}``), then ``{"summary": ...}`` with each input's rate over the direct one
(medians of ``--repeats`` runs).

Run::

    python benchmarks/ingest_bench.py                 # 300,000 records per input
    python benchmarks/ingest_bench.py --quick
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import msgpack
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from neoarray.cluster import LocalCluster

MAPPING = {"routes": [{"match": "*", "array": "bench", "chunk_items": 1 << 14,
                       "fields": [["time", "f8", "@time"], ["seq", "u8"], ["sensor", "u8"], ["value", "f8"]]}]}
DTYPE = np.dtype([("time", "f8"), ("seq", "u8"), ("sensor", "u8"), ("value", "f8")])


def emit(figure, value, unit, storage="neoarray-2s-r1"):
    print(json.dumps({"bench": figure, "storage": storage, "value": round(value, 3), "unit": unit}), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(seq):
    return {"seq": seq, "sensor": seq % 16, "value": seq * 0.5}


class Service:
    def __init__(self, cluster, work, opts, mqtt_port):
        mapping = os.path.join(work, "mapping.json")
        with open(mapping, "w") as f:
            json.dump(MAPPING, f)
        ready = os.path.join(work, "ready.json")
        args = [sys.executable, "-m", "neoarray.cli", "ingest", "--mapping", mapping, "-a", cluster.masters,
                "-c", cluster.cluster, "--forward", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--group-records", str(opts.group_records), "--group-ms", str(opts.group_ms),
                "--ready-file", ready, "--metrics-bind", "127.0.0.1:0"]
        if mqtt_port:
            args += ["--mqtt", f"127.0.0.1:{mqtt_port}", "--mqtt-topic", "bench/#"]
        self.log = open(os.path.join(work, "ingest.log"), "ab")  # noqa: SIM115 - closed by stop
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=dict(os.environ, PYTHONPATH=ROOT))
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise SystemExit(f"neoarray ingest exited; see {work}/ingest.log")
            time.sleep(0.05)
        with open(ready) as f:
            self.addresses = json.load(f)

    def committed(self) -> float:
        with urllib.request.urlopen(f"http://{self.addresses['metrics']}/metrics", timeout=30) as reply:
            text = reply.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("neoarray_ingest_records_committed_total"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def _address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def _packed_chunks(records, chunk_records, start):
    for first in range(0, records, chunk_records):
        now = time.time()
        entries = b"".join(msgpack.packb([now, record(start + s)])
                           for s in range(first, min(records, first + chunk_records)))
        chunk = base64.b64encode(os.urandom(12)).decode()
        yield chunk, msgpack.packb(["bench.packed", entries, {"chunk": chunk, "size": chunk_records}])


def forward_packed(service, records, opts, start):
    """records/s of PackedForward chunks, acknowledged."""
    chunks = list(_packed_chunks(records, opts.chunk_records, start))
    sock = socket.create_connection(_address(service.addresses["forward"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unpacker = msgpack.Unpacker(raw=False)
    waiting, acked = set(), 0
    began = time.perf_counter()
    for chunk, packet in chunks:
        while len(waiting) >= opts.in_flight:
            unpacker.feed(sock.recv(1 << 16))
            for answer in unpacker:
                waiting.discard(answer["ack"])
                acked += 1
        sock.sendall(packet)
        waiting.add(chunk)
    while waiting:
        unpacker.feed(sock.recv(1 << 16))
        for answer in unpacker:
            waiting.discard(answer["ack"])
    elapsed = time.perf_counter() - began
    sock.close()
    return records / elapsed


def forward_message(service, records, opts, start):
    from neoarray.ingest.fluent import AckingSender
    host, port = _address(service.addresses["forward"])
    sender = AckingSender("bench", host=host, port=port, window=opts.chunk_records, timeout=30.0)
    began = time.perf_counter()
    for s in range(start, start + records):
        if not sender.emit("m", record(s)):
            raise SystemExit(f"fluent-logger failed: {sender.last_error}")
    assert sender.flush(120.0)
    elapsed = time.perf_counter() - began
    sender.close()
    return records / elapsed


def http(service, records, opts, start):
    address = service.addresses["http"]
    bodies = [msgpack.packb([record(start + s) for s in range(first, min(records, first + opts.chunk_records))])
              for first in range(0, records, opts.chunk_records)]
    lock = threading.Lock()
    errors = []

    def worker():
        while True:
            with lock:
                if not bodies:
                    return
                body = bodies.pop()
            request = urllib.request.Request(f"http://{address}/ingest/bench.http", data=body, method="POST",
                                             headers={"Content-Type": "application/msgpack"})
            try:
                with urllib.request.urlopen(request, timeout=120) as reply:
                    assert reply.status == 200
            except Exception as exc:  # noqa: BLE001 - reported below: a lost request voids the figure
                errors.append(exc)
                return
    threads = [threading.Thread(target=worker) for _ in range(opts.in_flight)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} HTTP requests failed: {errors[0]!r}")
    return records / (time.perf_counter() - began)


def mqtt(service, records, opts, start, port):
    import paho.mqtt.client as paho
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    base = service.committed()
    began = time.perf_counter()
    infos = []
    for first in range(0, records, opts.chunk_records):
        batch = [record(start + s) for s in range(first, min(records, first + opts.chunk_records))]
        infos.append(client.publish("bench/mqtt", msgpack.packb(batch) if False else json.dumps(batch), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    while service.committed() - base < records:
        time.sleep(0.01)
    elapsed = time.perf_counter() - began
    client.loop_stop()
    client.disconnect()
    return records / elapsed


def direct(cluster, records, opts, start):
    import transaction
    import ZODB

    import neoarray.array as na
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["direct"] = na.empty((0,), dtype=DTYPE, chunks=(1 << 14,))
    transaction.commit()
    began = time.perf_counter()
    for first in range(0, records, opts.group_records):
        now = time.time()
        rows = [(now, s, s % 16, s * 0.5) for s in range(start + first, start + min(records, first + opts.group_records))]
        conn.root()["direct"].append(np.array(rows, dtype=DTYPE))
        transaction.commit()
    elapsed = time.perf_counter() - began
    conn.close()
    db.close()
    return records / elapsed


def latency(service, opts, start):
    """median and p99 ms from send to ack, Message mode packets at ``opts.rate``/s."""
    sock = socket.create_connection(_address(service.addresses["forward"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    count = int(opts.rate * opts.latency_s)
    batch = max(1, int(opts.rate / 1000))       # a chunk every millisecond
    chunks = -(-count // batch)
    sent, got, acked = {}, [], [0]
    done = threading.Event()

    def reader():
        unpacker = msgpack.Unpacker(raw=False)
        while acked[0] < chunks:
            data = sock.recv(1 << 16)
            if not data:
                break
            now = time.perf_counter()
            unpacker.feed(data)
            for answer in unpacker:
                got.append(now - sent[answer["ack"]])
                acked[0] += 1
        done.set()
    threading.Thread(target=reader, daemon=True).start()
    began = time.perf_counter()
    for i in range(0, count, batch):
        due = began + i / opts.rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        chunk = f"l{start + i}"
        entries = b"".join(msgpack.packb([time.time(), record(start + j)]) for j in range(i, min(count, i + batch)))
        sent[chunk] = time.perf_counter()
        sock.sendall(msgpack.packb(["bench.latency", entries, {"chunk": chunk, "size": min(count, i + batch) - i}]))
    done.wait(120)
    sock.close()
    got_ms = np.array(got) * 1000
    return float(np.median(got_ms)), float(np.percentile(got_ms, 99)), len(got) / chunks


def start_mosquitto(work):
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        return None, None
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n")
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=300_000, help="records per input and run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-records", type=int, default=5000, help="records per chunk / request / message")
    p.add_argument("--in-flight", type=int, default=16, help="chunks or requests waiting for their ack")
    p.add_argument("--group-records", type=int, default=50_000)
    p.add_argument("--group-ms", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=10_000.0, help="records/s of the latency run")
    p.add_argument("--latency-s", type=float, default=5.0)
    p.add_argument("--inputs", default="direct,forward_packed,http,forward_message,mqtt",
                   help="comma-separated figures to measure (direct is the baseline of the ratios)")
    p.add_argument("--keep-dir", action="store_true", help="keep the cluster and the service's log")
    p.add_argument("--quick", action="store_true", help="a smoke run: 30,000 records, 1 repeat")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.records, opts.repeats, opts.latency_s = 30_000, 1, 1.0
    work = tempfile.mkdtemp(prefix="neoarray-ingest-bench-")
    cluster = LocalCluster(os.path.join(work, "cluster"), storages=2, replicas=1, partitions=4)
    cluster.start()
    broker, mqtt_port = start_mosquitto(work)
    service = Service(cluster, work, opts, mqtt_port)
    rates: dict = {}
    try:
        start = 0
        for _ in range(opts.repeats):
            runs = [("direct", lambda s: direct(cluster, opts.records, opts, s)),
                    ("forward_packed", lambda s: forward_packed(service, opts.records, opts, s)),
                    ("http", lambda s: http(service, opts.records, opts, s)),
                    ("forward_message", lambda s: forward_message(service, min(opts.records, 100_000), opts, s))]
            if mqtt_port:
                runs.append(("mqtt", lambda s: mqtt(service, opts.records, opts, s, mqtt_port)))
            for name, run in runs:
                if name not in opts.inputs.split(","):
                    continue
                rate = run(start)
                start += opts.records
                rates.setdefault(name, []).append(rate)
                emit(f"ingest_{name}", rate, "records/s")
        median_ms, p99_ms, share = latency(service, opts, start)
        emit("ingest_latency_median", median_ms, "ms")
        emit("ingest_latency_p99", p99_ms, "ms")
        emit("ingest_latency_acked_share", share, "fraction")
    finally:
        service.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        cluster.stop()
        if opts.keep_dir:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    summary = {f"{k}_records_per_s": round(v) for k, v in medians.items()}
    if "direct" in medians:
        summary.update({f"{k}_over_direct": round(v / medians["direct"], 3) for k, v in medians.items()
                        if k != "direct"})
    summary.update({"latency_median_ms": round(median_ms, 2), "latency_p99_ms": round(p99_ms, 2),
                    "latency_rate_records_per_s": opts.rate})
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
