"""The one boundary where gRPC meets the domain.

Servers: ``make_server`` builds a gRPC server whose every method checks the cluster name
carried in the call metadata and turns domain exceptions into gRPC status codes.
Clients: ``Channel`` opens a channel that adds the cluster name to every call, and
``call`` turns gRPC status codes back into domain exceptions, so no caller ever sees a
raw ``grpc.RpcError``:

=====================  ==========================================
status                 exception
=====================  ==========================================
FAILED_PRECONDITION    ``ClusterNameMismatch`` (cluster name), ``StaleEpoch``
                       (a master's epoch refused), else ``ClusterUnavailable``
UNAVAILABLE            ``ClusterUnavailable``
DEADLINE_EXCEEDED      ``ClusterUnavailable``
INVALID_ARGUMENT       ``RequestRefused`` (a ``ValueError``)
RESOURCE_EXHAUSTED     ``LimitExceeded`` (a ``RequestRefused``), or ``StorageFull``
DATA_LOSS              ``ChecksumError``
NOT_FOUND              ``POSKeyError``
PERMISSION_DENIED      ``AccessDenied`` (role or admin token), or
                       ``ReadOnlyError`` (a read-only peer writing)
=====================  ==========================================

Security (see ``security``): ``make_server(..., access=AccessGuard(...))`` checks each
call's certificate role and admin token; ``bind(..., tls=)`` listens with mutual TLS;
``open_channel(..., tls=, admin_token=)`` presents a certificate and the admin token.

Traffic: channels from ``open_channel`` count, process-wide, the calls made on them
and the bytes of every message they serialize (requests sent) and deserialize
(replies received): the protobuf size (``ByteSize()``) of each message, what crosses
the network give or take gRPC framing, counted where gRPC serializes anyway (no extra
work).  ``call`` and direct stub calls (``.future``) count alike.  ``traffic()``
reads the counters, ``reset_traffic()`` zeroes them.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import lmdb
from ZODB import POSException

from . import security
from .errors import (
    AccessDenied,
    ChecksumError,
    ClusterNameMismatch,
    ClusterUnavailable,
    LimitExceeded,
    NeoError,
    RequestRefused,
    StaleEpoch,
    StorageFull,
)
from .masters import STALE_EPOCH_PREFIX

log = logging.getLogger(__name__)

CLUSTER_KEY = "neo-cluster"
MESSAGE_BYTES_MAX = 256 * 1024 * 1024
GRPC_MESSAGE_BYTES_MAX = (1 << 31) - 1     # gRPC takes message sizes as a C int
FULL_PREFIX = "storage full: "


def grpc_options(message_bytes_max: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", message_bytes_max),
        ("grpc.max_receive_message_length", message_bytes_max),
        ("grpc.so_reuseport", 0),
        ("grpc.enable_http_proxy", 0),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        # a restarted node is back within a second: do not wait seconds to reconnect.
        # Not ``grpc.min_reconnect_backoff_ms``: it is gRPC's time limit of one
        # connection attempt, not a pause; at 100 ms a loopback connect that a loaded
        # machine completes late failed the call at once, whatever its deadline
        # ("connect() timed out", tests/test_wire_server.py); gRPC's default (20 s)
        # leaves the call's own deadline in charge
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


# ---------------------------------------------------------------- server side

def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a domain exception is answered with (gRPC and the
    framed data plane alike)."""
    if isinstance(exc, ChecksumError):
        return grpc.StatusCode.DATA_LOSS, str(exc)
    if isinstance(exc, StorageFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, FULL_PREFIX + str(exc)
    if isinstance(exc, lmdb.MapFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, FULL_PREFIX + "LMDB map is full"
    if isinstance(exc, OSError) and exc.errno == 28:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, FULL_PREFIX + str(exc)
    if isinstance(exc, LimitExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, ClusterUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, POSException.ReadOnlyError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc) or "read-only"
    if isinstance(exc, (RequestRefused, ValueError, TypeError, KeyError, IndexError)):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}"
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def _aborted(context) -> bool:
    code = getattr(context, "code", None)
    return callable(code) and code() not in (None, grpc.StatusCode.OK)


def _guard(fn, method: str, streaming: bool):
    def unary(request, context):
        try:
            return fn(request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # turned into a status: the node keeps running
            if _aborted(context):
                raise             # the handler chose its status with context.abort()
            code, msg = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            context.abort(code, msg)

    def stream(request, context):
        try:
            yield from fn(request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:
            if _aborted(context):
                raise
            code, msg = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            context.abort(code, msg)

    return stream if streaming else unary


def _decoding(fn, deserialize, method: str):
    """``fn`` taking the raw request bytes: undecodable bytes are ``RequestRefused``
    (INVALID_ARGUMENT naming the method), where gRPC itself would answer INTERNAL."""
    def decoded(raw, context):
        try:
            request = raw if deserialize is None else deserialize(raw)
        except Exception as exc:  # noqa: BLE001 (protobuf raises DecodeError and others)
            raise RequestRefused(f"malformed {method} request ({len(raw)} bytes): "
                                 f"{type(exc).__name__}: {exc}") from None
        return fn(request, context)
    return decoded


class _ClusterGuard(grpc.ServerInterceptor):
    """Refuse calls from another cluster; decode requests and map exceptions of every
    method to statuses (the handlers get raw bytes from gRPC and decode them here)."""

    def __init__(self, cluster: str):
        self.cluster = cluster

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        peer_cluster = dict(details.invocation_metadata or ()).get(CLUSTER_KEY)
        if peer_cluster != self.cluster:
            msg = (f"cluster name mismatch: this node serves cluster {self.cluster!r}, "
                   f"the request was for {peer_cluster!r}")

            def refuse(request, context):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, msg)
            raw = handler._replace(request_deserializer=None)
            if handler.unary_unary:
                return raw._replace(unary_unary=refuse)
            return raw._replace(unary_stream=refuse)
        raw = handler._replace(request_deserializer=None)
        if handler.unary_unary:
            fn = _decoding(handler.unary_unary, handler.request_deserializer, details.method)
            return raw._replace(unary_unary=_guard(fn, details.method, False))
        if handler.unary_stream:
            fn = _decoding(handler.unary_stream, handler.request_deserializer, details.method)
            return raw._replace(unary_stream=_guard(fn, details.method, True))
        return handler


class _LongCallPools(grpc.ServerInterceptor):
    """Serve the methods of ``pools`` (full names, e.g. ``/neoarray.v1.Master/Subscribe``)
    on their own threads: a call that lasts (a client's event stream, a standby's
    long poll) would otherwise hold one of the few request workers for its lifetime,
    and ``rpc_workers_max`` such calls would stop the node answering anything else.

    Outermost interceptor: the handler it returns is the one gRPC runs, and gRPC runs a
    behaviour carrying ``experimental_thread_pool`` on that pool (grpcio's per-method
    pool; a gRPC without it runs the call on the request workers, as before)."""

    def __init__(self, pools: dict[str, futures.ThreadPoolExecutor]):
        self.pools = pools

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        pool = self.pools.get(details.method)
        if handler is None or pool is None:
            return handler
        kind = "unary_stream" if handler.unary_stream else "unary_unary" if handler.unary_unary else None
        if kind is None:
            return handler
        behaviour = getattr(handler, kind)

        def on_own_thread(request, context):
            return behaviour(request, context)
        on_own_thread.experimental_thread_pool = pool
        return handler._replace(**{kind: on_own_thread})


def make_server(cluster: str, workers_max: int = 32,
                message_bytes_max: int = MESSAGE_BYTES_MAX, interceptors=(),
                access: security.AccessGuard | None = None, rpcs_pending_max: int = 256,
                long_calls: dict[str, int] | None = None) -> grpc.Server:
    """A gRPC server guarded by the cluster name, with bounded workers and messages;
    ``access`` checks roles and the admin token after the cluster name.

    ``interceptors`` run outside the cluster-name guard, in order (the metrics of
    ``neoarray.metrics`` see refused requests too).

    Memory held by requests is bounded: gRPC reads a request's message on the worker
    that serves it, so at most ``workers_max`` (plus the threads of ``long_calls``)
    messages of at most ``message_bytes_max`` are in memory at once, whatever the
    number of connections; at most ``rpcs_pending_max`` calls (plus ``long_calls``)
    may be open on the server, more are refused with RESOURCE_EXHAUSTED.
    ``long_calls`` maps a method's full name to the threads it gets for itself
    (``_LongCallPools``); the method refuses calls beyond that itself (e.g. the
    master's ``subscribers_max``).

    Not used: HTTP/2's per-connection stream limit (``grpc.max_concurrent_streams``).
    With grpcio 1.85 a client over it gets some calls failed with RST_STREAM
    (REFUSED_STREAM) as UNAVAILABLE instead of waiting, which a client takes for a
    dead node."""
    long_calls = long_calls or {}
    pools = {method: futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc-long")
             for method, threads in long_calls.items()}
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers_max, thread_name_prefix="rpc"),
        interceptors=[*([_LongCallPools(pools)] if pools else []), *interceptors,
                      _ClusterGuard(cluster), *([access] if access else [])],
        options=grpc_options(message_bytes_max),
        maximum_concurrent_rpcs=rpcs_pending_max + sum(long_calls.values()),
    )


