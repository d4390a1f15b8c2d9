"""Frames over a socket: blocking reads into aligned buffers, gathered writes, TLS.

Reads: the header and the small parts go into ``bytes``; each bulk segment of at least
``ALIGNED_BYTES_MIN`` bytes is read straight into its own 64-byte aligned buffer (a
numpy allocation, handed out as a ``memoryview``), so a chunk crosses from the kernel to
its reader once and lands where numpy and the kernels read fastest
(``shared/reference/LIMITS.md``: misaligned buffers read 4x slower).

Writes: one ``sendmsg`` of every buffer of the frame (no bulk byte is copied); over TLS
(``ssl`` has no ``sendmsg``) the small parts are joined and each large one sent as it is.

Time limits: ``read_frame(idle_s=)`` bounds the wait for a frame to start, and once its
header arrived the rest must come within ``frame_s`` (a peer that starts a frame and
stalls, or stops mid-frame, is cut off: ``PeerGone``).

A connection's ``FrameReader`` keeps its socket blocking, without the socket's own time
limit, and enforces the limits with a deadline that one watchdog thread per process
checks every ``WATCH_TICK_S`` (``Watchdog``): past it, the watchdog shuts the socket
down, which wakes the blocked read or write, and the reader reports the time limit
(``PeerGone``).  A socket with a time limit costs system calls on every read and write
(Python polls before each ``recv``/``sendmsg``, and each change of the limit is an
``ioctl``): up to 4 more per request and answer on each side; ``benchmarks/wire_bench.py``
on this 2-core machine, ``threaded`` against ``threaded-timeout``: 64 against 69 us a
loopback round trip, 50 against 64 us of CPU per call (client and server together).
A deadline costs an attribute.  A limit then fires up to
``WATCH_TICK_S`` late.  An operation that completes within a few milliseconds of its
deadline may still see its connection cut (the watchdog read the deadline just before
the owner cleared it): the same outcome as a limit a moment shorter.
"""
from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
import weakref

import numpy as np

from .. import security
from ..payload import _payload_span, head_payload_span
from . import frames

try:
    from .._vmem import PAGE_BYTES, Block
except ImportError:         # no native extension: aligned numpy buffers only
    Block, PAGE_BYTES = None, 4096

ALIGNED_BYTES_MIN = 64 << 10
# smaller payloads: a plain copy (each block is a mapping of its own, and a process has
# at most vm.max_map_count of them, 65,530 by default: 16 GiB of blocks at this size)
BLOCK_PAYLOAD_BYTES_MIN = 256 << 10
HEAD_BYTES = 4096           # what is looked at of a segment to place it
ALIGN_BYTES = 64
SMALL_JOIN_BYTES = 64 << 10


KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 10, 5, 3


def tune(sock) -> None:
    """No Nagle delay (requests and replies are small and answered at once), and TCP
    keep-alive probes, so that a peer that vanished without closing (a host gone, a
    partition) is noticed within about 25 s even on a connection that waits."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), int(value))


def peer_closed(sock) -> bool:
    """Whether the peer closed (or reset) the connection, without waiting and without
    consuming anything: an end of stream is readable and peeks as ``b""`` (under TLS
    too, at the socket's level).  A socket with a timeout polls before it reads, so
    readability is asked first, with no wait."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


class PeerGone(Exception):
    """The connection ended (closed, reset, or a time limit passed)."""


WATCH_TICK_S = 0.05         # how late a time limit may fire (and how often the watchdog looks)


class Watchdog:
    """Cuts the connections whose ``FrameReader`` passed its deadline (see the module
    docstring).  One per process (``WATCHDOG``); its thread runs while readers are
    registered and ends when none is.  A forked child starts afresh: the readers it
    inherited are its parent's."""

    def __init__(self, tick_s: float = WATCH_TICK_S):
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._readers: weakref.WeakSet = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, reader: FrameReader) -> None:
        with self._lock:
            self._readers.add(reader)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="frame-watchdog", daemon=True)
                self._thread.start()

    def discard(self, reader: FrameReader) -> None:
        with self._lock:
            self._readers.discard(reader)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            with self._lock:
                readers = list(self._readers)
                if not readers:
                    self._thread = None
                    return
            now = time.monotonic()
            for reader in readers:
                deadline = reader.deadline
                if deadline is not None and deadline <= now:
                    reader.expire()
            del readers


