"""Mutual TLS on ``neoarray ingest``'s Forward and HTTP ports in front of a TLS cluster:
real sockets, real certificates from the project's own CA functions, the service as a
real process.  A certificate from another CA, one without a role allowed to send, a
wrong cluster name and (where only certificates are taken) no certificate are refused;
the right certificate's records are stored; a shared token still works where the
service takes one (``cert-or-token``)."""
import argparse
import hashlib
import json
import os
import socket
import ssl
import urllib.error
import urllib.request

import msgpack
import pytest

from neoarray import security
from neoarray.errors import NeoError
from neoarray.ingest import access, service
from tests.conftest import running_cluster
from tests.ingest.ingest_helpers import Service, free_port, read_array

WRITERS = security.INGEST_WRITERS


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("ingest-mtls") / "cluster", tls=True)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory, tls_cluster):
    """A CA of the same cluster name that is not the cluster's, with its certificates."""
    return security.generate(str(tmp_path_factory.mktemp("other-ca")), tls_cluster.cluster)


def _cluster_args(cluster) -> list:
    tls = cluster.tls_of("client")
    return ["--ca", tls.ca_path, "--cert", tls.cert_path, "--key", tls.key_path]


def _context(cluster, tls_dir: str | None, role: str | None) -> ssl.SSLContext:
    """A client context trusting the cluster's CA, presenting ``role``'s certificate
    of ``tls_dir`` (None: none)."""
    ctx = ssl.create_default_context(cafile=cluster.tls_of("client").ca_path)
    if role is not None:
        ctx.load_cert_chain(os.path.join(tls_dir, f"{role}.crt"), os.path.join(tls_dir, f"{role}.key"))
    return ctx


def _post(address, ctx, seq, cluster_name=None, token=None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if cluster_name is not None:
        headers[access.CLUSTER_HEADER] = cluster_name
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"https://{address}/ingest/cols.m", method="POST", headers=headers,
                                     data=json.dumps({"seq": seq, "value": 1.0}).encode())
    try:
        with urllib.request.urlopen(request, timeout=30, context=ctx) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _refused_at_handshake(address, ctx, seq) -> bool:
    """True when the TLS handshake (or the first read after it) fails."""
    try:
        _post(address, ctx, seq, "any")
    except (ssl.SSLError, OSError):
        return True
    return False


def _forward(port, ctx, seq, cluster_name=None, token=None) -> list:
    """Send one record in Message mode with a chunk id; what the service answers
    before it closes or acknowledges (``[]``: closed without an answer)."""
    option = {"chunk": f"c{seq}"}
    if cluster_name is not None:
        option[access.CLUSTER_OPTION] = cluster_name
    answers, unpacker = [], msgpack.Unpacker(raw=False)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        if token is not None:
            unpacker.feed(s.recv(65536))        # HELO
            nonce = next(unpacker)[1]["nonce"]
            digest = hashlib.sha512(b"saltme" + nonce + token.encode()).hexdigest()
            s.sendall(msgpack.packb(["PING", "me", "salt", digest, "", ""]))
        s.sendall(msgpack.packb(["cols.m", 1, {"seq": seq, "value": 2.0}, option]))
        while not any(isinstance(a, dict) and "ack" in a for a in answers):
            try:
                data = s.recv(65536)
            except (ssl.SSLError, ConnectionError):
                break
            if not data:
                break
            unpacker.feed(data)
            answers.extend(unpacker)
    return answers


def test_client_certificates_from_the_cluster_ca_with_a_writer_role_and_the_cluster_name(
        tls_cluster, other_ca, tmp_path):
    tls_dir, name = tls_cluster.tls_dir, tls_cluster.cluster
    port = free_port()
    svc = Service(tls_cluster, tmp_path, *_cluster_args(tls_cluster), "--http", "127.0.0.1:0",
                  "--forward", f"127.0.0.1:{port}", "--group-ms", "10")
    http = svc.addresses["http"]
    try:
        # HTTP: the right certificate goes through; the ingest role and the client role both write
        assert _post(http, _context(tls_cluster, tls_dir, "ingest"), 1, name)[0] == 200
        assert _post(http, _context(tls_cluster, tls_dir, "client"), 2, name)[0] == 200
        code, body = _post(http, _context(tls_cluster, tls_dir, "reader"), 90, name)
        assert code == 403 and "carries reader" in body and "ingest" in body
        code, body = _post(http, _context(tls_cluster, tls_dir, "ingest"), 91, "another-cluster")
        assert code == 403 and "cluster name mismatch" in body and name in body
        code, body = _post(http, _context(tls_cluster, tls_dir, "ingest"), 92)
        assert code == 403 and access.CLUSTER_HEADER in body
        assert _refused_at_handshake(http, _context(tls_cluster, other_ca, "ingest"), 93)
        assert _refused_at_handshake(http, _context(tls_cluster, None, None), 94)
        # Forward: the same
        assert _forward(port, _context(tls_cluster, tls_dir, "ingest"), 3, name) == [{"ack": "c3"}]
        assert _forward(port, _context(tls_cluster, tls_dir, "reader"), 95, name) == []
        assert _forward(port, _context(tls_cluster, tls_dir, "ingest"), 96, "another-cluster") == []
        assert _forward(port, _context(tls_cluster, tls_dir, "ingest"), 97) == []
        for ctx in (_context(tls_cluster, other_ca, "ingest"), _context(tls_cluster, None, None)):
            try:
                assert _forward(port, ctx, 98, name) == []
            except (ssl.SSLError, OSError):
                pass            # refused at the handshake
        # the service still serves
        assert _post(http, _context(tls_cluster, tls_dir, "admin"), 4, name)[0] == 200
    finally:
        svc.stop()
    with open(svc.log.name, "rb") as f:
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "carries reader" in log and "cluster name mismatch" in log
    assert sorted(read_array(tls_cluster, "cols.seq").tolist()) == [1, 2, 3, 4]


