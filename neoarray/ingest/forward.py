"""fluentd's Forward protocol (v1) input of ``neoarray ingest``: msgpack over TCP.

Modes: Message ``[tag, time, record(, option)]``, Forward ``[tag, [[time, record],
...](, option)]``, PackedForward ``[tag, <msgpack stream of [time, record]>(,
option)]`` and CompressedPackedForward (``option.compressed == "gzip"``).  Times are
integers, floats or EventTime (msgpack extension 0).  With ``option.chunk``, the
message is acknowledged ``{"ack": chunk}`` once durably committed, and a chunk id
committed before (a client resending after a lost connection or a restart of this
service) is acknowledged again but stored once: the ids live in the database with
the records (``state.py``).

Security: ``tls`` (an ``ssl.SSLContext``) wraps every connection; ``policy``
(``access.Policy``) says who may send.  A client presenting a certificate (verified by
the TLS context) must carry a role allowed to send records and name the cluster in
each message's option (``"cluster": NAME``); one presenting none, where the policy
takes a token, runs the protocol's handshake (HELO / PING / PONG with SHA-512 digests
of the shared key, ``security.shared_key`` in fluentd's ``in_forward``).  A client
refused (no key proven, a certificate without the role, another cluster named) is
disconnected without an acknowledgement and counted as rejected.

Backpressure: a connection thread waits for room in the committer's queue before it
reads on (TCP then slows the sender); at most ``connections_max`` connections.
"""
from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import socketserver
import threading
import time
import zlib

import msgpack

from . import access
from .core import Outcome, Unit
from .listen import HANDSHAKE_TIMEOUT_S, BoundedListener

log = logging.getLogger(__name__)

RECV_BYTES = 1 << 18
MESSAGE_BYTES_MAX = 64 << 20        # one msgpack message (and a decompressed chunk)
CONNECTIONS_MAX = 256
IDLE_TIMEOUT_S = 300.0     # a connection that sends nothing this long is closed (fluentd reconnects)


class ProtocolError(ValueError):
    """A message that is not a Forward protocol message (the reason says why)."""


class Refused(Exception):
    """A client or a message that the access policy refuses (the reason says why)."""


def event_time(code, data):
    """msgpack extension hook: EventTime (code 0) as float seconds."""
    if code == 0 and len(data) == 8:
        return int.from_bytes(data[:4], "big") + int.from_bytes(data[4:], "big") / 1e9
    return msgpack.ExtType(code, data)


def _unpacker():
    return msgpack.Unpacker(raw=False, ext_hook=event_time, max_buffer_size=MESSAGE_BYTES_MAX,
                            strict_map_key=False)


def _entries(packed: bytes, option) -> list:
    if option.get("compressed") == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        packed = inflater.decompress(packed, MESSAGE_BYTES_MAX)
        if inflater.unconsumed_tail:
            raise ProtocolError(f"a gzip chunk inflates beyond {MESSAGE_BYTES_MAX} bytes")
    size = option.get("size")
    if type(size) is int and 0 < size < 1 << 32:
        try:        # the entries counted: decoded as one array, all in C
            entries = msgpack.unpackb(b"\xdd" + size.to_bytes(4, "big") + packed, raw=False,
                                      ext_hook=event_time, strict_map_key=False)
            return _checked(entries)
        except (ValueError, msgpack.UnpackException):
            pass    # a wrong size: entry by entry
    unpacker = _unpacker()
    unpacker.feed(packed)
    return _checked(list(unpacker))


def _checked(entries):
    for e in entries:
        if type(e) is not list or len(e) != 2:
            raise ProtocolError(f"an entry is {type(e).__name__} {str(e)[:60]}, not [time, record]")
    return entries


def decode(message) -> tuple[str, list, dict]:
    """``(tag, [[time, record]], option)`` of one Forward protocol message."""
    if not isinstance(message, (list, tuple)) or len(message) < 2:
        raise ProtocolError(f"a message is {type(message).__name__} {str(message)[:60]}, "
                            "not [tag, ...]")
    tag, body = message[0], message[1]
    if not isinstance(tag, str):
        raise ProtocolError(f"the tag is {tag!r}, not a string")
    if isinstance(body, (int, float)) and not isinstance(body, bool):     # Message mode
        if len(message) not in (3, 4):
            raise ProtocolError("a Message mode message is [tag, time, record(, option)]")
        option = message[3] if len(message) == 4 else {}
        entries = [(body, message[2])]
    else:
        option = message[2] if len(message) == 3 else {}
        if len(message) > 3:
            raise ProtocolError("a Forward mode message is [tag, entries(, option)]")
        if isinstance(body, (list, tuple)):
            entries = _checked(body)
        elif isinstance(body, (bytes, str)):
            entries = _entries(body.encode("latin-1") if isinstance(body, str) else body,
                               option if isinstance(option, dict) else {})
        else:
            raise ProtocolError(f"the entries are a {type(body).__name__}")
    if not isinstance(option, dict):
        raise ProtocolError(f"the option is {option!r}, not a map")
    return tag, entries, option


def _digest(*parts) -> str:
    h = hashlib.sha512()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()


