"""Why a connection to a node failed, in words an operator can act on.

gRPC reports every connection failure as UNAVAILABLE, with a detail meant for its own
developers ("Socket closed", "failed to connect to all addresses").  ``connection``
asks the address itself, with plain sockets, and names the likely cause:

* nothing listening (connection refused), no answer at all, or no such host;
* the node speaks TLS and we do not, or the other way round: we send a TLS
  ClientHello and look at the first bytes of the answer (a TLS record starts with
  0x16 or 0x15 then 0x03; a plain gRPC server answers with an HTTP/2 frame or hangs
  up);
* with TLS on both sides: the node's certificate is not signed by our CA (or does
  not name the host), or the node refuses our certificate (it hangs up instead of
  sending its HTTP/2 settings).

``None`` means the connection itself is sound: the failure is the node's answer (a
standby naming the primary, a cluster that is stopping), and its own message says so.
Each probe is bounded by ``probe_s`` per socket operation.  A cluster name mismatch is
not a connection problem: the node answers ``ClusterNameMismatch`` itself.
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

PROBE_S = 2.0                   # per socket operation of a probe
REFUSED_WAIT_S = 2.0            # a first connection refused this long: nothing is listening
HOSTNAME_MISMATCH = 62          # X509_V_ERR_HOSTNAME_MISMATCH (OpenSSL's verify code)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True)
class Cause:
    """What is wrong with the connection to ``address``; ``lasting``: it will not mend
    itself in seconds (a TLS mismatch), unlike a node that is not listening yet."""
    address: str
    text: str
    lasting: bool

    def __str__(self) -> str:
        return self.text


def connection(address: str, tls=None, probe_s: float = PROBE_S) -> Cause | None:
    """The likely cause of a failed connection to ``address`` (``host:port``) for a
    client with ``tls`` (a ``security.TLSConfig``, or None for plain gRPC)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        speaks_tls = _speaks_tls(host, int(port), probe_s)
    except socket.gaierror:
        return Cause(address, f"no host {host!r} (the name does not resolve): check the address", True)
    except ConnectionRefusedError:
        return Cause(address, f"nothing listening at {address} (connection refused): is the node "
                              f"running, and is this its address?", False)
    except TimeoutError:
        return Cause(address, f"no answer from {address} within {probe_s:g} s (host down, or a "
                              f"firewall drops the connection)", False)
    except OSError as exc:
        return Cause(address, f"cannot connect to {address}: {exc.strerror or exc}", False)
    except ValueError:
        return Cause(address, f"{address!r} is not a host:port", True)
    if speaks_tls and tls is None:
        return Cause(address, f"{address} speaks TLS and this client has no certificate: give the "
                              f"cluster's ca, cert and key (neoctl: --ca --cert --key, or --dir)", True)
    if not speaks_tls and tls is not None:
        return Cause(address, f"{address} does not speak TLS, and this client was given a certificate: "
                              f"the cluster runs without TLS (leave out ca, cert and key)", True)
    return _tls_cause(address, host, int(port), tls, probe_s) if tls is not None else None


def listening(address: str, probe_s: float = PROBE_S) -> bool:
    """Whether something accepts TCP connections at ``address`` (``neoctl stop`` waits
    for the nodes to stop listening)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), probe_s):
            return True
    except OSError:
        return False


def explain(error, addresses, tls=None) -> str:
    """The causes found at ``addresses``, then ``error`` in brackets; ``str(error)``
    alone when every connection is sound."""
    causes = [str(c) for c in (connection(a, tls) for a in addresses) if c is not None]
    return f"{'; '.join(causes)} ({error})" if causes else str(error)


def _speaks_tls(host: str, port: int, probe_s: float) -> bool:
    """Send a TLS ClientHello to ``host:port`` and tell a TLS answer from anything else."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        ctx.wrap_bio(incoming, outgoing, server_hostname=host).do_handshake()
    except ssl.SSLWantReadError:
        pass                        # the ClientHello is in ``outgoing``
    with socket.create_connection((host, port), probe_s) as sock:
        sock.settimeout(probe_s)
        sock.sendall(outgoing.read())
        try:
            head = sock.recv(3)
        except (ConnectionResetError, TimeoutError):
            return False
    return len(head) >= 2 and head[0] in (0x15, 0x16) and head[1] == 0x03


def _tls_cause(address: str, host: str, port: int, tls, probe_s: float) -> Cause | None:
    """A full handshake with our CA and certificate, then HTTP/2's opening: the node
    answers with its settings unless it refused our certificate."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_path)
        ctx.load_cert_chain(tls.cert_path, tls.key_path)
    except (OSError, ValueError) as exc:        # ssl.SSLError is an OSError
        return Cause(address, f"this client's TLS files do not load ({tls.ca_path}, {tls.cert_path}): {exc}",
                     True)
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), probe_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as sock:
            sock.settimeout(probe_s)
            sock.sendall(_H2_PREFACE)
            answer = sock.recv(9)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == HOSTNAME_MISMATCH:
            return Cause(address, f"the certificate of {address} does not name {host!r}: connect by a "
                                  f"name it was issued for", True)
        return Cause(address, f"the certificate of {address} is not signed by this client's CA "
                              f"({tls.ca_path}): a certificate from another CA ({exc.verify_message})", True)
    except (ssl.SSLError, ConnectionResetError):
        answer = b""
    except OSError:
        return None                 # it went away meanwhile: the next try tells
    if not answer:
        return Cause(address, f"{address} refused this client's certificate ({tls.cert_path}): it is "
                              f"not signed by the cluster's CA, or has expired", True)
    return None
