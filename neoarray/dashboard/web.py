"""The dashboard's web server: a thin Tornado shell over :class:`.sources.Gatherer`.

Routes: ``/`` the page (:mod:`.page`), ``/api/state`` and ``/api/envelope`` its JSON,
``/login?token=TOKEN`` which sets the token cookie and goes to ``/``.  Every route
checks the admin credential first (:mod:`.auth`).  Reads of the cluster run on a
bounded pool of threads, never on the event loop.

Bounds of the port (``tests/fuzz/test_fuzz_dashboard.py`` sends it what no browser
does): at most ``connections_max`` connections (more are closed at accept, and
logged); a request's line and headers (the TLS handshake included) must arrive within
``idle_timeout_s`` and fit in :data:`HEADER_BYTES_MAX`, a connection idle that long
between requests is closed; a body (the dashboard takes none) over
:data:`BODY_BYTES_MAX` is refused with 400 before it is read, and must arrive within
:data:`BODY_TIMEOUT_S`.  A bad query is a 400 naming the parameter, never a 500.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import math
import ssl
import threading

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..errors import NeoError
from . import auth, page

log = logging.getLogger("neoarray.dashboard")
# Tornado logs every 4xx answer as a warning: a client sending garbage would fill the
# log; errors (5xx) are still logged
logging.getLogger("tornado.access").setLevel(logging.ERROR)

READ_THREADS = 4
BUCKETS_MAX = 4096          # buckets one envelope request may ask
CONNECTIONS_MAX = 64        # open connections (more: closed at accept)
IDLE_TIMEOUT_S = 60.0       # to send a request's headers, and between requests
HEADER_BYTES_MAX = 32 << 10     # a request line and its headers
BODY_BYTES_MAX = 64 << 10       # the dashboard's requests carry no body
BODY_TIMEOUT_S = 30.0
ECHO_CHARS_MAX = 60         # of a bad parameter, quoted back in the answer


class _Base(tornado.web.RequestHandler):
    def initialize(self, app_state):
        self.app_state = app_state

    def prepare(self):
        token = auth.bearer(self.request.headers.get("Authorization")) or self.get_cookie(auth.COOKIE)
        cert = self.request.get_ssl_certificate() if self.app_state.policy.tls else None
        refusal = auth.decide(self.app_state.policy, token, auth.roles_of_peer_cert(cert))
        if refusal is not None:
            status, message = refusal
            self.set_status(status)
            if status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="neoarray dashboard"')
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(message + "\n")

    def send_json(self, doc) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, allow_nan=False))

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")

    async def run(self, func, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.app_state.pool, func, *args)


class PageHandler(_Base):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.app_state.html)


class StateHandler(_Base):
    async def get(self):
        self.send_json(await self.run(self.app_state.gatherer.snapshot))


def _int_arg(handler, name: str, default):
    """An integer query parameter (a float is truncated, as the page may send
    ``1e+21``); ``ValueError`` naming it when it is not a finite number."""
    text = handler.get_argument(name, None)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text[:ECHO_CHARS_MAX]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}={text[:ECHO_CHARS_MAX]!r} is not a finite number")
    return int(value)


class EnvelopeHandler(_Base):
    async def get(self):
        name = self.get_argument("array", None)
        if not name:
            return self.fail(400, "give the array: /api/envelope?array=NAME[&start=I&stop=J&buckets=N]")
        try:
            start, stop = _int_arg(self, "start", None), _int_arg(self, "stop", None)
            buckets = _int_arg(self, "buckets", page.BUCKETS)
            if not 1 <= buckets <= BUCKETS_MAX:
                raise ValueError(f"buckets={buckets}: ask 1 to {BUCKETS_MAX}")
        except ValueError as exc:
            return self.fail(400, f"bad request: {exc}")
        try:
            doc = await self.run(self.app_state.gatherer.envelope, name, start, stop, buckets)
        except KeyError as exc:
            return self.fail(404, str(exc.args[0]))
        except NeoError as exc:      # the cluster unavailable, a request the nodes refused
            log.warning("envelope of %r: %s", name, exc)
            return self.fail(503, f"cannot compute the envelope of {name!r}: {exc}")
        self.send_json(doc)


class LoginHandler(_Base):
    """``/login?token=TOKEN``: reached only with a valid token (``prepare`` takes it from
    the query here), it sets the cookie that the page's requests carry."""

    def prepare(self):
        token = self.get_argument("token", None)
        if token is not None:
            self.request.headers["Authorization"] = f"Bearer {token}"
        super().prepare()

    def get(self):
        token, ours = self.get_argument("token", None), self.app_state.policy.token
        # only the cluster's token becomes the cookie (an admin certificate or an open
        # dashboard lets any token through prepare)
        if token and ours is not None and hmac.compare_digest(token.encode(), ours.encode()):
            self.set_cookie(auth.COOKIE, token, httponly=True, samesite="Strict",
                            secure=self.app_state.policy.tls)
        self.redirect("./")