class _Connection(socketserver.BaseRequestHandler):
    """One client connection: decode, submit, acknowledge after commit."""

    def setup(self):
        self.acks: list = []
        self.acks_lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.broken = False
        self.roles = None

    def finish(self):
        self.wake_r.close()
        self.wake_w.close()

    def handle(self):
        server: ForwardServer = self.server
        sock = self.request
        try:
            server.tls_handshake(sock, None)
            self.roles = access.roles_of_socket(sock)
            unpacker = _unpacker()
            if not self._admitted(sock, unpacker):
                return
            self._take(unpacker)            # what came with the PING
            heard = time.monotonic()
            while not self.broken:
                if not self._wait_readable(sock):
                    if time.monotonic() - heard > server.idle_timeout_s:
                        log.info("forward: closing %s, silent for %.0f s", self.client_address,
                                 server.idle_timeout_s)
                        break       # unacknowledged chunks are sent again, and stored once
                    continue
                data = sock.recv(RECV_BYTES)
                if not data:
                    break
                heard = time.monotonic()
                unpacker.feed(data)
                self._take(unpacker)
            self._flush_acks(sock)
        except Refused as exc:
            server.reject(f"forward protocol: {exc}")
            log.warning("forward: refusing %s: %s", self.client_address, exc)
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.info("forward: connection from %s ends: %s", self.client_address, exc)

    def _admitted(self, sock, unpacker) -> bool:
        """Whether the policy takes this client: its certificate, or the shared key
        proven in the handshake (``Refused`` otherwise)."""
        policy: access.Policy = self.server.policy
        if self.roles is None and policy.token is not None:
            return self._handshake(sock, unpacker)
        refused = access.refusal(policy, self.roles, None)
        if refused is not None:
            raise Refused(refused[1])
        return True

    def _wait_readable(self, sock) -> bool:
        """Send the acknowledgements due, wait until the socket has data; False when
        woken up for acknowledgements only."""
        self._flush_acks(sock)
        pending = sock.pending() if hasattr(sock, "pending") else 0
        if pending:
            return True
        ready, _, _ = select.select([sock, self.wake_r], [], [], 1.0)
        if self.wake_r in ready:
            self.wake_r.recv(4096)
        return sock in ready

    def _flush_acks(self, sock):
        with self.acks_lock:
            acks, self.acks = self.acks, []
        if acks:
            sock.sendall(b"".join(acks))

    def _take(self, unpacker):
        """Submit the units of the messages decoded so far, in one go."""
        units = [u for u in map(self._unit, unpacker) if u is not None]
        if units and not self.server.committer.submit_many(units):
            raise OSError("the ingest service is stopping")

    def _unit(self, message):
        try:
            tag, entries, option = decode(message)
        except (ProtocolError, zlib.error, ValueError, msgpack.UnpackException) as exc:
            self.server.reject(f"forward protocol: {exc}")
            log.warning("forward: a message from %s rejected: %s", self.client_address, exc)
            return None
        why = access.cluster_refusal(self.server.policy, self.roles, option.get(access.CLUSTER_OPTION))
        if why is not None:
            raise Refused(why)
        chunk = option.get("chunk")
        return Unit(tag, entries, self._done_callback(chunk), dedup_key=f"forward:{chunk}" if chunk else None,
                    source="forward")

    def _done_callback(self, chunk):
        def done(outcome: Outcome):
            if outcome.error is not None:
                self.broken = True         # no ack: the client resends (after reconnecting)
                self._wake()
                return
            for index, reason in outcome.rejected:
                log.warning("forward: record %d of chunk %s rejected: %s", index, chunk, reason)
            if chunk is not None:
                with self.acks_lock:
                    self.acks.append(msgpack.packb({"ack": chunk}))
                    first = len(self.acks) == 1
                if first:
                    self._wake()
        return done

    def _wake(self):
        try:
            self.wake_w.send(b"!")
        except OSError:
            pass

    def _handshake(self, sock, unpacker) -> bool:
        server: ForwardServer = self.server
        shared_key = server.policy.token
        nonce = os.urandom(16)
        sock.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]))
        sock.settimeout(server.handshake_timeout_s)
        ping = None
        while ping is None:
            data = sock.recv(RECV_BYTES)
            if not data:
                return False
            unpacker.feed(data)
            for ping in unpacker:
                break
        sock.settimeout(None)
        ok = (isinstance(ping, list) and len(ping) >= 4 and ping[0] == "PING"
              and ping[3] == _digest(_b(ping[2]), _b(ping[1]), nonce, shared_key))
        reason = "" if ok else "shared_key mismatch"
        salt = _b(ping[2]) if isinstance(ping, list) and len(ping) > 2 else b""
        sock.sendall(msgpack.packb(["PONG", ok, reason, server.hostname,
                                    _digest(salt, server.hostname, nonce, shared_key)]))
        if not ok:
            server.reject("forward protocol: a client failed the shared key handshake")
            log.warning("forward: %s failed the shared key handshake", self.client_address)
        return ok


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class ForwardServer(BoundedListener, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The Forward protocol listener (``serve_forever`` in a thread of its own)."""

    name = "forward"
    allow_reuse_address = True

    def __init__(self, address, committer, *, tls=None, policy: access.Policy | None = None,
                 connections_max: int = CONNECTIONS_MAX, reject=lambda reason: None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.committer = committer
        self.idle_timeout_s = idle_timeout_s     # a connection silent this long is closed
        self.policy = policy or access.Policy("token", None, None)
        self.hostname = socket.gethostname()
        self.reject = reject
        self._bound(connections_max, tls, handshake_timeout_s)
        super().__init__(address, _Connection)
