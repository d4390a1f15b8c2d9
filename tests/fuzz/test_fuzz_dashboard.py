"""Fuzz the dashboard's HTTP port (``neoarray dashboard``, a real process over a real
cluster with an admin token) with what no browser sends; it may not die, log a
traceback, answer 5xx, hold more connections than its bound, keep a stalled one past
its read timeout, or read a body into memory.

Inputs: random bytes, requests cut short, huge, negative, lying and non-numeric
``Content-Length``, bad chunked bodies, very long request lines and headers, many
headers, unknown methods, paths and HTTP versions, envelope queries with arrays that do
not exist or are not plotted, non-numeric, NaN, infinite, huge and negative ranges and
bucket counts, missing, wrong and malformed tokens and cookies, ``/login`` with tokens
that are no cookie values.  Once per run: a 64 MiB body (the process's peak memory may
not grow by it) and slowloris (connections sending half a request head and stalling:
one over the bound is closed unanswered while they stall, and the stalled ones are
closed after the read timeout).  Afterwards the process is alive, its log holds no
traceback, and well-formed requests are answered (the state with the node, an
envelope).  ``NEOARRAY_FUZZ_ITERATIONS`` sets the number of hostile inputs (default
300), ``NEOARRAY_SEED`` replays a run.  (The dashboard has no websocket: the page
polls ``/api/state`` and ``/api/envelope``.)
"""
from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest

import neoarray.array as na
from tests.conftest import ROOT, running_cluster
from tests.dashboard.dashboard_helpers import commit_array
from tests.ingest.ingest_helpers import free_port

pytest.importorskip("bokeh")

ITERATIONS = int(os.environ.get("NEOARRAY_FUZZ_ITERATIONS", "300"))
CONNECTIONS_MAX = 8
IDLE_TIMEOUT_S = 5.0
BIG_BODY_BYTES = 64 << 20
STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")


@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("dash-fuzz") / "cluster")


class Dashboard:
    """``neoarray dashboard`` as a process of its own, its output in a log file."""

    def __init__(self, cluster_dir, tmp_path):
        self.port = free_port()
        self.log_path = os.path.join(tmp_path, "dashboard.log")
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop
        cmd = [sys.executable, "-m", "neoarray.cli", "dashboard", "--dir", cluster_dir,
               "--bind", f"127.0.0.1:{self.port}", "--connections-max", str(CONNECTIONS_MAX),
               "--idle-timeout-s", str(IDLE_TIMEOUT_S)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=dict(os.environ, PYTHONPATH=ROOT))
        deadline = time.monotonic() + 60
        while b"dashboard at" not in self.text().encode():
            assert self.proc.poll() is None, f"the dashboard exited:\n{self.text()}"
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)

    def text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def peak_rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


