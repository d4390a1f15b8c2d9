"""Transport choices for the data plane, measured side by side in one run.

One client process calls a server process that answers a small request (64 bytes) with
a small reply, one call at a time, over loopback; then moves 8 MiB replies.  For each
server model, the median round trip and the CPU time per call of the client and of
the server (from /proc: all threads), medians of ``--rounds`` rounds in alternating
order:

``grpc``          grpcio unary call, the sync server (a thread pool), as the control
                  plane uses it;
``asyncio``       length-prefixed frames, an asyncio ``Protocol`` server (one event
                  loop thread), the reply written from the data callback;
``selector``      the same frames, one thread running a ``selectors`` loop by hand;
``threaded``      the same frames, one thread per connection reading with blocking
                  ``recv_into`` (no handoff: the reading thread answers);
``threaded-timeout``  the same with socket time limits on both ends, set as the data
                  plane set them before its watchdog (``neoarray/transport/conn.py``):
                  an idle limit before a request, a frame limit after its header, a
                  send limit and a reply limit on the client (Python polls before each
                  ``recv``/``send`` of such a socket, and each ``settimeout`` is a
                  system call);
``threaded-1cpu``  ``threaded`` with the client and the server pinned to one CPU: the
                  difference with ``threaded`` is what waking a process on another
                  CPU costs (on a virtual machine an idle vCPU halts and is woken by
                  the hypervisor).

The client of the framed servers is a blocking socket: header + body in one
``sendall``, the reply read with ``recv_into`` into a preallocated buffer.

Output: one JSON object per figure on stdout, then a summary with each framed model's
ratio to grpc (latency, CPU, bulk rate).  Run ``python benchmarks/wire_bench.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("!II")          # body length, request id
SMALL = b"x" * 64
BULK_BYTES = 8 << 20
MODELS = ("grpc", "asyncio", "selector", "threaded", "threaded-timeout", "threaded-1cpu")
IDLE_S, FRAME_S, CALL_S = 600.0, 60.0, 10.0      # the time limits of ``threaded-timeout``


# ---------------------------------------------------------------- servers (child process)

def _answer(body: bytes) -> bytes:
    return b"B" * BULK_BYTES if body[:4] == b"bulk" else b"y" * 64


def serve_asyncio(sock: socket.socket) -> None:
    import asyncio

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, bytearray()

        def data_received(self, data):
            self.buf += data
            while len(self.buf) >= HEADER.size:
                size, rid = HEADER.unpack_from(self.buf)
                if len(self.buf) < HEADER.size + size:
                    return
                body = bytes(self.buf[HEADER.size:HEADER.size + size])
                del self.buf[:HEADER.size + size]
                reply = _answer(body)
                self.t.writelines([HEADER.pack(len(reply), rid), reply])

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, sock=sock)
        await server.serve_forever()
    asyncio.run(main())


def _read_exact(conn, view) -> bool:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def serve_threaded(sock: socket.socket, limits: bool = False) -> None:
    import threading

    def handle(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = bytearray(HEADER.size)
        while True:
            if limits:
                conn.settimeout(IDLE_S)
            if not _read_exact(conn, memoryview(head)):
                return
            if limits:
                conn.settimeout(FRAME_S)
            size, rid = HEADER.unpack(head)
            body = bytearray(size)
            if not _read_exact(conn, memoryview(body)):
                return
            reply = _answer(bytes(body))
            conn.sendall(HEADER.pack(len(reply), rid) + reply if len(reply) < 65536 else HEADER.pack(len(reply), rid))
            if len(reply) >= 65536:
                conn.sendall(reply)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_selector(sock: socket.socket) -> None:
    import selectors
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, None)
    buffers = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, _ = sock.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = bytearray()
                sel.register(conn, selectors.EVENT_READ, True)
                continue
            conn = key.fileobj
            data = conn.recv(1 << 20)
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            buf = buffers[conn]
            buf += data
            while len(buf) >= HEADER.size:
                size, rid = HEADER.unpack_from(buf)
                if len(buf) < HEADER.size + size:
                    break
                body = bytes(buf[HEADER.size:HEADER.size + size])
                del buf[:HEADER.size + size]
                reply = _answer(body)
                conn.setblocking(True)
                conn.sendall(HEADER.pack(len(reply), rid) + reply)
                conn.setblocking(False)


def serve_grpc(address: str) -> None:
    from concurrent import futures

    import grpc

    def handler(request, context):
        return _answer(request)
    method = grpc.unary_unary_rpc_method_handler(handler)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_send_message_length", 64 << 20),
                                  ("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.B", {"Call": method})])
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def child(model: str, port: int) -> None:
    if model == "grpc":
        serve_grpc(f"127.0.0.1:{port}")
        return
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    if model == "threaded-1cpu":
        os.sched_setaffinity(0, {_one_cpu()})
    if model == "threaded-timeout":
        serve_threaded(sock, limits=True)
        return
    {"asyncio": serve_asyncio, "threaded": serve_threaded, "threaded-1cpu": serve_threaded,
     "selector": serve_selector}[model](sock)


def _one_cpu() -> int:
    return min(os.sched_getaffinity(0))


# ---------------------------------------------------------------- client

def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FramedClient:
    def __init__(self, port: int, limits: bool = False):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = bytearray(HEADER.size)
        self.buf = bytearray(BULK_BYTES + 4096)
        self.rid = 0
        self.limits = limits

    def call(self, body: bytes) -> memoryview:
        self.rid += 1
        if self.limits:
            self.sock.settimeout(CALL_S)
        self.sock.sendall(HEADER.pack(len(body), self.rid) + body)
        if self.limits:
            self.sock.settimeout(CALL_S - 1)
        _read_exact(self.sock, memoryview(self.head))
        size, rid = HEADER.unpack(self.head)
        assert rid == self.rid
        view = memoryview(self.buf)[:size]
        _read_exact(self.sock, view)
        return view


class GrpcClient:
    def __init__(self, port: int):
        import grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        self.stub = self.channel.unary_unary("/bench.B/Call")
        self.stub(b"warm", timeout=10)

    def call(self, body: bytes):
        return self.stub(body, timeout=10)


def measure(model: str, calls: int, bulk_calls: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--child", model, str(port)])
    cpus = os.sched_getaffinity(0)
    if model == "threaded-1cpu":
        os.sched_setaffinity(0, {_one_cpu()})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = GrpcClient(port) if model == "grpc" else FramedClient(port, model == "threaded-timeout")
                break
            except Exception:  # noqa: BLE001 - refused (OSError, or gRPC's UNAVAILABLE) until it listens
                assert time.monotonic() < deadline, f"{model} server did not start"
                time.sleep(0.05)
        for _ in range(200):
            client.call(SMALL)
        times = []
        cpu0, scpu0 = time.process_time(), _cpu_s(proc.pid)
        for _ in range(calls):
            t0 = time.perf_counter()
            client.call(SMALL)
            times.append(time.perf_counter() - t0)
        cpu1, scpu1 = time.process_time(), _cpu_s(proc.pid)
        t0 = time.perf_counter()
        for _ in range(bulk_calls):
            client.call(b"bulk")
        bulk_s = time.perf_counter() - t0
        return {"rtt_us": statistics.median(times) * 1e6, "client_cpu_us": (cpu1 - cpu0) / calls * 1e6,
                "server_cpu_us": (scpu1 - scpu0) / calls * 1e6,
                "bulk_gb_s": bulk_calls * BULK_BYTES / bulk_s / 1e9}
    finally:
        os.sched_setaffinity(0, cpus)
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--bulk-calls", type=int, default=60)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        child(opts.child[0], int(opts.child[1]))
        return
    results: dict[str, list[dict]] = {m: [] for m in MODELS}
    for r in range(opts.rounds):
        for model in (MODELS if r % 2 == 0 else tuple(reversed(MODELS))):
            results[model].append(measure(model, opts.calls, opts.bulk_calls))
    medians = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in results.items()}
    for model, figures in medians.items():
        for name, value in figures.items():
            print(json.dumps({"bench": name, "transport": model, "value": round(value, 3)}))
    g = medians["grpc"]
    print(json.dumps({"summary": {m: {"rtt_vs_grpc": round(g["rtt_us"] / f["rtt_us"], 2),
                                      "cpu_vs_grpc": round((g["client_cpu_us"] + g["server_cpu_us"])
                                                           / (f["client_cpu_us"] + f["server_cpu_us"]), 2),
                                      "bulk_vs_grpc": round(f["bulk_gb_s"] / g["bulk_gb_s"], 2)}
                                  for m, f in medians.items() if m != "grpc"},
                      "rounds": opts.rounds, "calls": opts.calls, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
