"""The framed data plane's server and client over real sockets on 127.0.0.1: every
refusal a gRPC port makes (cluster name, TLS, roles, limits, malformed requests) is
made here too, with the same errors, and the server keeps serving."""
import socket
import threading
import time

import grpc
import pytest
from ZODB.POSException import ReadOnlyError

from neoarray import security, wire
from neoarray.errors import (
    AccessDenied,
    ClusterNameMismatch,
    ClusterUnavailable,
    LimitExceeded,
    NeoError,
    RequestRefused,
)
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.transport import bulk, conn, frames
from neoarray.transport.client import FramedChannel, Stub
from neoarray.transport.server import FramedServer, Limits

CLUSTER = "framed-test"
STORAGE = "neoarray.v1.Storage"


class Servicer(srpc.StorageServicer):
    """Load answers its oid's bytes as data; Store keeps what it got; Lock blocks
    until released (to hold a connection busy)."""

    def __init__(self):
        self.stored = []
        self.release = threading.Event()
        self.releases = 0
        self.released_twice = threading.Event()

    def Load_segments(self, request, segments, context):
        return spb.LoadReply(oid=request.oid, status=spb.FOUND, serial=b"\0" * 8), [request.oid * 1000]

    def Store_segments(self, request, segments, context):
        self.stored.append([bytes(s) for s in segments])
        return spb.StoreReply(), []

    def LoadMany_segments(self, request, segments, context):
        """Views of a buffer that ``release`` wipes: what the client gets was sent
        before the release."""
        buf = bytearray(b"".join(r.oid * 1000 for r in request.loads))
        views = [memoryview(buf)[i * 8000:(i + 1) * 8000] for i in range(len(request.loads))]

        def release():
            buf[:] = b"\0" * len(buf)
            self.releases += 1
            if self.releases == 2:
                self.released_twice.set()
        return spb.LoadManyReply(loads=[spb.LoadReply(oid=r.oid, status=spb.FOUND) for r in request.loads]), \
            views, release

    def Unlock(self, request, context):
        self.release.wait(10)
        return cpb.Empty()


@pytest.fixture
def server():
    servicer = Servicer()
    srv = FramedServer(CLUSTER, {STORAGE: servicer}, Limits(frame_bytes_max=1 << 20, connections_max=4,
                                                           handshake_s=0.5, idle_s=2.0, frame_s=0.5))
    srv.bind("127.0.0.1:0")
    srv.start()
    srv.servicer = servicer
    yield srv
    servicer.release.set()
    srv.stop()


def _stub(address, cluster=CLUSTER, **kw):
    channel = FramedChannel(address, cluster, **kw)
    return channel, Stub(channel, STORAGE)


def test_bulk_goes_both_ways_as_raw_segments(server):
    channel, stub = _stub(server.address)
    with channel:
        reply, (data,) = bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)
        assert reply.status == spb.FOUND and bytes(data) == b"\1" * 8000
        big = bytes(range(256)) * 4096                  # 1 MiB: an aligned buffer on the server
        request = spb.StoreRequest(ttid=b"\0" * 8, objects=[spb.ObjectRecord(oid=b"\2" * 8), spb.ObjectRecord(oid=b"\3" * 8)])
        bulk.call(stub.Store, request, [big[:-100], b"small"], 5.0)
    assert server.servicer.stored == [[big[:-100], b"small"]]


def test_segments_lent_by_a_servicer_are_released_once_sent(server):
    channel, stub = _stub(server.address)
    with channel:
        for n in (1, 3):
            oids = [bytes([i + 1]) * 8 for i in range(n)]
            reply, datas = bulk.call(stub.LoadMany, spb.LoadManyRequest(loads=[spb.LoadRequest(oid=o) for o in oids]),
                                     (), 5.0)
            assert [bytes(d) for d in datas] == [o * 1000 for o in oids]
    # the server releases once it wrote the reply, maybe after the client read it
    assert server.servicer.released_twice.wait(10) and server.servicer.releases == 2


def test_a_connection_refused_for_an_oversized_frame_is_not_reused(server):
    channel, stub = _stub(server.address)
    with channel:
        for _ in range(3):
            with pytest.raises(LimitExceeded, match="larger than"):
                bulk.call(stub.Store, spb.StoreRequest(ttid=b"\0" * 8, objects=[spb.ObjectRecord(oid=b"\2" * 8)]),
                          [b"x" * ((1 << 20) + 4096)], 5.0)
            reply, (data,) = bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)
            assert bytes(data) == b"\1" * 8000


def test_another_cluster_is_refused_at_hello(server):
    channel, stub = _stub(server.address, cluster="other")
    with channel, pytest.raises(ClusterNameMismatch, match="serves cluster 'framed-test'"):
        wire.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), 5.0)


