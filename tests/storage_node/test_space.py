"""Space checks: a fresh reading near full, a reused one (counting what passed) while roomy."""
from __future__ import annotations

import pytest

from neoarray.errors import StorageFull
from neoarray.kv import MemoryStore
from storage_node import space as space_mod
from storage_node.space import SPACE_ROOMY_BYTES, SpaceGuard

GIB = 1 << 30


class CountingStore(MemoryStore):
    """The memory store, counting how often its space is read."""

    def __init__(self, bytes_max: int):
        super().__init__(bytes_max)
        self.readings = 0

    def space(self):
        self.readings += 1
        return super().space()


def test_a_roomy_store_reuses_its_reading_and_counts_what_passed():
    kv = CountingStore(bytes_max=SPACE_ROOMY_BYTES + 5 * GIB // 2)
    guard = SpaceGuard(kv, space_reserve_bytes=0)
    guard.check_write(GIB, "first")             # no reading yet
    assert kv.readings == 1
    guard.check_write(GIB, "second")            # 1 GiB passed, 1 more: roomy still
    assert kv.readings == 1
    guard.check_write(GIB, "third")             # 2 passed + 1: not roomy, read again
    assert kv.readings == 2
    with pytest.raises(StorageFull, match="needs about"):
        guard.check_write(SPACE_ROOMY_BYTES + 4 * GIB, "too big")
    assert kv.readings == 3


def test_a_store_near_full_reads_its_space_at_every_check():
    kv = CountingStore(bytes_max=64 << 20)
    guard = SpaceGuard(kv, space_reserve_bytes=1 << 20)
    for i in range(5):
        guard.check_write(1 << 10, f"store {i}")
    assert kv.readings == 5
    with pytest.raises(StorageFull):
        guard.check_write(64 << 20, "too big")
    with kv.write() as txn:                     # space taken by a write is seen at once
        txn.put("obj", b"k", b"x" * (40 << 20))
    with pytest.raises(StorageFull):
        guard.check_write(30 << 20, "no longer fits")


def test_an_old_reading_is_not_reused(monkeypatch):
    kv = CountingStore(bytes_max=SPACE_ROOMY_BYTES + 3 * GIB)
    guard = SpaceGuard(kv, space_reserve_bytes=0)
    now = [1000.0]
    monkeypatch.setattr(space_mod.time, "monotonic", lambda: now[0])
    guard.check_write(1, "first")
    now[0] += space_mod.SPACE_FRESH_S / 2
    guard.check_write(1, "fresh")
    assert kv.readings == 1
    now[0] += space_mod.SPACE_FRESH_S
    guard.check_write(1, "stale")
    assert kv.readings == 2
