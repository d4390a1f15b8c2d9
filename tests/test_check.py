"""neoctl check [--repair] and print summary on a real cluster: bit rot, lost records, repair."""
import subprocess
import sys
import time

import pytest
from ZODB.Connection import TransactionMetaData

from neoarray import wire
from neoarray.cluster import LocalCluster
from neoarray.errors import ChecksumError
from neoarray.ids import Z64, p64
from neoarray.kv import LMDBStore
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.records import PARTITION, RECORD_HEAD, record_tail
from tests.cluster_helpers import letters, neoctl, storage_ids, storage_of_index

PARTITIONS = 4
# after the whole cluster restarts, the master waits this long from its own start for
# every member before it runs without one (whose cells would go OUT_OF_DATE and copy
# back what the test took away); the conftest's 3 s is too short for storage processes
# that start late on a loaded machine, and a killed node is still seen DOWN in time
NODE_TIMEOUT_S = 10.0


@pytest.fixture
def cluster(tmp_path):
    """The conftest's cluster (1 master, 2 storages, replicas=1), waiting longer for
    its members after a restart (``NODE_TIMEOUT_S``)."""
    c = LocalCluster(str(tmp_path / "cluster"), storages=2, replicas=1, partitions=PARTITIONS,
                     node_timeout_s=NODE_TIMEOUT_S)
    c.start()
    yield c
    c.stop()


def commit(storage, values, serials=None):
    """Commit ``{oid: raw bytes}``; returns the tid."""
    t = TransactionMetaData()
    storage.tpc_begin(t)
    for oid, data in values.items():
        storage.store(oid, (serials or {}).get(oid, Z64), data, "", t)
    storage.tpc_vote(t)
    return storage.tpc_finish(t)


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)





def flip_last_byte(txn, db, key):
    value = bytearray(txn.get(db, key))
    value[-1] ^= 0xFF
    txn.put(db, key, bytes(value))


def obj_key(oid, tid):
    return PARTITION.pack(int.from_bytes(oid, "big") % PARTITIONS) + oid + tid


def problems_of(report):
    return {(pr["table"], pr.get("oid"), pr["tid"]): pr for part in report["partitions"] for pr in part["problems"]}


def test_check_finds_and_repairs_bit_rot_and_lost_records(cluster):
    storage = cluster.open_storage()
    small, big, twice = storage.new_oid(), storage.new_oid(), storage.new_oid()
    data = {small: b"small inline record", big: bytes(range(256)) * 20, twice: b"first"}
    tid1 = commit(storage, data)
    tid2 = commit(storage, {twice: b"second"}, {twice: tid1})
    storage.close()     # it reads co-located LMDB directories: one open env per process
    assert neoctl(cluster, "--json", "check")["ok"] is True
    text = neoctl(cluster, "check")
    assert text.count(": OK (") == PARTITIONS and "0 problems" in text
    healthy = neoctl(cluster, "--json", "print", "summary")
    assert healthy["state"] == "RUNNING" and healthy["attention"] is False
    assert healthy["storages_up"] == 2 and healthy["partitions_under_replicated"] == []

    # every node stops at once (the master first: no cell is marked OUT_OF_DATE, so
    # nothing replicates and the client reads both copies); meanwhile, on one node: bit
    # rot in an inline record and in a data row, a record and a transaction row lost
    victim, address = storage_of_index(cluster, 1)
    cluster.kill_master()
    cluster.kill_storage(0)
    cluster.kill_storage(1)
    kv = LMDBStore(cluster.storage_dir(1))
    with kv.write() as txn:
        flip_last_byte(txn, "obj", obj_key(small, tid1))
        record = txn.get("obj", obj_key(big, tid1))
        flip_last_byte(txn, "data", record_tail(record[0], record, RECORD_HEAD.size)[1])
        txn.delete("obj", obj_key(twice, tid1))
        txn.delete("trans", PARTITION.pack(int.from_bytes(tid2, "big") % PARTITIONS) + tid2)
    kv.sync()
    kv.close()
    cluster.start()

    report = neoctl(cluster, "--json", "check", status=1)
    found = problems_of(report)
    hx = lambda b: f"0x{b.hex()}"
    assert set(found) == {("object", hx(small), hx(tid1)), ("object", hx(big), hx(tid1)),
                          ("object", hx(twice), hx(tid1)), ("transaction", None, hx(tid2))}
    name = f"S{victim}"
    assert found[("object", hx(small), hx(tid1))]["corrupt"] == [name]
    assert found[("object", hx(big), hx(tid1))]["corrupt"] == [name]
    assert found[("object", hx(twice), hx(tid1))]["missing"] == [name]
    assert found[("transaction", None, hx(tid2))]["missing"] == [name]
    assert report["remaining"] == 4 and not any(pr["differs"] for pr in found.values())

    # reads never hand out the rotten bytes: the client reads a sound copy, the
    # corrupt node itself refuses
    fresh = cluster.open_storage()
    try:
        assert len(fresh._link.readable(int.from_bytes(small, "big") % PARTITIONS)) == 2
        for _ in range(4):          # reads rotate over both copies, local or remote
            for oid in (small, big):
                assert fresh._read(oid, serial=tid1).data == data[oid]
        assert fresh.load(small)[0] == data[small] and fresh.load(big)[0] == data[big]
    finally:
        fresh.close()
    stub = srpc.StorageStub(wire.open_channel(address, cluster.cluster))
    for oid in (small, big):
        with pytest.raises(ChecksumError, match="fails its checksum"):
            wire.call(stub.Load, spb.LoadRequest(oid=oid, serial=tid1), 10)

    assert "--yes" in neoctl(cluster, "check", "--repair", status=1)   # no terminal: nothing repaired
    assert neoctl(cluster, "--json", "check", status=1)["problems"] == 4
    repaired = neoctl(cluster, "--json", "check", "--repair", "--yes")
    assert repaired["ok"] is True and repaired["remaining"] == 0
    actions = {key: pr["repaired"] for key, pr in problems_of(repaired).items()}
    assert actions == {("object", hx(small), hx(tid1)): {name: "replaced"},
                       ("object", hx(big), hx(tid1)): {name: "replaced"},
                       ("object", hx(twice), hx(tid1)): {name: "written"},
                       ("transaction", None, hx(tid2)): {name: "written"}}
    assert neoctl(cluster, "--json", "check")["problems"] == 0
    for oid, tid, expected in ((small, tid1, data[small]), (big, tid1, data[big]), (twice, tid1, b"first")):
        reply = wire.call(stub.Load, spb.LoadRequest(oid=oid, serial=tid), 10)
        assert reply.status == spb.FOUND and reply.data == expected
    text = neoctl(cluster, "check", "1", "3")
    assert text.splitlines()[0].startswith("partition 1: OK") and len(text.splitlines()) == 3

    # a node dies: still RUNNING and readable, but every partition is down to one copy
    cluster.kill_storage(1)
    wait_for(lambda: neoctl(cluster, "--json", "print", "summary")["storages_down"] == 1)
    degraded = neoctl(cluster, "--json", "print", "summary")
    assert degraded["attention"] is True and degraded["partitions_unreadable"] == []
    assert degraded["partitions_under_replicated"] == list(range(PARTITIONS))
    assert f"S{victim} DOWN" in neoctl(cluster, "print", "summary")
    assert "not checked: " + name + " (DOWN)" in neoctl(cluster, "check")
    # back, with OUT_OF_DATE cells (until they catch up): compared all the same
    cluster.start_storage(1)
    wait_for(lambda: neoctl(cluster, "--json", "print", "summary")["storages_up"] == 2)
    after = neoctl(cluster, "--json", "check")
    assert after["ok"] and all(name in part["nodes"] for part in after["partitions"])


