"""Refusals of the Storage service on a real cluster: requests the RPC fuzz
(``tests/fuzz``) found answered INTERNAL, or obeyed to the data's harm."""
import time

import pytest
import xxhash
from ZODB.Connection import TransactionMetaData

from neoarray import wire
from neoarray.errors import RequestRefused
from neoarray.ids import Z64, p64
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from tests.cluster_helpers import storage_of_index
from tests.conftest import running_cluster

PARTITIONS = 4
TIMEOUT_S = 30.0
DROPPER_WAKEUP_S = 2.0      # a partition dropper acts at once, and wakes every second


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("storage-service"), storages=1, partitions=PARTITIONS)


@pytest.fixture(scope="module")
def committed(cluster):
    """Oids (one per partition) committed through a client: ``{oid: data}``."""
    storage = cluster.open_storage()
    try:
        values = {storage.new_oid(): b"value %d" % i for i in range(PARTITIONS)}
        t = TransactionMetaData()
        storage.tpc_begin(t)
        for oid, data in values.items():
            storage.store(oid, Z64, data, "", t)
        storage.tpc_vote(t)
        storage.tpc_finish(t)
        return values
    finally:
        storage.close()


@pytest.fixture
def node(cluster):
    node_id, address = storage_of_index(cluster, 0)
    channel = wire.open_channel(address, cluster.cluster)
    yield node_id, srpc.StorageStub(channel)
    channel.close()


def table(ptid, rows):
    return cpb.PartitionTable(ptid=ptid, replicas=0, rows=[
        cpb.PartitionRow(cells=[cpb.Cell(node_id=n, state=s) for n, s in row]) for row in rows])


def test_garbage_partition_tables_are_refused_and_drop_nothing(cluster, committed, node):
    """Before the fix, a table of one row made the node drop every other partition."""
    node_id, stub = node
    ptid = cluster.admin().partition_table().ptid
    deadline = time.monotonic() + TIMEOUT_S
    while wire.call(stub.RecoveryInfo, cpb.Empty(), TIMEOUT_S).ptid != ptid:    # its next heartbeat
        assert time.monotonic() < deadline, "the storage node never learnt the partition table"
        time.sleep(0.1)
    mine = [(node_id, cpb.UP_TO_DATE)]
    garbage = {
        "partition table with 1 rows: the cluster has 4 partitions": table(ptid + 1, [mine]),
        "partition 2 has a cell of node .* in unknown state 99": table(ptid + 1, [mine, mine, [(node_id, 99)], mine]),
        "a cell of node 0": table(ptid + 1, [mine, mine, mine, [(0, cpb.UP_TO_DATE)]]),
        f"partition table {ptid - 1} is older than this node's \\({ptid}\\)": table(ptid - 1, [mine] * PARTITIONS),
        "has no cell of this node": table(ptid + 1, [[]] * PARTITIONS),
    }
    for refusal, pt in garbage.items():
        with pytest.raises(RequestRefused, match=refusal):
            wire.call(stub.SetPartitionTable, pt, TIMEOUT_S)
    time.sleep(DROPPER_WAKEUP_S)
    for oid, data in committed.items():
        reply = wire.call(stub.Load, spb.LoadRequest(oid=oid), TIMEOUT_S)
        assert (reply.status, reply.data) == (spb.FOUND, data)


def test_listings_refuse_malformed_ids(node):
    _, stub = node
    with pytest.raises(RequestRefused, match="after_oid must be 8 bytes, got 9"):
        wire.call(stub.ObjectsSince, spb.ObjectsSinceRequest(partitions=[0], after_oid=b"\x01" * 9), TIMEOUT_S)
    with pytest.raises(RequestRefused, match="min_tid must be 8 bytes, got 7"):
        wire.call(stub.Transactions, spb.TransactionsRequest(partitions=[0], min_tid=b"\x01" * 7), TIMEOUT_S)
    with pytest.raises(RequestRefused, match="max_tid must be 8 bytes, got 9"):
        wire.call(stub.Transactions, spb.TransactionsRequest(partitions=[0], max_tid=b"\x01" * 9), TIMEOUT_S)


def test_listings_after_the_largest_id_are_empty(committed, node):
    _, stub = node
    top = b"\xff" * 8
    reply = wire.call(stub.ObjectsSince, spb.ObjectsSinceRequest(partitions=list(range(PARTITIONS)),
                                                                 after_oid=top), TIMEOUT_S)
    assert list(reply.oids) == []
    keys = wire.call(stub.ReplicaKeys, spb.ReplicaKeysRequest(partition=0, table=spb.REPLICA_TRANSACTIONS,
                                                              min_tid=top, max_tid=top), TIMEOUT_S)
    assert list(keys.keys) == []
    everything = wire.call(stub.ObjectsSince, spb.ObjectsSinceRequest(partitions=list(range(PARTITIONS))),
                           TIMEOUT_S)
    assert set(committed) <= set(everything.oids)


def test_transaction_ids_of_zero_or_beyond_max_tid_are_refused(committed, node):
    """The frames fuzz (seed 2103343179) voted ttid 0 and locked it at tid 0: a
    transaction written before every real one.  The master hands out neither."""
    _, stub = node
    oid = next(iter(committed))
    record = spb.ObjectRecord(oid=oid, serial=Z64, data=b"x", checksum=xxhash.xxh3_64_intdigest(b"x"))
    for ttid in (Z64, b"\xff" * 8):
        with pytest.raises(RequestRefused, match=f"ttid {ttid.hex()} names no transaction"):
            wire.call(stub.Store, spb.StoreRequest(ttid=ttid, node_id=7, objects=[record]), TIMEOUT_S)
        with pytest.raises(RequestRefused, match=f"ttid {ttid.hex()} names no transaction"):
            wire.call(stub.Vote, spb.VoteRequest(ttid=ttid, node_id=7, oids=[oid]), TIMEOUT_S)
        with pytest.raises(RequestRefused, match=f"ttid {ttid.hex()} names no transaction"):
            wire.call(stub.Lock, spb.LockRequest(ttid=ttid, tid=p64(1)), TIMEOUT_S)
        with pytest.raises(RequestRefused, match=f"tid {ttid.hex()} names no transaction"):
            wire.call(stub.Lock, spb.LockRequest(ttid=p64(1), tid=ttid), TIMEOUT_S)
    info = wire.call(stub.RecoveryInfo, cpb.Empty(), TIMEOUT_S)
    assert Z64 not in info.voted_ttids and not list(info.locked)
    first = wire.call(stub.Transactions, spb.TransactionsRequest(partitions=list(range(PARTITIONS)), limit=1),
                      TIMEOUT_S)
    assert all(t.tid != Z64 for t in first.transactions)
