"""Existing ZODB tooling works on neoarray unchanged, run as operators run it (the
console scripts, in subprocesses, against a real cluster): ``zodbconvert`` from a
FileStorage with blobs into neoarray (also ``--incremental``) and back into a new
FileStorage, the same history all along; ``zodbpack`` on a ``<neoarray>`` config.
(``zodbconvert`` and ``zodbpack`` come with RelStorage: the ``test`` extra.)"""
import os
import subprocess
import sys

import pytest
import transaction
import ZODB

from tests.conftest import running_cluster
from tests.import_helpers import append, history, make_history, open_filestorage

BIN = os.path.dirname(sys.executable)


def script(name: str, config_path, *args):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[test]' (RelStorage)")
    out = subprocess.run([path, *args, str(config_path)], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stderr


def neoarray_section(cluster, cache_dir, role: str = "") -> str:
    return (f"<neoarray {role}>\n  master {cluster.masters}\n  cluster {cluster.cluster}\n"
            f"  blob-cache-dir {cache_dir}\n</neoarray>\n")


def filestorage_section(path, blob_dir, role: str) -> str:
    return f"<filestorage {role}>\n  path {path}\n  blob-dir {blob_dir}\n</filestorage>\n"


@pytest.fixture(scope="module")
def tools_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("tools") / "cluster", storages=1)


def test_zodbconvert_copies_a_filestorage_into_neoarray_and_back_with_blobs(tools_cluster, tmp_path):
    fs, blobs = tmp_path / "Data.fs", tmp_path / "blobs"
    tids = make_history(fs, blobs, transactions=15, blob_bytes=50_000)
    into = tmp_path / "into.conf"
    into.write_text("%import neoarray\n" + filestorage_section(fs, blobs, "source")
                    + neoarray_section(tools_cluster, tmp_path / "cache-in", "destination"))
    script("zodbconvert", into)
    tids.append(append(fs, blobs, "late", "for --incremental"))
    script("zodbconvert", into, "--incremental")
    back = tmp_path / "back.fs"
    out = tmp_path / "out.conf"
    out.write_text("%import neoarray\n" + neoarray_section(tools_cluster, tmp_path / "cache-out", "source")
                   + filestorage_section(back, tmp_path / "back-blobs", "destination"))
    script("zodbconvert", out)
    source = open_filestorage(fs, blobs, read_only=True)
    returned = open_filestorage(back, tmp_path / "back-blobs", read_only=True)
    neo = tools_cluster.open_storage(blob_cache_dir=str(tmp_path / "cache-check"))
    try:
        expected = history(source)
        assert [t[0] for t in expected] == tids
        assert history(neo) == expected
        assert history(returned) == expected
    finally:
        neo.close()
        source.close()
        returned.close()


def test_zodbpack_packs_a_neoarray_storage_from_its_zconfig(tools_cluster, tmp_path):
    db = ZODB.DB(tools_cluster.open_storage())
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()["packed"] = 0
    tm.commit()
    for i in range(1, 5):
        conn.root()["packed"] = i
        tm.commit()
    oid = conn.root()._p_oid
    assert len(db.storage.history(oid, size=10)) >= 5
    conn.close()
    db.close()
    config = tmp_path / "pack.conf"
    config.write_text("%import neoarray\n" + neoarray_section(tools_cluster, tmp_path / "cache"))
    script("zodbpack", config, "--days", "0")
    db = ZODB.DB(tools_cluster.open_storage())
    try:
        assert len(db.storage.history(oid, size=10)) == 1
        with db.transaction() as conn:
            assert conn.root()["packed"] == 4
    finally:
        db.close()
