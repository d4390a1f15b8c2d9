"""Bounds of every node's gRPC server (``wire.make_server``), over real gRPC on 127.0.0.1.

A method that sleeps counts the calls it serves at once: never more than the
request workers, the calls beyond ``rpcs_pending_max`` are refused with
RESOURCE_EXHAUSTED (``LimitExceeded``), and calls that last run on
threads of their own (``long_calls``), leaving the request workers free.
"""
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from neoarray import wire
from neoarray.errors import LimitExceeded

CLUSTER = "wire-test"
SLOW = "/test.Slow/Call"
LONG = "/test.Slow/Long"
CALL_S = 0.3


class Probe:
    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.release = threading.Event()

    def slow(self, request, context):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(CALL_S)
        with self.lock:
            self.now -= 1
        return request

    def long(self, request, context):
        self.release.wait(30)
        return request


def serve(probe: Probe, **kw) -> tuple[grpc.Server, str]:
    server = wire.make_server(CLUSTER, **kw)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Slow", {
        "Call": grpc.unary_unary_rpc_method_handler(probe.slow),
        "Long": grpc.unary_unary_rpc_method_handler(probe.long)}),))
    address = wire.bind(server, "127.0.0.1:0")
    server.start()
    return server, address


def call_many(channels, count: int, method: str = SLOW) -> list:
    """``count`` calls at once, spread over ``channels``; their results or errors."""
    calls = [channels[i % len(channels)].unary_unary(method) for i in range(count)]
    with futures.ThreadPoolExecutor(count) as pool:
        done = [pool.submit(wire.call, c, b"x%d" % i, 30.0, "slow") for i, c in enumerate(calls)]
        out = []
        for f in done:
            try:
                out.append(f.result())
            except Exception as exc:  # noqa: BLE001 (the test looks at each error)
                out.append(exc)
        return out


@pytest.fixture
def probe():
    p = Probe()
    yield p
    p.release.set()


def test_calls_beyond_rpcs_pending_max_are_refused(probe):
    server, address = serve(probe, workers_max=2, rpcs_pending_max=3)
    channels = [wire.open_channel(address, CLUSTER) for _ in range(3)]
    try:
        out = call_many(channels, 9)
        refused = [r for r in out if isinstance(r, LimitExceeded)]
        assert refused and all(isinstance(r, (bytes, LimitExceeded)) for r in out), out
        assert probe.most <= 2
        assert call_many(channels[:1], 1) == [b"x0"]          # served again afterwards
    finally:
        for c in channels:
            c.close()
        server.stop(0)


def test_long_calls_run_on_their_own_threads(probe):
    server, address = serve(probe, workers_max=1, long_calls={LONG: 4})
    channel = wire.open_channel(address, CLUSTER)
    try:
        long_call = channel.unary_unary(LONG)
        waiting = [long_call.future(b"long", timeout=30) for _ in range(3)]
        time.sleep(0.2)
        assert call_many([channel], 1) == [b"x0"]     # the one request worker is free
        probe.release.set()
        assert [f.result() for f in waiting] == [b"long"] * 3
    finally:
        channel.close()
        server.stop(0)


class LateDoor:
    """A TCP port on 127.0.0.1 that answers no connection at first (its accept queue
    is full: the kernel drops the SYNs, and the client's connect waits for its
    retransmission, about a second), then forwards every connection to ``target``:
    a connection that a loaded machine completes late."""

    def __init__(self, target: str):
        self.target = target.rsplit(":", 1)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.fillers = []
        for _ in range(2):                  # backlog 0 takes one: the second waits too
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(self.listener.getsockname())
            self.fillers.append(s)
        self.open = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.open.wait(30)
        for s in self.fillers:
            s.close()
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if conn.recv(1, socket.MSG_PEEK) == b"":
                conn.close()                # a filler
                continue
            upstream = socket.create_connection((self.target[0], int(self.target[1])))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.open.set()
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_a_connection_completed_late_is_waited_for_within_the_call_deadline(probe):
    """A connect that the kernel completes after a SYN retransmission (what a loaded
    machine did to a CI run) waits within the call's deadline instead of failing the
    call at once with "connect() timed out" (the gRPC option
    ``min_reconnect_backoff_ms`` is the time limit of one connection attempt)."""
    server, address = serve(probe)
    door = LateDoor(address)
    channel = wire.open_channel(door.address, CLUSTER)
    try:
        call = channel.unary_unary(SLOW).future(b"late", timeout=30)
        time.sleep(0.5)                     # the first SYN is dropped meanwhile
        door.open.set()
        assert call.result() == b"late"
    finally:
        channel.close()
        door.close()
        server.stop(0)
