"""Cleanup orders from the master to a storage are retried while the node runs.

A node that just re-identified may refuse connections for a moment (its channel is
still backing off); a lost settle or AbortNode order would leave transaction locks
held until clients give up with a conflict.
"""
from master.node import Limits, Master, NodeInfo
from neoarray.errors import ClusterUnavailable
from neoarray.states import NodeState, NodeType


def _master(tmp_path, attempts_max=5):
    limits = Limits(cleanup_attempts_max=attempts_max, cleanup_retry_delay_s=0.01,
                    cleanup_retry_delay_max_s=0.02)
    master = Master(str(tmp_path / "m"), "c", partitions=2, replicas=0, storages_expected=1, limits=limits)
    master.nodes[1] = NodeInfo(1, NodeType.STORAGE, "127.0.0.1:1", state=NodeState.RUNNING)
    return master


def _failing(times, calls, then=None):
    def order():
        calls.append(1)
        if then is not None and len(calls) == then[0]:
            then[1]()
        if len(calls) <= times:
            raise ClusterUnavailable("Connection refused")
    return order


def test_order_is_retried_until_it_succeeds(tmp_path):
    master, calls = _master(tmp_path), []
    assert master._until_done(1, _failing(3, calls), "settle S1") is True
    assert len(calls) == 4


def test_retries_are_bounded(tmp_path):
    master, calls = _master(tmp_path, attempts_max=4), []
    assert master._until_done(1, _failing(100, calls), "settle S1") is False
    assert len(calls) == 4


def test_no_retry_once_the_node_is_lost(tmp_path):
    master, calls = _master(tmp_path), []
    lose = (2, lambda: master.nodes[1].set_state(NodeState.DOWN, 0.0))
    assert master._until_done(1, _failing(100, calls, then=lose), "settle S1") is False
    assert len(calls) == 2     # it returns settles again when it identifies


def test_no_retry_once_the_master_stops(tmp_path):
    master, calls = _master(tmp_path), []
    master.stopped.set()
    assert master._until_done(1, _failing(100, calls), "settle S1") is False
    assert len(calls) == 1
