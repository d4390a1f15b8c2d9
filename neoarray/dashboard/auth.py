"""Who may see the dashboard: the decision, without I/O.

A dashboard serving a secured cluster (one with an admin token, or mutual TLS) asks
each request for an admin credential: the cluster's admin token (header
``Authorization: Bearer TOKEN``, or the cookie that ``/login?token=TOKEN`` sets), or,
over HTTPS, a client certificate from the cluster's CA carrying the admin role.  A
request without one gets 401, one with a wrong token or a certificate without the
admin role 403; both say what to present.  A dashboard of a cluster without either
serves everyone who reaches its address (it binds 127.0.0.1 by default).
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from .. import security

COOKIE = "neoarray_dashboard_token"


@dataclass(frozen=True)
class Policy:
    token: str | None          # the cluster's admin token, if it has one
    tls: bool                  # served over HTTPS with client certificates from the CA

    @property
    def secured(self) -> bool:
        return self.token is not None or self.tls


HOW = ("present the cluster's admin token (open /login?token=TOKEN once, or send the header "
       "'Authorization: Bearer TOKEN'; neoarray cluster up writes it to DIR/admin.token)")
HOW_TLS = " or an admin client certificate from the cluster's CA (DIR/tls/admin.crt)"


def decide(policy: Policy, token: str | None, cert_roles: frozenset | None) -> tuple[int, str] | None:
    """``(HTTP status, message)`` refusing a request, or None to serve it.

    ``token``: the one the request carries (None: none); ``cert_roles``: the roles of
    its verified client certificate (None: no certificate)."""
    if not policy.secured:
        return None
    if cert_roles is not None and "admin" in cert_roles:
        return None
    how = HOW + (HOW_TLS if policy.tls else "")
    if token:
        if policy.token is not None and hmac.compare_digest(token.encode(), policy.token.encode()):
            return None
        return 403, f"forbidden: this token is not the cluster's admin token; {how}"
    if cert_roles is not None:
        held = ", ".join(sorted(cert_roles)) or "no neoarray role"
        return 403, (f"forbidden: the dashboard needs the admin role; the client certificate "
                     f"carries {held}; {how}")
    return 401, f"unauthorized: the dashboard of a secured cluster needs an admin credential: {how}"


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def roles_of_peer_cert(cert: dict | None) -> frozenset | None:
    """The neoarray roles of a verified peer certificate (``ssl.getpeercert()``)."""
    if not cert:
        return None
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    return security.roles_of_uris(uris)