def exchange(port: int, data: bytes, shut: bool = False, timeout_s: float = 20.0) -> int:
    """Send ``data`` on a new connection (then end our side when ``shut``: a request
    that may never be complete), read until the dashboard closes; the status of its
    first answer, 0 when it sent none (it may close on our end without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass        # the dashboard closed first (a refusal): its answer may still be read
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
                if len(reply) > 1 << 20:
                    break
        except ConnectionError:
            pass
    match = STATUS.match(reply)
    return int(match.group(1)) if match else 0


def request(method: str, target: str, headers=(), body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    head = [f"{method} {target} {version}", "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body


def _number(rng: random.Random) -> str:
    return rng.choice(["", "x", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "-5", "0", "1", "7.5",
                       "9" * rng.randint(20, 400), "-" + "9" * 30, "1e18", "-1e18", "0x10", "1_000",
                       "%ff", "%00", "\u00e9", " 12 ", "1e+21", str(rng.randint(-10**6, 10**6))])


def _envelope_query(rng: random.Random) -> str:
    params = []
    if rng.random() < 0.9:
        params.append(("array", rng.choice(["series", "series", "labels", "nothing", "", "ingest", "../series",
                                            "x" * rng.randint(1, 3000), "\x00", "s\u00e9ries", "%"])))
    for name in ("start", "stop", "buckets"):
        if rng.random() < 0.6:
            params.append((name, _number(rng)))
    if rng.random() < 0.2:
        params.append(("buckets", rng.choice(["4096", "4097", str(10**9), "1"])))
    query = urllib.parse.urlencode(params)
    if rng.random() < 0.15:                    # raw, not URL-encoded: invalid escapes and bytes
        query = rng.choice(["array=%zz&start=%", "array=series&start=%ff%fe", "array=series&&&=&start",
                            "array=series;start=1", "a" * 5000])
    return "/api/envelope?" + query


def _hostile(rng: random.Random, token: str) -> tuple[bytes, bool, str]:
    """``(bytes, end our side, what)``: one input no browser sends."""
    auth = f"Authorization: Bearer {token}"
    good = request("GET", "/api/state", [auth])
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 2048)), True, "random bytes"
    if kind == 1:
        return good[:rng.randint(1, len(good) - 1)], True, "a request cut short"
    if kind == 2:
        length = rng.choice(["1000000000000", "-5", "-1", "abc", str(2**64), "1e3", " 12", "12, 13", ""])
        body = rng.randbytes(rng.randint(0, 64))
        headers = [auth, f"Content-Length: {length}"]
        if rng.random() < 0.3:
            headers.append(f"Content-Length: {rng.randint(0, 100)}")     # two of them
        return request(rng.choice(["POST", "GET", "PUT"]), "/api/state", headers, body), True, \
            f"Content-Length {length!r}"
    if kind == 3:
        chunks = rng.choice([b"zz\r\nab\r\n0\r\n\r\n", b"ffffffffffffffff\r\n", b"5\r\nab", b"-1\r\n",
                             b"3\r\nabc\r\n" * 50 + b"0\r\n\r\n", rng.randbytes(100)])
        return request("POST", "/api/state", [auth, "Transfer-Encoding: chunked"], chunks), True, "bad chunks"
    if kind == 4:
        path = "/" + "a" * rng.choice([5_000, 70_000, 200_000])
        return request("GET", path, [auth]), False, "a long request line"
    if kind == 5:
        if rng.random() < 0.5:
            headers = [auth, "X-Long: " + "b" * rng.choice([10_000, 100_000])]
        else:
            headers = [auth] + [f"X-H{i}: {i}" for i in range(rng.choice([200, 5_000]))]
        return request("GET", "/api/state", headers), False, "long or many headers"
    if kind == 6:
        method = rng.choice(["FOO", "PROPFIND", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "CONNECT",
                             "TRACE", "G\x00T", "GET GET", "get", "X" * 300])
        path = rng.choice(["/", "/api/state", "/api/envelope", "/nope", "/../../etc/passwd", "/%00", "//api/state",
                           "*", "http://127.0.0.1/api/state", "/login", "/static/x.js", "/api/state/"])
        version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTTP/1.1x", "", "HTTP/0.9"])
        return request(method, path, [auth], version=version), False, f"{method} {path} {version}"
    if kind == 7:
        return request("GET", _envelope_query(rng), [auth]), False, "an envelope query"
    if kind == 8:
        header = rng.choice([[], [f"Authorization: Bearer {token}x"], ["Authorization: Bearer"],
                             ["Authorization: Basic Zm9vOmJhcg=="], ["Authorization: " + "B" * 20_000],
                             ["Authorization: Bearer \u00ff\u00fe"], ["Cookie: neoarray_dashboard_token=%ff;;=;"],
                             ["Cookie: " + "c=1; " * 2000], [f"Authorization: bearer  {token}  "]])
        path = rng.choice(["/", "/api/state", "/api/envelope?array=series", "/login"])
        return request("GET", path, header), False, f"credentials {str(header)[:60]}"
    tok = rng.choice(["", "wrong", "a b", "\x01", "x" * 5000, "%00", "a;b=c", token + "\n", "\u00e9", token])
    return request("GET", "/login?token=" + urllib.parse.quote(tok), [auth]), False, f"login token {tok[:20]!r}"


def _slowloris(dash: Dashboard, token: str) -> None:
    """Stalled half requests hold the bound; one over it is closed unanswered; the
    stalled ones are closed after the read timeout; then a request is served."""
    stalled = []
    for _ in range(CONNECTIONS_MAX):
        s = socket.create_connection(("127.0.0.1", dash.port), timeout=60)
        s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        stalled.append(s)
    try:
        # once the dashboard has accepted them all (on a loaded machine that may take a
        # moment: ask again, well before their read timeout), one more is closed unanswered
        deadline = time.monotonic() + IDLE_TIMEOUT_S / 2
        while True:
            time.sleep(0.2)
            over = exchange(dash.port, request("GET", "/api/state", [f"Authorization: Bearer {token}"]),
                            shut=False)
            if over == 0 or time.monotonic() > deadline:
                break
        assert over == 0, f"a connection over the bound of {CONNECTIONS_MAX} was answered ({over})"
        for s in stalled:       # closed by the dashboard after its read timeout (60 s at most here)
            assert s.recv(65536) == b"", "a stalled connection got an answer"
    finally:
        for s in stalled:
            s.close()
    assert exchange(dash.port, request("GET", "/api/state", [f"Authorization: Bearer {token}"])) == 200


def test_hostile_inputs_on_the_dashboard_port(neo, tmp_path):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} iterations={ITERATIONS}")
    rng = random.Random(seed)
    values = np.arange(50_000, dtype="f8") % 97
    series = na.asarray(values, chunks=(5_000,))
    commit_array(neo, "series", series)
    commit_array(neo, "labels", na.asarray(np.array(["abc", "de"])))
    token = neo.admin_token
    dash = Dashboard(neo.path, tmp_path)
    statuses: dict[int, str] = {}
    try:
        assert exchange(dash.port, request("GET", "/api/state", [f"Authorization: Bearer {token}"])) == 200
        peak_before = dash.peak_rss_bytes()
        for i in range(ITERATIONS):
            data, shut, what = _hostile(rng, token)
            status = exchange(dash.port, data, shut)
            statuses.setdefault(status, what)
            assert status < 500, f"seed={seed} iteration {i}: {status} for {what}: {data[:200]!r}"
            assert dash.proc.poll() is None, f"seed={seed}: the dashboard died after {what}"
        # a body of 64 MiB, sent whole: refused before it is read
        head = request("POST", "/api/state", [f"Authorization: Bearer {token}",
                                              f"Content-Length: {BIG_BODY_BYTES}"])
        status = exchange(dash.port, head + bytes(BIG_BODY_BYTES), shut=True)
        assert status in (0, 400, 413), status
        grown = dash.peak_rss_bytes() - peak_before
        assert grown < BIG_BODY_BYTES // 2, f"seed={seed}: peak memory grew by {grown} bytes"
        _slowloris(dash, token)
        # well-formed requests are still answered
        reply = _get_body(dash.port, "/api/state", token)
        assert [n for n in reply["cluster"]["nodes"] if n["id"] == "S1"], reply
        envelope = _get_body(dash.port, "/api/envelope?array=series&buckets=10", token)
        assert envelope["length"] == 50_000 and min(envelope["min"]) == 0 and max(envelope["max"]) == 96
    finally:
        dash.stop()
    log = dash.text()
    assert "Traceback" not in log and "Uncaught exception" not in log, \
        f"seed={seed}: the dashboard logged a traceback:\n{log[-4000:]}"
    assert "connections already" in log        # the refusal over the bound is logged
    print("statuses:", {k: v for k, v in sorted(statuses.items())})


def _get_body(port: int, path: str, token: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request("GET", path, [f"Authorization: Bearer {token}"]))
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert STATUS.match(head) and STATUS.match(head).group(1) == b"200", head
    return json.loads(body)
