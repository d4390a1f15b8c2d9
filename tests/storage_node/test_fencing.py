"""The storage's epoch fence (``storage_node/fencing.py``) on a real LMDB backend:
a master older than the newest one seen is refused, across a restart of the node."""
from neoarray.kv import LMDBStore
from neoarray.masters import STALE_EPOCH_PREFIX
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
