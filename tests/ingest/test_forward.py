"""The Forward protocol input, with fluent-logger (a real client) and raw sockets,
into a real cluster through ``neoarray ingest`` processes."""
import os
import socket
import threading
import time

import msgpack
import numpy as np
import pytest

from neoarray.ingest.fluent import AckingSender
from tests.conftest import running_cluster
from tests.ingest.ingest_helpers import Service, free_port, ingest_state, read_array


@pytest.fixture(scope="module")
def ingest_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("ingest") / "cluster", storages=2, replicas=1)


def _send_through_kill(cluster, tmp_path, records, kill_after):
    """fluent-logger sends ``records``; the service is SIGKILLed after ``kill_after``
    of them and started again; returns the array afterwards."""
    port = free_port()
    args = ("--forward", f"127.0.0.1:{port}", "--group-ms", "20", "--group-records", "5000")
    service = Service(cluster, tmp_path, *args)
    sender = AckingSender("bench", port=port, window=4000, timeout=10.0)
    killed = threading.Event()
    failures = 0
    try:
        for seq in range(records):
            if seq == kill_after:
                service.kill()
                killed.set()
            if seq == kill_after + records // 10:
                service = Service(cluster, tmp_path, *args)
            while not sender.emit_with_time("s", 1.5e9 + seq, {"seq": seq, "sensor": 7, "value": seq / 2}):
                failures += 1       # the service is down: keep what waits, try again
                if sender.unacked < 10 * records:
                    break
        assert sender.flush(120.0), f"{sender.unacked} packets never acknowledged: {sender.last_error}"
        sender.close()
    finally:
        service.stop()
    assert killed.is_set() and failures > 0       # the kill was felt by the client
    return read_array(cluster, "bench")


def _exactly_once(values, records):
    seqs = np.sort(values["seq"])
    assert len(seqs) == records, f"{len(seqs)} rows for {records} records"
    assert (seqs == np.arange(records)).all()
    row = values[values["seq"] == 3][0]
    assert row["sensor"] == 7 and row["value"] == 1.5 and row["time"] == 1.5e9 + 3


def test_fluent_logger_exactly_once_through_a_kill(ingest_cluster, tmp_path):
    before = len(read_array(ingest_cluster, "bench")) if _has(ingest_cluster, "bench") else 0
    assert before == 0
    records = 20_000
    _exactly_once(_send_through_kill(ingest_cluster, tmp_path, records, kill_after=8_000), records)


@pytest.mark.slow
def test_fluent_logger_100000_records_exactly_once_through_a_kill(tmp_path):
    for cluster in running_cluster(tmp_path / "cluster", storages=2, replicas=1):
        records = 100_000
        _exactly_once(_send_through_kill(cluster, tmp_path, records, kill_after=37_000), records)


def _has(cluster, name):
    try:
        read_array(cluster, name)
        return True
    except KeyError:
        return False


def _raw_exchange(port, payload: bytes, answers: int, timeout_s=30.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        unpacker = msgpack.Unpacker(raw=False)
        out = []
        while len(out) < answers:
            data = s.recv(65536)
            assert data, "the service closed the connection"
            unpacker.feed(data)
            out.extend(unpacker)
        return out


def test_forward_and_packed_forward_modes_and_a_malformed_record(ingest_cluster, tmp_path):
    port = free_port()
    service = Service(ingest_cluster, tmp_path, "--forward", f"127.0.0.1:{port}", "--group-ms", "10",
                      "--metrics-bind", "127.0.0.1:0")
    try:
        forward = msgpack.packb(["cols.a", [[1, {"seq": 1, "value": 0.5}], [2, {"seq": 2, "value": 1.5}]],
                                 {"chunk": "f1"}])
        packed_entries = b"".join(msgpack.packb([msgpack.ExtType(0, (3).to_bytes(4, "big") + bytes(4)),
                                                 {"seq": s, "value": 2.5}]) for s in (3, 4))
        packed = msgpack.packb(["cols.b", packed_entries, {"chunk": "p1", "size": 2}])
        bad = msgpack.packb(["cols.c", 5, {"seq": "five", "value": 1.0}, {"chunk": "m1"}])
        answers = _raw_exchange(port, forward + packed + bad + forward, 4)
        assert answers == [{"ack": "f1"}, {"ack": "p1"}, {"ack": "m1"}, {"ack": "f1"}]
        from tests.test_metrics import scrape, value
        samples = scrape(service.addresses["metrics"])
        assert value(samples, "neoarray_ingest_records_rejected_total", input="forward") == 1
        assert value(samples, "neoarray_ingest_records_committed_total", input="forward") == 4
        assert value(samples, "neoarray_ingest_units_duplicate_total", input="forward") == 1
    finally:
        service.stop()
    assert sorted(read_array(ingest_cluster, "cols.seq")) == [1, 2, 3, 4]
    assert sorted(read_array(ingest_cluster, "cols.value")) == [0.5, 1.5, 2.5, 2.5]
    _committed, rejected, rejects = ingest_state(ingest_cluster)
    assert rejected >= 1
    assert any("field 'seq'" in reason and "'five' is not an integer" in reason for _t, _tag, reason, _r in rejects)


def test_a_silent_forward_connection_is_closed_and_a_resent_chunk_stored_once(ingest_cluster, tmp_path):
    """A client that stops sending mid-message holds no connection for ever (--idle-timeout-s);
    it reconnects and sends its chunk again, which is stored once."""
    port = free_port()
    service = Service(ingest_cluster, tmp_path, "--forward", f"127.0.0.1:{port}", "--group-ms", "10",
                      "--idle-timeout-s", "1")
    try:
        message = msgpack.packb(["cols.idle", [[1, {"seq": 987_654, "value": 0.5}]], {"chunk": "i1"}])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(message[:5])          # then silence
            assert s.recv(100) == b""       # closed by the service, nothing acknowledged
        assert _raw_exchange(port, message + message, 2) == [{"ack": "i1"}, {"ack": "i1"}]
    finally:
        service.stop()
    assert read_array(ingest_cluster, "cols.seq").tolist().count(987_654) == 1


def test_shared_key_handshake(ingest_cluster, tmp_path):
    import hashlib
    token = os.path.join(tmp_path, "token")
    with open(token, "w") as f:
        f.write("s3cret\n")
    port = free_port()
    service = Service(ingest_cluster, tmp_path, "--forward", f"127.0.0.1:{port}", "--token-file", token,
                      "--group-ms", "10")

    def ping(key):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                unpacker.feed(s.recv(65536))
                helo = next(unpacker, None)
                if helo is not None:
                    break
            nonce = helo[1]["nonce"]
            digest = hashlib.sha512(b"salt" + b"me" + nonce + key.encode()).hexdigest()
            s.sendall(msgpack.packb(["PING", "me", "salt", digest, "", ""]))
            s.sendall(msgpack.packb(["cols.k", 9, {"seq": 9, "value": 9.0}, {"chunk": f"k-{key}"}]))
            answers = []
            while len(answers) < 2:
                data = s.recv(65536)
                if not data:
                    break
                unpacker.feed(data)
                answers.extend(unpacker)
            return answers
    try:
        assert ping("wrong")[0][:2] == ["PONG", False]
        pong, ack = ping("s3cret")
        assert pong[:2] == ["PONG", True] and ack == {"ack": "k-s3cret"}
    finally:
        service.stop()
    time.sleep(0)
