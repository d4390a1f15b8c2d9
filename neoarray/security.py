"""Who may call what: mutual TLS, roles carried in certificates, the admin token.

Mutual TLS (like NEO): every node, client and ``neoctl`` has a certificate signed by
the cluster's CA and the key of that certificate; every server asks for the peer's
certificate, so a peer without one signed by the CA never gets past the handshake.

Roles: a certificate names its roles in URI subject alternative names
(``urn:neoarray:role:admin``).  With TLS, every server checks each call against
``ACCESS`` (method -> roles allowed), whatever the peer claims in its requests:

=========  =======================================================================
role       may call
=========  =======================================================================
reader     reads: Identify (as a client), Subscribe, LastIds, FinalTid, Load, LoadBlobChunk...
client     reads, and writes: NewOids, Begin, Finish, Abort, Store, StoreBlobChunk, Vote...
admin      what a client may, and the Admin service (neoctl), RepairRecords
storage    Heartbeat, Identify as a storage node, replication (ReplicaKeys/Records)
master     orders to storage nodes (Lock, Unlock, SetPartitionTable, Shutdown...)
ingest     nothing on the cluster's ports: records sent to ``neoarray ingest``'s ports only
=========  =======================================================================

A method missing from ``ACCESS`` is refused (a new RPC must be given its roles).
The ports of ``neoarray ingest`` take records from peers holding one of
``INGEST_WRITERS`` (``ingest``, ``client``, ``admin``): a sensor given an ``ingest``
certificate can send records there and cannot read or commit on the cluster.

The admin token: a master started with an admin token file refuses Admin RPCs whose
call does not carry that token (metadata ``neo-admin-token``); it is the admin
credential of clusters without TLS, and with TLS it also grants the admin role.
``LocalCluster`` makes one, so ``neoctl --dir`` finds it and a plain client holding
only the cluster's address cannot run neoctl commands.

``generate`` makes a CA and one certificate per role into a directory (keys 0600),
which is what ``neoarray cluster up --tls`` uses.
"""
from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass

import grpc

from .errors import NeoError

ROLE_URI_PREFIX = "urn:neoarray:role:"
CLUSTER_ROLES = ("master", "storage", "admin", "client", "reader")
ROLES = (*CLUSTER_ROLES, "ingest")
TOKEN_KEY = "neo-admin-token"
TOKEN_FILE = "admin.token"
TLS_DIR = "tls"
CA_NAME = "ca"
DENIED_PREFIX = "access denied: "      # PERMISSION_DENIED details -> errors.AccessDenied
READ_ONLY_PREFIX = "read-only: "       # PERMISSION_DENIED details -> ReadOnlyError
TOKEN_BYTES_MAX = 4096
PEM_BYTES_MAX = 1 << 20
CERT_VALIDITY_DAYS = 3650

_MASTER, _ADMIN, _STORAGE = "/neoarray.v1.Master/", "/neoarray.v1.Admin/", "/neoarray.v1.Storage/"
_STANDBY = "/neoarray.v1.Standby/"
_ANY = frozenset(CLUSTER_ROLES)
_WRITERS = frozenset({"client", "admin"})
INGEST_WRITERS = frozenset({"ingest"}) | _WRITERS     # may send records to neoarray ingest's ports