class AppState:
    def __init__(self, gatherer, policy: auth.Policy, title: str, refresh_s: float):
        self.gatherer, self.policy = gatherer, policy
        self.html = page.build(title, refresh_s)
        self.pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dashboard")


def make_app(state: AppState) -> tornado.web.Application:
    kw = {"app_state": state}
    return tornado.web.Application([
        (r"/", PageHandler, kw), (r"/api/state", StateHandler, kw),
        (r"/api/envelope", EnvelopeHandler, kw), (r"/login", LoginHandler, kw)])


def ssl_context(tls) -> ssl.SSLContext:
    """HTTPS with the given certificate; client certificates from the cluster's CA
    are asked for (optional: a token may be presented instead)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_path)
    ctx.load_cert_chain(tls.cert_path, tls.key_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class BoundedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with at most ``connections_max`` connections open."""

    def initialize(self, *args, connections_max: int = CONNECTIONS_MAX, **kwargs):
        super().initialize(*args, **kwargs)
        self.connections_max = connections_max

    def handle_stream(self, stream, address):
        if len(self._connections) >= self.connections_max:
            log.warning("refusing a connection from %s: %d connections already", address,
                        self.connections_max)
            stream.close()
            return
        super().handle_stream(stream, address)


class Server:
    """The dashboard serving on ``host:port`` (0: a free port) in a thread of its own
    (``start``/``stop``), or in the caller's (``run_forever``); bounded as the module
    docstring says."""

    def __init__(self, gatherer, policy: auth.Policy, host: str = "127.0.0.1", port: int = 0,
                 tls=None, title: str = "neoarray dashboard", refresh_s: float = 1.0,
                 connections_max: int = CONNECTIONS_MAX, idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.state = AppState(gatherer, policy, title, refresh_s)
        self.host, self.port, self.tls = host, port, tls
        self.connections_max, self.idle_timeout_s = connections_max, idle_timeout_s
        self._loop = None
        self._thread = None
        self._ready = threading.Event()
        self._stopped = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    async def _serve(self):
        self._stopped = asyncio.Event()
        server = BoundedHTTPServer(
            make_app(self.state), ssl_options=ssl_context(self.tls) if self.tls else None,
            connections_max=self.connections_max, idle_connection_timeout=self.idle_timeout_s,
            max_header_size=HEADER_BYTES_MAX, max_body_size=BODY_BYTES_MAX, body_timeout=BODY_TIMEOUT_S)
        sockets = tornado.netutil.bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        server.add_sockets(sockets)
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    def run_forever(self) -> None:
        asyncio.run(self._serve())

    def start(self) -> Server:
        errors: list[BaseException] = []

        def main():
            try:
                self.run_forever()
            except BaseException as exc:    # noqa: BLE001 (reported to start's caller)
                errors.append(exc)
                self._ready.set()
        self._thread = threading.Thread(target=main, name="dashboard", daemon=True)
        self._thread.start()
        self._ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
        self.state.pool.shutdown(wait=False, cancel_futures=True)
        self.state.gatherer.close()
