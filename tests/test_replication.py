"""Catch-up of OUT_OF_DATE cells: a storage node that was away copies what it missed.

Real processes on 127.0.0.1: a master and 2 storage nodes, replicas=1.  A node is
killed with SIGKILL, transactions are committed without it, it comes back, copies
(from the other node) until every cell is UP_TO_DATE, and then the other node is
killed: every revision must read back, identical, from the caught-up node alone.
"""
import os
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import transaction
import ZODB
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle

import neoarray.array as na
from neoarray.ids import Z64, p64, u64
from tests.cluster_helpers import letters, storage_ids, wait_cells
from tests.conftest import running_cluster

LARGE_BYTES = 5_000          # > DATA_INLINE_BYTES_MAX: the data goes to the ``data`` table


class Recorder:
    """Commits through the storage API and remembers every revision committed."""

    def __init__(self, storage):
        self.storage = storage
        self.serials: dict[bytes, bytes] = {}            # oid -> current serial
        self.revisions: dict[tuple[bytes, bytes], bytes] = {}   # (oid, tid) -> pickle

    def commit(self, values: dict) -> bytes:
        t = TransactionMetaData(description=b"replication test")
        self.storage.tpc_begin(t)
        pickles = {oid: zodb_pickle(MinPO(v)) for oid, v in values.items()}
        for oid, data in pickles.items():
            self.storage.store(oid, self.serials.get(oid, Z64), data, "", t)
        self.storage.tpc_vote(t)
        tid = self.storage.tpc_finish(t)
        for oid, data in pickles.items():
            self.serials[oid] = tid
            self.revisions[(oid, tid)] = data
        return tid

    def new(self, count: int, size: int = 0, tag: str = "v") -> list[bytes]:
        oids = [self.storage.new_oid() for _ in range(count)]
        self.commit({oid: _value(oid, tag, size) for oid in oids})
        return oids

    def modify(self, oids, size: int = 0, tag: str = "m") -> bytes:
        return self.commit({oid: _value(oid, tag, size) for oid in oids})


