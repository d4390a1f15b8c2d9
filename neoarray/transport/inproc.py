"""The in-process transport: servicers called through the frame codec, no socket.

``InProcessChannel(server, roles=None, token="")`` is a ``FramedChannel`` whose
connections hand each request, encoded and decoded as on the wire, to ``server``'s
dispatch (``FramedServer`` without listening: the same access checks, decoding,
servicer calls and status codes) on the calling thread, and read its replies back the
same way; a server stream (Subscribe) runs on a thread of its own and its pushes wait
in a bounded queue.  Tests run the cores (master, storage node, client) with it, one
process, no port, every frame through ``frames.encode``/``frames.decode``.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time

import grpc

from .. import wire
from . import frames, server
from .client import FramedChannel, FramedRpcError

PUSHES_QUEUED_MAX = 10_000


def _through_codec(frame: frames.Frame, frame_bytes_max: int) -> frames.Frame:
    return frames.decode(b"".join(bytes(b) for b in frames.encode(frame)), frame_bytes_max)


class _ServerSide(server._Connection):
    """A server connection whose writes go to a queue instead of a socket."""

    def __init__(self, srv: server.FramedServer, roles, token: str):
        self.server, self.sock, self.reader, self.peer = srv, None, None, "inproc"
        self.callbacks, self.closed, self.write_lock = [], False, threading.Lock()
        self.roles, self.token_ok = roles, srv.token_ok(token)
        self.metadata = {wire.CLUSTER_KEY: srv.cluster}
        self.replies: queue.Queue = queue.Queue(PUSHES_QUEUED_MAX)

    def _write(self, frame: frames.Frame) -> None:
        self.replies.put(_through_codec(frame, self.server.limits.frame_bytes_max))

    def alive(self) -> bool:
        return not self.closed


class _Connection:
    """Stands for ``client._Connection``."""

    def __init__(self, srv: server.FramedServer, roles, token: str):
        self.peer_side = _ServerSide(srv, roles, token)
        self.address = "inproc"
        self.rids = itertools.count(1)
        self.pending: list[int] = []
        self.broken = False

    def usable(self) -> bool:
        return not (self.broken or self.pending)

    def send(self, method: int, body: bytes, segments, meta: dict, timeout_s) -> int:
        rid = next(self.rids)
        frame = _through_codec(frames.Frame(frames.REQUEST, rid, method, body, list(segments), meta),
                               self.peer_side.server.limits.frame_bytes_max)
        self.pending.append(rid)
        handler = self.peer_side.server.handlers.get(frame.method_name)
        if handler is not None and handler.streaming:
            threading.Thread(target=self.peer_side._call, args=(frame,), daemon=True).start()
        else:
            self.peer_side._call(frame)
        return rid

    def receive(self, rid: int, deadline) -> frames.Frame:
        frame = self.read(deadline)
        self.pending.remove(rid)
        return frame

    def read(self, deadline) -> frames.Frame:
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            return self.peer_side.replies.get(timeout=timeout)
        except queue.Empty:
            raise FramedRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "in-process call timed out") from None

    def close(self) -> None:
        self.broken = True
        self.peer_side.close()
        self.peer_side.replies.put(frames.Frame(frames.ERROR, 0, body=frames.error_body("CANCELLED", "closed")))


class InProcessChannel(FramedChannel):
    """A channel to ``srv`` (a ``FramedServer``, not listening) in this process."""

    def __init__(self, srv: server.FramedServer, roles=None, token: str = ""):
        super().__init__("inproc", srv.cluster, srv.limits.frame_bytes_max)
        self.srv, self.roles, self.token = srv, roles, token

    def _connect(self, timeout_s: float):
        return _Connection(self.srv, self.roles, self.token)
