"""The master's orders to a real storage node (``master/calls.py``): what comes back
is the project's errors, over gRPC and over the framed data plane alike; a refusal
of a stale epoch is ``StaleEpoch`` and is reported to the fence (the master steps
down), a refusal of a lock is ``RequestRefused`` (not a node lost)."""
from types import SimpleNamespace

import pytest

from master.calls import StorageCalls, grpc_stub
from master.fencing import EpochFence
from neoarray import wire
from neoarray.errors import ClusterUnavailable, RequestRefused, StaleEpoch
from neoarray.ids import p64
from neoarray.states import NodeType
from neoarray.transport.client import FramedChannel
from neoarray.transport.client import Stub as framed_stub
from tests.conftest import running_cluster

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("master-calls"), storages=1, partitions=2)


@pytest.fixture(params=["grpc", "framed"])
def stub(request, cluster):
    admin = cluster.admin()
    try:
        node = next(n for n in admin.nodes() if n.type is NodeType.STORAGE)
    finally:
        admin.close()
    if request.param == "grpc":
        channel = wire.open_channel(node.address, cluster.cluster)
        yield grpc_stub(channel)
    else:
        channel = FramedChannel(node.data_address, cluster.cluster)
        yield framed_stub(channel, "neoarray.v1.Storage")
    channel.close()


def _calls(stub, epoch: int):
    reasons: list[str] = []
    master = SimpleNamespace(epoch=epoch, fenced=reasons.append)
    return StorageCalls(stub, EpochFence(master)), reasons


def test_a_lock_of_a_transaction_never_voted_is_refused(stub):
    calls, reasons = _calls(stub, epoch=1)
    ttid, tid = p64(7 << 32 | 1), p64(1 << 40)
    with pytest.raises(RequestRefused):
        calls.lock(ttid, tid, TIMEOUT_S)
    with pytest.raises(RequestRefused):
        calls.lock_sent(ttid, tid, TIMEOUT_S).result()
    assert reasons == []
    assert calls.recovery_info(TIMEOUT_S).voted == ()


def test_a_stale_epoch_is_reported_to_the_fence_and_raised(stub):
    calls, reasons = _calls(stub, epoch=0)       # the cluster's master is of epoch 1
    with pytest.raises(StaleEpoch) as err:
        calls.recovery_info(TIMEOUT_S, "recovery")
    assert isinstance(err.value, ClusterUnavailable)
    with pytest.raises(StaleEpoch):
        calls.lock_sent(p64(7 << 32 | 2), p64(1 << 40), TIMEOUT_S).result()
    assert len(reasons) == 2 and all("epoch 0" in r and "epoch 1" in r for r in reasons)