def _value(oid: bytes, tag: str, size: int):
    text = f"{tag}-{u64(oid)}-"
    return (text * (size // len(text) + 1))[:size].encode() if size else text


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def check_everything_reads_back(cluster, rec: Recorder, arrays: dict) -> None:
    """Every recorded revision (current ones, and older ones through loadSerial,
    loadBefore and history) and every array reads back identically."""
    s = cluster.open_storage()
    try:
        for oid, serial in rec.serials.items():
            data, tid = s.load(oid)
            assert (data, tid) == (rec.revisions[(oid, serial)], serial)
        for (oid, tid), data in rec.revisions.items():
            assert s.loadSerial(oid, tid) == data
            data_before, serial, _ = s.loadBefore(oid, p64(u64(tid) + 1))
            assert (data_before, serial) == (data, tid)
            assert tid in {h["tid"] for h in s.history(oid, size=100)}
        db = ZODB.DB(s)
        conn = db.open()
        for name, expected in arrays.items():
            np.testing.assert_array_equal(conn.root()[name][:], expected)
        conn.close()
    finally:
        s.close()


def commit_array(cluster, name: str, values: np.ndarray) -> None:
    db = ZODB.DB(cluster.open_storage())
    try:
        conn = db.open()
        root = conn.root()
        if name not in root:
            root[name] = na.zeros(values.shape, dtype=values.dtype, chunks=(64,))
        root[name][:] = values
        transaction.commit()
        conn.close()
    finally:
        db.close()


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path / "cluster", storages=2, replicas=1, node_timeout_s=2.0)


def test_returned_node_catches_up_and_serves_alone(cluster):
    ids = storage_ids(cluster)
    s = cluster.open_storage()
    rec = Recorder(s)
    small = rec.new(8)
    large = rec.new(6, LARGE_BYTES)
    rec.modify(small[:4])
    arrays = {"a": np.arange(500, dtype="f8")}
    commit_array(cluster, "a", arrays["a"])

    cluster.kill_storage(0)
    wait_cells(cluster, ids[0], "OOOO")
    rec.modify(small[2:6])
    rec.modify(large[:3], LARGE_BYTES, "m")
    rec.new(5)
    rec.new(3, LARGE_BYTES, "n")
    arrays["a"] = arrays["a"] * 2
    commit_array(cluster, "a", arrays["a"])
    arrays["b"] = np.linspace(0, 1, 300)
    commit_array(cluster, "b", arrays["b"])

    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU")
    rec.modify(small[:2], tag="after")      # a caught-up cell takes commits as usual

    log_path = cluster.log_path(cluster.storage_name(0))
    offset = os.path.getsize(log_path)
    cluster.kill_storage(0)                 # lost again: the next catch-up starts where the last ended
    wait_cells(cluster, ids[0], "OOOO")
    rec.modify(small[4:8], tag="second")
    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU")
    with open(log_path) as f:
        f.seek(offset)
        second = f.read()
    starts = re.findall(r"catch-up from tid 0x([0-9a-f]+) to", second)
    assert starts and all(int(t, 16) > 0 for t in starts), second
    s.close()

    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    check_everything_reads_back(cluster, rec, arrays)
    log = read_text(cluster.log_path(cluster.storage_name(0)))
    assert "catch-up from tid" in log and "ends:" in log


def persisted_progress(path: str) -> list[dict]:
    """The catch-up progress a (stopped) node persisted, read in another process
    (this one has the environment open for local reads)."""
    code = ("import sys, pickle; from neoarray.kv import LMDBStore; from storage_node.backend import Backend; "
            "from storage_node.replication import load_progress; b = Backend(LMDBStore(sys.argv[1])); "
            "sys.stdout.buffer.write(pickle.dumps([load_progress(b, p) for p in range(b.partitions)]))")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=60, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    return pickle.loads(out.stdout)


def _pass_bytes(text: str) -> int:
    return sum(int(b) for b in re.findall(r"catch-up to tid 0x[0-9a-f]+ ends: \d+ records \((\d+) bytes\)", text))


def test_catch_up_resumes_after_kill_keeps_writes_and_honours_the_rate(cluster):
    ids = storage_ids(cluster)
    s = cluster.open_storage()
    rec = Recorder(s)
    base = rec.new(6, LARGE_BYTES)
    cluster.kill_storage(0)
    wait_cells(cluster, ids[0], "OOOO")
    for k in range(6):                       # ~600 kB the returning node misses
        rec.new(20, LARGE_BYTES, f"down{k}")
    rec.modify(base, LARGE_BYTES, "down")

    rate = 150_000
    slow = ("--replication-bytes-per-s", str(rate), "--replication-batch-records-max", "4",
            "--replication-batch-bytes-max", "20000")
    cluster.start_storage(0, args=slow)
    log_path = cluster.log_path(cluster.storage_name(0))
    deadline = time.monotonic() + 30
    while "catch-up from tid" not in read_text(log_path):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    during = rec.new(4, LARGE_BYTES, "during")       # writes while the node copies
    rec.modify(base[:3], LARGE_BYTES, "during")      # older revisions missing there: no conflict
    time.sleep(1.0)
    assert "O" in letters(cluster)[ids[0]], "the copy should not be over yet"
    cluster.kill_storage(0)

    progress = persisted_progress(cluster.storage_dir(0))
    assert any(st["pass_until"] is not None or st["done"] != Z64 for st in progress), progress

    offset = os.path.getsize(log_path)
    started = time.monotonic()
    cluster.start_storage(0, args=slow)
    wait_cells(cluster, ids[0], "UUUU")
    elapsed = time.monotonic() - started
    with open(log_path) as f:
        f.seek(offset)
        resumed = f.read()
    assert "(resuming)" in resumed
    copied = _pass_bytes(resumed)
    assert copied > 0
    assert elapsed >= copied / rate, (elapsed, copied)
    rec.modify(during, LARGE_BYTES, "final")
    s.close()

    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    check_everything_reads_back(cluster, rec, {})


def test_replication_rate_changes_while_the_node_copies(cluster):
    """A copy started at 2 kB/s (hours for what was missed) finishes once the operator
    lifts the rate with ``neoctl set replication-rate 0``; the rate survives in the
    master and is reported per node."""
    from tests.cluster_helpers import neoctl
    ids = storage_ids(cluster)
    s = cluster.open_storage()
    rec = Recorder(s)
    rec.new(4, LARGE_BYTES)
    cluster.kill_storage(0)
    wait_cells(cluster, ids[0], "OOOO")
    for k in range(4):
        rec.new(20, LARGE_BYTES, f"down{k}")          # ~400 kB to copy: 200 s at 2 kB/s
    cluster.start_storage(0, args=("--replication-bytes-per-s", "2000",
                                   "--replication-batch-bytes-max", "20000"))
    log_path = cluster.log_path(cluster.storage_name(0))
    deadline = time.monotonic() + 30
    while "catch-up from tid" not in read_text(log_path):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    assert "O" in letters(cluster)[ids[0]], "at 2 kB/s the copy cannot be over yet"

    out = neoctl(cluster, "--json", "set", "replication-rate", "0", f"S{ids[0]}")
    assert out["rates"] == {f"S{ids[0]}": 0} and out["default"] is None
    wait_cells(cluster, ids[0], "UUUU", timeout_s=60)

    out = neoctl(cluster, "--json", "set", "replication-rate", "5M")
    assert out["rates"] == {f"S{n}": 5 << 20 for n in ids.values()} and out["default"] == 5 << 20
    assert "nodes joining later: 5242880 bytes/s" in neoctl(cluster, "set", "replication-rate", "5M")
    assert "not a rate" in neoctl(cluster, "set", "replication-rate", "fast", status=1)
    assert "not a storage node" in neoctl(cluster, "set", "replication-rate", "1K", "S99", status=1)
    assert "takes one value" in neoctl(cluster, "set", "replicas", "1", "S1", status=2)
    s.close()
    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    check_everything_reads_back(cluster, rec, {})
