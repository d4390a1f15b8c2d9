"""What the ingestion service's listeners share (``socketserver`` servers on threads):
at most ``connections_max`` connections at once (one more is refused at accept, and
logged), a failed connection logged in one line, no Nagle delay on accepted sockets,
TLS wrapping of accepted sockets when ``tls`` is set (the handshake runs on the
connection's own thread, and must end within ``handshake_timeout_s``), and
``address`` as ``HOST:PORT``."""
from __future__ import annotations

import logging
import socket
import sys
import threading

log = logging.getLogger("neoarray.ingest")

HANDSHAKE_TIMEOUT_S = 10.0


class BoundedListener:
    """Mixin placed before the ``socketserver`` classes; ``_bound`` is called from
    ``__init__`` before the server binds."""

    name = "listener"           # in the log lines of refused connections
    daemon_threads = True
    request_queue_size = 128    # connections waiting for accept (socketserver: 5)

    def _bound(self, connections_max: int, tls, handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        self.tls = tls
        self.connections_max = connections_max
        self.handshake_timeout_s = handshake_timeout_s
        self._connections = threading.BoundedSemaphore(connections_max)

    def tls_handshake(self, sock, then_timeout_s: float | None) -> None:
        """The TLS handshake of an accepted socket (when ``tls``), bounded in time; the
        socket's timeout is ``then_timeout_s`` afterwards.  ``OSError`` (``ssl.SSLError``,
        ``TimeoutError``) when it fails: a client from another CA, or one that stalls."""
        if self.tls is not None:
            sock.settimeout(self.handshake_timeout_s)
            sock.do_handshake()
        sock.settimeout(then_timeout_s)

    def get_request(self):
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # acks go out at once
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def verify_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            log.warning("%s: refusing %s: %d connections already", self.name, client_address,
                        self.connections_max)
            return False
        return True

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request, client_address):
        """A connection that failed (the client reset it, a TLS handshake or a read
        failed): one line, not socketserver's traceback on standard error."""
        log.info("%s: connection from %s failed: %s", self.name, client_address, sys.exc_info()[1])

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"