WATCHDOG = Watchdog()
# a child forked while the watchdog held its lock, or with its thread, has neither
os.register_at_fork(after_in_child=lambda: WATCHDOG.__init__(WATCHDOG.tick_s))


def aligned(nbytes: int) -> memoryview:
    """A writable buffer of ``nbytes`` whose address is a multiple of ``ALIGN_BYTES``."""
    raw = np.empty(nbytes + ALIGN_BYTES, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGN_BYTES
    return memoryview(raw)[offset:offset + nbytes]


def _recv_into(sock, view: memoryview) -> int:
    """Bytes read into ``view`` (at least one); ``PeerGone`` when none can be."""
    try:
        n = sock.recv_into(view)
    except TimeoutError:
        raise PeerGone("time limit passed while reading a frame") from None
    except OSError as exc:
        raise PeerGone(f"connection lost: {exc}") from None
    if not n:
        raise PeerGone("connection closed by the peer")
    return n


def read_exact(sock, view: memoryview) -> None:
    got = 0
    while got < len(view):
        got += _recv_into(sock, view[got:])


def read_bytes(sock, nbytes: int) -> bytes:
    if not nbytes:
        return b""
    buf = bytearray(nbytes)
    read_exact(sock, memoryview(buf))
    return bytes(buf)


def read_frame(sock, frame_bytes_max: int, idle_s: float | None, frame_s: float) -> frames.Frame:
    """The next frame.  ``PeerGone`` when the connection ended or a time limit passed;
    ``RequestRefused``/``LimitExceeded`` for a frame this protocol does not allow (the
    caller answers, then closes: the stream is no longer in step)."""
    sock.settimeout(idle_s)
    head = bytearray(frames.HEADER_BYTES)
    read_exact(sock, memoryview(head)[:1])       # the wait for a frame to start
    sock.settimeout(frame_s)
    read_exact(sock, memoryview(head)[1:])
    layout = frames.parse_header(head, frame_bytes_max)
    lengths = frames.segment_lengths(read_bytes(sock, layout.lengths_bytes), layout)
    meta = frames.decode_meta(read_bytes(sock, layout.meta_bytes))
    body = read_bytes(sock, layout.body_bytes)
    return frames.Frame(layout.kind, layout.rid, layout.method, body, read_segments(sock, lengths), meta)


def read_segments(sock, lengths: list[int]) -> list:
    """Each large segment into an aligned buffer of its own; each run of small ones
    with one read, then sliced (a store of 1,000 small records costs a few reads)."""
    segments, i = [], 0
    while i < len(lengths):
        if lengths[i] >= ALIGNED_BYTES_MIN:
            view = aligned(lengths[i])
            read_exact(sock, view)
            segments.append(view)
            i += 1
            continue
        j = i
        while j < len(lengths) and lengths[j] < ALIGNED_BYTES_MIN:
            j += 1
        run = memoryview(bytearray(sum(lengths[i:j])))
        read_exact(sock, run)
        offset = 0
        for n in lengths[i:j]:
            segments.append(run[offset:offset + n])
            offset += n
        i = j
    return segments


def new_page_block(n: int, span):
    """An empty page block (``neoarray._vmem.Block``) for a chunk record of ``n`` bytes
    whose payload is ``span`` (its start and end), or None: no native extension, a
    payload that is not whole pages of at least ``BLOCK_PAYLOAD_BYTES_MIN``, or no
    mapping left (then the caller makes a plain copy)."""
    if Block is None or span is None or (span[1] - span[0]) % PAGE_BYTES \
            or span[1] - span[0] < BLOCK_PAYLOAD_BYTES_MIN:
        return None
    try:
        return Block(n, *span)
    except MemoryError:
        return None


class FrameReader:
    """The frames of one connection, read greedily into a buffer: a frame and what
    follows it usually come with one ``recv`` (``read_frame`` reads exactly, a few
    reads per frame).  Large segments are still read into aligned buffers of their own
    (what was buffered of them is copied in first).

    The socket becomes blocking, its time limits deadlines that ``WATCHDOG`` enforces
    (the module docstring): ``read`` and ``write`` set them and clear them on return,
    so nothing limits the time between frames that its owner spends elsewhere (a
    servicer at work, an idle pooled connection).  ``close()`` when done with it."""

    BUFFER_BYTES = 256 << 10

    def __init__(self, sock, page_blocks: bool = False):
        self.sock = sock
        self.page_blocks = page_blocks and Block is not None
        self.buf = bytearray(self.BUFFER_BYTES)
        self.start = self.end = 0
        self.deadline: float | None = None      # time.monotonic() past which the watchdog cuts
        self.expired = False
        sock.settimeout(None)
        WATCHDOG.add(self)

    @property
    def buffered(self) -> int:
        return self.end - self.start

    def set_timeout(self, timeout_s: float | None) -> None:
        """Limit the operations from now on to ``timeout_s`` (None: no limit)."""
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def expire(self) -> None:
        """The deadline passed (the watchdog): wake whatever is blocked on the socket.
        The base class's ``shutdown``, also for a TLS socket: only the descriptor is
        shut, the TLS object stays to its owner's thread."""
        self.expired = True
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        WATCHDOG.discard(self)
        self.deadline = None

    def _gone(self, exc: PeerGone, doing: str) -> PeerGone:
        if self.expired:
            return PeerGone(f"time limit passed while {doing} a frame")
        return exc

    def write(self, frame: frames.Frame, timeout_s: float | None) -> None:
        """``write_frame`` within ``timeout_s``."""
        self.set_timeout(timeout_s)
        try:
            write_frame(self.sock, frame)
        except PeerGone as exc:
            raise self._gone(exc, "writing") from None
        finally:
            self.deadline = None

    def _recv(self) -> None:
        self.end += _recv_into(self.sock, memoryview(self.buf)[self.end:])

    def _need(self, n: int) -> None:
        while self.end - self.start < n:
            if len(self.buf) - self.start < n or self.end == len(self.buf):
                kept = self.buf[self.start:self.end]
                if len(self.buf) < n:
                    self.buf = bytearray(n)
                self.buf[:len(kept)] = kept
                self.start, self.end = 0, len(kept)
            self._recv()

    def _take(self, n: int) -> bytes:
        if not n:
            return b""
        self._need(n)
        out = bytes(self.buf[self.start:self.start + n])
        self.start += n
        return out

    def _take_into(self, view: memoryview) -> None:
        k = min(len(view), self.end - self.start)
        view[:k] = self.buf[self.start:self.start + k]
        self.start += k
        if k < len(view):
            read_exact(self.sock, view[k:])

    def read(self, frame_bytes_max: int, idle_s: float | None, frame_s: float) -> frames.Frame:
        """As ``read_frame``."""
        try:
            return self._read(frame_bytes_max, idle_s, frame_s)
        except PeerGone as exc:
            raise self._gone(exc, "reading") from None
        finally:
            self.deadline = None

    def _read(self, frame_bytes_max: int, idle_s: float | None, frame_s: float) -> frames.Frame:
        if self.start == self.end:
            self.start = self.end = 0
            if len(self.buf) > 4 * self.BUFFER_BYTES:     # after a large frame
                self.buf = bytearray(self.BUFFER_BYTES)
            self.set_timeout(idle_s)
            self._recv()                                  # the wait for a frame to start
        self.set_timeout(frame_s)
        layout = frames.parse_header(self._take(frames.HEADER_BYTES), frame_bytes_max)
        lengths = frames.segment_lengths(self._take(layout.lengths_bytes), layout)
        meta = frames.decode_meta(self._take(layout.meta_bytes))
        body = self._take(layout.body_bytes)
        segments = []
        for n in lengths:
            if n >= ALIGNED_BYTES_MIN:
                segments.append(self._take_large(n))
            else:
                segments.append(self._take(n))
        return frames.Frame(layout.kind, layout.rid, layout.method, body, segments, meta)

    def _page_block(self, n: int):
        """A page block for the segment of ``n`` bytes coming next, placed by its first
        bytes, or None (:func:`new_page_block`)."""
        self._need(min(n, HEAD_BYTES))
        return new_page_block(n, head_payload_span(bytes(self.buf[self.start:self.start + min(n, HEAD_BYTES)]), n))

    def _take_large(self, n: int) -> memoryview:
        """A large segment, read into an aligned buffer of its own; with ``page_blocks``
        (a client), a chunk record of whole pages is read into a page block instead
        (``neoarray._vmem.Block``: its payload on pages of its own, which a mapped view
        can take without copying; and fresh huge pages cost a tenth of fresh 4 KiB ones
        here), placed by the record's first bytes."""
        block = self._page_block(n) if self.page_blocks else None
        if block is not None:
            into = memoryview(block)
            self._take_into(into)
            if _payload_span(into) == (block.payload_start, block.payload_start + block.payload_bytes):
                into.release()
                block.freeze()
                return memoryview(block).toreadonly()
            view = aligned(n)       # the guess was wrong: an ordinary buffer
            view[:] = into
            into.release()
            return view
        view = aligned(n)
        self._take_into(view)
        return view


def write_frame(sock, frame: frames.Frame) -> None:
    """Send ``frame`` whole; ``PeerGone`` when the connection is lost."""
    buffers = frames.encode(frame)
    try:
        if isinstance(sock, ssl.SSLSocket):
            _send_tls(sock, buffers)
        else:
            _sendmsg_all(sock, buffers)
    except TimeoutError:
        raise PeerGone("time limit passed while writing a frame") from None
    except OSError as exc:
        raise PeerGone(f"connection lost: {exc}") from None


def _sendmsg_all(sock, buffers: list) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views[:1024])
        while sent:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def _send_tls(sock, buffers: list) -> None:
    small = []
    for b in buffers:
        if memoryview(b).nbytes < SMALL_JOIN_BYTES:
            small.append(bytes(b))
            continue
        if small:
            sock.sendall(b"".join(small))
            small = []
        sock.sendall(b)
    if small:
        sock.sendall(b"".join(small))


