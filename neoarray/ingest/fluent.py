"""A fluent-logger sender that waits for acknowledgements, as fluentd's ``out_forward``
does with ``require_ack_response``: at least once into ``neoarray ingest``, which
deduplicates by chunk id, so exactly once in the arrays.

fluent-logger's ``FluentSender`` sends Message mode packets and forgets them once the
kernel took them.  :class:`AckingSender` (needs ``pip install 'neoarray[ingest]'``)
adds the Forward protocol's ``chunk`` option to each packet and keeps it until the
service answers ``{"ack": chunk}``: at most ``window`` packets wait for their
acknowledgement; a lost connection (a restarted service) resends them all, with the
same chunk ids.  ``flush()`` returns once every packet is acknowledged.
"""
from __future__ import annotations

import base64
import collections
import errno
import os
import time

import msgpack
from fluent import sender as fluent_sender


class AckingSender(fluent_sender.FluentSender):
    """``FluentSender`` with acknowledgements (see the module docstring)."""

    def __init__(self, tag, host="localhost", port=24224, *, window: int = 2000,
                 unacked_max: int = 1_000_000, **kwargs):
        super().__init__(tag, host=host, port=port, **kwargs)
        self.window, self.unacked_max = window, unacked_max
        self._unacked: collections.OrderedDict = collections.OrderedDict()
        self._acks = msgpack.Unpacker(raw=False)
        self._resend = False
        self._chunk = None

    def _make_packet(self, label, timestamp, data):
        tag = f"{self.tag}.{label}" if label and self.tag else (label or self.tag)
        if self.nanosecond_precision and isinstance(timestamp, float):
            timestamp = fluent_sender.EventTime(timestamp)
        self._chunk = base64.b64encode(os.urandom(16)).decode()
        return msgpack.packb((tag, timestamp, data, {"chunk": self._chunk}), **self.msgpack_kwargs)

    def _send_internal(self, bytes_):
        if len(self._unacked) >= self.unacked_max:
            self.last_error = OSError(errno.ENOBUFS, f"{self.unacked_max} packets wait for their ack")
            return False
        self._unacked[self._chunk] = bytes_
        try:
            if self._resend:
                self._send_data(b"".join(self._unacked.values()))
                self._resend = False
            else:
                self._send_data(bytes_)
            if len(self._unacked) >= self.window:
                self._wait_acks(self.window // 2)
            return True
        except OSError as exc:
            self.last_error = exc
            self._close()
            self._resend = True
            return False

    def _check_recv_side(self):
        """Read the acknowledgements that came (the base class reads and drops them)."""
        self.socket.settimeout(0.0)
        try:
            while True:
                try:
                    data = self.socket.recv(1 << 16)
                except BlockingIOError:
                    return
                if not data:
                    raise OSError(errno.EPIPE, "the ingest service closed the connection")
                self._take_acks(data)
        finally:
            self.socket.settimeout(self.timeout)

    def _take_acks(self, data):
        self._acks.feed(data)
        for answer in self._acks:
            if isinstance(answer, dict):
                self._unacked.pop(answer.get("ack"), None)

    def _wait_acks(self, left_max: int):
        while len(self._unacked) > left_max:
            data = self.socket.recv(1 << 16)
            if not data:
                raise OSError(errno.EPIPE, "the ingest service closed the connection")
            self._take_acks(data)

    @property
    def unacked(self) -> int:
        """Packets sent and not acknowledged yet."""
        return len(self._unacked)

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Send what waits (reconnecting as needed) until every packet is
        acknowledged; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while self._unacked:
            try:
                with self.lock:
                    self._reconnect()
                    if self._resend:
                        self._send_data(b"".join(self._unacked.values()))
                        self._resend = False
                    self._wait_acks(0)
            except OSError as exc:
                self.last_error = exc
                self._close()
                self._resend = True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def close(self):
        self.flush()
        super().close()
