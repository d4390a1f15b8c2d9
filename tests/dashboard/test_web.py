"""The dashboard's web endpoints over real clusters: what they show, and who may see it.

A cluster with an admin token (LocalCluster makes one) and metrics, and one with
mutual TLS; real HTTP(S) requests to ``neoarray dashboard`` started as the command
line starts it (``make_server`` of the parsed options).
"""
import json
import os
import ssl
import time
import urllib.parse

import numpy as np
import prometheus_client
import pytest
import transaction
import ZODB

import neoarray.array as na
from neoarray import envelopes
from neoarray.dashboard import sources
from neoarray.security import cluster_tls
from tests.conftest import running_cluster

from .dashboard_helpers import commit_array, dashboard, get, get_json


def fresh_state(server, token):
    """``/api/state`` read anew (not the reading it shares with requests just before)."""
    time.sleep(sources.SNAPSHOT_REUSE_S)
    return get_json(server.url + "api/state", token)


@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("dash"), storages=2, replicas=1, metrics=True)


@pytest.fixture(scope="module")
def ingest_endpoint():
    """A real Prometheus endpoint with ingestion-like counters (what `neoarray ingest`
    exposes: records in, committed, rejected; lag)."""
    registry = prometheus_client.CollectorRegistry()
    counters = {name: prometheus_client.Counter(f"neoarray_ingest_records_{name}", name, registry=registry)
                for name in ("in", "committed", "rejected")}
    prometheus_client.Gauge("neoarray_ingest_lag_seconds", "lag", registry=registry).set(0.25)
    prometheus_client.Counter("unrelated_total", "not shown", registry=registry).inc()
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}", counters
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def served(neo, ingest_endpoint, tmp_path_factory):
    rng = np.random.default_rng(7)
    a = na.full((50_000,), -1.0, chunks=(1000,))
    values = rng.standard_normal(20_000)
    a[5_000:25_000] = values
    commit_array(neo, "series", a)
    commit_array(neo, "labels", na.asarray(np.array(["abc", "de"])))     # not plotted
    expected = np.full(50_000, -1.0)
    expected[5_000:25_000] = values
    jobs_dir = tmp_path_factory.mktemp("jobs")
    with dashboard(neo.path, "--scrape", ingest_endpoint[0], "--jobs", str(jobs_dir)) as server:
        server.jobs_dir = jobs_dir
        yield server, expected


def test_refused_without_the_admin_token(served, neo):
    server, _ = served
    for path in ("", "api/state", "api/envelope?array=series", "login"):
        status, body = get(server.url + path)
        assert status == 401, (path, status)
        assert "admin credential" in body and "admin.token" in body
    status, body = get(server.url + "api/state", token="not-the-token")
    assert status == 403 and "not the cluster's admin token" in body
    status, _ = get(server.url + "login?token=wrong")
    assert status == 403


def test_state_shows_every_node_cells_and_metrics(served, neo):
    server, _ = served
    state = get_json(server.url + "api/state", neo.admin_token)
    cluster = state["cluster"]
    assert cluster["state"] == "RUNNING" and not state["errors"]
    ids = {n["id"] for n in cluster["nodes"]}
    assert {"S1", "S2"} <= ids and any(i.startswith("M") for i in ids)
    assert cluster["storages"] == ["S1", "S2"] and cluster["replicas"] == 1
    assert all(row["S1"] == "U" and row["S2"] == "U" for row in cluster["cells"])
    assert cluster["replication_progress"] == 1.0
    roles = sorted(m["role"] for m in state["node_metrics"])
    assert roles == ["master", "storage", "storage"]
    assert all(m["used_bytes"] > 0 for m in state["node_metrics"] if m["role"] == "storage")
    assert {"name": "series", "length": 50_000, "dtype": "float64"} in state["arrays"]
    again = fresh_state(server, neo.admin_token)     # rates need two readings
    assert again["commits_per_s"] is not None and again["commits_per_s"] >= 0


def test_envelope_endpoint_equals_numpy(served, neo):
    server, expected = served
    for start, stop, buckets in [(None, None, 1200), (4_321, 26_000, 100), (49_990, 50_000, 50)]:
        query = {"array": "series", "buckets": buckets}
        if start is not None:
            query.update(start=start, stop=stop)
        doc = get_json(f"{server.url}api/envelope?{urllib.parse.urlencode(query)}", neo.admin_token)
        lo, hi = (0, 50_000) if start is None else (start, stop)
        starts, mins, maxs = envelopes.reference(expected, lo, hi, buckets)
        assert doc["length"] == 50_000 and (doc["start"], doc["stop"]) == (lo, hi)
        np.testing.assert_array_equal(doc["min"], mins)
        np.testing.assert_array_equal(doc["max"], maxs)
        np.testing.assert_array_equal(doc["x"], (starts[:-1] + starts[1:] - 1) / 2)