# -- TLS ----------------------------------------------------------------------------------

def server_context(tls: security.TLSConfig) -> ssl.SSLContext:
    """Mutual TLS, server side: our certificate; the peer's must be signed by the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load()      # readable and bounded, or SecurityError naming the file
    ctx.load_cert_chain(tls.cert_path, tls.key_path)
    ctx.load_verify_locations(tls.ca_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: security.TLSConfig) -> ssl.SSLContext:
    """Mutual TLS, client side: trust only the CA, present our certificate, and the
    server's certificate must name the host we connect to (as gRPC checks it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load()
    ctx.load_verify_locations(tls.ca_path)
    ctx.load_cert_chain(tls.cert_path, tls.key_path)
    ctx.check_hostname = True
    return ctx


def peer_roles(sock) -> frozenset | None:
    """Roles of the verified peer certificate (``None`` without TLS)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert() or {}
    return security.roles_of_uris(v for k, v in cert.get("subjectAltName", ()) if k == "URI")


def peer_uris(sock) -> list[bytes]:
    """The URI alternative names of the verified peer certificate (none without TLS)."""
    if not isinstance(sock, ssl.SSLSocket):
        return []
    cert = sock.getpeercert() or {}
    return [v.encode() for k, v in cert.get("subjectAltName", ()) if k == "URI"]
