"""Fuzz the ingestion service's own ports (``neoarray ingest``: Forward and HTTP) with
what no client of those protocols sends; the service may not die, log a traceback, or
store anything but well-formed records.

Forward: random bytes, a valid message cut short, msgpack of every wrong shape (not an
array, a tag that is not a string, entries that are not entries, options that are not
a map, a chunk id that is not a string), array and map headers announcing billions of
items, garbage in PackedForward and CompressedPackedForward, a sender that stalls
mid-message and one that drops the connection mid-message.  HTTP: random bodies under
both content types, lengths that lie, huge announced lengths, unknown paths and
methods.  Afterwards the service process is alive, its log holds no traceback, a
well-formed record sent through each port is acknowledged and stored, and the arrays
hold nothing else but the one complete record some hostile messages wrap.  ``NEOARRAY_FUZZ_ITERATIONS`` sets the number of hostile
inputs (default 200), ``NEOARRAY_SEED`` replays a run.

Once more, shorter (a quarter of the inputs), against the ports' mutual TLS in front of
a TLS cluster: the same inputs inside TLS from a client holding the ``ingest``
certificate, plain bytes on the TLS ports, clients without a certificate or with a
``reader`` one, and a well-formed record served while handshakes stall.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import random
import socket
import ssl
import time

import msgpack
import numpy as np
import pytest

from tests.conftest import running_cluster
from tests.ingest.ingest_helpers import Service, free_port, read_array

ITERATIONS = int(os.environ.get("NEOARRAY_FUZZ_ITERATIONS", "200"))
SENTINEL_SEQ = 424_242


@pytest.fixture(scope="module")
def ingest_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("ingest-fuzz") / "cluster")


def _hostile_forward(rng: random.Random) -> tuple[bytes, str]:
    """Bytes a Forward client never sends, and what they are (for the failure message)."""
    good = msgpack.packb(["cols.f", [[1, {"seq": 1, "value": 1.0}]], {"chunk": "c"}])
    choices = [
        (lambda: rng.randbytes(rng.randint(1, 512)), "random bytes"),
        (lambda: good[:rng.randint(1, len(good) - 1)], "a message cut short"),
        (lambda: msgpack.packb(rng.choice([7, None, "tag", {"a": 1}, [], [1], 3.5])), "not a message"),
        (lambda: msgpack.packb([rng.choice([1, None, b"\xff", [], {}]), 5, {"seq": 1, "value": 1.0}]),
         "a tag that is not a string"),
        (lambda: msgpack.packb(["cols.f", rng.choice([[1], [[1]], [[1, 2, 3]], ["x"], [[None, None]]])]),
         "entries that are not entries"),
        (lambda: msgpack.packb(["cols.f", 5, {"seq": 1, "value": 1.0}, rng.choice([1, "x", [], None])]),
         "options that are not a map"),
        (lambda: msgpack.packb(["cols.f", 5, {"seq": 1, "value": 1.0}, {"chunk": rng.choice([1, [], None, b"\x00"])}]),
         "a chunk id that is not a string"),
        (lambda: b"\x93\xa6cols.f\xdd\xff\xff\xff\xff", "an entry list announcing 4 billion items"),
        (lambda: b"\xdf\xff\xff\xff\xff", "a map announcing 4 billion pairs"),
        (lambda: b"\x93\xa6cols.f\xc6\x7f\xff\xff\xff" + rng.randbytes(16), "a PackedForward of 2 GB announced"),
        (lambda: msgpack.packb(["cols.f", rng.randbytes(rng.randint(1, 200)), {"size": 3}]),
         "garbage PackedForward entries"),
        (lambda: msgpack.packb(["cols.f", rng.randbytes(rng.randint(1, 200)),
                                {"compressed": "gzip", "chunk": "z"}]), "garbage gzip"),
    ]
    make, what = rng.choice(choices)
    return make(), what


def _connect(port: int, ctx=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx is None:
        return raw
    try:
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def _send_forward(port: int, payload: bytes, rng: random.Random, ctx=None) -> None:
    with _connect(port, ctx) as s:
        if rng.random() < 0.1:                     # a sender that stalls mid-message
            s.sendall(payload[:max(1, len(payload) // 2)])
            time.sleep(0.1)
            return
        s.sendall(payload)
        if rng.random() < 0.5:                     # one that waits for what comes back
            s.settimeout(0.1)
            try:
                while s.recv(65536):
                    pass
            except (TimeoutError, ConnectionError):
                pass


def _assert_no_traceback(service, seed: int) -> None:
    with open(service.log.name, "rb") as f:
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log, f"seed={seed}: the service logged a traceback:\n{log[-3000:]}"


def _answer(s, message: bytes, seed: int):
    """Send a well-formed Forward ``message`` on ``s``; the service's answer."""
    s.sendall(message)
    unpacker = msgpack.Unpacker(raw=False)
    while (answer := next(unpacker, None)) is None:
        data = s.recv(65536)
        assert data, f"seed={seed}: the service closed a well-formed connection"
        unpacker.feed(data)
    return answer


