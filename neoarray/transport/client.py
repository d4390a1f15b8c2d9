"""The data plane's client side: pooled framed connections and stubs over them.

``FramedChannel(address, cluster, ...)`` keeps up to ``connections_max`` connections to
one node; a call takes an idle one (or opens one), sends its request and reads the
reply on the calling thread: no thread and no handoff per call.  Stubs look like the
generated gRPC stubs (``stub.Load(request, timeout=..., metadata=...)``,
``.future(...)``), so ``wire.call``, ``master/calls.py`` and the callers stay as they are,
and failures are ``FramedRpcError``, a ``grpc.RpcError`` with the same status codes
(``wire.to_exception`` maps both transports alike).  Bulk segments go with
``.with_segments(request, segments)`` -> ``(reply, segments)``.

``future`` sends the request at once and reads the reply when asked: calls to several
nodes proceed in parallel from one thread (send to each, then read each), and several
requests sent on one connection before reading are pipelined.  A connection that
failed or timed out mid-call is closed, never reused; an idle pooled connection whose
peer has closed it (a node restarted) is noticed before use and replaced, so a
restarted node costs its clients no failed call.
"""
from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time

import grpc
from google.protobuf import message_factory

from .. import security, wire
from ..proto import master_pb2, standby_pb2, storage_pb2
from . import conn, frames

CONNECTIONS_MAX = 16          # per node and client process
IDLE_CHECK_S = 1.0            # a pooled connection idle this long is checked before use
CONNECT_TIMEOUT_S = 10.0

_SERVICES = {s.full_name: s for m in (master_pb2, storage_pb2, standby_pb2)
             for s in m.DESCRIPTOR.services_by_name.values()}


