"""HTTP input of ``neoarray ingest``: ``POST /ingest/<tag>`` with a JSON or msgpack batch.

The body (``Content-Type: application/json`` or ``application/msgpack``,
``application/x-msgpack``) is one record (a map) or a list of them; a record may carry
its event time as ``"@time"`` (seconds), else the time of arrival.  A request is stored
whole or not at all:

- 200 ``{"committed": n}`` once durably committed (``"duplicate": true`` when its
  ``Idempotency-Key`` header was committed before: stored once);
- 400 ``{"error": ..., "rejected": [[index, reason], ...]}`` for a malformed body or
  bad records (counted as rejected, nothing stored);
- 401 without the bearer token (``Authorization: Bearer <token>``) when one is set, or
  without a client certificate where one is required; 403 for a certificate without a
  role allowed to send records, or a ``Neo-Cluster`` header naming another cluster
  (who may send: ``access.py``);
- 404 for another path, 413 for a body over ``body_bytes_max``;
- at most ``requests_max`` requests are ingested at once (more: 503) and
  ``connections_max`` connections open (more: closed at once);
- 503 (``Retry-After``) when the queue is full or the commit failed: send it again.

TLS: ``tls`` (an ``ssl.SSLContext``) wraps every connection; ``policy``
(``access.Policy``) says who may send.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack

from . import access
from .core import Outcome, Unit
from .listen import HANDSHAKE_TIMEOUT_S, BoundedListener

log = logging.getLogger(__name__)

BODY_BYTES_MAX = 16 << 20
REQUESTS_MAX = 64              # requests being ingested at once (more: 503)
CONNECTIONS_MAX = 256          # open connections (more: refused)
PREFIX = "/ingest/"
COMMIT_WAIT_S_MAX = 60.0
READ_TIMEOUT_S = 30.0          # a request's next bytes
JSON_TYPES = ("application/json",)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack")


class BadRequest(ValueError):
    pass


def parse(body: bytes, content_type: str) -> list:
    """The records of a request body (``BadRequest`` says what is wrong)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind in JSON_TYPES:
            doc = json.loads(body)
        elif kind in MSGPACK_TYPES:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=False)
        else:
            raise BadRequest(f"Content-Type {content_type!r}: send application/json or application/msgpack")
    except (ValueError, msgpack.UnpackException) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"the body is not valid {kind}: {exc}") from None
    records = doc if isinstance(doc, list) else [doc]
    if not records:
        raise BadRequest("the body holds no record")
    return records


class _Handler(BaseHTTPRequestHandler):
    server_version = "neoarray-ingest"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("http: %s " + fmt, self.client_address, *args)

    def _answer(self, code: int, doc: dict, headers=()):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        server: IngestHTTPServer = self.server
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.isdigit() else -1
        if length < 0:
            self.close_connection = True
            return self._answer(400, {"error": f"Content-Length {text[:40]!r} is not a byte count"})
        if length > server.body_bytes_max:
            self.close_connection = True
            return self._answer(413, {"error": f"the body is over {server.body_bytes_max} bytes: "
                                               "send smaller batches"})
        body = self.rfile.read(length)
        refused = self._refusal(server.policy)
        if refused is not None:
            code, reason = refused
            return self._answer(code, {"error": reason}, [("WWW-Authenticate", "Bearer")] if code == 401 else ())
        if not self.path.startswith(PREFIX) or len(self.path) == len(PREFIX):
            return self._answer(404, {"error": f"POST to {PREFIX}<tag>"})
        if not server.slots.acquire(blocking=False):
            server.stats.backpressure("http")
            return self._answer(503, {"error": "too many requests in progress"}, [("Retry-After", "1")])
        try:
            self._ingest(server, self.path[len(PREFIX):], body)
        finally:
            server.slots.release()

    def _refusal(self, policy: access.Policy) -> tuple[int, str] | None:
        roles = access.roles_of_socket(self.request)
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        refused = access.refusal(policy, roles, token.strip() if scheme.lower() == "bearer" else None)
        if refused is not None:
            return refused
        why = access.cluster_refusal(policy, roles, self.headers.get(access.CLUSTER_HEADER))
        return None if why is None else (403, why)

    def _ingest(self, server, tag, body):
        try:
            docs = parse(body, self.headers.get("Content-Type", ""))
        except BadRequest as exc:
            server.stats.rejected("http")
            return self._answer(400, {"error": str(exc)})
        now = time.time()
        entries = [(d.get("@time", now) if type(d) is dict else now, d) for d in docs]
        done, box = threading.Event(), []

        def told(outcome: Outcome):
            box.append(outcome)
            done.set()
        key = self.headers.get("Idempotency-Key")
        unit = Unit(tag, entries, told, dedup_key=f"http:{key}" if key else None, atomic=True, source="http")
        if not server.committer.submit(unit, timeout_s=0):
            return self._answer(503, {"error": "the ingest queue is full"}, [("Retry-After", "1")])
        if not done.wait(COMMIT_WAIT_S_MAX):
            return self._answer(503, {"error": "the commit did not end in time: send again "
                                               "(with an Idempotency-Key to store it once)"})
        outcome = box[0]
        if outcome.error is not None:
            return self._answer(503, {"error": outcome.error}, [("Retry-After", "1")])
        if outcome.rejected:
            return self._answer(400, {"error": "bad records: nothing of this request was stored",
                                      "rejected": outcome.rejected})
        return self._answer(200, {"committed": outcome.committed, "duplicate": outcome.duplicate})


class IngestHTTPServer(BoundedListener, ThreadingHTTPServer):
    name = "http"

    def __init__(self, address, committer, stats, *, tls=None, policy: access.Policy | None = None,
                 body_bytes_max: int = BODY_BYTES_MAX, requests_max: int = REQUESTS_MAX,
                 connections_max: int = CONNECTIONS_MAX, handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S):
        self.committer, self.stats = committer, stats
        self.policy = policy or access.Policy("token", None, None)
        self.body_bytes_max = body_bytes_max
        self.slots = threading.BoundedSemaphore(requests_max)
        self._bound(connections_max, tls, handshake_timeout_s)
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        self.tls_handshake(request, READ_TIMEOUT_S)
        super().finish_request(request, client_address)