def _send_http(port: int, rng: random.Random, ctx=None, cluster=None) -> int:
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=10) if ctx is None
            else http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx))
    try:
        method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE"])
        path = rng.choice(["/ingest/cols.h", "/ingest/", "/ingest/no.route", "/", "/metrics", "/ingest/cols.h/x"])
        body = rng.choice([rng.randbytes(rng.randint(0, 300)), b"[{\"seq\": \"x\"}]", b"{", b"[]", b"null",
                           msgpack.packb({"seq": [1]}), json.dumps([{"seq": 1}] * 3).encode()])
        kind = rng.choice(["application/json", "application/msgpack", "text/plain"])
        headers = {"Content-Type": kind}
        if cluster is not None:
            headers["Neo-Cluster"] = cluster if rng.random() < 0.8 else rng.choice(["", "other", "\u00e9"])
        if rng.random() < 0.2:
            headers["Content-Length"] = str(rng.choice([10**12, -5, len(body) + 100]))
            conn.putrequest(method, path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            conn.send(body)
            try:
                conn.sock.shutdown(socket.SHUT_WR)     # no more bytes than sent, whatever it said
            except OSError as e:
                if e.errno != errno.ENOTCONN and ctx is None:
                    raise
                # the service answered and closed already (a reset): its answer may still be read
        else:
            conn.request(method, path, body=body, headers=headers)
        return conn.getresponse().status
    except (ConnectionError, TimeoutError, http.client.HTTPException, ssl.SSLError):
        return 0            # the service closed the connection: allowed
    finally:
        conn.close()


def test_hostile_inputs_on_the_forward_and_http_ports(ingest_cluster, tmp_path):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} iterations={ITERATIONS}")
    rng = random.Random(seed)
    forward, web = free_port(), free_port()
    service = Service(ingest_cluster, tmp_path, "--forward", f"127.0.0.1:{forward}",
                      "--http", f"127.0.0.1:{web}", "--group-ms", "10")
    statuses = set()
    try:
        for i in range(ITERATIONS):
            if i % 3 == 2:
                statuses.add(_send_http(web, rng))
            else:
                payload, what = _hostile_forward(rng)
                try:
                    _send_forward(forward, payload, rng)
                except (ConnectionError, TimeoutError):
                    pass        # the service closed the connection: allowed
            assert service.proc.poll() is None, f"seed={seed}: the service died after {what!r}"
        assert statuses <= {0, 200, 400, 401, 404, 405, 411, 413, 415, 501, 503}, statuses
        # what is well formed still goes through, on both ports
        good = msgpack.packb(["cols.ok", [[1, {"seq": SENTINEL_SEQ, "value": 0.25}]], {"chunk": "sentinel"}])
        with socket.create_connection(("127.0.0.1", forward), timeout=30) as s:
            assert _answer(s, good, seed) == {"ack": "sentinel"}
        conn = http.client.HTTPConnection("127.0.0.1", web, timeout=30)
        conn.request("POST", "/ingest/cols.ok", body=json.dumps([{"seq": SENTINEL_SEQ + 1, "value": 0.5}]),
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        service.stop()
    _assert_no_traceback(service, seed)
    seqs = read_array(ingest_cluster, "cols.seq")
    assert SENTINEL_SEQ in seqs and SENTINEL_SEQ + 1 in seqs
    # nothing else, but the one complete record some hostile Forward messages carry (seq 1)
    assert set(seqs.tolist()) <= {1, SENTINEL_SEQ, SENTINEL_SEQ + 1}, sorted(set(seqs.tolist()))
    values = dict(zip(seqs.tolist(), read_array(ingest_cluster, "cols.value").tolist()))
    assert values[SENTINEL_SEQ] == np.float32(0.25) and values[SENTINEL_SEQ + 1] == np.float32(0.5)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("ingest-fuzz-tls") / "cluster", tls=True)


