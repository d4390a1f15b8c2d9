"""Disk space of a storage node: refuse writes early so that ``lock`` always fits.

A full disk (LMDB map full, or ``ENOSPC`` from the filesystem) must fail a commit
cleanly.  Failing at ``store`` or ``vote`` is clean: the client sees ``StorageFull``,
aborts, and every node drops what it held.  Failing at ``lock`` is not: the vote was
durable and the master has chosen the tid, so a node that cannot lock is marked lost
and its cells go out of date.  Hence the rule: **lock never needs space that was not
reserved at vote**.

- ``check_write(need)`` (stores, replication): refused unless the store keeps, after
  ``need`` bytes, the space already reserved for voted transactions *and*
  ``space_reserve_bytes`` free.
- ``reserve(ttid, need)`` (vote): the bytes the lock of ``ttid`` will write (its
  voted records move from ``voted_obj`` to ``obj``; large data stays where the store
  put it, see ``backend.py``), refused like a write; kept until ``release`` (lock,
  abort, unvote), so the stores of other transactions cannot take them meanwhile.
- Lock, abort, unlock and pack run unchecked: they may use the reserve.
  ``space_reserve_bytes`` also absorbs what the estimates miss (LMDB's copy-on-write
  of branch pages, pages freed but not yet reusable while a reader holds a snapshot).

Space comes back by itself when it is freed (an abort, a pack, a file deleted on
the filesystem): checks read the store's ``space()`` afresh, nothing needs a
restart.  Reading it costs a read transaction, eight LMDB stats and two file-system
calls, about a tenth of a small store's CPU on the node, so a check reuses the last
reading while it is younger than ``SPACE_FRESH_S`` *and* leaves more than
``SPACE_ROOMY_BYTES`` free after subtracting what the checks passed since then; near
full, every check reads afresh.  Writes that are not checked (locks, replication's
unchecked parts, other programs on the file system) cannot eat ``SPACE_ROOMY_BYTES``
in ``SPACE_FRESH_S`` (that is 5 GB/s).  Estimates are conservative; the real failures
(``StorageFull`` from the store) remain the last line.
"""
from __future__ import annotations

import threading
import time

from neoarray.errors import StorageFull

SPACE_FRESH_S = 0.2                 # a reading of space() is reused for at most this long,
SPACE_ROOMY_BYTES = 1 << 30         # and only while this much stays free

WRITE_OVERHEAD_BYTES = 64 << 10     # per write: branch pages copied on write, a few page splits
RECORD_OVERHEAD_BYTES = 64          # per record: LMDB node header, key, page fill slack


def store_need(data_bytes: int, records: int) -> int:
    """Bytes a write of ``records`` records holding ``data_bytes`` may take."""
    return data_bytes + data_bytes // 4 + records * RECORD_OVERHEAD_BYTES + WRITE_OVERHEAD_BYTES


def lock_need(voted_bytes: int, records: int) -> int:
    """Bytes the lock of a transaction whose ``voted_obj`` rows take ``voted_bytes``
    may take: new ``obj`` pages (half-full at worst) while ``voted_obj`` pages are
    copied on write before they empty."""
    return 3 * voted_bytes + records * RECORD_OVERHEAD_BYTES + WRITE_OVERHEAD_BYTES


class SpaceGuard:
    """Space checks and per-transaction reservations over a store with ``space()``."""

    def __init__(self, kv, space_reserve_bytes: int):
        self.kv = kv
        self.space_reserve_bytes = space_reserve_bytes
        self.mutex = threading.Lock()
        self.reserved: dict[bytes, int] = {}      # ttid -> bytes its lock may write
        self._reading: tuple[float, int] | None = None  # (monotonic s, capacity - used) of space()
        self._passed_bytes = 0                    # bytes the checks passed since that reading

    def reserved_bytes(self) -> int:
        with self.mutex:
            return sum(self.reserved.values())

    def free_bytes(self) -> int:
        """Bytes a store or a vote may still take: capacity less what is used, what
        voted transactions reserved and ``space_reserve_bytes`` (read afresh)."""
        used, capacity = self.kv.space()
        with self.mutex:
            self._reading, self._passed_bytes = (time.monotonic(), capacity - used), 0
        return capacity - used - self.reserved_bytes() - self.space_reserve_bytes

    def _roomy(self, need: int) -> bool:
        """Whether the last reading, still fresh, leaves ``SPACE_ROOMY_BYTES`` free after
        ``need``; if so ``need`` counts as passed (under ``mutex``)."""
        if self._reading is None or time.monotonic() - self._reading[0] > SPACE_FRESH_S:
            return False
        free = (self._reading[1] - self._passed_bytes - sum(self.reserved.values())
                - self.space_reserve_bytes - need)
        if free < SPACE_ROOMY_BYTES:
            return False
        self._passed_bytes += need
        return True

    def check_write(self, need: int, what: str) -> None:
        """``StorageFull`` unless ``need`` more bytes leave the reservations intact."""
        with self.mutex:
            if self._roomy(need):
                return
        free = self.free_bytes()
        if need <= free:
            with self.mutex:
                self._passed_bytes += need
        else:
            raise StorageFull(f"{what} needs about {need} bytes, {max(free, 0)} are free "
                              f"(beyond {self.reserved_bytes()} reserved for voted transactions "
                              f"and space_reserve_bytes={self.space_reserve_bytes})")

    def reserve(self, ttid: bytes, need: int) -> None:
        """Reserve ``need`` bytes for the lock of ``ttid`` (replacing an earlier one)."""
        with self.mutex:
            self.reserved.pop(ttid, None)
        self.check_write(need, f"the vote of 0x{ttid.hex()} (space for its lock)")
        with self.mutex:
            self.reserved[ttid] = need

    def keep(self, ttid: bytes, need: int) -> None:
        """Reserve without checking: a vote found on disk after a restart."""
        with self.mutex:
            self.reserved[ttid] = need

    def release(self, ttid: bytes) -> None:
        with self.mutex:
            self.reserved.pop(ttid, None)
