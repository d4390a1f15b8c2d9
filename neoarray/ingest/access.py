"""Who may send records to ``neoarray ingest``'s Forward and HTTP ports: the decision,
without I/O, and the TLS context that goes with it.

Modes (``--listen-auth``):

- ``cert``: mutual TLS with the cluster's CA, as on the cluster's own ports. A peer
  without a certificate signed by that CA fails the TLS handshake; its certificate must
  carry a role of ``security.INGEST_WRITERS`` (``ingest``, ``client`` or ``admin``), and
  what it sends must name the cluster (HTTP header ``Neo-Cluster: NAME``; Forward
  option ``"cluster": NAME`` in each message), checked against the cluster the
  service writes to, as the cluster's ports check the name each call carries.
- ``cert-or-token``: the same for a peer presenting a certificate (it must be from the
  CA: another CA fails the handshake); a peer without one must present the shared
  token instead (HTTP bearer token, Forward ``shared_key`` handshake) -- for clients
  that cannot present a certificate, such as fluentd with ``shared_key``.
- ``token``: the shared token only (TLS, when the ports have it, without client
  certificates).

Any request naming a cluster (with or without a certificate) must name the right one.
"""
from __future__ import annotations

import hmac
import ssl
from dataclasses import dataclass

from .. import security

MODES = ("cert", "cert-or-token", "token")
CLUSTER_HEADER = "Neo-Cluster"          # the gRPC metadata key of the cluster's ports
CLUSTER_OPTION = "cluster"              # the Forward protocol's option


@dataclass(frozen=True)
class Policy:
    mode: str                   # one of MODES
    cluster: str | None         # the cluster the service writes to
    token: str | None           # the shared token (None: none)

    def __post_init__(self):
        assert self.mode in MODES, self.mode
        assert self.mode == "token" or self.cluster, "certificate modes need the cluster name"
        assert self.mode != "cert-or-token" or self.token is not None, "cert-or-token needs a token"

    def token_ok(self, given: str | None) -> bool:
        return bool(self.token is not None and given is not None
                    and hmac.compare_digest(given.encode(), self.token.encode()))


def refusal(policy: Policy, roles: frozenset | None, token: str | None) -> tuple[int, str] | None:
    """``(HTTP status, reason)`` refusing a peer, or None to take its records.

    ``roles``: those of its verified client certificate (None: it presented none);
    ``token``: the token it presented (None: none, or not asked yet)."""
    if roles is not None and policy.mode != "token":
        if roles & security.INGEST_WRITERS:
            return None
        held = ", ".join(sorted(roles)) or "no neoarray role"
        return 403, (f"forbidden: sending records needs the role "
                     f"{' or '.join(sorted(security.INGEST_WRITERS))}; the client certificate carries {held}")
    if policy.mode == "cert":
        return 401, "unauthorized: present a client certificate from the cluster's CA"
    if policy.token is None or policy.token_ok(token):
        return None
    how = "the shared token (Authorization: Bearer TOKEN; Forward: shared_key)"
    if policy.mode == "cert-or-token":
        how += " or a client certificate from the cluster's CA"
    return 401, f"unauthorized: present {how}"


def cluster_refusal(policy: Policy, roles: frozenset | None, claimed) -> str | None:
    """Why the cluster a request names (``claimed``; None: none) is refused, or None.

    A peer authenticated by its certificate must name the cluster; anyone naming one
    must name the service's."""
    if claimed is None:
        if roles is not None and policy.mode != "token":
            return (f"name the cluster: {CLUSTER_HEADER}: {policy.cluster} (HTTP header) or the "
                    f"option {CLUSTER_OPTION!r} of each Forward message")
        return None
    if policy.cluster is not None and claimed != policy.cluster:
        return (f"cluster name mismatch: this service ingests into cluster {policy.cluster!r}, "
                f"the request was for {str(claimed)[:100]!r}")
    return None


def roles_of_socket(sock) -> frozenset | None:
    """The neoarray roles of the verified client certificate of a TLS socket (None:
    not TLS, or no certificate presented)."""
    getpeercert = getattr(sock, "getpeercert", None)
    cert = getpeercert() if getpeercert is not None else None
    if not cert:
        return None
    return security.roles_of_uris(v for k, v in cert.get("subjectAltName", ()) if k == "URI")


def server_context(mode: str, cert_path: str, key_path: str, ca_path: str | None) -> ssl.SSLContext:
    """TLS for the service's ports: our certificate; with a certificate mode, client
    certificates from the CA at ``ca_path`` required (``cert``) or verified when given."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    if mode != "token":
        ctx.load_verify_locations(cafile=ca_path)
        ctx.verify_mode = ssl.CERT_REQUIRED if mode == "cert" else ssl.CERT_OPTIONAL
    return ctx