def bind(server: grpc.Server, address: str, tls: security.TLSConfig | None = None) -> str:
    """Bind ``host:port`` (port 0 picks a free one), with mutual TLS when ``tls`` is
    given, and return the bound address."""
    host, _, _port = address.rpartition(":")
    try:
        if tls is not None:
            bound = server.add_secure_port(address, tls.server_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:    # grpcio >= 1.60 raises where it returned 0 ("Failed to bind")
        bound = 0
    if not bound:
        raise OSError(f"cannot listen on {address} (in use by another program, or not an address of this host)")
    return f"{host}:{bound}"


# ---------------------------------------------------------------- client side

class _AddCluster(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, cluster: str, admin_token: str | None = None):
        self.md = ((CLUSTER_KEY, cluster),) + (((security.TOKEN_KEY, admin_token),) if admin_token else ())

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + self.md)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class _Traffic:
    """Thread-safe counters of calls and of their message bytes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {"calls": 0, "sent_bytes": 0, "received_bytes": 0}

    def add(self, key: str, nbytes: int, calls: int = 0) -> None:
        with self._lock:
            self._counts[key] += nbytes
            self._counts["calls"] += calls

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self._counts, 0)


_traffic = _Traffic()


def traffic() -> dict:
    """``{"calls", "sent_bytes", "received_bytes"}`` of the calls this process made on
    channels from ``open_channel`` since the last ``reset_traffic()``."""
    return _traffic.snapshot()


def reset_traffic() -> None:
    """Zero the counters of ``traffic()``."""
    _traffic.reset()


def _counted_serializer(serialize):
    def counted(message):
        raw = message if serialize is None else serialize(message)
        _traffic.add("sent_bytes", len(raw), calls=1)
        return raw
    return counted


def _counted_deserializer(deserialize):
    def counted(raw):
        _traffic.add("received_bytes", len(raw))
        return raw if deserialize is None else deserialize(raw)
    return counted


class _CountingChannel(grpc.Channel):
    """A channel whose message (de)serializers add to the process's traffic counters
    (one call per request serialized)."""

    def __init__(self, channel: grpc.Channel):
        self._channel = channel

    @staticmethod
    def _wrap(make, method, request_serializer=None, response_deserializer=None, **kw):
        return make(method, _counted_serializer(request_serializer),
                    _counted_deserializer(response_deserializer), **kw)

    def unary_unary(self, method, *args, **kw):
        return self._wrap(self._channel.unary_unary, method, *args, **kw)

    def unary_stream(self, method, *args, **kw):
        return self._wrap(self._channel.unary_stream, method, *args, **kw)

    def stream_unary(self, method, *args, **kw):
        return self._wrap(self._channel.stream_unary, method, *args, **kw)

    def stream_stream(self, method, *args, **kw):
        return self._wrap(self._channel.stream_stream, method, *args, **kw)

    def subscribe(self, callback, try_to_connect=False):
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        self._channel.unsubscribe(callback)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self._channel.close()
        return False


def open_channel(address: str, cluster: str,
                 message_bytes_max: int = MESSAGE_BYTES_MAX,
                 tls: security.TLSConfig | None = None, admin_token: str | None = None) -> grpc.Channel:
    """A channel to ``address`` whose every call carries the cluster name (and the
    admin token, if given) and is counted by ``traffic()``; with ``tls``, over mutual
    TLS with that certificate."""
    options = grpc_options(message_bytes_max)
    if tls is not None:
        channel = grpc.secure_channel(address, tls.channel_credentials(), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return _CountingChannel(grpc.intercept_channel(channel, _AddCluster(cluster, admin_token)))


def to_exception(err: grpc.RpcError, what: str = "") -> Exception:
    """The domain exception for a failed call."""
    code = err.code() if hasattr(err, "code") else None
    msg = err.details() if hasattr(err, "details") else str(err)
    where = f"{what}: " if what else ""
    if code == grpc.StatusCode.FAILED_PRECONDITION and "cluster name" in (msg or ""):
        return ClusterNameMismatch(f"{where}{msg}")
    if code == grpc.StatusCode.FAILED_PRECONDITION and (msg or "").startswith(STALE_EPOCH_PREFIX):
        return StaleEpoch(f"{where}{msg}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED):
        return ClusterUnavailable(f"{where}{msg}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RequestRefused(f"{where}{msg}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if (msg or "").startswith(FULL_PREFIX):
            return StorageFull(f"{where}{msg}")
        if "larger than max" in (msg or ""):   # gRPC's own message size check
            msg += " (message_bytes_max of the sender or the receiver)"
        return LimitExceeded(f"{where}{msg}")
    if code == grpc.StatusCode.DATA_LOSS:
        return ChecksumError(f"{where}{msg}")
    if code == grpc.StatusCode.NOT_FOUND:
        return POSException.POSKeyError(msg)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        if (msg or "").startswith(security.DENIED_PREFIX):
            return AccessDenied(f"{where}{msg}")
        return POSException.ReadOnlyError(msg)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ClusterUnavailable(f"{where}{msg}")
    return NeoError(f"{where}{code}: {msg}")


def call(method, request, timeout_s: float, what: str = "", metadata=None):
    """Call a unary ``method`` (with ``metadata``, ``(key, value)`` pairs, if given);
    failures come back as domain exceptions."""
    try:
        if metadata is None:
            return method(request, timeout=timeout_s)
        return method(request, timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as err:
        raise to_exception(err, what) from None
    except ValueError as err:   # a channel closed by another thread (a switch of master)
        if "closed channel" not in str(err):
            raise
        raise ClusterUnavailable(f"{what}: the channel was closed meanwhile ({err}); retry") from None


def result(future, what: str = ""):
    """The reply of a call made with ``method.future(...)``; its failure comes back as
    the domain exception."""
    try:
        return future.result()
    except grpc.RpcError as err:
        raise to_exception(err, what) from None


def events(stream, what: str = ""):
    """Iterate a server stream (``Subscribe``); its failure comes back as the domain
    exception (a stream cancelled by its reader: ``ClusterUnavailable``)."""
    try:
        yield from stream
    except grpc.RpcError as err:
        raise to_exception(err, what) from None


def retry(fn, attempts_max: int, delay_s: float, retry_on=(ClusterUnavailable,)):
    """Call ``fn()`` up to ``attempts_max`` times, sleeping ``delay_s`` (doubling) between."""
    for attempt in range(attempts_max):
        try:
            return fn()
        except retry_on:
            if attempt == attempts_max - 1:
                raise
            time.sleep(delay_s * (2 ** min(attempt, 5)))
