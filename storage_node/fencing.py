"""Epoch fencing, the storage's side: refuse a master older than one already seen.

Masters put their epoch (``neo-master-epoch``) in the metadata of their calls
(``master/fencing.py``).  ``EpochFence.check`` remembers the highest epoch durably
(node config ``master_epoch``, written before the call proceeds) and refuses a lower
one: a primary that was cut off while a standby took over cannot lock, unlock, abort
or change anything here any more.  Calls without an epoch (clients) pass.  The
verdicts of a heartbeat reply are obeyed only when the reply's epoch is admitted
(``obeys``): a storage fenced at a newer epoch ignores an old primary's verdicts.

Witness of the masters' state (``record``, ``stamp``): a primary about to act on a
state that a standby did not acknowledge has every storage remember its *stamp*
``(epoch, version)`` durably (node config ``master_stamp``, only ever raised,
compared lexicographically); a master that took over from a copy reads the stamps
back (identify, ``RecoveryInfo``) and steps down when one is newer than its copy
(``master/cluster.py``, ``stale_copy``).
"""
from __future__ import annotations

import threading

import grpc

from neoarray.masters import EPOCH_KEY, NO_STAMP, STALE_EPOCH_PREFIX, newer_stamp


class EpochFence:
    def __init__(self, backend):
        self.backend = backend
        self.lock = threading.Lock()
        self.highest = backend.get_config("master_epoch", 0)
        self.stamp = tuple(backend.get_config("master_stamp", NO_STAMP))

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

    def check_record(self, context, epoch: int, version: int) -> None:
        """``record`` the stamp of the calling master's state: its epoch must be the one
        the call carries (INVALID_ARGUMENT otherwise: only a master records its own
        state); aborted (FAILED_PRECONDITION) when that epoch is stale."""
        raw = dict(context.invocation_metadata() or ()).get(EPOCH_KEY)
        if raw != str(epoch):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"RecordStamp: the stamp's epoch {epoch} is not the master epoch of the call "
                          f"({EPOCH_KEY} {raw!r}): a master records the stamp of its own state")
        refusal = self.record(epoch, version)
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

    def obeys(self, epoch: int) -> bool:
        """Whether the verdicts of a heartbeat reply of a master of ``epoch`` are obeyed
        (0: a master that does not say its epoch, obeyed as before).  The fence is not
        raised here: a master that took over and is not confirmed yet (it may step down
        as stale, ``master/cluster.py``) must not fence out the primary it copied
        before it gave an order."""
        with self.lock:
            return epoch == 0 or epoch >= self.highest

    def record(self, epoch: int, version: int) -> str | None:
        """Remember the stamp ``(epoch, version)`` of a master's state durably (when
        newer than the one held) before answering; the refusal's message when
        ``epoch`` is stale (as ``admit``)."""
        refusal = self.admit(epoch)
        if refusal is not None:
            return refusal
        with self.lock:
            if newer_stamp((epoch, version), self.stamp):
                self.backend.set_config(master_stamp=[epoch, version])
                self.stamp = (epoch, version)
        return None