def _table() -> dict[str, frozenset]:
    """The authorisation table: full gRPC method name -> roles allowed to call it."""
    def each(prefix, names, roles):
        return {prefix + n: frozenset(roles) for n in names.split()}
    return {
        **each(_MASTER, "Identify Subscribe LastIds FinalTid", _ANY),
        **each(_MASTER, "NewOids Begin Finish Abort", _WRITERS),
        **each(_MASTER, "Heartbeat", {"storage"}),
        **each(_ADMIN, "GetIds GetNodes GetClusterState SetClusterState AddNodes Tweak "
                       "DropNode KillNode SetReplicas Truncate SetReplicationRate", {"admin"}),
        # a storage node asks which partitions it holds before a repair
        **each(_ADMIN, "GetPartitionTable", {"admin", "storage"}),
        **each(_STORAGE, "Load LoadMany History Transactions ObjectsSince Reduce LoadBlobChunk", _ANY),
        **each(_STORAGE, "Store StoreBlobChunk Vote Unvote Pack", _WRITERS),
        **each(_STORAGE, "AbortTransaction", _WRITERS | {"master"}),
        **each(_STORAGE, "CheckRecords RepairRecords RepairBlobChunk", {"admin"}),
        **each(_STORAGE, "ReplicaKeys ReplicaRecords", {"storage"}),
        **each(_STORAGE, "Lock Unlock AbortNode RecoveryInfo RecordStamp SetPartitionTable Shutdown Truncate",
               {"master"}),
        # a standby master follows the primary's state; anyone may ask a master its role
        **each(_STANDBY, "FollowState", {"master"}),
        **each(_STANDBY, "Role", _ANY),
    }


ACCESS: dict[str, frozenset] = _table()


class SecurityError(NeoError):
    """TLS or token configuration is missing, unreadable or inconsistent."""


# ---------------------------------------------------------------- files

