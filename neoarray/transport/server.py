"""The data plane's server: framed TCP, one thread per connection, no handoff.

Design, from ``benchmarks/wire_bench.py`` (a small request answered over loopback, one
call at a time, on this 2-core machine; medians of 3 rounds of 3,000 calls, the
machine otherwise idle; round trip, and CPU per call client + server): grpcio unary
436 us and 221 + 343 us; length-prefixed frames on an asyncio ``Protocol`` server 62 us
and 18 + 57 us; on a hand-written ``selectors`` loop 64 us and 18 + 57 us; on a thread
per connection reading with blocking ``recv_into`` and answering itself 37 us and
17 + 20 us; 8 MiB replies at 1.13, 0.55, 2.27 and 2.73 GB/s.  (Under load, in an
earlier run: 951, 93, 106 and 38 us.)  With this module's framing, protobuf bodies and
checks, a trivial call costs about 100-120 us here.  An event loop hands every request from the loop to the code that serves
it and back, or serves it on the loop and stalls every other connection behind an
fsync; a thread per connection does neither: the thread that reads a request serves
it and writes the reply.  So each accepted connection gets a thread, up to
``connections_max`` (the bound on threads and on memory: one frame of at most
``frame_bytes_max`` is read per connection at a time).

Per connection: the TLS handshake (mutual, when the node has a certificate) and the
HELLO (cluster name, admin token, protocol version and method table) must complete
within ``handshake_s``, or the connection is closed.  Then requests are served in
order, one at a time: a client pipelines by sending several before reading the
replies, which come back in the same order with their request ids; requests it sends
meanwhile wait in the kernel's buffers (TCP flow control, nothing queues here).  A
connection idle for ``idle_s`` is closed; a frame that started must end within
``frame_s``.

Every request is checked like a gRPC call of the same method: the cluster name (at
HELLO), the role of the peer's certificate and the admin token (``security.refusal``),
then decoded (protobuf; a body that does not decode is INVALID_ARGUMENT naming the
method) and served by the same servicer methods as the gRPC server, with a
``_Context`` standing for gRPC's.  Domain exceptions become the same status codes
(``wire.status_of``).  A method may take and return bulk segments: the servicer's
``<Method>_segments(request, segments, context) -> (reply, segments)``, or
``(reply, segments, release)`` when the segments are views valid only until
``release()`` (a storage node's loads hand out records in their LMDB pages: no copy),
which the server calls once the reply is written or failed; a method without one
refuses segments.  A server-streaming method (the master's Subscribe)
sends its messages as PUSH frames, then END, and holds its connection's thread while
it lasts.  A frame this protocol does not allow (a bad header, lengths that do not add
up, an unknown kind, a frame out of order) is answered with an error and the
connection closed; nothing of it reaches a servicer.
"""
from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory

from .. import security, wire
from ..errors import ClusterNameMismatch, LimitExceeded, RequestRefused
from ..proto import master_pb2, standby_pb2, storage_pb2
from . import conn, frames

log = logging.getLogger(__name__)


FRAME_SLACK_BYTES = 1 << 20     # a frame's header, lengths and metadata beside its message


@dataclass
class Limits:
    frame_bytes_max: int = wire.MESSAGE_BYTES_MAX + FRAME_SLACK_BYTES
    connections_max: int = 1_000
    handshake_s: float = 5.0
    idle_s: float = 600.0
    frame_s: float = 60.0


@dataclass(frozen=True)
class _Handler:
    fn: object
    request_class: type
    streaming: bool
    takes_segments: bool


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class _Context:
    """What servicers use of gRPC's ``ServicerContext``, for a framed call."""

    def __init__(self, connection: _Connection, metadata: dict):
        self._connection = connection
        self._metadata = metadata
        self._code = None

    def abort(self, code, details):
        self._code = code
        raise _Abort(code, details)

    def set_code(self, code) -> None:
        self._code = code

    def set_details(self, details) -> None:
        self._details = details

    def code(self):
        return self._code

    def invocation_metadata(self):
        return tuple(self._metadata.items())

    def auth_context(self):
        sock = self._connection.sock
        if not isinstance(sock, ssl.SSLSocket):
            return {}
        return {"transport_security_type": [b"ssl"], "peer_uri": conn.peer_uris(sock)}

    def peer(self) -> str:
        return self._connection.peer

    def is_active(self) -> bool:
        return self._connection.alive()

    def add_callback(self, fn) -> bool:
        self._connection.callbacks.append(fn)
        return True

    def time_remaining(self):
        return None


