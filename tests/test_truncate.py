"""``neoctl truncate TID``: the cluster as of TID on every node, clients see it at once,
new commits never reuse a tid, and a transaction committing meanwhile is not committed."""
import time

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB import POSException

from neoarray.errors import NeoError
from tests.cluster_helpers import neoctl


@pytest.fixture
def mapping(cluster):
    """A database whose root holds ``m = PersistentMapping(v=0)``, committed:
    ``(db, conn, oid of m)``; closed after the test."""
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    conn.root()["m"] = PersistentMapping(v=0)
    transaction.commit()
    yield db, conn, conn.root()["m"]._p_oid
    conn.close()
    db.close()


def _commit_values(root, values):
    tids = []
    for v in values:
        root["m"]["v"] = v
        transaction.commit()
        tids.append(root["m"]._p_serial)
    return tids


def _history(storage, oid):
    storage._cache.clear()
    return [h["tid"] for h in storage.history(oid, 100)]


def _wait_value(conn, value, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        transaction.begin()
        try:
            if conn.root()["m"]["v"] == value:
                return
        except (POSException.POSKeyError, NeoError):
            pass       # reconnecting
        assert time.monotonic() < deadline, f"value {value} not seen within {timeout_s} s"
        time.sleep(0.1)


def test_truncate_keeps_the_database_as_of_tid_on_every_node(cluster, mapping):
    db, conn, oid = mapping
    root = conn.root()
    tids = _commit_values(root, range(1, 6))
    keep = tids[1]                                       # v == 2
    root["late"] = PersistentMapping()                   # an object created after TID
    transaction.commit()
    last = root["late"]._p_serial
    late_oid = root["late"]._p_oid

    asked = neoctl(cluster, "truncate", keep.hex(), status=1)      # no terminal, no --yes: nothing changes
    assert "4 transaction(s) committed after" in asked and "--yes" in asked
    assert neoctl(cluster, "--json", "print", "ids")["last_tid"] == "0x" + last.hex()
    assert max(_history(db.storage, oid)) > keep

    out = neoctl(cluster, "--json", "truncate", keep.hex(), "--yes")
    assert out["truncated_to"] == "0x" + keep.hex() and out["last_tid_before"] == "0x" + last.hex()
    assert out["transactions_removed"] >= 4 and out["revisions_removed"] >= 4

    _wait_value(conn, 2)                                  # the same connection: caches dropped
    assert "late" not in conn.root()
    storage = db.storage
    assert max(_history(storage, oid)) == keep
    with pytest.raises(POSException.POSKeyError):
        storage.load(late_oid)
    assert neoctl(cluster, "--json", "print", "ids")["last_tid"] == "0x" + keep.hex()
    assert [t.tid for t in storage.iterator(p64_after(keep))] == []

    conn.root()["m"]["v"] = 10                            # commits go on, with new tids
    transaction.commit()
    new = conn.root()["m"]._p_serial
    assert new > last
    report = neoctl(cluster, "--json", "check")            # replicas identical after it
    assert report["ok"], report
    assert _history(storage, oid)[:2] == [new, keep]


def p64_after(tid):
    return (int.from_bytes(tid, "big") + 1).to_bytes(8, "big")


def test_a_transaction_voted_before_truncate_is_not_committed(cluster, mapping):
    db, conn, oid = mapping
    keep = conn.root()["m"]._p_serial
    conn.root()["m"]["v"] = 1
    transaction.commit()
    storage = db.storage

    t = transaction.Transaction()
    storage.tpc_begin(t)
    serial = _history(storage, oid)[0]
    data, _ = storage.load(oid)
    storage.store(oid, serial, data, "", t)
    storage.tpc_vote(t)
    neoctl(cluster, "truncate", keep.hex(), "--yes")
    with pytest.raises((POSException.StorageError, NeoError)) as err:
        storage.tpc_finish(t)
    assert "not committed" in str(err.value) or "unknown transaction" in str(err.value)
    storage.tpc_abort(t)
    assert _history(storage, oid) == [keep]
    _wait_value(conn, 0)
    conn.root()["m"]["v"] = 5                            # the object is not left locked
    transaction.commit()
    assert _history(storage, oid)[0] > keep


def test_truncate_refusals_change_nothing(cluster, mapping):
    db, conn, oid = mapping
    tids = _commit_values(conn.root(), range(1, 4))
    storage = db.storage
    before = _history(storage, oid)

    assert "16 hex digits" in neoctl(cluster, "truncate", "xyz", status=1)
    assert "after the last committed" in neoctl(cluster, "truncate", "7fffffffffffffff", status=1)
    neoctl(cluster, "pack", tids[1].hex(), "--no-gc", "--yes")
    assert "packed to the later" in neoctl(cluster, "truncate", tids[0].hex(), "--yes", status=1)
    assert _history(storage, oid) == [h for h in before if h >= tids[1]]

    cluster.kill_storage(1)
    deadline = time.monotonic() + 30
    while "DOWN" not in neoctl(cluster, "print", "node"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "not running" in neoctl(cluster, "truncate", tids[1].hex(), "--yes", status=1)
    assert _history(storage, oid)[0] == tids[-1]
