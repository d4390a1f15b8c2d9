"""Handles: pickling a stored array gives a small reference to its snapshot."""

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import transaction
import ZODB

import neoarray
import neoarray.array as na
from neoarray.array import handles
from neoarray.client import shared

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_UNPICKLE_AND_SUM = """
import pickle, sys
import neoarray
a = pickle.loads(sys.stdin.buffer.read())
print(neoarray.__file__)
print(repr(float(a.sum())), a.shape)
"""


def _commit(db, name, array):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()[name] = array
    tm.commit()
    return conn, tm


def _run_elsewhere(data: bytes) -> list[str]:
    """Unpickle ``data`` in a new Python process (this worktree's code) and sum it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", _UNPICKLE_AND_SUM], input=data,
                         capture_output=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().splitlines()


def test_handle_is_small_and_opens_the_same_snapshot_elsewhere(neo_db):
    a = na.zeros((10**15, 8), chunks=(1024, 8))
    a[:5000] = 1.0
    a[7 * 10**14, 3] = 5.0
    conn, tm = _commit(neo_db, "big", a)
    data = pickle.dumps(a)
    assert len(data) < 4096, len(data)
    assert b"BEGIN" not in data                  # credentials by reference (paths), never keys
    a[0, 0] = 100.0                              # a later commit changes the array
    tm.commit()
    file_name, total = _run_elsewhere(data)
    assert os.path.realpath(file_name).startswith(os.path.realpath(ROOT))
    assert total.startswith(repr(5000 * 8 + 5.0))
    here = pickle.loads(data)                     # in this process too: the old snapshot
    assert here[0, 0] == 1.0 and a[0, 0] == 100.0
    assert here.sum() == 5000 * 8 + 5.0
    assert pickle.loads(pickle.dumps(here))[0, 0] == 1.0      # a handle of a handle
    conn.close()


def test_handles_share_one_database_and_keep_to_their_thread(neo_db):
    a = na.asarray(np.arange(100.0), chunks=(10,))
    conn, _tm = _commit(neo_db, "a", a)
    data = pickle.dumps(a)
    first, second = pickle.loads(data), pickle.loads(data)
    assert first._p_jar is second._p_jar                  # one connection per snapshot and thread
    assert first._p_jar.db() is neo_db                    # this process's own database
    assert first._p_jar.before is not None                # read only, historical
    handle = handles.handle_of(a)
    assert pickle.loads(pickle.dumps(handle)) == handle
    conn.close()
    neo_db.close()                                        # as in another process: opened anew
    other = handle.open()
    assert other._p_jar.db() is not neo_db
    assert other._p_jar.db() is shared.shared_db(handle.source)    # one database per cluster
    np.testing.assert_array_equal(other[...], np.arange(100.0))


def test_uncommitted_changes_are_refused(neo_db):
    a = na.zeros(100, chunks=(10,))
    conn, tm = _commit(neo_db, "a", a)
    a[3] = 1.0
    with pytest.raises(na.ArrayHandleError, match="commit"):
        pickle.dumps(a)
    tm.abort()
    assert pickle.loads(pickle.dumps(a))[3] == 0.0
    b = conn.root()["b"] = na.zeros(10)        # not stored yet: a value
    assert pickle.loads(pickle.dumps(b))._p_jar is None
    conn.add(b)                                # added, never committed
    with pytest.raises(na.ArrayHandleError, match="uncommitted changes"):
        pickle.dumps(b)
    tm.abort()
    conn.close()


def test_detached_arrays_pickle_by_value_within_the_memory_limit():
    a = na.zeros((1000, 10), chunks=(100, 10), codec="zlib")
    a[::7] = np.arange(10.0)
    b = pickle.loads(pickle.dumps(a))
    assert b._p_jar is None and b.codec == ("zlib", 6)
    np.testing.assert_array_equal(b[...], a[...])
    np.testing.assert_array_equal(copy.deepcopy(a)[...], a[...])
    with na.configure(memory_bytes_max=50_000), pytest.raises(na.ArrayTooLargeError,
                                                              match="small handle"):
        pickle.dumps(a)                       # 10 chunks of 8000 bytes
    sparse = na.zeros((10**18,), chunks=(1000,))
    sparse[5] = 1.0
    assert pickle.loads(pickle.dumps(sparse))[5] == 1.0     # bounded by its stored chunks


def test_storing_in_zodb_is_unchanged(db):
    a = na.asarray(np.arange(50.0), chunks=(10,))
    _conn, _tm = _commit(db, "a", a)
    record, _serial = db.storage.load(a._p_oid)
    assert b"ArrayHandle" not in record and b"open_handle" not in record
    chunk = next(iter(a._tree.values()))
    assert b"neoarray.array.chunks" in db.storage.load(chunk._p_oid)[0]
    if hasattr(db.storage, "client_options"):
        assert len(pickle.dumps(a)) < 4096
    else:                                     # no cluster behind it: by value
        assert len(pickle.dumps(a)) > 50 * 8
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a))[...], np.arange(50.0))
    _conn.close()


def test_neoarray_is_imported_from_this_tree():
    assert os.path.realpath(neoarray.__file__).startswith(os.path.realpath(ROOT))


def test_tls_credentials_travel_as_paths(tmp_path):
    from tests.conftest import running_cluster
    fixture = running_cluster(tmp_path / "tls", partitions=2, tls=True)
    cluster = next(fixture)
    try:
        db = ZODB.DB(cluster.open_storage())
        conn, _tm = _commit(db, "a", na.asarray(np.arange(10.0), chunks=(4,)))
        data = pickle.dumps(conn.root()["a"])
        handle = handles.handle_of(conn.root()["a"])
        assert {"ca", "cert", "key"} <= set(handle.source)
        assert all(os.path.isfile(handle.source[k]) for k in ("ca", "cert", "key"))
        with open(handle.source["key"], "rb") as f:
            key = f.read()
        assert key.strip() and key.strip() not in data and b"PRIVATE KEY" not in data
        assert len(data) < 4096
        _file_name, total = _run_elsewhere(data)         # the other process reads the files
        assert total.startswith("45.0")
        conn.close()
        db.close()
    finally:
        fixture.close()
