"""The MQTT input through a real Mosquitto broker (started here) with a real paho
publisher, and the HTTP input with urllib, into a real cluster through
``neoarray ingest`` processes."""
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import msgpack
import pytest

from tests.conftest import running_cluster
from tests.ingest.ingest_helpers import Service, free_port, read_array
from tests.test_metrics import scrape, value


@pytest.fixture(scope="module")
def ingest_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("ingest-mh") / "cluster", storages=2, replicas=1)


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto broker on a free port of 127.0.0.1; its port."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        why = "mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)        # CI must run the MQTT tests against a real broker
        pytest.skip(why)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    import socket
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def _publisher(port):
    import paho.mqtt.client as paho
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _wait_rows(cluster, name, count, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            values = read_array(cluster, name)
            if len(values) >= count:
                return values
        except KeyError:
            pass
        assert time.monotonic() < deadline, f"{name} did not get {count} rows"
        time.sleep(0.2)


def test_mqtt_through_mosquitto_and_a_restart(ingest_cluster, tmp_path, broker):
    args = ("--mqtt", f"127.0.0.1:{broker}", "--mqtt-topic", "bench/#", "--mqtt-client-id", "ingest-test",
            "--group-ms", "10", "--metrics-bind", "127.0.0.1:0")
    # the mapping's routes match "bench.*": MQTT topics are tags too, "bench/..." needs its route
    mapping = {"routes": [{"match": "bench/*", "array": "mqtt", "fields": [
        ["seq", "u8"], ["value", "f8"], ["topic", "S16", "@tag"]]}]}
    path = tmp_path / "mqtt.json"
    path.write_text(json.dumps(mapping))
    service = Service(ingest_cluster, tmp_path, "--mapping", str(path), *args)
    publisher = _publisher(broker)
    try:
        deadline = time.monotonic() + 30
        while value(scrape(service.addresses["metrics"]), "neoarray_ingest_batches_total") == 0 \
                and time.monotonic() < deadline:
            # subscribed once a message goes through
            publisher.publish("bench/a", json.dumps({"seq": 0, "value": 0.0}), qos=1).wait_for_publish(10)
            time.sleep(0.2)
        for seq in range(1, 200):
            publisher.publish("bench/a", json.dumps({"seq": seq, "value": seq * 0.5}), qos=1).wait_for_publish(10)
        publisher.publish("bench/b", b"{not json", qos=1).wait_for_publish(10)
        publisher.publish("bench/b", json.dumps([{"seq": 1000, "value": 1.0}, {"seq": 1001, "value": 2.0}]),
                          qos=1).wait_for_publish(10)
        _wait_rows(ingest_cluster, "mqtt", 200 + 2)
        assert value(scrape(service.addresses["metrics"]), "neoarray_ingest_records_rejected_total",
                     input="mqtt") == 1
        service.kill()              # its session stays at the broker: what comes meanwhile waits
        for seq in range(2000, 2100):
            publisher.publish("bench/c", json.dumps({"seq": seq, "value": 3.0}), qos=1).wait_for_publish(10)
        service = Service(ingest_cluster, tmp_path, "--mapping", str(path), *args)
        values = _wait_rows(ingest_cluster, "mqtt", 302)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        service.stop()
    seqs = set(values["seq"].tolist())
    assert set(range(1, 200)) | {1000, 1001} | set(range(2000, 2100)) <= seqs
    row = values[values["seq"] == 2050][0]
    assert row["topic"] == b"bench/c" and row["value"] == 3.0


def _post(address, tag, body, content_type="application/json", token=None, key=None):
    request = urllib.request.Request(f"http://{address}/ingest/{tag}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if key:
        request.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_http_json_msgpack_malformed_and_token(ingest_cluster, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok\n")
    service = Service(ingest_cluster, tmp_path, "--http", "127.0.0.1:0", "--token-file", str(token),
                      "--group-ms", "10", "--metrics-bind", "127.0.0.1:0")
    address = service.addresses["http"]
    try:
        rows = [{"seq": i, "value": i / 4} for i in range(10)]
        assert _post(address, "cols.h", json.dumps(rows).encode()) [0] == 401
        assert _post(address, "cols.h", json.dumps(rows).encode(), token="tok", key="k1") == \
            (200, {"committed": 10, "duplicate": False})
        assert _post(address, "cols.h", json.dumps(rows).encode(), token="tok", key="k1") == \
            (200, {"committed": 0, "duplicate": True})
        more = [{"seq": 100 + i, "value": 1.0} for i in range(5)]
        assert _post(address, "cols.h", msgpack.packb(more), "application/msgpack", token="tok")[0] == 200
        code, answer = _post(address, "cols.h", b"[{\"seq\": 1,", token="tok")
        assert code == 400 and "not valid application/json" in answer["error"]
        code, answer = _post(address, "cols.h", json.dumps([{"seq": 7, "value": 1.0}, {"seq": -1, "value": 1.0}])
                             .encode(), token="tok")
        assert code == 400 and answer["rejected"] == [[1, "field 'seq': -1 is out of the range of uint64"]]
        code, answer = _post(address, "nowhere", b"{}", token="tok")
        assert code == 400 and "no route" in answer["rejected"][0][1]
        samples = scrape(service.addresses["metrics"])
        assert value(samples, "neoarray_ingest_records_rejected_total", input="http") == 3
        assert value(samples, "neoarray_ingest_records_committed_total", input="http") == 15
    finally:
        service.stop()
    seqs = read_array(ingest_cluster, "cols.seq")
    assert sorted(seqs.tolist()) == list(range(10)) + list(range(100, 105))      # 7 was not stored
    pairs = dict(zip(seqs.tolist(), read_array(ingest_cluster, "cols.value").tolist()))     # aligned columns
    assert pairs[3] == 0.75 and pairs[102] == 1.0


def test_tls_on_the_forward_and_http_ports(ingest_cluster, tmp_path):
    import socket
    import ssl

    from neoarray import security
    tls_dir = security.generate(str(tmp_path / "tls"), "ingest-test")
    token = tmp_path / "token"
    token.write_text("tok\n")
    port = free_port()
    service = Service(ingest_cluster, tmp_path, "--http", "127.0.0.1:0", "--forward", f"127.0.0.1:{port}",
                      "--listen-cert", os.path.join(tls_dir, "client.crt"),
                      "--listen-key", os.path.join(tls_dir, "client.key"), "--token-file", str(token),
                      "--group-ms", "10")
    ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.crt"))
    try:
        request = urllib.request.Request(f"https://{service.addresses['http']}/ingest/cols.tls", method="POST",
                                         data=json.dumps({"seq": 500, "value": 5.0}).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer tok"})
        with urllib.request.urlopen(request, timeout=60, context=ctx) as reply:
            assert reply.status == 200
        with pytest.raises(OSError):      # plain HTTP on the TLS port: no answer
            urllib.request.urlopen(request.full_url.replace("https", "http"), data=b"{}", timeout=10)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(s.recv(65536))            # HELO (the token is the shared key)
            nonce = next(unpacker)[1]["nonce"]
            import hashlib
            s.sendall(msgpack.packb(["PING", "me", "salt", hashlib.sha512(b"saltme" + nonce + b"tok").hexdigest(),
                                     "", ""]))
            s.sendall(msgpack.packb(["cols.tls", 1, {"seq": 501, "value": 5.0}, {"chunk": "t1"}]))
            answers = []
            while len(answers) < 2:
                unpacker.feed(s.recv(65536))
                answers.extend(unpacker)
            assert answers[0][:2] == ["PONG", True] and answers[1] == {"ack": "t1"}
    finally:
        service.stop()
    assert {500, 501} <= set(read_array(ingest_cluster, "cols.seq").tolist())


def test_http_backpressure_answers_503_when_the_queue_is_full(ingest_cluster, tmp_path):
    """A queue of 10 records and group commits every 1.5 s: a second request while the
    first waits finds no room and is told to come back; the first is then committed."""
    import threading
    service = Service(ingest_cluster, tmp_path, "--http", "127.0.0.1:0", "--queue-records", "10",
                      "--group-ms", "1500", "--group-records", "1000", "--metrics-bind", "127.0.0.1:0")
    address, first = service.addresses["http"], []
    try:
        rows = json.dumps([{"seq": 700 + i, "value": 0.0} for i in range(10)]).encode()
        waiting = threading.Thread(target=lambda: first.append(_post(address, "cols.bp", rows)))
        waiting.start()
        deadline = time.monotonic() + 30
        while value(scrape(service.addresses["metrics"]), "neoarray_ingest_queue_records") < 10:
            assert time.monotonic() < deadline, "the first request never reached the queue"
            time.sleep(0.02)
        code, answer = _post(address, "cols.bp", json.dumps({"seq": 799, "value": 0.0}).encode())
        assert code == 503 and "queue is full" in answer["error"]
        waiting.join(60)
        assert first == [(200, {"committed": 10, "duplicate": False})]
        assert value(scrape(service.addresses["metrics"]), "neoarray_ingest_backpressure_total", input="http") == 1
    finally:
        service.stop()
    seqs = set(read_array(ingest_cluster, "cols.seq").tolist())
    assert set(range(700, 710)) <= seqs and 799 not in seqs