class FramedRpcError(grpc.RpcError):
    """A failed framed call: a gRPC status code and its message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def _status(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


class _Connection:
    """One connection: TLS, HELLO, then requests and replies in order."""

    def __init__(self, address: str, hello: bytes, tls_context, timeout_s: float, frame_bytes_max: int):
        self.address = address
        self.frame_bytes_max = frame_bytes_max
        self.rids = itertools.count(1)
        self.pending: list[int] = []          # sent, reply not read yet (in order)
        self.broken = False
        self.last_used = time.monotonic()
        self.reader: conn.FrameReader | None = None
        host, _, port = address.rpartition(":")
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
        except OSError as exc:
            raise FramedRpcError(grpc.StatusCode.UNAVAILABLE,
                                 f"cannot connect to {address} (data plane): {exc.strerror or exc}") from None
        conn.tune(sock)
        try:
            if tls_context is not None:
                sock = tls_context.wrap_socket(sock, server_hostname=host.strip("[]"))
            self.sock = sock
            self.reader = conn.FrameReader(sock, page_blocks=True)
            self.reader.write(frames.Frame(frames.HELLO, 0, body=hello), timeout_s)
            reply = self.reader.read(frames.HELLO_BYTES_MAX, timeout_s, timeout_s)
        except ssl.SSLError as exc:
            self._close_early(sock)
            raise FramedRpcError(grpc.StatusCode.UNAVAILABLE, f"TLS handshake with {address} failed: {exc}") from None
        except (conn.PeerGone, OSError) as exc:
            self._close_early(sock)
            raise FramedRpcError(grpc.StatusCode.UNAVAILABLE, f"{address} closed the connection at HELLO: {exc}") \
                from None
        if reply.kind == frames.ERROR:
            self._close_early(sock)
            raise FramedRpcError(*_error(reply))
        if reply.kind != frames.HELLO:
            self._close_early(sock)
            raise FramedRpcError(grpc.StatusCode.UNAVAILABLE, f"{address} answered HELLO with a {reply.kind} frame")

    def _close_early(self, sock) -> None:
        if self.reader is not None:
            self.reader.close()
        sock.close()

    def usable(self) -> bool:
        """Not broken, nothing pending, and the peer has not closed it meanwhile (asked
        of a connection idle for ``IDLE_CHECK_S``: a node that restarted closed it)."""
        if self.broken or self.pending or self.reader.buffered:
            return False
        return time.monotonic() - self.last_used < IDLE_CHECK_S or not conn.peer_closed(self.sock)

    def send(self, method: int, body: bytes, segments, meta: dict, timeout_s: float | None) -> int:
        rid = next(self.rids) & 0xFFFFFFFF
        try:
            self.reader.write(frames.Frame(frames.REQUEST, rid, method, body, list(segments), meta), timeout_s)
        except conn.PeerGone as exc:
            self.broken = True
            refusal = self._refusal_before_close()
            raise refusal or FramedRpcError(grpc.StatusCode.UNAVAILABLE, f"{self.address}: {exc}") from None
        self.pending.append(rid)
        return rid

    def _refusal_before_close(self) -> FramedRpcError | None:
        """The error a server sent before closing on us (a frame it refused while we
        were still sending it), if it is there to read."""
        try:
            frame = self.reader.read(frames.HELLO_BYTES_MAX, 0.5, 0.5)
        except Exception:  # noqa: BLE001 - nothing readable: the connection is just gone
            return None
        return FramedRpcError(*_error(frame)) if frame.kind == frames.ERROR else None

    def receive(self, rid: int, deadline: float | None) -> frames.Frame:
        """The reply of ``rid``: replies come in the order of the requests."""
        frame = self.read(deadline)
        expected = self.pending.pop(0)
        if frame.kind == frames.ERROR and frame.rid == 0:
            self.broken = True      # a refusal of the connection: the server closes it now
        if frame.rid not in (expected, 0) or expected != rid:
            self.broken = True
            raise FramedRpcError(grpc.StatusCode.INTERNAL, f"{self.address}: reply {frame.rid} where "
                                 f"{expected} was due: the connection is out of step")
        return frame

    def read(self, deadline: float | None) -> frames.Frame:
        # at least a second: a reply already on its way when the deadline passed (a
        # future read late) still counts
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        try:
            frame = self.reader.read(self.frame_bytes_max, left, left if left else 60.0)
        except conn.PeerGone as exc:
            self.broken = True
            timed_out = deadline is not None and time.monotonic() >= deadline
            code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.UNAVAILABLE
            raise FramedRpcError(code, f"{self.address}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a frame this client cannot take: out of step
            self.broken = True
            raise FramedRpcError(grpc.StatusCode.INTERNAL, f"{self.address}: bad frame: {exc}") from None
        self.last_used = time.monotonic()
        return frame

    def close(self) -> None:
        """Close it; a thread blocked reading it (a stream) wakes up."""
        self.broken = True
        self.reader.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _error(frame: frames.Frame) -> tuple[grpc.StatusCode, str]:
    code, details = frames.parse_error(frame.body)
    return _status(code), details


class FramedChannel:
    """Framed connections to the node at ``address`` (a pool) and the stubs over them."""

    def __init__(self, address: str, cluster: str, message_bytes_max: int = wire.MESSAGE_BYTES_MAX,
                 tls: security.TLSConfig | None = None, admin_token: str | None = None,
                 connections_max: int = CONNECTIONS_MAX, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        self.address = address
        self.hello = frames.hello_body(cluster, admin_token)
        self.tls_context = conn.client_context(tls) if tls is not None else None
        self.frame_bytes_max = message_bytes_max + (1 << 20)
        self.connections_max = connections_max
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[_Connection] = []
        self.open = 0
        self.cond = threading.Condition()
        self.closed = False

    def _connect(self, timeout_s: float) -> _Connection:
        return _Connection(self.address, self.hello, self.tls_context, min(timeout_s, self.connect_timeout_s),
                           self.frame_bytes_max)

    def checkout(self, timeout_s: float | None) -> _Connection:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.connect_timeout_s)
        with self.cond:
            while True:
                if self.closed:
                    raise FramedRpcError(grpc.StatusCode.CANCELLED, f"channel to {self.address} closed")
                while self.idle:
                    c = self.idle.pop()
                    if c.usable():
                        return c
                    c.close()
                    self.open -= 1
                if self.open < self.connections_max:
                    self.open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FramedRpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                         f"all {self.connections_max} connections to {self.address} are busy")
                self.cond.wait(left)
        try:
            return self._connect(max(0.001, deadline - time.monotonic()))
        except BaseException:
            with self.cond:
                self.open -= 1
                self.cond.notify()
            raise

    def checkin(self, c: _Connection) -> None:
        with self.cond:
            if c.broken or c.pending or self.closed:
                c.close()
                self.open -= 1
            else:
                self.idle.append(c)
            self.cond.notify()

    def stub(self, service: str) -> Stub:
        return Stub(self, service)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            self.open -= len(idle)
            self.cond.notify_all()
        for c in idle:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Stub:
    """The methods of service ``service`` (e.g. ``neoarray.v1.Storage``), as attributes."""

    def __init__(self, channel: FramedChannel, service: str):
        for method in _SERVICES[service].methods:
            name = f"/{service}/{method.name}"
            kind = _StreamMethod if method.server_streaming else _UnaryMethod
            setattr(self, method.name, kind(channel, name, message_factory.GetMessageClass(method.output_type)))


class _UnaryMethod:
    def __init__(self, channel: FramedChannel, name: str, reply_class):
        self.channel, self.name, self.reply_class = channel, name, reply_class
        self.method_id = frames.METHOD_IDS[name]

    def __call__(self, request, timeout=None, metadata=None):
        return self.future(request, timeout, metadata).result()

    def with_segments(self, request, segments=(), timeout=None, metadata=None):
        """``(reply, segments)``."""
        return self.future(request, timeout, metadata, segments).result_with_segments()

    def future(self, request, timeout=None, metadata=None, segments=()):
        """The call, its request sent; a failure to connect or send is the future's
        outcome (as with gRPC, creating a future never raises)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        body = request.SerializeToString()
        size = len(body) + sum(frames.segment_bytes(s) for s in segments)
        if size > self.channel.frame_bytes_max:
            return _Future.failed(self, FramedRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"a request of {size} bytes is larger than max "
                f"{self.channel.frame_bytes_max} (message_bytes_max of this client, and 1 MiB for the frame)"))
        wire._traffic.add("sent_bytes", size, calls=1)
        try:
            c = self.channel.checkout(timeout)
        except FramedRpcError as exc:
            return _Future.failed(self, exc)
        try:
            rid = c.send(self.method_id, body, segments, dict(metadata or ()), timeout)
        except FramedRpcError as exc:
            self.channel.checkin(c)
            return _Future.failed(self, exc)
        except BaseException:
            self.channel.checkin(c)
            raise
        return _Future(self, c, rid, deadline)


