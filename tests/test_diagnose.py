"""Connection failures that say what is wrong (``neoarray.diagnose``): nothing listening,
TLS on one side only, a certificate from another CA, refused by the node.

The probes are checked against real gRPC servers in this process (plain and mutual TLS,
no service needed: the handshake and HTTP/2's opening are gRPC's own); a client and
``neoctl`` against a nothing-listening address and a TLS cluster of processes."""
import socket
import subprocess
import sys

import pytest

from neoarray import diagnose, security, wire
from neoarray.client import NeoStorage
from neoarray.errors import ClusterUnavailable
from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two CAs with their certificates: ``ours`` and ``other``."""
    base = tmp_path_factory.mktemp("certs")
    return {name: security.generate(str(base / name), "diag") for name in ("ours", "other")}


@pytest.fixture(scope="module")
def servers(certs):
    """``{"plain": address, "tls": address}``: gRPC servers, the TLS one with ``ours``."""
    started, addresses = [], {}
    for kind, tls in (("plain", None), ("tls", security.TLSConfig.in_dir(certs["ours"], "master"))):
        server = wire.make_server("diag", workers_max=2)
        addresses[kind] = wire.bind(server, "127.0.0.1:0", tls=tls)
        server.start()
        started.append(server)
    yield addresses
    for server in started:
        server.stop(None)


@pytest.fixture
def closed_port():
    """An address where nothing listens: a port bound (so no one else takes it), not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("diag-tls") / "c", storages=1, tls=True)


def _tls(certs, ca="ours", cert="ours", role="client"):
    """A client's TLS files: the CA of ``ca``, the certificate and key of ``cert``."""
    mine = security.TLSConfig.in_dir(certs[cert], role)
    return security.TLSConfig(security.TLSConfig.in_dir(certs[ca], role).ca_path, mine.cert_path, mine.key_path)


# ---------------------------------------------------------------- the probes

def test_sound_connections_have_no_cause(servers, certs):
    assert diagnose.connection(servers["plain"]) is None
    assert diagnose.connection(servers["tls"], _tls(certs)) is None


def test_nothing_listening(closed_port):
    cause = diagnose.connection(closed_port)
    assert "nothing listening" in cause.text and closed_port in cause.text
    assert not cause.lasting                 # a node starting: worth a short wait


def test_tls_on_one_side_only(servers, certs):
    cause = diagnose.connection(servers["tls"])
    assert "speaks TLS" in cause.text and servers["tls"] in cause.text and cause.lasting
    cause = diagnose.connection(servers["plain"], _tls(certs))
    assert "does not speak TLS" in cause.text and cause.lasting


def test_certificate_from_another_ca(servers, certs):
    cause = diagnose.connection(servers["tls"], _tls(certs, ca="other", cert="other"))
    assert "another CA" in cause.text and cause.lasting
    cause = diagnose.connection(servers["tls"], _tls(certs, ca="ours", cert="other"))
    assert "refused this client's certificate" in cause.text and cause.lasting


def test_explain_keeps_the_error_of_a_sound_connection(servers):
    assert diagnose.explain(ClusterUnavailable("standby"), [servers["plain"]]) == "standby"


# ---------------------------------------------------------------- clients and neoctl

def _client_error(*args) -> str:
    """Open a ``NeoStorage(*args)`` in a subprocess with the default connect timeout
    (the subprocess's own limit is generous); its error."""
    code = ("import sys\nfrom neoarray.client import NeoStorage\n"
            "try:\n    NeoStorage(*sys.argv[1:])\nexcept Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n    sys.exit(1)\n")
    out = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    return out.stdout


def test_client_fails_soon_where_nothing_listens(closed_port):
    error = _client_error(closed_port, "some-cluster")
    assert error.startswith("ClusterUnavailable") and closed_port in error and "nothing listening" in error
    assert "after 30 s" not in error         # given up on the cause, not on connect_timeout_s


def _neoctl(*args):
    return subprocess.run([sys.executable, "-m", "neoarray.ctl", *args], check=False, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_neoctl_names_the_address_where_nothing_listens(closed_port):
    out = _neoctl("-a", closed_port, "-c", "x", "print", "cluster")
    assert out.returncode == 1 and "nothing listening" in out.stderr and closed_port in out.stderr


def test_plain_client_and_neoctl_against_a_tls_cluster_say_tls(tls_cluster):
    with pytest.raises(ClusterUnavailable, match="speaks TLS"):
        NeoStorage(tls_cluster.address, tls_cluster.cluster)
    out = _neoctl("-a", tls_cluster.address, "-c", tls_cluster.cluster, "--token-file", tls_cluster.token_file,
                  "print", "cluster")
    assert out.returncode == 1 and "speaks TLS" in out.stderr and tls_cluster.address in out.stderr


def test_client_with_a_certificate_from_another_ca(tls_cluster, certs):
    with pytest.raises(ClusterUnavailable, match="another CA"):
        NeoStorage(tls_cluster.address, tls_cluster.cluster, **_tls(certs, "other", "other").options())
