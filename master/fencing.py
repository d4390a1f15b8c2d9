"""Epoch fencing, the master's side: its orders to storage nodes carry its epoch.

The epoch (master generation) is persisted in the master's state and bumped when a
standby takes over (``master/standby.py``).  Storage nodes remember the highest
epoch they saw and refuse a lower one (``storage_node/fencing.py``); the wire
(``neoarray.wire``) turns that refusal into ``StaleEpoch``.  ``EpochFence`` gives the
master's calls to storage nodes (``master/calls.py``) the epoch to send, and is told
of each ``StaleEpoch`` they get: the master was replaced, ``Master.fenced`` makes it
step down.  No I/O of its own.
"""
from __future__ import annotations

from neoarray.errors import StaleEpoch
from neoarray.masters import EPOCH_KEY


class EpochFence:
    """The epoch of ``master`` (a ``Master``) for its calls to storage nodes, and what
    it does when a storage node refused it."""

    __slots__ = ("master",)

    def __init__(self, master):
        self.master = master

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata naming the master's epoch now."""
        return ((EPOCH_KEY, str(self.master.epoch)),)

    def refused(self, exc: StaleEpoch) -> None:
        """A storage node follows a newer master: this one steps down."""
        self.master.fenced(str(exc))
