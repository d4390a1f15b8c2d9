"""The storage's epoch fence (``storage_node/fencing.py``) on a real LMDB backend:
a master older than the newest one seen is refused, across a restart of the node."""
from neoarray.kv import LMDBStore
from neoarray.masters import STALE_EPOCH_PREFIX, newer_stamp
from storage_node.backend import Backend
from storage_node.fencing import EpochFence


def test_the_fence_refuses_an_older_epoch_and_remembers_the_newest_durably(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=16 << 20)
    fence = EpochFence(Backend(kv, 2))
    assert fence.admit(1) is None and fence.admit(2) is None and fence.admit(2) is None
    refusal = fence.admit(1)
    assert refusal.startswith(STALE_EPOCH_PREFIX) and "epoch 2" in refusal
    kv.close()
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=16 << 20)
    again = EpochFence(Backend(kv, 2))       # the node restarted
    assert again.highest == 2 and again.admit(1) is not None and again.admit(3) is None
    kv.close()


def test_a_recorded_state_stamp_only_rises_is_durable_and_fences_older_epochs(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=16 << 20)
    fence = EpochFence(Backend(kv, 2))
    assert fence.stamp == (0, 0)
    assert fence.record(5, 7) is None and fence.stamp == (5, 7) and fence.highest == 5
    assert fence.record(5, 3) is None and fence.stamp == (5, 7)      # an older one is kept out
    refusal = fence.record(4, 100)                                    # older epoch: refused
    assert refusal.startswith(STALE_EPOCH_PREFIX) and fence.stamp == (5, 7)
    assert fence.record(6, 1) is None and fence.stamp == (6, 1)      # epoch first
    kv.close()
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=16 << 20)
    again = EpochFence(Backend(kv, 2))       # the node restarted
    assert again.stamp == (6, 1) and again.highest == 6
    kv.close()


def test_heartbeat_verdicts_of_a_master_below_the_fence_are_not_obeyed(tmp_path):
    kv = LMDBStore(str(tmp_path / "db"), map_bytes_max=16 << 20)
    fence = EpochFence(Backend(kv, 2))
    assert fence.admit(3) is None
    assert fence.obeys(3) and fence.obeys(4) and fence.highest == 3     # a heartbeat raises no fence
    assert not fence.obeys(2)
    assert fence.obeys(0)                              # a reply without an epoch
    assert newer_stamp((2, 0), (1, 9)) and not newer_stamp((1, 9), (1, 9))
    kv.close()
