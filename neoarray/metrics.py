"""Prometheus metrics of one neoarray process (master, storage node or client).

Each process keeps its metrics in its own ``CollectorRegistry`` (never the global
one: tests run several nodes' code in one process) held by a ``MetricsExporter``,
which serves ``/metrics`` over HTTP on the address asked (``--metrics-bind
HOST:PORT``, ``NeoStorage(metrics_bind=...)``; port 0 picks a free one) until
``stop()``.  Off by default: a node started without it has no interceptor and no
HTTP server.

What every process exports (this module):

======================================================  ==================================
``neoarray_node_info{role, cluster, node}``             1; ``node`` is ``M``, ``S<id>``,
                                                        ``C<id>`` (``?`` before identify)
``neoarray_rpc_server_requests_total``                  requests served, by ``service``,
  ``{service, method, code}``                           ``method``, gRPC status ``code``
``neoarray_rpc_server_errors_total``                    the same, for codes other than OK
  ``{service, method, code}``                           (a refused cluster name included)
``neoarray_rpc_server_latency_seconds``                 histogram of the time to serve a
  ``{service, method}``                                 request (a stream: until it ends)
``neoarray_rpc_server_request_bytes_total``             serialized bytes received
``neoarray_rpc_server_response_bytes_total``            serialized bytes sent (every
                                                        message of a stream)
``neoarray_rpc_server_in_flight{service, method}``      requests being served now
``neoarray_rpc_client_calls_total``                     calls this process made
``neoarray_rpc_client_sent_bytes_total``                bytes it sent in them
``neoarray_rpc_client_received_bytes_total``            bytes it received
======================================================  ==================================

The ``rpc_server`` figures come from ``RpcMetrics``, the server interceptor given to
``wire.make_server``; it runs outside the cluster-name guard, so refused requests
count too.  Bytes are counted where gRPC (de)serializes anyway: the length of each
serialized message, no extra work.  The ``rpc_client`` figures are ``wire.traffic()``
read at scrape time (process-wide, like it; ``wire.reset_traffic()`` is a counter
reset to Prometheus).  Node-specific collectors live with their node
(``master/metrics.py``, ``storage_node/metrics.py``); the client's cache collector
is ``CacheCollector`` below.  Collectors read live figures when scraped rather than
keeping second copies of counters.
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from . import wire

log = logging.getLogger("neoarray.metrics")

# 0.5 ms (a cached load on loopback) to 10 minutes (a lock of a whole large transaction)
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)
PORT_MAX = 65535


def parse_bind(bind: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[v6]:PORT`` too); ``ValueError`` naming it
    when malformed."""
    host, sep, port = str(bind).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > PORT_MAX:
        raise ValueError(f"metrics bind address {bind!r} is not HOST:PORT "
                         f"(a port of 0 to {PORT_MAX}; 0 picks a free one)")
    return host, int(port)


