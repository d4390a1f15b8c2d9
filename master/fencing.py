"""Epoch fencing, the master's side: its calls to storage nodes carry its epoch.

The epoch (master generation) is persisted in the master's state and bumped when a
standby takes over (``master/standby.py``).  Storage nodes remember the highest
epoch they saw and refuse a lower one with FAILED_PRECONDITION and a message
starting with ``STALE_EPOCH_PREFIX`` (``storage_node/fencing.py``); a master that
gets that refusal was replaced: ``on_fenced`` makes it step down.
"""
from __future__ import annotations

import grpc

from neoarray.masters import EPOCH_KEY, STALE_EPOCH_PREFIX


def is_stale_epoch(code, details: str | None) -> bool:
    return code == grpc.StatusCode.FAILED_PRECONDITION and (details or "").startswith(STALE_EPOCH_PREFIX)


class EpochInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``master.epoch`` to every call; reports a stale-epoch refusal to ``on_fenced``."""

    def __init__(self, master, on_fenced):
        self.master = master
        self.on_fenced = on_fenced

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + ((EPOCH_KEY, str(self.master.epoch)),))

    def _watch(self, call):
        def done(c):
            try:
                code, details = c.code(), c.details()
            except Exception:
                return
            if is_stale_epoch(code, details):
                self.on_fenced(details)
        if hasattr(call, "add_done_callback"):
            call.add_done_callback(done)
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._watch(continuation(self._details(client_call_details), request))

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


def with_epoch(channel: grpc.Channel, master) -> grpc.Channel:
    """``channel`` whose calls carry the epoch of ``master`` (its ``epoch`` attribute)."""
    return grpc.intercept_channel(channel, EpochInterceptor(master, master.fenced))