def _read_bounded(path: str, what: str, bytes_max: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(bytes_max + 1)
    except OSError as exc:
        raise SecurityError(f"cannot read the {what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > bytes_max:
        raise SecurityError(f"the {what} {path!r} is larger than {bytes_max} bytes")
    if not data.strip():
        raise SecurityError(f"the {what} {path!r} is empty")
    return data


@dataclass(frozen=True)
class TLSConfig:
    """Paths of the CA certificate, this peer's certificate and its private key (PEM)."""

    ca_path: str
    cert_path: str
    key_path: str

    @classmethod
    def of(cls, ca: str | None, cert: str | None, key: str | None) -> TLSConfig | None:
        """``None`` when none is given; all three, or a clear error naming the missing."""
        given = {"ca": ca, "cert": cert, "key": key}
        if not any(given.values()):
            return None
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise SecurityError(f"TLS needs ca, cert and key together; missing: {', '.join(missing)}")
        return cls(os.path.abspath(ca), os.path.abspath(cert), os.path.abspath(key))

    @classmethod
    def in_dir(cls, directory: str, name: str) -> TLSConfig:
        """The files ``generate`` wrote for ``name`` (a role) in ``directory``."""
        return cls(*(os.path.join(directory, f) for f in (f"{CA_NAME}.crt", f"{name}.crt", f"{name}.key")))

    def load(self) -> tuple[bytes, bytes, bytes]:
        """``(ca, cert, key)`` PEM bytes, each checked readable and of bounded size."""
        return (_read_bounded(self.ca_path, "CA certificate", PEM_BYTES_MAX),
                _read_bounded(self.cert_path, "certificate", PEM_BYTES_MAX),
                _read_bounded(self.key_path, "private key", PEM_BYTES_MAX))

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: present our certificate, require one signed by the CA."""
        ca, cert, key = self.load()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: trust only the CA, present our certificate."""
        ca, cert, key = self.load()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def options(self) -> dict:
        """As ``NeoStorage``/ZConfig/zodburi options (``ca``, ``cert``, ``key``)."""
        return {"ca": self.ca_path, "cert": self.cert_path, "key": self.key_path}


def read_token(path: str) -> str:
    """The admin token stored in ``path`` (surrounding white space ignored)."""
    return _read_bounded(path, "admin token file", TOKEN_BYTES_MAX).decode().strip()


def write_token(path: str) -> str:
    """Create ``path`` (0600) with a new random token unless it exists; return the token."""
    if not os.path.exists(path):
        _write_private(path, secrets.token_urlsafe(32).encode())
    return read_token(path)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- certificates

def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "neoarray"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, public_key, days: int):
    from cryptography import x509
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(cluster: str, days: int = CERT_VALIDITY_DAYS):
    """A new self-signed CA: ``(certificate, private key)`` objects."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{cluster} CA")
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def default_hosts() -> tuple[str, ...]:
    """Names a local peer's certificate answers to: loopback and this host's name."""
    return tuple(dict.fromkeys(("localhost", "127.0.0.1", "::1", socket.gethostname())))


def _alt_names(hosts, roles):
    from cryptography import x509
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names + [x509.UniformResourceIdentifier(ROLE_URI_PREFIX + r) for r in roles]


def issue(ca_cert, ca_key, common_name: str, roles, hosts=(), days: int = CERT_VALIDITY_DAYS):
    """A certificate for ``roles`` signed by the CA, valid as server and client for
    ``hosts``: ``(certificate, private key)`` objects."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise SecurityError(f"unknown roles {sorted(unknown)} (known: {', '.join(ROLES)})")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name(common_name), ca_cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_alt_names(hosts or default_hosts(), roles)),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def write_pair(directory: str, name: str, cert, key) -> None:
    """``name.crt`` and ``name.key`` (mode 0600) in ``directory``."""
    with open(os.path.join(directory, f"{name}.crt"), "wb") as f:
        f.write(_pem_cert(cert))
    _write_private(os.path.join(directory, f"{name}.key"), _pem_key(key))


def generate(directory: str, cluster: str, hosts=()) -> str:
    """Make a CA and one certificate per role (``master``, ``storage``, ``admin``,
    ``client``, ``reader``, ``ingest``) in ``directory`` unless its CA exists; return
    the directory.

    The CA key stays there too (``ca.key``, 0600), to issue more certificates later."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(directory, f"{CA_NAME}.crt")):
        return directory
    ca_cert, ca_key = make_ca(cluster)
    for role in ROLES:
        cert, key = issue(ca_cert, ca_key, f"{cluster} {role}", [role], hosts)
        write_pair(directory, role, cert, key)
    write_pair(directory, CA_NAME, ca_cert, ca_key)     # last: its presence means complete
    return directory


def issue_into(directory: str, name: str, roles, hosts=(), days: int = CERT_VALIDITY_DAYS) -> TLSConfig:
    """One more certificate from the CA that ``generate`` left in ``directory``
    (``ca.crt``, ``ca.key``): ``name.crt`` and ``name.key`` for ``roles``, valid for
    ``hosts`` (e.g. a storage node on another machine)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    ca = TLSConfig.in_dir(directory, CA_NAME)
    ca_cert = x509.load_pem_x509_certificate(_read_bounded(ca.cert_path, "CA certificate", PEM_BYTES_MAX))
    ca_key = serialization.load_pem_private_key(_read_bounded(ca.key_path, "CA key", PEM_BYTES_MAX), None)
    write_pair(directory, name, *issue(ca_cert, ca_key, name, roles, hosts, days))
    return TLSConfig.in_dir(directory, name)


def roles_of_uris(uris) -> frozenset:
    """The neoarray roles among a certificate's URI alternative names (bytes or str)."""
    names = (u.decode() if isinstance(u, bytes) else u for u in uris)
    return frozenset(n[len(ROLE_URI_PREFIX):] for n in names
                     if n.startswith(ROLE_URI_PREFIX) and n[len(ROLE_URI_PREFIX):] in ROLES)


# ---------------------------------------------------------------- enforcement

def peer_roles(context) -> frozenset | None:
    """Roles of the peer of a call: ``None`` on a connection without TLS."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    return roles_of_uris(auth.get("peer_uri", ()))     # the verified certificate's URI SANs


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def refusal(method: str, roles: frozenset | None, token_ok: bool, token_required: bool) -> str | None:
    """Why the call of ``method`` is refused (a status message), or ``None`` to allow it.

    ``roles``: the peer certificate's (``None`` without TLS, where only the admin token
    is checked: ``token_required`` and not ``token_ok`` refuses the Admin service)."""
    allowed = ACCESS.get(method)
    if allowed is None:
        return f"{DENIED_PREFIX}{method} has no entry in the access table"
    if roles is None:
        if method.startswith(_ADMIN) and token_required and not token_ok:
            return (f"{DENIED_PREFIX}{_short(method)} is an admin RPC: it needs the cluster's admin "
                    f"token (neoctl --token-file FILE, or --dir DIR) or an admin certificate")
        return None
    have = roles | {"admin"} if token_ok else roles
    if have & allowed:
        return None
    held = ", ".join(sorted(roles)) or "no neoarray role"
    prefix = READ_ONLY_PREFIX if roles == {"reader"} and "client" in allowed else DENIED_PREFIX
    return f"{prefix}{_short(method)} needs the role {' or '.join(sorted(allowed))}; the peer's certificate carries {held}"


class AccessGuard(grpc.ServerInterceptor):
    """Checks every call against ``ACCESS`` (with TLS) and the admin token (when set)."""

    def __init__(self, admin_token: str | None = None):
        self.admin_token = admin_token

    def _token_ok(self, metadata) -> bool:
        given = dict(metadata or ()).get(TOKEN_KEY)
        return bool(self.admin_token and isinstance(given, str)
                    and hmac.compare_digest(given.encode(), self.admin_token.encode()))

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method, token_ok = details.method, self._token_ok(details.invocation_metadata)
        required = self.admin_token is not None

        def check(context) -> None:
            why = refusal(method, peer_roles(context), token_ok, required)
            if why is not None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

        def checked(inner):     # a stream handler returns its generator: checked first too
            def call(request, context):
                check(context)
                return inner(request, context)
            return call
        if handler.unary_unary:
            return handler._replace(unary_unary=checked(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=checked(handler.unary_stream))
        return handler


def require_role(context, role: str, what: str) -> None:
    """Abort the call unless the peer (with TLS) holds ``role``; used where the role
    depends on the request (Identify as a storage node)."""
    roles = peer_roles(context)
    if roles is not None and role not in roles:
        held = ", ".join(sorted(roles)) or "no neoarray role"
        context.abort(grpc.StatusCode.PERMISSION_DENIED,
                      f"{DENIED_PREFIX}{what} needs the role {role}; the peer's certificate carries {held}")


# ---------------------------------------------------------------- command lines

def add_arguments(parser, token_help: str | None = None) -> None:
    """``--ca --cert --key`` (and ``--admin-token-file`` when ``token_help``) on a parser."""
    group = parser.add_argument_group("security")
    group.add_argument("--ca", help="CA certificate (PEM): enables mutual TLS, with --cert and --key")
    group.add_argument("--cert", help="this peer's certificate (PEM), signed by the CA")
    group.add_argument("--key", help="the private key of --cert (PEM)")
    if token_help:
        group.add_argument("--admin-token-file", help=token_help)


def tls_of(opts) -> TLSConfig | None:
    """The ``TLSConfig`` of parsed ``add_arguments`` options (``None``: no TLS)."""
    return TLSConfig.of(opts.ca, opts.cert, opts.key)


def token_of(opts) -> str | None:
    path = getattr(opts, "admin_token_file", None)
    return read_token(path) if path else None


def cluster_tls(cluster_dir: str, role: str) -> TLSConfig | None:
    """The ``role`` certificate of a local cluster directory made with TLS, else ``None``."""
    tls_dir = os.path.join(cluster_dir, TLS_DIR)
    if not os.path.exists(os.path.join(tls_dir, f"{CA_NAME}.crt")):
        return None
    return TLSConfig.in_dir(tls_dir, role)


def cluster_token(cluster_dir: str) -> str | None:
    """The admin token of a local cluster directory, if it has one."""
    path = os.path.join(cluster_dir, TOKEN_FILE)
    return read_token(path) if os.path.exists(path) else None