def _tls_context(cluster, role):
    ctx = ssl.create_default_context(cafile=cluster.tls_of("client").ca_path)
    if role is not None:
        tls = cluster.tls_of(role)
        ctx.load_cert_chain(tls.cert_path, tls.key_path)
    return ctx


def _with_cluster(payload: bytes, cluster: str) -> bytes:
    """Each whole message of a payload given the option ``cluster`` (what a client with
    a certificate sends); bytes that are no message stay as they are."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return payload
    if isinstance(message, list) and len(message) in (3, 4) and isinstance(message[-1], dict):
        message[-1]["cluster"] = cluster
        return msgpack.packb(message)
    return payload


def test_hostile_inputs_on_the_mutual_tls_ports(tls_cluster, tmp_path):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    iterations = max(1, ITERATIONS // 4)
    print(f"seed={seed} iterations={iterations}")
    rng = random.Random(seed)
    forward, web = free_port(), free_port()
    tls = tls_cluster.tls_of("client")
    service = Service(tls_cluster, tmp_path, "--ca", tls.ca_path, "--cert", tls.cert_path, "--key", tls.key_path,
                      "--forward", f"127.0.0.1:{forward}", "--http", f"127.0.0.1:{web}", "--group-ms", "10")
    name = tls_cluster.cluster
    ingest, contexts = _tls_context(tls_cluster, "ingest"), [None, _tls_context(tls_cluster, None),
                                                             _tls_context(tls_cluster, "reader")]
    try:
        for i in range(iterations):
            who = ingest if rng.random() < 0.7 else rng.choice(contexts)    # None: plain bytes on TLS
            try:
                if i % 3 == 2:
                    _send_http(web, rng, who, name)
                else:
                    payload, what = _hostile_forward(rng)
                    _send_forward(forward, _with_cluster(payload, name), rng, who)
            except (ConnectionError, TimeoutError, ssl.SSLError):
                pass        # refused at the handshake, or closed: allowed
            assert service.proc.poll() is None, f"seed={seed}: the service died after {what!r}"
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for port in (forward, web)]
        good = msgpack.packb(["cols.ok", [[1, {"seq": SENTINEL_SEQ, "value": 0.25}]],
                              {"chunk": "sentinel", "cluster": name}])
        with _connect(forward, ingest) as s:        # served while handshakes stall
            assert _answer(s, good, seed) == {"ack": "sentinel"}
        for s in stalled:       # given up after the handshake's time limit (tests/ingest/test_mutual_tls.py)
            s.close()
    finally:
        service.stop()
    _assert_no_traceback(service, seed)
    seqs = read_array(tls_cluster, "cols.seq")
    assert SENTINEL_SEQ in seqs and set(seqs.tolist()) <= {1, SENTINEL_SEQ}, sorted(set(seqs.tolist()))