def address_of(cluster, index):
    return storage_of_index(cluster, index)[1]


def test_check_refuses_bad_partitions_and_repair_refuses_bad_records(cluster):
    out = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", cluster.path, "check", "9"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "partition 9 out of range" in out.stderr
    stub = srpc.StorageStub(wire.open_channel(address_of(cluster, 0), cluster.cluster))
    bad = spb.RepairObject(oid=p64(1), tid=p64(5), data=b"data", checksum=1)
    with pytest.raises(ChecksumError, match="does not match its checksum"):
        wire.call(stub.RepairRecords, spb.RepairRecordsRequest(objects=[bad]), 10)


def test_check_finds_a_torn_transaction(tmp_path):
    """A transaction whose row names an object that has no revision at its tid on any
    copy (torn: here the revision was removed from the only copy) is reported
    incomplete, and not repairable; a sound database reports nothing."""
    c = LocalCluster(str(tmp_path / "torn"), storages=2, replicas=0, partitions=2, node_timeout_s=3.0)
    c.start()
    try:
        storage = c.open_storage(local_reads=False)
        x, y = storage.new_oid(), storage.new_oid()
        tid = commit(storage, {x: b"x", y: b"y"})
        storage.close()
        assert neoctl(c, "--json", "check")["ok"] is True
        holder = {int.from_bytes(x, "big") % 2: nid for nid, row in letters(c).items()
                  for p, ch in enumerate(row) if ch == "U"}[int.from_bytes(x, "big") % 2]
        index = {nid: i for i, nid in storage_ids(c).items()}[holder]
        c.kill_master()
        c.kill_storage(index)
        kv = LMDBStore(c.storage_dir(index))
        with kv.write() as txn:
            txn.delete("obj", PARTITION.pack(int.from_bytes(x, "big") % 2) + x + tid)
        kv.sync()
        kv.close()
        c.start_master()
        c.start_storage(index)
        c.wait_state("RUNNING")
        report = neoctl(c, "--json", "check", "--repair", "--yes", status=1)
        torn = [pr for part in report["partitions"] for pr in part["problems"] if pr["incomplete"]]
        assert [(pr["oid"], pr["tid"]) for pr in torn] == [(f"0x{x.hex()}", f"0x{tid.hex()}")]
        assert report["remaining"] == 1
        text = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", c.path, "check"],
                              capture_output=True, text=True, timeout=120)
        assert text.returncode == 1 and "is incomplete (torn)" in text.stdout
    finally:
        c.stop()