def bind_arg(value: str) -> str:
    """An ``argparse`` type for ``--metrics-bind``: the value, once checked."""
    try:
        parse_bind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _split_method(path: str) -> tuple[str, str]:
    """``"/neoarray.v1.Storage/Load"`` -> ``("neoarray.v1.Storage", "Load")``."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code_name(context, default: grpc.StatusCode) -> str:
    code = context.code() if callable(getattr(context, "code", None)) else None
    return (code or default).name


class _MethodFigures:
    """The metric children of one ``service/method`` (label look-ups done once)."""

    def __init__(self, rpc: RpcMetrics, service: str, method: str):
        self.rpc, self.labels = rpc, (service, method)
        self.latency = rpc.latency.labels(service, method)
        self.request_bytes = rpc.request_bytes.labels(service, method)
        self.response_bytes = rpc.response_bytes.labels(service, method)
        self.in_flight = rpc.in_flight.labels(service, method)
        self.by_code: dict[str, tuple] = {}      # code -> (requests child, errors child or None)

    def finished(self, code: str, elapsed_s: float) -> None:
        self.in_flight.dec()
        self.latency.observe(elapsed_s)
        counters = self.by_code.get(code)
        if counters is None:      # a race here only looks the same children up twice
            counters = self.by_code[code] = (self.rpc.requests.labels(*self.labels, code),
                                             None if code == "OK" else self.rpc.errors.labels(*self.labels, code))
        counters[0].inc()
        if counters[1] is not None:
            counters[1].inc()


class RpcMetrics(grpc.ServerInterceptor):
    """A server interceptor counting requests, errors, latency and bytes per method.

    Give it to ``wire.make_server(..., interceptors=[rpc_metrics])``: it must be the
    outermost interceptor to see the status of every request, refused ones too.
    The status is the one the handler set (``context.abort``/``set_code``); a
    handler that raised without one counts as UNKNOWN, a stream closed early by
    its client as CANCELLED.
    """

    def __init__(self, registry: CollectorRegistry):
        labels = ("service", "method")
        self.requests = Counter("neoarray_rpc_server_requests", "gRPC requests served, by status code",
                                (*labels, "code"), registry=registry)
        self.errors = Counter("neoarray_rpc_server_errors", "gRPC requests that ended with a status other than OK",
                              (*labels, "code"), registry=registry)
        self.latency = Histogram("neoarray_rpc_server_latency_seconds", "time to serve a gRPC request "
                                 "(a stream: until it ends)", labels, registry=registry, buckets=LATENCY_BUCKETS_S)
        self.request_bytes = Counter("neoarray_rpc_server_request_bytes", "serialized bytes of requests received",
                                     labels, registry=registry)
        self.response_bytes = Counter("neoarray_rpc_server_response_bytes", "serialized bytes of replies sent",
                                      labels, registry=registry)
        self.in_flight = Gauge("neoarray_rpc_server_in_flight", "gRPC requests being served now",
                               labels, registry=registry)
        self._methods: dict[str, _MethodFigures] = {}
        self._lock = threading.Lock()

    def observe(self, path: str, code: str, elapsed_s: float, request_bytes: int, response_bytes: int) -> None:
        """One request served by the framed data plane (``neoarray/transport``)."""
        figures = self._figures(path)
        figures.request_bytes.inc(request_bytes)
        figures.response_bytes.inc(response_bytes)
        figures.in_flight.inc()
        figures.finished(code, elapsed_s)

    def _figures(self, path: str) -> _MethodFigures:
        figures = self._methods.get(path)
        if figures is None:
            with self._lock:
                figures = self._methods.setdefault(path, _MethodFigures(self, *_split_method(path)))
        return figures

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        figures = self._figures(handler_call_details.method)
        counted = handler._replace(
            request_deserializer=_counting(handler.request_deserializer, figures.request_bytes),
            response_serializer=_counting(handler.response_serializer, figures.response_bytes, out=True))
        if handler.unary_unary:
            return counted._replace(unary_unary=_timed_unary(handler.unary_unary, figures))
        if handler.unary_stream:
            return counted._replace(unary_stream=_timed_stream(handler.unary_stream, figures))
        return handler       # client-streaming methods: none in our protocol, left as they are


def _counting(transform, counter, out: bool = False):
    """A (de)serializer adding the length of each serialized message to ``counter``."""
    def deserialize(raw):
        counter.inc(len(raw))
        return raw if transform is None else transform(raw)

    def serialize(message):
        raw = message if transform is None else transform(message)
        counter.inc(len(raw))
        return raw
    return serialize if out else deserialize


def _timed_unary(fn, figures: _MethodFigures):
    def unary(request, context):
        figures.in_flight.inc()
        start, code = time.perf_counter(), None
        try:
            response = fn(request, context)
            code = _code_name(context, grpc.StatusCode.OK)
            return response
        except Exception:
            code = _code_name(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            figures.finished(code or "UNKNOWN", time.perf_counter() - start)
    return unary


def _timed_stream(fn, figures: _MethodFigures):
    def stream(request, context):
        figures.in_flight.inc()
        start, code = time.perf_counter(), "CANCELLED"     # closed before its end
        try:
            yield from fn(request, context)
            code = _code_name(context, grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED)
        except Exception:
            code = _code_name(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            figures.finished(code, time.perf_counter() - start)
    return stream


# ---------------------------------------------------------------- collectors

class NodeInfoCollector(Collector):
    """``neoarray_node_info{role, cluster, node}``; ``node_name()`` is read at scrape
    time (a node learns its id when it identifies)."""

    def __init__(self, role: str, cluster: str, node_name):
        self.role, self.cluster, self.node_name = role, cluster, node_name

    def collect(self):
        info = InfoMetricFamily("neoarray_node", "the process: its role, cluster and node name")
        info.add_metric([], {"role": self.role, "cluster": self.cluster, "node": self.node_name()})
        yield info


class TrafficCollector(Collector):
    """The outgoing gRPC traffic of this process (``wire.traffic()``)."""

    def collect(self):
        t = wire.traffic()
        yield CounterMetricFamily("neoarray_rpc_client_calls", "gRPC calls this process made", value=t["calls"])
        yield CounterMetricFamily("neoarray_rpc_client_sent_bytes", "serialized bytes this process sent in "
                                  "gRPC calls", value=t["sent_bytes"])
        yield CounterMetricFamily("neoarray_rpc_client_received_bytes", "serialized bytes this process "
                                  "received in gRPC replies", value=t["received_bytes"])


class CacheCollector(Collector):
    """The client cache per colour, from ``stats()`` (``ColouredCache.stats``):

    ``neoarray_client_cache_bytes{colour}``, ``..._quota_bytes{colour}`` (the colour's
    share of the budget), ``..._objects{colour}``, ``..._hits_total{colour}``,
    ``..._misses_total{colour}``, ``..._evictions_total{colour}`` and the whole
    budget, ``neoarray_client_cache_bytes_max``.
    """

    GAUGES = (("bytes", "bytes", "bytes cached"), ("quota_bytes", "quota_bytes", "the colour's share of the budget"),
              ("objects", "objects", "objects cached"))
    COUNTERS = (("hits", "loads answered from the cache"), ("misses", "loads the cache could not answer"),
                ("evictions", "revisions evicted to make room"))

    def __init__(self, stats):
        self.stats = stats

    def collect(self):
        stats = self.stats()
        colours = stats["colours"]
        for name, key, doc in self.GAUGES:
            g = GaugeMetricFamily(f"neoarray_client_cache_{name}", f"client cache: {doc}", labels=["colour"])
            for colour, c in colours.items():
                g.add_metric([colour], c[key])
            yield g
        for key, doc in self.COUNTERS:
            c_ = CounterMetricFamily(f"neoarray_client_cache_{key}", f"client cache: {doc}", labels=["colour"])
            for colour, c in colours.items():
                c_.add_metric([colour], c[key])
            yield c_
        yield GaugeMetricFamily("neoarray_client_cache_bytes_max", "client cache: the whole budget",
                                value=stats["bytes_max"])


# ---------------------------------------------------------------- exporter

class MetricsExporter:
    """One process's registry, its RPC interceptor and, once served, its HTTP server.

    ``role`` (``master``, ``storage``, ``client``), ``cluster`` and ``node_name()``
    make ``neoarray_node_info``; the outgoing traffic is always collected.
    """

    def __init__(self, role: str, cluster: str, node_name=lambda: "?"):
        self.registry = CollectorRegistry()
        self.rpc = RpcMetrics(self.registry)
        self.node_name = node_name          # may be replaced once the node knows its id
        self.registry.register(NodeInfoCollector(role, cluster, lambda: self.node_name()))
        self.registry.register(TrafficCollector())
        self.role = role
        self.address: str | None = None
        self._http = None

    def interceptors(self) -> tuple[grpc.ServerInterceptor, ...]:
        """What to give ``wire.make_server(..., interceptors=...)``."""
        return (self.rpc,)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def serve(self, bind: str, address_file: str | None = None) -> str:
        """Serve ``/metrics`` on ``bind`` (``HOST:PORT``, port 0: a free one) in a
        daemon thread; log the bound address and write it to ``address_file``
        (atomically).  Returns ``host:port``."""
        host, port = parse_bind(bind)
        try:
            self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {bind}: {exc.strerror or exc}") from None
        shown = f"[{host}]" if ":" in host else host
        self.address = f"{shown}:{self._http.server_port}"
        log.info("%s metrics at http://%s/metrics", self.role, self.address)
        if address_file:
            _write_atomic(address_file, self.address)
        return self.address

    def stop(self) -> None:
        """Stop the HTTP server (idempotent)."""
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