class _Future:
    """A call whose request is sent; its reply is read by ``result()``."""

    def __init__(self, method: _UnaryMethod, c: _Connection | None, rid: int, deadline: float | None):
        self.method, self.c, self.rid, self.deadline = method, c, rid, deadline
        self.outcome = None
        self.callbacks: list = []

    @classmethod
    def failed(cls, method: _UnaryMethod, error: FramedRpcError) -> _Future:
        future = cls(method, None, 0, None)
        future.outcome = ("error", error)
        return future

    def _resolve(self) -> None:
        if self.outcome is not None:
            return
        try:
            frame = self.c.receive(self.rid, self.deadline)
            if frame.kind == frames.REPLY:
                wire._traffic.add("received_bytes", len(frame.body) + sum(len(s) for s in frame.segments))
                self.outcome = ("ok", (self.method.reply_class.FromString(frame.body), frame.segments))
            elif frame.kind == frames.ERROR:
                self.outcome = ("error", FramedRpcError(*_error(frame)))
            else:
                self.c.broken = True
                self.outcome = ("error", FramedRpcError(grpc.StatusCode.INTERNAL,
                                                        f"{self.c.address}: a {frame.kind} frame answered a request"))
        except FramedRpcError as exc:
            self.outcome = ("error", exc)
        finally:
            self.method.channel.checkin(self.c)
        for fn in self.callbacks:
            fn(self)

    def result_with_segments(self, timeout=None):
        self._resolve()
        kind, value = self.outcome
        if kind == "error":
            raise value
        return value

    def result(self, timeout=None):
        return self.result_with_segments()[0]

    def exception(self, timeout=None):
        self._resolve()
        return self.outcome[1] if self.outcome[0] == "error" else None

    def add_done_callback(self, fn) -> None:
        if self.outcome is not None:
            fn(self)
        else:
            self.callbacks.append(fn)

    def done(self) -> bool:
        return self.outcome is not None


class _StreamMethod:
    """A server stream (the master's Subscribe) on a connection of its own."""

    def __init__(self, channel: FramedChannel, name: str, reply_class):
        self.channel, self.name, self.reply_class = channel, name, reply_class
        self.method_id = frames.METHOD_IDS[name]

    def __call__(self, request, timeout=None, metadata=None):
        """The stream; a failure to connect is raised by its first ``next`` (as with
        gRPC, opening a stream never raises)."""
        try:
            c = self.channel._connect(self.channel.connect_timeout_s)
            rid = c.send(self.method_id, request.SerializeToString(), (), dict(metadata or ()),
                         self.channel.connect_timeout_s)
        except FramedRpcError as exc:
            return _FailedStream(exc)
        return _Stream(c, rid, self.reply_class)


class _FailedStream:
    def __init__(self, error: FramedRpcError):
        self.error = error

    def __iter__(self):
        return self

    def __next__(self):
        raise self.error

    def cancel(self) -> None:
        pass


class _Stream:
    def __init__(self, c: _Connection, rid: int, reply_class):
        self.c, self.rid, self.reply_class = c, rid, reply_class
        self.cancelled = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.c.broken and self.cancelled:
            raise FramedRpcError(grpc.StatusCode.CANCELLED, "stream cancelled")
        try:
            frame = self.c.read(None)
        except FramedRpcError:
            if self.cancelled:
                raise FramedRpcError(grpc.StatusCode.CANCELLED, "stream cancelled") from None
            raise
        if frame.kind == frames.PUSH:
            return self.reply_class.FromString(frame.body)
        self.c.close()
        if frame.kind == frames.END:
            raise StopIteration
        if frame.kind == frames.ERROR:
            raise FramedRpcError(*_error(frame))
        raise FramedRpcError(grpc.StatusCode.INTERNAL, f"a {frame.kind} frame in a stream")

    def cancel(self) -> None:
        self.cancelled = True
        self.c.close()
