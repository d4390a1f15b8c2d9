"""``neoarray ingest``: a long-running service appending streamed records to arrays.

    neoarray ingest --mapping FILE (--dir DIR | -a HOST:PORT -c NAME [--ca --cert --key])
                    [--forward HOST:PORT] [--http HOST:PORT]
                    [--mqtt HOST:PORT --mqtt-topic TOPIC... [--mqtt-client-id ID]]
                    [--group-records N] [--group-ms MS] [--queue-records N]
                    [--listen-cert PEM --listen-key PEM] [--token-file FILE]
                    [--metrics-bind HOST:PORT] [--ready-file FILE] [--name NAME]

``--dir`` uses the cluster of that directory when it runs, else starts an embedded one
over it (``neoarray.open``).  Records are committed in group commits (``--group-records``
records or ``--group-ms`` milliseconds, whichever comes first) and acknowledged only
then.  ``--ready-file`` gets a JSON map of the bound addresses once every input listens.
SIGTERM or SIGINT commits what is queued, then stops.

Security: ``--listen-cert/--listen-key`` put TLS on the Forward and HTTP ports;
``--token-file`` holds a shared token: the HTTP bearer token and the Forward protocol's
shared key.  Against a cluster with TLS the service refuses plain, tokenless listeners
unless ``--insecure-listeners`` says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import threading

from .. import metrics, security
from ..errors import NeoError
from . import core, mapping
from .committer import Committer
from .stats import IngestCollector, Stats

log = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser("ingest", help="ingest streamed records (fluentd Forward, MQTT, HTTP) into arrays",
                       description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mapping", required=True, help="the mapping file (.json or .toml): routes from tags/"
                   "topics to arrays (see neoarray/ingest/mapping.py)")
    where = p.add_argument_group("cluster")
    where.add_argument("--dir", help="a local cluster directory (running, or started embedded)")
    where.add_argument("-a", "--address", help="master host:port")
    where.add_argument("-c", "--cluster", help="cluster name")
    security.add_arguments(p)
    p.add_argument("--timeout-s", type=float, default=30.0, help="cluster connection time limit")
    inputs = p.add_argument_group("inputs (at least one)")
    inputs.add_argument("--forward", metavar="HOST:PORT", help="listen for fluentd's Forward protocol")
    inputs.add_argument("--http", metavar="HOST:PORT", help="listen for POST /ingest/<tag> (JSON, msgpack)")
    inputs.add_argument("--mqtt", metavar="HOST:PORT", help="the MQTT broker to subscribe at")
    inputs.add_argument("--mqtt-topic", action="append", default=[], help="a topic filter (repeatable)")
    inputs.add_argument("--mqtt-client-id", default="neoarray-ingest",
                        help="the MQTT client id of the persistent session (default: %(default)s)")
    inputs.add_argument("--mqtt-format", choices=("json", "msgpack"), default="json")
    inputs.add_argument("--mqtt-user", help="MQTT user name (password from $NEOARRAY_MQTT_PASSWORD)")
    inputs.add_argument("--mqtt-ca", help="CA certificate (PEM): TLS to the broker, verified against it")
    group = p.add_argument_group("group commits and bounds")
    group.add_argument("--group-records", type=int, default=10_000,
                       help="commit once this many records wait (default: %(default)s)")
    group.add_argument("--group-ms", type=float, default=50.0,
                       help="commit once the oldest record waited this long (default: %(default)s)")
    group.add_argument("--queue-records", type=int, default=200_000,
                       help="records waiting at most; inputs wait (HTTP: 503) beyond (default: %(default)s)")
    group.add_argument("--dedup-keys", type=int, default=200_000,
                       help="recent chunk ids kept for deduplication (default: %(default)s)")
    group.add_argument("--name", default="default", help="the service's state in the database "
                       "(dedup keys, rejects): one name per service (default: %(default)s)")
    sec = p.add_argument_group("security of the service's own ports")
    sec.add_argument("--listen-cert", help="certificate (PEM) for TLS on the Forward and HTTP ports")
    sec.add_argument("--listen-key", help="the private key of --listen-cert (PEM)")
    sec.add_argument("--token-file", help="a file holding the shared token (HTTP bearer, Forward shared_key)")
    sec.add_argument("--insecure-listeners", action="store_true",
                     help="allow plain, tokenless listeners in front of a TLS cluster")
    p.add_argument("--metrics-bind", type=metrics.bind_arg, metavar="HOST:PORT",
                   help="serve Prometheus metrics (neoarray_ingest_*) at http://HOST:PORT/metrics")
    p.add_argument("--ready-file", help="write the bound addresses (JSON) here once listening")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise NeoError(f"{address!r} is not HOST:PORT")
    return host, int(port)


def open_database(opts):
    """``(ZODB.DB, secured)`` on the cluster the options name."""
    import ZODB

    import neoarray

    from ..client import NeoStorage
    from ..ctl import resolve
    from ..jobs.cli import listens
    tls = security.tls_of(opts) or (security.cluster_tls(opts.dir, "client") if opts.dir else None)
    if opts.address or (opts.dir and os.path.exists(os.path.join(opts.dir, "master.address"))):
        address, cluster = resolve(opts)
        if opts.address or listens(address.split(",")[0]):
            return ZODB.DB(NeoStorage(address, cluster, connect_timeout_s=opts.timeout_s,
                                      **(tls.options() if tls else {}))), tls is not None
    if not opts.dir:
        raise NeoError("give a cluster directory (--dir) or the master address and cluster name (-a, -c)")
    log.info("ingest: starting an embedded cluster over %s", opts.dir)
    return neoarray.open(opts.dir), tls is not None


def _listen_tls(opts):
    if bool(opts.listen_cert) != bool(opts.listen_key):
        raise NeoError("give both --listen-cert and --listen-key for TLS on the service's ports")
    if not opts.listen_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(opts.listen_cert, opts.listen_key)
    return ctx


class IngestService:
    """The committer and the inputs the options ask for; ``start``, ``stop``."""

    def __init__(self, opts):
        if not (opts.forward or opts.http or opts.mqtt):
            raise NeoError("give at least one input: --forward, --http or --mqtt")
        if opts.mqtt and not opts.mqtt_topic:
            raise NeoError("--mqtt needs at least one --mqtt-topic")
        try:
            routes = mapping.load(opts.mapping)
            policy = core.check_policy(opts.group_records, opts.group_ms / 1000.0)
        except (OSError, ValueError) as exc:
            raise NeoError(str(exc)) from None
        self.tls = _listen_tls(opts)
        self.token = security.read_token(opts.token_file) if opts.token_file else None
        self.db, secured = open_database(opts)
        if secured and (opts.forward or opts.http) and not (self.tls and self.token) \
                and not opts.insecure_listeners:
            self.db.close()
            raise NeoError("the cluster uses TLS: give the service's ports TLS and a token "
                           "(--listen-cert, --listen-key, --token-file), or --insecure-listeners")
        self.stats = Stats()
        self.committer = Committer(self.db, routes, name=opts.name, policy=policy,
                                   queue_records_max=opts.queue_records, keys_max=opts.dedup_keys,
                                   stats=self.stats)
        self.opts, self.servers, self.mqtt, self.exporter = opts, [], None, None
        self.addresses: dict = {}

    def start(self) -> dict:
        from .forward import ForwardServer
        from .http import IngestHTTPServer
        opts = self.opts
        self.committer.start()
        if opts.forward:
            server = ForwardServer(_split(opts.forward), self.committer, tls=self.tls, shared_key=self.token,
                                   reject=lambda reason: self.stats.rejected("forward"))
            self._serve("forward", server)
        if opts.http:
            self._serve("http", IngestHTTPServer(_split(opts.http), self.committer, self.stats, tls=self.tls,
                                                 token=self.token))
        if opts.mqtt:
            from .mqtt import MqttInput
            host, port = _split(opts.mqtt)
            self.mqtt = MqttInput(host, port, opts.mqtt_topic, self.committer, self.stats,
                                  client_id=opts.mqtt_client_id, fmt=opts.mqtt_format, username=opts.mqtt_user,
                                  password=os.environ.get("NEOARRAY_MQTT_PASSWORD"),
                                  tls=ssl.create_default_context(cafile=opts.mqtt_ca) if opts.mqtt_ca else None)
            self.mqtt.start()
            self.addresses["mqtt"] = opts.mqtt
        if opts.metrics_bind:
            self.exporter = metrics.MetricsExporter("ingest", "-")
            self.exporter.register(IngestCollector(self.stats, self.committer.queued))
            self.addresses["metrics"] = self.exporter.serve(opts.metrics_bind)
        if opts.ready_file:
            tmp = f"{opts.ready_file}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.addresses, f)
            os.replace(tmp, opts.ready_file)
        return self.addresses

    def _serve(self, name, server):
        self.servers.append(server)
        self.addresses[name] = server.address
        threading.Thread(target=server.serve_forever, name=f"neoarray-ingest-{name}", daemon=True).start()
        log.info("ingest: %s input at %s", name, server.address)

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.committer.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.db.close()


def main(opts) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = IngestService(opts)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    addresses = service.start()
    print(json.dumps(addresses), flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0
