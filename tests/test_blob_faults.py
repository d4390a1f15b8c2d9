"""A storage node killed (SIGKILL) while a large blob is being stored (1 master, 2
storage nodes, replicas=1): what was acknowledged is kept bit for bit.  If
``tpc_finish`` returned, the blob reads back from the surviving node, and from the
killed one alone once it is back and caught up; if the commit raised, the object's
previous revision and its blob are intact.  8 MiB in the default run, 100 MiB behind
the ``slow`` marker; the kill comes at a random moment within the time a first blob
of the same size took (``NEOARRAY_SEED`` replays it)."""
import hashlib
import os
import random
import threading
import time

import pytest
import transaction
import ZODB
import ZODB.blob

from tests.cluster_helpers import storage_ids, wait_cells

PIECE_BYTES = 1 << 20


def write_random_file(path, nbytes: int, rng: random.Random) -> str:
    """``nbytes`` random bytes at ``path``, piece by piece; their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for start in range(0, nbytes, PIECE_BYTES):
            piece = rng.randbytes(min(PIECE_BYTES, nbytes - start))
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(PIECE_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def commit_blob_from(conn, name: str, path) -> float:
    """Commit the file at ``path`` as the blob ``name`` of ``conn``'s root; seconds taken."""
    blob = conn.root().get(name)
    if blob is None:
        blob = conn.root()[name] = ZODB.blob.Blob()
    with blob.open("w") as out, open(path, "rb") as f:
        while piece := f.read(PIECE_BYTES):
            out.write(piece)
    started = time.monotonic()
    transaction.commit()
    return time.monotonic() - started


def blob_sha_from_new_client(cluster, oid, tmp_path, name: str) -> tuple[bytes, str]:
    """(current serial, sha256 of its blob) of ``oid`` read by a new client with a cold cache."""
    reader = cluster.open_storage(blob_cache_dir=str(tmp_path / name))
    try:
        _, serial = reader.load(oid)
        return serial, sha256_of(reader.loadBlob(oid, serial))
    finally:
        reader.close()


@pytest.mark.parametrize("blob_mib", [8, pytest.param(100, marks=pytest.mark.slow)])
def test_a_storage_killed_while_a_blob_is_stored_loses_nothing_acknowledged(cluster, tmp_path, blob_mib):
    seed = int(os.environ.get("NEOARRAY_SEED", random.randrange(1 << 30)))
    print(f"NEOARRAY_SEED={seed}")
    rng = random.Random(seed)
    ids = storage_ids(cluster)
    nbytes = blob_mib << 20
    db = ZODB.DB(cluster.open_storage(blob_cache_dir=str(tmp_path / "w")))
    try:
        conn = db.open()
        first_sha = write_random_file(tmp_path / "first.bin", nbytes, rng)
        took_s = commit_blob_from(conn, "b", tmp_path / "first.bin")        # the state before
        oid = conn.root()["b"]._p_oid
        first_serial = db.storage.load(oid)[1]
        second_sha = write_random_file(tmp_path / "second.bin", nbytes, rng)
        delay_s = rng.uniform(0.05, 0.95) * took_s
        killer = threading.Timer(delay_s, cluster.kill_storage, (0,))
        killer.start()
        try:
            commit_blob_from(conn, "b", tmp_path / "second.bin")
            committed = db.storage.load(oid)[1]
        except Exception as exc:  # noqa: BLE001 - the outcome a commit may have: checked below
            print(f"the commit raised {exc!r}")
            transaction.abort()
            committed = None
        killer.join()
        conn.close()
    finally:
        db.close()
    print(f"S{ids[0]} killed {delay_s:.3f} s into a commit of {blob_mib} MiB (the first took {took_s:.3f} s); "
          f"{'acknowledged' if committed else 'not acknowledged'}")
    serial, sha = blob_sha_from_new_client(cluster, oid, tmp_path, "r1")
    if committed is None:
        assert (serial, sha) == (first_serial, first_sha), "the previous state is intact"
        return
    assert (serial, sha) == (committed, second_sha), "the acknowledged blob reads back from the survivor"
    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU", timeout_s=120)
    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    assert blob_sha_from_new_client(cluster, oid, tmp_path, "r2") == (committed, second_sha), \
        "the killed node, back and caught up, serves the acknowledged blob alone"