def handlers_of(servicers: dict) -> dict[str, _Handler]:
    """``{full method name: _Handler}`` of the servicers, keyed by service full name
    (``{"neoarray.v1.Storage": StorageServicer(...)}``)."""
    services = {s.full_name: s for m in (master_pb2, storage_pb2, standby_pb2)
                for s in m.DESCRIPTOR.services_by_name.values()}
    out = {}
    for name, servicer in servicers.items():
        for method in services[name].methods:
            out[f"/{name}/{method.name}"] = _Handler(
                getattr(servicer, f"{method.name}_segments", None) or getattr(servicer, method.name),
                message_factory.GetMessageClass(method.input_type), method.server_streaming,
                hasattr(servicer, f"{method.name}_segments"))
    return out


class FramedServer:
    """Serves ``servicers`` (service full name -> servicer) over framed TCP."""

    def __init__(self, cluster: str, servicers: dict, limits: Limits | None = None,
                 tls: security.TLSConfig | None = None, admin_token: str | None = None,
                 rpc_metrics=None):
        self.cluster = cluster
        self.limits = limits or Limits()
        self.handlers = handlers_of(servicers)
        self.tls_context = conn.server_context(tls) if tls is not None else None
        self.admin_token = admin_token
        self.rpc_metrics = rpc_metrics
        self.listener: socket.socket | None = None
        self.address = ""
        self.connections: set[_Connection] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def bind(self, address: str) -> str:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {address} (data plane): {exc.strerror or exc}") from None
        sock.listen(128)
        self.listener = sock
        self.address = f"{host}:{sock.getsockname()[1]}"
        return self.address

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="framed-accept").start()

    def stop(self) -> None:
        self.stopped.set()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass        # not connected: closing is enough
            self.listener.close()
        with self.lock:
            connections = list(self.connections)
        for c in connections:
            c.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, peer = self.listener.accept()
            except OSError:
                if self.stopped.is_set():
                    return
                time.sleep(0.01)
                continue
            with self.lock:
                full = len(self.connections) >= self.limits.connections_max
                c = _Connection(self, sock, peer)
                if not full:
                    self.connections.add(c)
            if full:
                threading.Thread(target=c.refuse_full, daemon=True).start()
                continue
            threading.Thread(target=c.serve, daemon=True, name=f"framed-{peer[1]}").start()

    def _forget(self, c: _Connection) -> None:
        with self.lock:
            self.connections.discard(c)

    def token_ok(self, token: str) -> bool:
        return bool(self.admin_token and token and hmac.compare_digest(token.encode(), self.admin_token.encode()))


