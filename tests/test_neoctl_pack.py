"""``neoctl pack``: old revisions and unreachable objects go, what a snapshot at TID sees stays."""
import json
import subprocess
import sys

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB import POSException


def neoctl(cluster, *args):
    proc = subprocess.run([sys.executable, "-m", "neoarray.ctl", "--dir", cluster.path, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


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

    rc, out, err = neoctl(cluster, "--json", "pack", middle.hex())
    assert rc == 0, err
    report = json.loads(out)
    assert report["packed_to"] == "0x" + middle.hex() and report["revisions_removed"] >= 3
    storage._cache.clear()
    history = [h["tid"] for h in storage.history(oid, 10)]
    assert history[-1] == middle and len(history) == 2       # v == 3 (seen at TID) and v == 4
    assert storage.loadSerial(garbage, storage.history(garbage, 1)[0]["tid"])  # still referenced at TID

    rc, out, _ = neoctl(cluster, "pack")                     # to the last tid: garbage goes
    assert rc == 0 and "revision(s) removed" in out
    storage._cache.clear()
    with pytest.raises(POSException.POSKeyError):
        storage.load(garbage)
    assert len(storage.history(oid, 10)) == 1
    rc, _, err = neoctl(cluster, "pack", middle.hex())       # back to an earlier tid: refused
    assert rc == 1 and "already packed" in err
    conn.close()
    db.close()


def test_pack_refuses_bad_tids(cluster):
    rc, _, err = neoctl(cluster, "pack", "nothex")
    assert rc == 1 and "16 hex digits" in err
    rc, _, err = neoctl(cluster, "pack", "7fffffffffffffff")
    assert rc == 1 and "after the last committed transaction" in err