def test_a_token_where_a_client_has_no_certificate(tls_cluster, tmp_path):
    token = tmp_path / "token"
    token.write_text("sesame\n")
    port = free_port()
    svc = Service(tls_cluster, tmp_path, *_cluster_args(tls_cluster), "--http", "127.0.0.1:0",
                  "--forward", f"127.0.0.1:{port}", "--token-file", str(token), "--group-ms", "10")
    http, tls_dir, name = svc.addresses["http"], tls_cluster.tls_dir, tls_cluster.cluster
    no_cert = _context(tls_cluster, None, None)
    try:
        assert _post(http, no_cert, 10, token="sesame")[0] == 200
        code, body = _post(http, no_cert, 99)
        assert code == 401 and "client certificate" in body and "token" in body
        assert _post(http, no_cert, 99, token="wrong")[0] == 401
        assert _post(http, no_cert, 99, "another-cluster", token="sesame")[0] == 403
        # a certificate, when presented, decides: the token does not lift its role
        assert _post(http, _context(tls_cluster, tls_dir, "reader"), 99, name, token="sesame")[0] == 403
        assert _post(http, _context(tls_cluster, tls_dir, "ingest"), 11, name)[0] == 200
        answers = _forward(port, no_cert, 12, token="sesame")            # fluentd's shared_key
        assert answers[0][:2] == ["PONG", True] and answers[-1] == {"ack": "c12"}
        assert _forward(port, no_cert, 99, token="wrong")[0][:2] == ["PONG", False]
    finally:
        svc.stop()
    seqs = read_array(tls_cluster, "cols.seq").tolist()
    assert {10, 11, 12} <= set(seqs) and 99 not in seqs


@pytest.mark.parametrize("kind", ["forward", "http"])
def test_a_stalled_tls_handshake_is_given_up(tls_cluster, kind):
    """A client that connects and never completes the handshake (slowloris) holds its
    connection slot only for the handshake's time limit (before: forever on Forward)."""
    import threading

    from neoarray.ingest.forward import ForwardServer
    from neoarray.ingest.http import IngestHTTPServer
    tls = tls_cluster.tls_of("client")
    ctx = access.server_context("cert", tls.cert_path, tls.key_path, tls.ca_path)
    policy = access.Policy("cert", tls_cluster.cluster, None)
    server = (ForwardServer(("127.0.0.1", 0), None, tls=ctx, policy=policy, handshake_timeout_s=0.5)
              if kind == "forward" else
              IngestHTTPServer(("127.0.0.1", 0), None, None, tls=ctx, policy=policy, handshake_timeout_s=0.5))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=30) as s:
            s.sendall(b"\x16\x03\x01")           # the start of a ClientHello, then nothing
            assert s.recv(65536) == b""          # closed by the service, long before 30 s
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _opts(*argv):
    parser = argparse.ArgumentParser()
    service.add_parser(parser.add_subparsers())
    return parser.parse_args(["ingest", "--mapping", "m.json", *argv])


def test_listen_security_defaults_and_clear_errors(tls_cluster, tmp_path):
    token = tmp_path / "token"
    token.write_text("t\n")
    tls = tls_cluster.tls_of("client")
    opts = _opts(*_cluster_args(tls_cluster), "-c", tls_cluster.cluster)
    ctx, policy = service.listen_security(opts, tls, None)
    assert policy.mode == "cert" and ctx.verify_mode == ssl.CERT_REQUIRED and policy.cluster == tls_cluster.cluster
    ctx, policy = service.listen_security(opts, tls, "t")
    assert policy.mode == "cert-or-token" and ctx.verify_mode == ssl.CERT_OPTIONAL
    _, policy = service.listen_security(_opts("--dir", tls_cluster.path), tls, None)     # the name from --dir
    assert policy.cluster == tls_cluster.cluster
    with pytest.raises(NeoError, match="needs the cluster's CA"):
        service.listen_security(_opts("-c", "x", "--listen-auth", "cert"), None, None)
    with pytest.raises(NeoError, match="needs the shared token"):
        service.listen_security(_opts("-c", "x", "--listen-auth", "cert-or-token"), tls, None)
    with pytest.raises(NeoError, match="needs --token-file"):
        service.listen_security(_opts("-c", "x", "--listen-auth", "token"), tls, None)
    ctx, policy = service.listen_security(_opts("-c", "x", "--insecure-listeners"), tls, None)
    assert ctx is None and policy.mode == "token"


def test_access_decisions():
    cert = access.Policy("cert", "prod", None)
    either = access.Policy("cert-or-token", "prod", "tok")
    for role in WRITERS:
        assert access.refusal(cert, frozenset({role}), None) is None
    assert access.refusal(cert, frozenset({"reader"}), None)[0] == 403
    assert access.refusal(cert, frozenset(), "tok")[0] == 403
    assert access.refusal(cert, None, "tok")[0] == 401
    assert access.refusal(either, None, "tok") is None
    assert access.refusal(either, None, "bad")[0] == 401
    assert access.refusal(either, frozenset({"reader"}), "tok")[0] == 403
    assert "mismatch" in access.cluster_refusal(cert, frozenset({"ingest"}), "test")
    assert "name the cluster" in access.cluster_refusal(cert, frozenset({"ingest"}), None)
    assert access.cluster_refusal(either, None, None) is None            # fluentd names none
    assert access.cluster_refusal(cert, frozenset({"ingest"}), "prod") is None
    # the ingest role reaches no method of the cluster's own ports
    for method in security.ACCESS:
        assert security.refusal(method, frozenset({"ingest"}), False, False) is not None, method