def test_refusals_keep_the_connection_and_the_server(server):
    channel, stub = _stub(server.address)
    with channel:
        with pytest.raises(RequestRefused, match="takes no bulk segments"):
            bulk.call(stub.History, spb.HistoryRequest(oid=b"\1" * 8), [b"x"], 5.0)
        with pytest.raises(NeoError, match="UNIMPLEMENTED"):     # not implemented by this servicer
            wire.call(stub.Pack, spb.PackRequest(tid=b"\0" * 8), 5.0)
        reply, _ = bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)
        assert reply.status == spb.FOUND


def _raw(address):
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    conn.write_frame(sock, frames.Frame(frames.HELLO, 0, body=frames.hello_body(CLUSTER)))
    assert conn.read_frame(sock, 1 << 16, 5, 5).kind == frames.HELLO
    return sock


def _error_of(sock):
    frame = conn.read_frame(sock, 1 << 20, 5, 5)
    assert frame.kind == frames.ERROR
    return frames.parse_error(frame.body)


def test_malformed_requests_get_statuses_naming_the_problem(server):
    sock = _raw(server.address)
    try:
        load = frames.METHOD_IDS["/neoarray.v1.Storage/Load"]
        conn.write_frame(sock, frames.Frame(frames.REQUEST, 7, load, b"\xff\xff\xff"))
        code, details = _error_of(sock)
        assert code == "INVALID_ARGUMENT" and "malformed /neoarray.v1.Storage/Load request" in details
        conn.write_frame(sock, frames.Frame(frames.REPLY, 8, load))        # out of protocol order
        code, details = _error_of(sock)
        assert code == "INVALID_ARGUMENT" and "out of step" in details
        assert sock.recv(1) == b""                                         # then closed
    finally:
        sock.close()


def test_an_oversized_frame_is_refused_and_the_connection_closed(server):
    sock = _raw(server.address)
    try:
        load = frames.METHOD_IDS["/neoarray.v1.Storage/Load"]
        sock.sendall(frames.HEADER.pack((2 << 20) + 17, 1, load, frames.REQUEST, 0, 0, 2 << 20))
        code, details = _error_of(sock)
        assert code == "RESOURCE_EXHAUSTED" and "frame_bytes_max" in details
        assert sock.recv(1) == b""
    finally:
        sock.close()
    channel, stub = _stub(server.address)       # the server goes on
    with channel:
        assert bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)[0].status == spb.FOUND


def test_half_open_slow_and_idle_connections_are_closed(server):
    host, _, port = server.address.rpartition(":")
    silent = socket.create_connection((host, int(port)), timeout=5)     # never says HELLO
    stalled = _raw(server.address)
    stalled.sendall(frames.HEADER.pack(100, 1, 0, frames.REQUEST, 0, 0, 83) + b"x")  # a frame that stops
    idle = _raw(server.address)
    try:
        for sock in (silent, stalled, idle):
            sock.settimeout(10)
            data = b""
            while True:                       # an error frame may come first, then the end
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        for sock in (silent, stalled, idle):
            sock.close()


def test_a_servicer_slower_than_the_frame_limit_still_answers(server):
    """``frame_s`` (0.5 s here) bounds the reading of a request and the writing of its
    reply, not the servicer's work between them."""
    channel, stub = _stub(server.address)
    with channel:
        future = stub.Unlock.future(spb.UnlockRequest(), timeout=30)     # blocks until released
        threading.Timer(1.5, server.servicer.release.set).start()
        assert future.result() == cpb.Empty()


def test_connections_beyond_the_limit_are_refused_at_hello(server):
    held = [_stub(server.address) for _ in range(4)]
    futures = [stub.Unlock.future(spb.UnlockRequest(), timeout=10) for _, stub in held]   # 4 busy
    try:
        extra, stub = _stub(server.address)
        with extra, pytest.raises(LimitExceeded, match="connections_max"):
            wire.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), 5.0)
    finally:
        server.servicer.release.set()
        for f in futures:
            f.result()
        for channel, _ in held:
            channel.close()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tls"))
    security.generate(path, CLUSTER)
    other = str(tmp_path_factory.mktemp("other-ca"))
    security.generate(other, CLUSTER)
    return path, other


@pytest.fixture
def tls_server(tls_dir):
    path, _ = tls_dir
    servicer = Servicer()
    srv = FramedServer(CLUSTER, {STORAGE: servicer}, Limits(handshake_s=2.0),
                       tls=security.TLSConfig.in_dir(path, "storage"))
    srv.bind("127.0.0.1:0")
    srv.start()
    yield srv
    srv.stop()


