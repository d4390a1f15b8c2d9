"""Epoch fencing, the master's side: its calls to storage nodes carry its epoch.

``EpochStub`` wraps a storage stub (not the channel: the channel of ``wire`` counts
traffic and stays as it is).  The epoch (master generation) is persisted in the master's state and bumped when a
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


class _EpochMethod:
    """One stub method whose calls carry the epoch and report a stale-epoch refusal."""

    def __init__(self, method, master):
        self.method = method
        self.master = master

    def _metadata(self, kw) -> dict:
        kw["metadata"] = tuple(kw.get("metadata") or ()) + ((EPOCH_KEY, str(self.master.epoch)),)
        return kw

    def _check(self, err) -> None:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else ""
        if is_stale_epoch(code, details):
            self.master.fenced(details)

    def __call__(self, request, **kw):
        try:
            return self.method(request, **self._metadata(kw))
        except grpc.RpcError as err:
            self._check(err)
            raise

    def future(self, request, **kw):
        fut = self.method.future(request, **self._metadata(kw))

        def done(f):
            if f.exception() is not None:
                self._check(f.exception())
        fut.add_done_callback(done)
        return fut


class EpochStub:
    """A storage stub whose every call carries ``master.epoch``; a refusal for a stale
    epoch calls ``master.fenced(reason)``."""

    def __init__(self, stub, master):
        self._stub = stub
        self._master = master

    def __getattr__(self, name):
        return _EpochMethod(getattr(self._stub, name), self._master)
