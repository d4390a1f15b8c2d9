"""``neoarray import`` on real clusters of processes, run as a user runs it (a
subprocess): a FileStorage with metadata, undo records and blobs is copied whole,
survives a ``kill -9`` of the import at a random transaction, refuses a foreign
target, and ``--follow`` picks up what the source commits after it started."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import ZODB

from neoarray.importing.core import ImportRefused, start_after
from neoarray.importing.core import differences as digest_differences
from tests.conftest import running_cluster
from tests.import_helpers import append, history, make_history, open_filestorage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_command(source, blob_dir, *target, extra=()):
    return [sys.executable, "-m", "neoarray.cli", "import", str(source), "--blob-dir", str(blob_dir),
            *target, *extra]


def run_import(*args, status=0, **kw):
    out = subprocess.run(import_command(*args, **kw), capture_output=True, text=True, timeout=300,
                         cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
    assert out.returncode == status, out.stdout + out.stderr
    return out.stderr


def target_last_tid(storage) -> bytes:
    storage.sync()
    return storage.lastTransaction()


def assert_same_history(fs_path, blob_dir, storage):
    source = open_filestorage(fs_path, blob_dir, read_only=True)
    try:
        expected = history(source)
    finally:
        source.close()
    got = history(storage)
    assert [t[0] for t in got] == [t[0] for t in expected]
    for mine, theirs in zip(expected, got):
        assert mine == theirs, f"transaction 0x{mine[0].hex()} differs"
    return expected


@pytest.fixture
def source(tmp_path):
    fs, blobs = tmp_path / "Data.fs", tmp_path / "blobs"
    tids = make_history(fs, blobs, transactions=60, blob_bytes=200_000)
    return fs, blobs, tids


def test_an_import_killed_at_a_random_transaction_and_run_again_copies_the_whole_history(cluster, source):
    fs, blobs, tids = source
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"NEOARRAY_SEED={seed}")
    kill_after = tids[random.Random(seed).randrange(len(tids) // 5, len(tids) // 2)]
    target = ("-a", cluster.address, "-c", cluster.cluster)
    vote_then_die(cluster, fs, blobs)
    watcher = cluster.open_storage()
    try:
        proc = subprocess.Popen(import_command(fs, blobs, *target), cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while target_last_tid(watcher) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline, "the import did not reach the transaction to kill it at"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        interrupted_at = target_last_tid(watcher)
        assert interrupted_at in tids, "the target's last transaction is one of the source's"
        print(f"killed after 0x{interrupted_at.hex()} ({tids.index(interrupted_at) + 1}/{len(tids)})")
        again = run_import(fs, blobs, *target)
        assert "continuing after it" in again and f"0x{interrupted_at.hex()}" in again, again
        assert target_last_tid(watcher) == tids[-1]
    finally:
        watcher.close()
    with open(cluster.log_path("master")) as f:
        assert f"a restore takes again tid 0x{tids[0].hex()}" in f.read()
    reader = cluster.open_storage()
    try:
        copied = assert_same_history(fs, blobs, reader)
        assert sum(1 for t in copied for r in t[5] if r[3] is not None) >= 2      # undo back-pointers
        assert sum(1 for t in copied for r in t[5] if r[4] is not None) >= 10     # blobs
    finally:
        reader.close()


def vote_then_die(cluster, fs, blobs):
    """A process that restores the source's first transaction, votes it and dies
    before tpc_finish: the master handed its tid out, the next import takes it again."""
    code = ("import os, sys; from ZODB.FileStorage import FileStorage; from neoarray.client import NeoStorage\n"
            "src = FileStorage(sys.argv[3], read_only=True, blob_dir=sys.argv[4])\n"
            "target = NeoStorage(sys.argv[1], sys.argv[2])\n"
            "txn = next(iter(src.iterator()))\n"
            "target.tpc_begin(txn, txn.tid, txn.status)\n"
            "for r in txn:\n"
            "    target.restore(r.oid, r.tid, r.data, '', r.data_txn, txn)\n"
            "target.tpc_vote(txn)\n"
            "os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code, cluster.address, cluster.cluster, str(fs), str(blobs)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr


def test_follow_picks_up_a_new_source_transaction_and_a_foreign_target_is_refused(tmp_path, source):
    fs, blobs, tids = source
    for cluster in running_cluster(tmp_path / "tls-cluster", storages=1, tls=True):
        target = ("--dir", cluster.path)
        proc = subprocess.Popen(import_command(fs, blobs, *target, extra=("--follow", "--poll-s", "0.2")),
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        watcher = cluster.open_storage()
        try:
            wait_for(watcher, tids[-1], proc)
            new_tid = append(fs, blobs, "late", "committed after the import started")
            wait_for(watcher, new_tid, proc)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "caught up at" in err and "stopping after the transaction in progress" in err, err
            assert_same_history(fs, blobs, watcher)
            # the application commits to the cluster: it is no longer an import of the source
            db = ZODB.DB(cluster.open_storage())
            with db.transaction() as conn:
                conn.root()["items"]["mine"] = 1
            db.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            watcher.close()
        err = run_import(fs, blobs, *target, status=1)
        assert "the target cluster is not empty" in err and "has no transaction with that tid" in err, err
        assert "neoarray cluster up NEWDIR" in err, err


def wait_for(storage, tid, proc, timeout_s=120.0):
    """Wait until ``storage``'s last transaction is ``tid``, while ``proc`` runs."""
    deadline = time.monotonic() + timeout_s
    while target_last_tid(storage) != tid:
        if proc.poll() is not None:
            raise AssertionError(f"the import ended with status {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_start_of_an_import_is_decided_from_the_targets_first_and_last_transactions():
    z64, first, last = b"\0" * 8, b"\0" * 7 + b"\1", b"\0" * 7 + b"\5"
    assert start_after(z64, None, False, False) is None
    assert start_after(last, first, True, True) == last
    with pytest.raises(ImportRefused, match="has no transaction with that tid"):
        start_after(last, first, False, True)
    with pytest.raises(ImportRefused, match="holds transactions of its own"):
        start_after(last, first, True, False)


def test_a_transaction_differing_on_the_target_is_named_record_by_record():
    from neoarray.client.reads import RevisionDigest
    from neoarray.importing.core import RecordDigest, TransactionDigest

    a, b = b"\0" * 7 + b"\1", b"\0" * 7 + b"\2"

    class Meta:
        user_raw, description, extension = b"u", b"d", b""
        oids = (a, b)
    expected = TransactionDigest(b"\0" * 7 + b"\x09", b"u", b"d", b"", (RecordDigest(a, False, 11, None, None),
                                                                       RecordDigest(b, False, 12, None, 5)))
    same = {a: RevisionDigest(False, 11, None, None), b: RevisionDigest(False, 12, None, 5)}
    assert digest_differences(expected, Meta, same) == []
    assert "is not on the target" in digest_differences(expected, None, same)[0]
    bad = {a: RevisionDigest(False, 99, None, None), b: RevisionDigest(False, 12, None, 4)}
    found = digest_differences(expected, Meta, bad)
    assert len(found) == 2 and "data checksum" in found[0] and "blob of 5 bytes" in found[1]


def test_a_commit_finished_during_a_restore_is_acknowledged_after_it(tmp_path):
    """A restore holds its tid from tpc_begin; another client's commit finished
    meanwhile gets a later tid and is acknowledged only once the restore ended, so
    commits stay in tid order."""
    import threading
    import urllib.request

    import transaction
    from prometheus_client.parser import text_string_to_metric_families
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import newTid

    def finishing(address):
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as reply:
            text = reply.read().decode()
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "neoarray_master_transactions" and s.labels == {"state": "finishing"})

    for cluster in running_cluster(tmp_path / "cluster", metrics=True):
        db = ZODB.DB(cluster.open_storage())
        restorer = cluster.open_storage()
        try:
            tm = transaction.TransactionManager()
            root = db.open(tm).root()
            root["x"] = 0
            tm.commit()
            meta = TransactionMetaData(description="restored")
            restored_tid = newTid(restorer.lastTransaction())
            restorer.tpc_begin(meta, restored_tid, " ")
            restorer.restore(restorer.new_oid(), restored_tid, b"restored record", "", None, meta)
            order, tids = [], {}

            def commit():
                root["x"] = 1
                tm.commit()
                tids["commit"] = root._p_serial
                order.append("commit")
            writer = threading.Thread(target=commit)
            writer.start()
            master = cluster.metrics_addresses()["master"]
            deadline = time.monotonic() + 60
            while writer.is_alive() and finishing(master) < 1:     # the commit reached Finish
                assert time.monotonic() < deadline, "the commit never reached the master's Finish"
                time.sleep(0.05)
            # the commit waits at the master while the restore, with an earlier tid, is begun
            assert order == [] and writer.is_alive()
            restorer.tpc_vote(meta)
            tids["restore"] = restorer.tpc_finish(meta)
            order.append("restore")
            writer.join(60)
            # both acknowledged now (the two threads may record it in either order)
            assert sorted(order) == ["commit", "restore"]
            assert tids["restore"] == restored_tid < tids["commit"]
        finally:
            restorer.close()
            db.close()
