"""``neoctl pack``: old revisions and unreachable objects go, what a snapshot at TID sees stays."""
import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB import POSException

from tests.cluster_helpers import neoctl


def test_pack_to_a_tid_keeps_its_snapshot_and_collects_garbage(cluster):
    db = ZODB.DB(cluster.open_storage())
    conn = db.open()
    root = conn.root()
    root["kept"] = PersistentMapping(v=0)
    root["garbage"] = PersistentMapping(v=-1)
    transaction.commit()
    garbage = root["garbage"]._p_oid
    for v in range(1, 4):
        root["kept"]["v"] = v
        transaction.commit()
    middle = root["kept"]._p_serial              # the revision with v == 3
    del root["garbage"]
    root["kept"]["v"] = 4
    transaction.commit()
    oid = root["kept"]._p_oid
    storage = db.storage
    assert len(storage.history(oid, 10)) == 5

    asked = neoctl(cluster, "pack", middle.hex(), status=1)       # no terminal, no --yes: nothing changes
    assert f"0x{middle.hex()}" in asked and "--yes" in asked
    assert len(storage.history(oid, 10)) == 5
    report = neoctl(cluster, "--json", "pack", middle.hex(), "--yes")
    assert report["packed_to"] == "0x" + middle.hex() and report["revisions_removed"] >= 3
    storage._cache.clear()
    history = [h["tid"] for h in storage.history(oid, 10)]
    assert history[-1] == middle and len(history) == 2       # v == 3 (seen at TID) and v == 4
    assert storage.loadSerial(garbage, storage.history(garbage, 1)[0]["tid"])  # still referenced at TID

    out = neoctl(cluster, "--yes", "pack")                   # to the last tid: garbage goes
    assert "revision(s) removed" in out
    storage._cache.clear()
    with pytest.raises(POSException.POSKeyError):
        storage.load(garbage)
    assert len(storage.history(oid, 10)) == 1
    err = neoctl(cluster, "pack", middle.hex(), "-y", status=1)  # back to an earlier tid: refused
    assert "already packed" in err
    conn.close()
    db.close()


def test_pack_refuses_bad_tids(cluster):
    assert "16 hex digits" in neoctl(cluster, "pack", "nothex", status=1)
    assert "after the last committed transaction" in neoctl(cluster, "pack", "7fffffffffffffff",
                                                            status=1)
