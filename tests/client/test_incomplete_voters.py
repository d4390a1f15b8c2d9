"""A node that missed some of a transaction's records does not vote it.

The master takes a voter to hold the whole transaction for every partition it has a
cell of.  A client routes its stores when it makes them, around the nodes it suspects
then (a node that failed one of its calls moments ago), and sends its votes to the
nodes writable when it votes: a node suspected for the stores and trusted again for
the vote used to vote the transaction's metadata without its records, and its copy
then lacked an acknowledged commit that no catch-up repaired (found by
``tests/fault/test_trust_faults.py`` in CI).  Real cluster, real processes; the
suspicion is set and lifted through the client's link, as a failed call and the end
of ``suspect_s`` would.
"""
from ZODB.Connection import TransactionMetaData

from neoarray.cluster import LocalCluster
from neoarray.ids import Z64
from neoarray.kv import LMDBStore
from storage_node.backend import Backend
from tests.cluster_helpers import storage_ids, wait_settled


def commit(storage, oid, serial, data, before_vote=None) -> bytes:
    t = TransactionMetaData()
    storage.tpc_begin(t)
    storage.store(oid, serial, data, "", t)
    if before_vote is not None:
        before_vote(t)
    storage.tpc_vote(t)
    return storage.tpc_finish(t)


def revisions(path: str, oid: bytes) -> list[bytes]:
    kv = LMDBStore(path, readonly=True)
    try:
        backend = Backend(kv, partitions=1)
        return sorted(serial for serial, _ in backend.history(oid, 100))
    finally:
        kv.close()


def test_a_node_routed_around_does_not_vote_and_copies_the_transaction(tmp_path):
    cluster = LocalCluster(str(tmp_path / "c"), storages=2, replicas=1, partitions=1).start()
    storage = None
    try:
        storage = cluster.open_storage(local_reads=False)
        first, second = sorted(storage_ids(cluster).values())
        oid = storage.new_oid()
        tid1 = commit(storage, oid, Z64, b"one")
        link = storage._link

        storage._link.suspect(second)           # the stores are routed around it ...

        def trusted_again(t):
            txn = storage._txns[id(t)]
            assert set(txn.buffers) == {first}, txn.buffers     # ... so only the first has the record
            link._suspects.pop(second)          # ... and it is trusted again for the vote

        tid2 = commit(storage, oid, tid1, b"two", before_vote=trusted_again)
        assert storage.loadSerial(oid, tid2) == b"two"
        wait_settled(cluster)                   # the second copies what it missed
    finally:
        if storage is not None:
            storage.close()
        cluster.stop()
    for index in range(2):                      # both copies hold both revisions
        assert revisions(cluster.storage_dir(index), oid) == [tid1, tid2], index
