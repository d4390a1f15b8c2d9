"""Refusals of the master's services on a real cluster: requests the RPC fuzz
(``tests/fuzz``) found answered INTERNAL, or obeyed to the cluster's harm."""
import grpc
import pytest
from ZODB.Connection import TransactionMetaData

from neoarray import wire
from neoarray.errors import ClusterUnavailable, RequestRefused
from neoarray.ids import Z64, p64
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.states import NodeState
from tests.cluster_helpers import letters
from tests.conftest import running_cluster

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("master-service"), storages=1, partitions=4)


@pytest.fixture
def master(cluster):
    channel = wire.open_channel(cluster.address, cluster.cluster)
    yield mrpc.MasterStub(channel)
    channel.close()


@pytest.fixture
def session(master):
    """The node id of a client session: identified, its event stream open (the master
    accepts a Finish only from a live session, master/commit.py)."""
    node_id = wire.call(master.Identify, mpb.IdentifyRequest(type=cpb.CLIENT), TIMEOUT_S).node_id
    stream = master.Subscribe(mpb.SubscribeRequest(node_id=node_id))
    next(stream)
    yield node_id
    stream.cancel()


def commit_one(cluster, **options) -> bytes:
    """Commit one new object: the cluster still takes commits."""
    storage = cluster.open_storage(**options)
    try:
        t = TransactionMetaData()
        storage.tpc_begin(t)
        storage.store(storage.new_oid(), Z64, b"still committing", "", t)
        storage.tpc_vote(t)
        return storage.tpc_finish(t)
    finally:
        storage.close()


def test_restore_begin_beyond_the_largest_tid_is_refused(cluster, master):
    with pytest.raises(RequestRefused, match="beyond the largest tid"):
        wire.call(master.Begin, mpb.BeginRequest(node_id=77, tid=b"\xff" * 8), TIMEOUT_S)
    assert commit_one(cluster) < b"\x80"


@pytest.mark.parametrize("request_fields, refusal", [
    ({"last_tid": b"\x01" * 7}, "last_tid 0x01010101010101 is not a tid"),
    ({"last_tid": b"\xff" * 8}, "is not a tid"),
    ({"last_oid": b"\x01" * 9}, "last_oid must be 8 bytes, got 9"),
    ({"address": "x" * 5000}, "address longer than 4096 characters"),
    ({"address": "not an address"}, "storage address 'not an address' is not host:port"),
    ({"address": "127.0.0.1:1", "data_address": "mean"}, "storage data_address 'mean' is not host:port"),
    ({"address": "127.0.0.1:99999"}, "is not host:port"),
])
def test_identify_with_impossible_fields_registers_nothing(cluster, master, request_fields, refusal):
    admin = cluster.admin()
    try:
        before = len(admin.nodes())
        with pytest.raises(RequestRefused, match=refusal):
            wire.call(master.Identify, mpb.IdentifyRequest(type=cpb.STORAGE, **request_fields), TIMEOUT_S)
        assert len(admin.nodes()) == before
    finally:
        admin.close()


def test_finish_with_malformed_oids_is_refused(cluster, master):
    request = mpb.FinishRequest(node_id=5, ttid=p64(5 << 32 | 1), oids=[b"\x01" * 7])
    with pytest.raises(RequestRefused, match="finish: oid must be 8 bytes, got 7"):
        wire.call(master.Finish, request, TIMEOUT_S)


def test_finish_of_a_transaction_voted_nowhere_loses_no_storage(cluster, master, session):
    """Before the fix, the storage's refusal to lock was taken for a lost node: the
    cluster went back to RECOVERING (any client could send such a Finish)."""
    cells = letters(cluster)
    (storage_id,) = cells
    request = mpb.FinishRequest(node_id=session, ttid=p64(session << 32 | 1), oids=[p64(1)],
                                storage_ids=[storage_id])
    with pytest.raises(RequestRefused, match=f"no storage node among \\[{storage_id}\\] has a vote of it"):
        wire.call(master.Finish, request, TIMEOUT_S)
    assert cluster.admin().cluster_state() == "RUNNING"
    assert letters(cluster) == cells
    final = wire.call(master.FinalTid, mpb.FinalTidRequest(ttid=request.ttid), TIMEOUT_S)
    assert (final.tid, final.status) == (b"", mpb.NOT_COMMITTED)
    commit_one(cluster)


def test_finish_from_no_live_session_is_refused(cluster, master, session):
    """A client id that has no open event stream with this master (an earlier
    master's, a closed one, or none) cannot finish anything: master/commit.py."""
    (storage_id,) = letters(cluster)
    for node_id in (session + 1000, storage_id):      # not handed out yet; a storage node
        request = mpb.FinishRequest(node_id=node_id, ttid=p64(node_id << 32 | 1), oids=[p64(1)],
                                    storage_ids=[storage_id])
        with pytest.raises(RequestRefused, match=f"client C{node_id} is not connected to this master"):
            wire.call(master.Finish, request, TIMEOUT_S)
    request = mpb.FinishRequest(node_id=session, ttid=p64((session + 1) << 32 | 1), oids=[p64(1)],
                                storage_ids=[storage_id])
    with pytest.raises(RequestRefused, match="finish of unknown transaction"):    # another client's ttid
        wire.call(master.Finish, request, TIMEOUT_S)
    commit_one(cluster)


