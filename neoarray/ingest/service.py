"""``neoarray ingest``: a long-running service appending streamed records to arrays.

    neoarray ingest --mapping FILE (--dir DIR | -a HOST:PORT -c NAME [--ca --cert --key])
                    [--forward HOST:PORT] [--http HOST:PORT]
                    [--mqtt HOST:PORT --mqtt-topic TOPIC... [--mqtt-client-id ID]]
                    [--group-records N] [--group-ms MS] [--queue-records N]
                    [--listen-auth cert|cert-or-token|token] [--listen-cert PEM --listen-key PEM]
                    [--token-file FILE]
                    [--metrics-bind HOST:PORT] [--ready-file FILE] [--name NAME]

``--dir`` uses the cluster of that directory when it runs, else starts an embedded one
over it (``neoarray.open``).  Records are committed in group commits (``--group-records``
records or ``--group-ms`` milliseconds, whichever comes first) and acknowledged only
then.  ``--ready-file`` gets a JSON map of the bound addresses once every input listens.
SIGTERM or SIGINT commits what is queued, then stops.

Security of the Forward and HTTP ports (``--listen-auth``, see ``access.py``): against
a cluster with TLS (``--ca/--cert/--key``, or a ``--dir`` made with TLS), the ports
speak TLS (with ``--listen-cert/--listen-key``, else the service's own cluster
certificate) and, by default (``cert``), take only clients with a certificate from
the cluster's CA carrying the role ``ingest``, ``client`` or ``admin``, naming the
cluster (HTTP header ``Neo-Cluster``, Forward option ``cluster``).  With
``--token-file`` the default is ``cert-or-token``: a client without a certificate may
present the shared token instead (the HTTP bearer token, the Forward protocol's
``shared_key``, as fluentd does); a token proves less than a certificate (anyone who
has the file, no role, no cluster name): keep it for clients that cannot present a
certificate.  ``token``: the token alone.  Against a cluster without TLS only
``token`` works.  Against a TLS cluster the service refuses tokenless ``token``
listeners unless ``--insecure-listeners``.
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
from . import access, core, mapping
from .committer import Committer
from .forward import ForwardServer
from .http import IngestHTTPServer
from .stats import IngestCollector, Stats

log = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser("ingest", help="ingest streamed records (fluentd Forward, MQTT, HTTP) into arrays",
                       description="\n\n".join(__doc__.split("\n\n")[2:4]), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    group.add_argument("--idle-timeout-s", type=float, default=300.0,
                       help="close a Forward connection silent this long; fluentd reconnects and sends "
                            "again what was not acknowledged (default: %(default)s)")
    group.add_argument("--dedup-keys", type=int, default=200_000,
                       help="recent chunk ids kept for deduplication (default: %(default)s)")
    group.add_argument("--name", default="default", help="the service's state in the database "
                       "(dedup keys, rejects): one name per service (default: %(default)s)")
    sec = p.add_argument_group("security of the service's own ports")
    sec.add_argument("--listen-auth", choices=access.MODES,
                     help="who may send records: cert (a client certificate from the cluster's CA with "
                          "the role ingest, client or admin, naming the cluster), cert-or-token (or the "
                          "shared token, for clients without a certificate such as fluentd's "
                          "shared_key: weaker, anyone holding the file), token (the token only). "
                          "Default: cert against a TLS cluster, cert-or-token with --token-file too, "
                          "else token")
    sec.add_argument("--listen-cert", help="certificate (PEM) for TLS on the Forward and HTTP ports "
                                           "(default against a TLS cluster: the service's cluster certificate)")
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


def cluster_tls(opts) -> security.TLSConfig | None:
    """The service's certificate on the cluster (``--ca/--cert/--key``, else ``--dir``'s)."""
    return security.tls_of(opts) or (security.cluster_tls(opts.dir, "client") if opts.dir else None)


def cluster_name(opts) -> str | None:
    """The name of the cluster the options name (``-c``, else ``--dir``'s ``cluster.name``)."""
    path = os.path.join(opts.dir, "cluster.name") if opts.dir else None
    if opts.cluster or not path or not os.path.exists(path):
        return opts.cluster
    with open(path) as f:
        return f.read().strip() or None


def open_database(opts, tls: security.TLSConfig | None):
    """The ``ZODB.DB`` of the cluster the options name."""
    import ZODB

    import neoarray

    from ..client import NeoStorage
    from ..ctl import resolve
    from ..jobs.cli import listens
    if opts.address or (opts.dir and os.path.exists(os.path.join(opts.dir, "master.address"))):
        address, cluster = resolve(opts)
        if opts.address or listens(address.split(",")[0]):
            return ZODB.DB(NeoStorage(address, cluster, connect_timeout_s=opts.timeout_s,
                                      **(tls.options() if tls else {})))
    if not opts.dir:
        raise NeoError("give a cluster directory (--dir) or the master address and cluster name (-a, -c)")
    log.info("ingest: starting an embedded cluster over %s", opts.dir)
    return neoarray.open(opts.dir)


def listen_security(opts, tls: security.TLSConfig | None, token: str | None):
    """``(ssl.SSLContext or None, access.Policy)`` of the Forward and HTTP ports (see
    the module docstring); a ``NeoError`` names what is missing."""
    if bool(opts.listen_cert) != bool(opts.listen_key):
        raise NeoError("give both --listen-cert and --listen-key for TLS on the service's ports")
    mode = opts.listen_auth or ("token" if tls is None or opts.insecure_listeners
                                else "cert-or-token" if token else "cert")
    cluster = cluster_name(opts)
    if mode != "token":
        if tls is None:
            raise NeoError(f"--listen-auth {mode} needs the cluster's CA: point the service at a TLS "
                           "cluster (--ca, --cert, --key, or the --dir of a cluster made with --tls), "
                           "or use --listen-auth token with --token-file")
        if not cluster:
            raise NeoError(f"--listen-auth {mode} checks the cluster name: give it (-c NAME)")
        if mode == "cert-or-token" and token is None:
            raise NeoError("--listen-auth cert-or-token needs the shared token (--token-file)")
    elif tls is not None and token is None and not opts.insecure_listeners:
        raise NeoError("the cluster uses TLS: --listen-auth token needs --token-file (or the default, "
                       "client certificates from the cluster's CA), or --insecure-listeners")
    cert, key = opts.listen_cert, opts.listen_key
    if not cert and tls is not None and (mode != "token" or not opts.insecure_listeners):
        cert, key = tls.cert_path, tls.key_path
    if not cert:
        return None, access.Policy(mode, cluster, token)
    try:
        ctx = access.server_context(mode, cert, key, tls.ca_path if tls else None)
    except (OSError, ssl.SSLError) as exc:
        raise NeoError(f"cannot load the TLS files of the service's ports ({cert}, {key}): {exc}") from None
    return ctx, access.Policy(mode, cluster, token)


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
            if not opts.idle_timeout_s > 0:
                raise NeoError(f"--idle-timeout-s must be a positive number of seconds, not {opts.idle_timeout_s}")
        except (OSError, ValueError) as exc:
            raise NeoError(str(exc)) from None
        token = security.read_token(opts.token_file) if opts.token_file else None
        tls = cluster_tls(opts)
        self.tls, self.policy = listen_security(opts, tls, token)
        self.db = open_database(opts, tls)
        self.stats = Stats()
        self.committer = Committer(self.db, routes, name=opts.name, policy=policy,
                                   queue_records_max=opts.queue_records, keys_max=opts.dedup_keys,
                                   stats=self.stats)
        self.opts, self.servers, self.mqtt, self.exporter = opts, [], None, None
        self.addresses: dict = {}

    def start(self) -> dict:
        opts = self.opts
        self.committer.start()
        if opts.forward:
            server = ForwardServer(_split(opts.forward), self.committer, tls=self.tls, policy=self.policy,
                                   reject=lambda reason: self.stats.rejected("forward"),
                                   idle_timeout_s=opts.idle_timeout_s)
            self._serve("forward", server)
        if opts.http:
            self._serve("http", IngestHTTPServer(_split(opts.http), self.committer, self.stats, tls=self.tls,
                                                 policy=self.policy))
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
