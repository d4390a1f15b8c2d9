"""Epoch fencing, the storage's side: refuse a master older than one already seen.

Masters put their epoch (``neo-master-epoch``) in the metadata of their calls
(``master/fencing.py``).  ``EpochFence.check`` remembers the highest epoch durably
(node config ``master_epoch``, written before the call proceeds) and refuses a lower
one: a primary that was cut off while a standby took over cannot lock, unlock, abort
or change anything here any more.  Calls without an epoch (clients) pass.
"""
from __future__ import annotations

import threading

import grpc

from neoarray.masters import EPOCH_KEY, STALE_EPOCH_PREFIX


class EpochFence:
    def __init__(self, backend):
        self.backend = backend
        self.lock = threading.Lock()
        self.highest = backend.get_config("master_epoch", 0)

    def check(self, context) -> None:
        """Abort the call (FAILED_PRECONDITION) when its master epoch is stale."""
        raw = dict(context.invocation_metadata() or ()).get(EPOCH_KEY)
        if raw is None:
            return
        if not raw.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{EPOCH_KEY} {raw!r} is not a number")
        refusal = self.admit(int(raw))
        if refusal is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)

    def admit(self, epoch: int) -> str | None:
        """None when a master of ``epoch`` may go on (a higher epoch is remembered
        durably first), else the refusal's message (a newer master took over)."""
        with self.lock:
            if epoch < self.highest:
                return (f"{STALE_EPOCH_PREFIX} {epoch}: this storage node follows a master of "
                        f"epoch {self.highest}, a newer master took over")
            if epoch > self.highest:
                self.backend.set_config(master_epoch=epoch)
                self.highest = epoch
        return None