def test_a_stalled_tls_connection_is_cut(tls_dir):
    """Under TLS too the frame limit cuts a peer that stops mid-frame: the watchdog
    shuts the descriptor under the TLS object that a server thread is reading."""
    path, _ = tls_dir
    srv = FramedServer(CLUSTER, {STORAGE: Servicer()}, Limits(handshake_s=2.0, frame_s=0.5, idle_s=600.0),
                       tls=security.TLSConfig.in_dir(path, "storage"))
    srv.bind("127.0.0.1:0")
    srv.start()
    host, _, port = srv.address.rpartition(":")
    context = conn.client_context(security.TLSConfig.in_dir(path, "client"))
    sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host)
    try:
        conn.write_frame(sock, frames.Frame(frames.HELLO, 0, body=frames.hello_body(CLUSTER)))
        assert conn.read_frame(sock, 1 << 16, 5, 5).kind == frames.HELLO
        sock.sendall(frames.HEADER.pack(100, 1, 0, frames.REQUEST, 0, 0, 83) + b"x")   # then nothing
        sock.settimeout(30)
        with pytest.raises(conn.PeerGone, match="closed|lost"):
            conn.read_frame(sock, 1 << 20, 30, 30)
        channel, stub = _stub(srv.address, tls=security.TLSConfig.in_dir(path, "client"))
        with channel:           # the server goes on
            assert bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)[0].status == spb.FOUND
    finally:
        sock.close()
        srv.stop()


@pytest.mark.parametrize("role, method, error", [
    ("reader", "Store", ReadOnlyError),
    ("client", "Lock", AccessDenied),
    ("storage", "CheckRecords", AccessDenied),
])
def test_roles_of_the_certificate_are_checked_per_call(tls_dir, tls_server, role, method, error):
    path, _ = tls_dir
    channel, stub = _stub(tls_server.address, tls=security.TLSConfig.in_dir(path, role))
    requests = {"Store": spb.StoreRequest(), "Lock": spb.LockRequest(), "CheckRecords": spb.CheckRecordsRequest()}
    with channel, pytest.raises(error, match=f"{method} needs the role"):
        bulk.call(getattr(stub, method), requests[method], (), 5.0)


def test_tls_mismatches_fail_the_connection(tls_dir, tls_server):
    path, other = tls_dir
    for tls in (None, security.TLSConfig.in_dir(other, "client")):   # no TLS; a certificate of another CA
        channel, stub = _stub(tls_server.address, tls=tls, connect_timeout_s=3.0)
        with channel, pytest.raises(ClusterUnavailable):
            wire.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), 5.0)
    channel, stub = _stub(tls_server.address, tls=security.TLSConfig.in_dir(path, "client"))
    with channel:
        assert bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)[0].status == spb.FOUND


def test_a_restarted_peer_costs_no_failed_call(server):
    """An idle pooled connection whose server side closed is replaced before use."""
    channel, stub = _stub(server.address)
    with channel:
        bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)
        time.sleep(2.5)                       # idle_s=2: the server closed it
        assert bulk.call(stub.Load, spb.LoadRequest(oid=b"\1" * 8), (), 5.0)[0].status == spb.FOUND


def test_failures_are_grpc_statuses(server):
    channel, stub = _stub("127.0.0.1:1", connect_timeout_s=1.0)
    with channel:
        future = stub.Load.future(spb.LoadRequest(oid=b"\1" * 8), timeout=2.0)
        assert isinstance(future.exception(), grpc.RpcError)
        assert future.exception().code() == grpc.StatusCode.UNAVAILABLE


def test_in_process_transport_serves_the_same_way():
    """The in-process transport: the same dispatch, checks and codec, no socket."""
    from neoarray.transport.inproc import InProcessChannel
    servicer = Servicer()
    srv = FramedServer(CLUSTER, {STORAGE: servicer})
    with InProcessChannel(srv) as channel:
        stub = Stub(channel, STORAGE)
        _, (data,) = bulk.call(stub.Load, spb.LoadRequest(oid=b"\4" * 8), (), 5.0)
        assert bytes(data) == b"\4" * 8000
        bulk.call(stub.Store, spb.StoreRequest(objects=[spb.ObjectRecord(oid=b"\5" * 8)]), [b"abc"], 5.0)
        assert servicer.stored == [[b"abc"]]
        with pytest.raises(RequestRefused, match="takes no bulk segments"):
            bulk.call(stub.History, spb.HistoryRequest(oid=b"\1" * 8), [b"x"], 5.0)
    with InProcessChannel(srv, roles=frozenset({"reader"})) as channel, pytest.raises(ReadOnlyError):
        bulk.call(Stub(channel, STORAGE).Store, spb.StoreRequest(), (), 5.0)