def test_envelope_endpoint_refuses_bad_requests(served, neo):
    server, _ = served
    token = neo.admin_token
    status, body = get(server.url + "api/envelope?array=nothing", token)
    assert status == 404 and "no 1-d array named 'nothing'" in body
    status, body = get(server.url + "api/envelope?array=series&buckets=0", token)
    assert status == 400 and "buckets=0" in body
    status, body = get(server.url + "api/envelope?array=series&start=abc", token)
    assert status == 400 and "start='abc' is not a number" in body
    status, body = get(server.url + "api/envelope", token)
    assert status == 400 and "give the array" in body
    status, body = get(server.url + "api/envelope?array=labels", token)
    assert status == 404 and "holds <U3 items" in body
    # not finite (a 500 before: int(float('inf')) raised OverflowError)
    for query in ("start=inf", "stop=1e400", "buckets=nan", "start=-" + "9" * 400):
        status, body = get(server.url + "api/envelope?array=series&" + query, token)
        assert status == 400 and "not a finite number" in body, (query, status, body)


def test_login_sets_the_cookie_the_page_uses(served, neo):
    server, _ = served
    import http.cookiejar
    import urllib.request
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{server.url}login?token={urllib.parse.quote(neo.admin_token)}", timeout=30) as r:
        assert r.status == 200 and "Bokeh" in r.read().decode()     # redirected to the page
    with opener.open(server.url + "api/state", timeout=30) as r:
        assert json.loads(r.read())["cluster"]["state"] == "RUNNING"


@pytest.fixture(scope="module")
def tls_neo(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("dash-tls"), storages=1, tls=True)


def _client_context(path, role):
    tls = cluster_tls(path, role)
    ctx = ssl.create_default_context(cafile=tls.ca_path)
    if role != "none":
        ctx.load_cert_chain(tls.cert_path, tls.key_path)
    return ctx


def test_tls_needs_an_admin_certificate(tls_neo):
    with dashboard(tls_neo.path) as server:
        assert server.url.startswith("https://")
        state = get_json(server.url + "api/state", context=_client_context(tls_neo.path, "admin"))
        assert {n["id"] for n in state["cluster"]["nodes"]} >= {"S1"}
        status, body = get(server.url + "api/state", context=_client_context(tls_neo.path, "client"))
        assert status == 403 and "carries client" in body and "admin client certificate" in body
        no_cert = ssl.create_default_context(cafile=cluster_tls(tls_neo.path, "admin").ca_path)
        status, body = get(server.url + "api/state", context=no_cert)
        assert status == 401 and "admin credential" in body
        token = tls_neo.admin_token
        assert token and get(server.url + "api/state", token, context=no_cert)[0] == 200
        # an admin certificate lets any /login token through: only the cluster's becomes
        # the cookie (a token that is no cookie value made set_cookie fail: a 500)
        admin = _client_context(tls_neo.path, "admin")
        assert get(server.url + "login?token=a%20b", context=admin)[0] == 200
        assert os.path.exists(os.path.join(tls_neo.path, "admin.token"))


def test_a_stalled_tls_handshake_is_closed_after_the_idle_timeout(tls_neo):
    """Slowloris on HTTPS: a client that never finishes its handshake is closed by the
    dashboard's read timeout (the fuzz covers the plain port)."""
    import socket
    with dashboard(tls_neo.path, "--idle-timeout-s", "0.5") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"\x16\x03\x01")           # the start of a ClientHello, then nothing
            assert s.recv(65536) == b""
        state = get_json(server.url + "api/state", context=_client_context(tls_neo.path, "admin"))
        assert state["cluster"]["nodes"]


def test_ingestion_rates_are_scraped(served, neo, ingest_endpoint):
    server, _ = served
    address, counters = ingest_endpoint
    fresh_state(server, neo.admin_token)
    counters["in"].inc(1000)
    counters["committed"].inc(900)
    counters["rejected"].inc(3)
    state = fresh_state(server, neo.admin_token)
    rows = {row["metric"]: row for row in state["ingestion"]}
    assert set(rows) == {"neoarray_ingest_records_in_total", "neoarray_ingest_records_committed_total",
                         "neoarray_ingest_records_rejected_total", "neoarray_ingest_lag_seconds"}
    assert rows["neoarray_ingest_records_committed_total"]["value"] == 900
    assert rows["neoarray_ingest_records_committed_total"]["per_s"] > 0
    assert rows["neoarray_ingest_lag_seconds"]["value"] == 0.25
    assert all(row["endpoint"] == f"http://{address}/metrics" for row in rows.values())


def test_job_progress_is_shown(served, neo):
    server, expected = served
    from neoarray import jobs
    db = ZODB.DB(neo.open_storage())
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        result = jobs.reduce(conn.root()["series"], "sum", state_dir=str(server.jobs_dir / "sum"),
                             piece_bytes=80_000)
        assert np.isclose(result, expected.sum())
        tm.abort()
        conn.close()
    finally:
        db.close()
    state = fresh_state(server, neo.admin_token)
    [job] = state["jobs"]
    assert job["job"] == "reduce sum" and job["state"] == "finished"
    with open(server.jobs_dir / "sum" / "job.json") as f:
        pieces = len(json.load(f)["pieces"])
    assert job["pieces_total"] == job["pieces_done"] == pieces > 1 and job["progress"] == 1.0