def test_a_storage_refusing_a_lock_is_not_lost_when_another_fails(cluster, master, session):
    """A Finish naming the real storage (no vote there: it refuses the lock) and a
    node that does not answer.  Before the fix both were taken for lost: the real
    node's cells went OUT_OF_DATE (found by the RPC fuzz, seed 1865558136)."""
    cells = letters(cluster)
    (storage_id,) = cells
    ghost = wire.call(master.Identify, mpb.IdentifyRequest(type=cpb.STORAGE, address="127.0.0.1:1"),
                      TIMEOUT_S).node_id
    request = mpb.FinishRequest(node_id=session, ttid=p64(session << 32 | 1), oids=[p64(1)],
                                storage_ids=[storage_id, ghost])
    # the ghost holds no cell of what the transaction writes: it cannot hold it locked
    with pytest.raises(RequestRefused, match="has a vote of it"):
        wire.call(master.Finish, request, TIMEOUT_S)
    admin = cluster.admin()
    try:
        assert admin.cluster_state() == "RUNNING"
        states = {n.node_id: n.state for n in admin.nodes()}
        assert states[storage_id] is NodeState.RUNNING
    finally:
        admin.close()
    assert letters(cluster) == cells
    commit_one(cluster)


def test_finish_naming_no_storage_commits_nothing(cluster, master, session):
    """A Finish whose transaction no readable copy took (here: no storage at all) is
    refused: it would publish an empty commit and invalidate arbitrary oids."""
    ids = wire.call(master.LastIds, cpb.Empty(), TIMEOUT_S)
    request = mpb.FinishRequest(node_id=session, ttid=p64(session << 32 | 1), oids=[p64(1)], storage_ids=[])
    with pytest.raises(ClusterUnavailable, match="no readable copy of partition") as err:
        wire.call(master.Finish, request, TIMEOUT_S)
    assert "not committed" in str(err.value)
    assert wire.call(master.LastIds, cpb.Empty(), TIMEOUT_S).last_tid == ids.last_tid
    final = wire.call(master.FinalTid, mpb.FinalTidRequest(ttid=request.ttid), TIMEOUT_S)
    assert (final.tid, final.status) == (b"", mpb.NOT_COMMITTED)
    commit_one(cluster)


@pytest.mark.parametrize("address", ["", "nohost", "h:0", "h:70000", "h:" + "1" * 5000, "h" * 5000 + ":1"])
def test_follow_state_needs_a_standby_address(cluster, address):
    """A FollowState names its sender, shown as a MASTER node: garbage is refused and
    registers nothing."""
    from neoarray.proto import standby_pb2, standby_pb2_grpc
    admin = cluster.admin()
    with wire.open_channel(cluster.address, cluster.cluster) as channel:
        try:
            before = len(admin.nodes())
            with pytest.raises(RequestRefused, match="is not the host:port of a standby master"):
                wire.call(standby_pb2_grpc.StandbyStub(channel).FollowState,
                          standby_pb2.FollowStateRequest(address=address), TIMEOUT_S)
            assert len(admin.nodes()) == before
        finally:
            admin.close()


def test_undecodable_request_is_invalid_argument_naming_the_method(cluster):
    """gRPC itself answers INTERNAL (and logs a traceback) when it cannot decode a
    request; the cluster guard decodes it instead."""
    channel = grpc.insecure_channel(cluster.address)
    try:
        new_oids = channel.unary_unary("/neoarray.v1.Master/NewOids", request_serializer=None,
                                       response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            new_oids(b"\x08", metadata=((wire.CLUSTER_KEY, cluster.cluster),), timeout=TIMEOUT_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed /neoarray.v1.Master/NewOids request (1 bytes)" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            new_oids(b"\x08", metadata=((wire.CLUSTER_KEY, "another"),), timeout=TIMEOUT_S)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ok = new_oids(mpb.NewOidsRequest(count=2).SerializeToString(),
                      metadata=((wire.CLUSTER_KEY, cluster.cluster),), timeout=TIMEOUT_S)
        assert len(mpb.NewOidsReply.FromString(ok).oids) == 2
    finally:
        channel.close()


def test_a_voter_that_cannot_be_called_does_not_hold_up_later_commits(cluster, master, session):
    """A Finish naming a registered node whose data port refuses the connection at once
    (the Lock order fails before it is sent).  Before the fix that failure escaped the
    lock step and left the transaction first in the commit queue: every later commit
    waited for lock_timeout_s (found by the frames fuzz: a fuzzed Identify registered a
    storage at 'not an address')."""
    (storage_id,) = letters(cluster)
    ghost = wire.call(master.Identify, mpb.IdentifyRequest(type=cpb.STORAGE, address="127.0.0.1:1",
                                                           data_address="no-such-host.invalid:1"), TIMEOUT_S).node_id
    request = mpb.FinishRequest(node_id=session, ttid=p64(session << 32 | 2), oids=[p64(1)],
                                storage_ids=[storage_id, ghost])
    with pytest.raises(RequestRefused, match="has a vote of it"):
        wire.call(master.Finish, request, TIMEOUT_S)
    commit_one(cluster, finish_timeout_s=TIMEOUT_S)     # before the fix: ClusterUnavailable after 30 s