class _Connection:
    def __init__(self, server: FramedServer, sock: socket.socket, peer):
        self.server = server
        self.sock = sock
        self.peer = f"ipv4:{peer[0]}:{peer[1]}"
        self.callbacks: list = []
        self.closed = False
        self.roles: frozenset | None = None
        self.token_ok = False
        self.write_lock = threading.Lock()
        self.reader: conn.FrameReader | None = None     # after the TLS handshake

    # -- life -----------------------------------------------------------------------
    def refuse_full(self) -> None:
        """Past ``connections_max``: the HELLO is answered with RESOURCE_EXHAUSTED."""
        try:
            self.sock.settimeout(self.server.limits.handshake_s)
            self._handshake_tls()
            self._send_error(0, LimitExceeded(f"this node serves {self.server.limits.connections_max} "
                                              f"connections, connections_max: refused"))
        except Exception as exc:  # noqa: BLE001 - refusing: nothing more to do
            log.debug("refusing a connection past connections_max: %s", exc)
        self.close()

    def serve(self) -> None:
        try:
            if self._handshake():
                self._loop()
        except conn.PeerGone:
            pass
        except Exception:  # noqa: BLE001 - a bug here must not kill the node
            log.exception("framed connection from %s failed", self.peer)
        finally:
            self.close()
            self.server._forget(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reader is not None:
            self.reader.close()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        for fn in self.callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("callback at the end of a connection failed")

    def alive(self) -> bool:
        """The peer has not closed the connection (it sends nothing while a stream runs)."""
        if self.closed or self.server.stopped.is_set():
            return False
        return not conn.peer_closed(self.sock)

    def _handshake_tls(self) -> None:
        if self.server.tls_context is not None:
            try:
                self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                raise conn.PeerGone(f"TLS handshake failed: {exc}") from None
            self.roles = conn.peer_roles(self.sock)

    def _handshake(self) -> bool:
        limits = self.server.limits
        self.sock.settimeout(limits.handshake_s)
        conn.tune(self.sock)
        self._handshake_tls()
        self.reader = conn.FrameReader(self.sock)
        try:
            frame = self.reader.read(frames.HELLO_BYTES_MAX, limits.handshake_s, limits.handshake_s)
            if frame.kind != frames.HELLO:
                raise RequestRefused("the first frame must be a HELLO")
            hello = frames.parse_hello(frame.body)
        except (RequestRefused, LimitExceeded) as exc:
            self._send_error(0, exc)
            return False
        if hello["cluster"] != self.server.cluster:
            self._send_error(0, ClusterNameMismatch(
                f"cluster name mismatch: this node serves cluster {self.server.cluster!r}, "
                f"the request was for {hello['cluster']!r}"))
            return False
        self.token_ok = self.server.token_ok(hello["token"])
        self.metadata = {wire.CLUSTER_KEY: hello["cluster"]}
        if hello["token"]:
            self.metadata[security.TOKEN_KEY] = hello["token"]
        self._write(frames.Frame(frames.HELLO, 0, body=frames.hello_body(self.server.cluster)))
        return True

    # -- requests -------------------------------------------------------------------
    def _loop(self) -> None:
        limits = self.server.limits
        while not self.server.stopped.is_set():
            try:
                frame = self.reader.read(limits.frame_bytes_max, limits.idle_s, limits.frame_s)
            except (RequestRefused, LimitExceeded) as exc:
                self._send_error(0, exc)
                return
            if frame.kind != frames.REQUEST:
                self._send_error(frame.rid, RequestRefused(f"a {frame.kind} frame where a request was due "
                                                           f"(the protocol is out of step): closing"))
                return
            self._call(frame)

    def _call(self, frame: frames.Frame) -> None:
        method = frame.method_name
        handler = self.server.handlers.get(method)
        started = time.perf_counter()
        code, reply_bytes = "OK", 0
        try:
            if handler is None:
                raise _Abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served on this node's data plane")
            why = security.refusal(method, self.roles, self.token_ok, self.server.admin_token is not None)
            if why is not None:
                raise _Abort(grpc.StatusCode.PERMISSION_DENIED, why)
            if frame.segments and not handler.takes_segments:
                raise RequestRefused(f"{method} takes no bulk segments ({len(frame.segments)} sent)")
            request = _decode(handler.request_class, frame.body, method)
            context = _Context(self, {**self.metadata, **frame.meta})
            if handler.streaming:
                for event in handler.fn(request, context):
                    self._write(frames.Frame(frames.PUSH, frame.rid, frame.method, event.SerializeToString()))
                self._write(frames.Frame(frames.END, frame.rid, frame.method))
                return
            if handler.takes_segments:
                result = handler.fn(request, frame.segments, context)
            else:
                result = handler.fn(request, context), []
            reply, segments = result[0], result[1]
            try:
                body = reply.SerializeToString()
                reply_bytes = len(body) + sum(memoryview(s).nbytes for s in segments)
                self._write(frames.Frame(frames.REPLY, frame.rid, frame.method, body, segments))
            finally:
                if len(result) > 2:     # segments were views valid until release()
                    result[2]()
        except conn.PeerGone:
            code = "CANCELLED"
            raise
        except _Abort as exc:
            code = exc.code.name
            self._send_status(frame.rid, exc.code, exc.details)
        except NotImplementedError:     # a method the servicer does not implement
            code = "UNIMPLEMENTED"
            self._send_status(frame.rid, grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
        except Exception as exc:  # noqa: BLE001 - a status for the client: the node keeps running
            status, details = wire.status_of(exc)
            code = status.name
            if status == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            self._send_status(frame.rid, status, details)
        finally:
            if self.server.rpc_metrics is not None:
                self.server.rpc_metrics.observe(method, code, time.perf_counter() - started,
                                                len(frame.body) + sum(len(s) for s in frame.segments), reply_bytes)

    def _send_error(self, rid: int, exc: Exception) -> None:
        status, details = wire.status_of(exc)
        if isinstance(exc, ClusterNameMismatch):
            status = grpc.StatusCode.FAILED_PRECONDITION
        try:
            self._send_status(rid, status, details)
        except conn.PeerGone:
            pass

    def _send_status(self, rid: int, status: grpc.StatusCode, details: str) -> None:
        self._write(frames.Frame(frames.ERROR, rid, body=frames.error_body(status.name, details)))

    def _write(self, frame: frames.Frame) -> None:
        with self.write_lock:
            if self.reader is not None:
                self.reader.write(frame, self.server.limits.frame_s)
            else:           # refusing before the handshake ended: the socket's own limit
                self.sock.settimeout(self.server.limits.frame_s)
                conn.write_frame(self.sock, frame)


def _decode(request_class, body: bytes, method: str):
    try:
        return request_class.FromString(body)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise RequestRefused(f"malformed {method} request ({len(body)} bytes): "
                             f"{type(exc).__name__}: {exc}") from None
