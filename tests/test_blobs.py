"""ZODB blobs on a real cluster of processes (1 master, 2 storage nodes, replicas=1):
cold caches, chunked transfers with bounded memory, both replicas, check, pack and
catch-up by replication."""
import os
import subprocess
import sys
import tracemalloc

import pytest
import transaction
import ZODB
import ZODB.blob
from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.serialize import referencesf

from neoarray import wire
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from tests.cluster_helpers import neoctl, storage_ids, storage_of_index, wait_cells

CHUNK_BYTES = 64 << 10


def payload(nbytes: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(nbytes))


def write_blob(db, name: str, data: bytes):
    conn = db.open()
    conn.root()[name] = ZODB.blob.Blob(data)
    transaction.commit()
    oid = conn.root()[name]._p_oid
    conn.close()
    return oid, db.storage.load(oid)[1]     # the blob is a ghost after its commit


def chunks_on(cluster, index: int, oid: bytes, tid: bytes) -> list[bytes]:
    """The chunks of the blob of ``(oid, tid)`` as storage ``index`` holds them."""
    _, address = storage_of_index(cluster, index)
    stub = srpc.StorageStub(wire.open_channel(address, cluster.cluster))
    first = wire.call(stub.LoadBlobChunk, spb.LoadBlobChunkRequest(oid=oid, serial=tid, index=0), 10)
    assert first.status == spb.FOUND, first
    return [first.data] + [wire.call(stub.LoadBlobChunk, spb.LoadBlobChunkRequest(oid=oid, serial=tid, index=i),
                                     10).data for i in range(1, first.blob_chunks)]


def test_a_blob_written_by_one_client_is_read_by_another_from_a_cold_cache(cluster, tmp_path):
    writer = cluster.open_storage(blob_cache_dir=str(tmp_path / "w"))
    db = ZODB.DB(writer)
    data = payload(300_000)
    oid, tid = write_blob(db, "b", data)
    reader = cluster.open_storage(blob_cache_dir=str(tmp_path / "r"))
    try:
        assert not os.path.exists(reader._blob_cache.filename(oid, tid))     # cold
        with reader.openCommittedBlobFile(oid, tid) as f:
            assert f.read() == data
        path = reader.loadBlob(oid, tid)
        assert path.startswith(str(tmp_path / "r")) and not os.access(path, os.W_OK) or os.geteuid() == 0
        # another process sharing the reader's cache directory finds the file there (the
        # same inode: not downloaded again)
        inode = os.stat(path).st_ino
        code = ("import sys; from neoarray.client import NeoStorage; "
                "s = NeoStorage(sys.argv[1], sys.argv[2], blob_cache_dir=sys.argv[3]); "
                "print(s.loadBlob(bytes.fromhex(sys.argv[4]), bytes.fromhex(sys.argv[5]))); s.close()")
        out = subprocess.run([sys.executable, "-c", code, cluster.address, cluster.cluster, str(tmp_path / "r"),
                              oid.hex(), tid.hex()], capture_output=True, text=True, timeout=120, check=False,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == path and os.stat(path).st_ino == inode
        # a third client sharing the reader's cache directory finds it there
        sharing = cluster.open_storage(blob_cache_dir=str(tmp_path / "r"), read_only=True)
        try:
            assert sharing._blob_cache.lookup(oid, tid) == path
            t = TransactionMetaData()       # and, read-only, it cannot write blobs
            with pytest.raises(POSException.ReadOnlyError):
                sharing.storeBlob(oid, tid, b"data", path, "", t)
        finally:
            sharing.close()
    finally:
        reader.close()
        db.close()


def test_a_blob_of_many_chunks_round_trips_with_bounded_memory(cluster, tmp_path):
    chunks = 40
    data = payload(chunks * CHUNK_BYTES - 1234, seed=3)     # 39 whole chunks and a partial one
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    storage = cluster.open_storage(blob_chunk_bytes=CHUNK_BYTES, blob_cache_dir=str(tmp_path / "w"))
    db = ZODB.DB(storage)
    try:
        # first a blob of a few chunks: the data plane's connections (a read buffer each,
        # as many as requests in flight) open and stay in the pool, modules are loaded
        warm_oid, warm_tid = write_blob(db, "warm", payload(12 * CHUNK_BYTES))
        conn = db.open()
        conn.root()["big"] = blob = ZODB.blob.Blob()
        with blob.open("w") as f, open(src, "rb") as s:
            while piece := s.read(1 << 20):
                f.write(piece)
        tracemalloc.start()
        transaction.commit()            # uploads the blob: chunk by chunk, a few in flight
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        oid = blob._p_oid
        tid = storage.load(oid)[1]
        conn.close()
        for index in (0, 1):            # on both replicas, in chunks of the size the client sent
            stored = chunks_on(cluster, index, oid, tid)
            assert len(stored) == chunks and {len(c) for c in stored[:-1]} == {CHUNK_BYTES}
            assert b"".join(stored) == data
        reader = cluster.open_storage(blob_cache_dir=str(tmp_path / "r"), blob_chunks_in_flight_max=2)
        try:
            reader.loadBlob(warm_oid, warm_tid)
            tracemalloc.start()
            path = reader.loadBlob(oid, tid)
            download_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            with open(path, "rb") as f:
                assert f.read() == data
        finally:
            reader.close()
        # memory: a few chunks (in flight, to 2 nodes), never the 2.5 MiB blob
        bound = 16 * CHUNK_BYTES
        assert upload_peak < bound and download_peak < bound, (upload_peak, download_peak, len(data))
        assert neoctl(cluster, "--json", "check")["ok"] is True
    finally:
        db.close()


def test_blob_chunks_are_on_both_replicas_check_is_clean_and_pack_frees_them(cluster, tmp_path):
    storage = cluster.open_storage(blob_chunk_bytes=CHUNK_BYTES, blob_cache_dir=str(tmp_path / "c"))
    db = ZODB.DB(storage)
    try:
        data = payload(3 * CHUNK_BYTES + 5)
        oid, tid = write_blob(db, "b", data)
        for index in (0, 1):
            assert b"".join(chunks_on(cluster, index, oid, tid)) == data
        report = neoctl(cluster, "--json", "check")
        assert report["ok"] is True and report["problems"] == 0
        conn = db.open()
        del conn.root()["b"]
        transaction.commit()
        conn.close()
        storage.pack_to_tid(storage.lastTransaction(), referencesf)
        for index in (0, 1):
            _, address = storage_of_index(cluster, index)
            stub = srpc.StorageStub(wire.open_channel(address, cluster.cluster))
            reply = wire.call(stub.LoadBlobChunk, spb.LoadBlobChunkRequest(oid=oid, serial=tid, index=0), 10)
            assert reply.status == spb.NO_OBJECT
    finally:
        db.close()


def test_a_returning_node_catches_up_blobs_and_serves_them_alone(cluster, tmp_path):
    ids = storage_ids(cluster)
    storage = cluster.open_storage(blob_chunk_bytes=CHUNK_BYTES, blob_cache_dir=str(tmp_path / "w"))
    db = ZODB.DB(storage)
    try:
        cluster.kill_storage(0)
        wait_cells(cluster, ids[0], "OOOO")
        data = payload(5 * CHUNK_BYTES + 17, seed=9)
        oid, tid = write_blob(db, "b", data)
    finally:
        db.close()
    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU")
    assert b"".join(chunks_on(cluster, 0, oid, tid)) == data
    cluster.kill_storage(1)
    wait_cells(cluster, ids[1], "OOOO")
    reader = cluster.open_storage(blob_cache_dir=str(tmp_path / "r"))
    try:
        with open(reader.loadBlob(oid, tid), "rb") as f:
            assert f.read() == data
    finally:
        reader.close()


def test_blob_cache_keys_of_zconfig_and_zodburi(cluster, tmp_path):
    import ZODB.config
    import zodburi

    from neoarray.client.config import parse_uri
    conf = f"""
    %import neoarray
    <zodb>
      <neoarray>
        master {cluster.address}
        cluster {cluster.cluster}
        blob-cache-dir {tmp_path / "zc"}
        blob-cache-size 3MB
      </neoarray>
    </zodb>
    """
    db = ZODB.config.databaseFromString(conf)
    try:
        assert db.storage._blob_cache.path == str(tmp_path / "zc")
        assert db.storage._blob_cache.bytes_max == 3 << 20
        oid, tid = write_blob(db, "b", b"through zconfig")
        assert os.path.exists(os.path.join(str(tmp_path / "zc"), db.storage._blob_cache.filename(oid, tid)))
    finally:
        db.close()
    kw, _ = parse_uri(f"neoarray://{cluster.address}/{cluster.cluster}?blob_dir=/tmp/b&blob_cache_size=1024")
    assert kw["blob_cache_dir"] == "/tmp/b" and kw["blob_cache_bytes_max"] == 1024
    factory, _ = zodburi.resolve_uri(f"neoarray://{cluster.address}/{cluster.cluster}"
                                     f"?blob_cache_dir={tmp_path / 'uri'}")
    storage = factory()
    try:
        assert storage._blob_cache.path == str(tmp_path / "uri") and not storage._blob_cache.owned
    finally:
        storage.close()
    assert os.path.isdir(tmp_path / "uri")          # a configured cache outlives the client


def test_blob_cache_prunes_least_recently_used_blobs_to_its_limit(tmp_path):
    from neoarray.client.blobs import PRUNE_TARGET_FRACTION, BlobCache
    # the writer's own limit is far away, so its background pruning cannot race the
    # marking below (it removed paths[0] first in some runs); the second process's view
    # prunes to 10 kB when asked
    cache = BlobCache(str(tmp_path / "c"), bytes_max=1 << 30)
    other = BlobCache(str(tmp_path / "c"), bytes_max=10_000)        # a second process's view
    for opened in (cache, other):   # each starts by pruning in the background: let it end
        opened._pruner.join()       # first (under load it ran after the writes below)
    try:
        paths = []
        for i in range(6):
            src = os.path.join(cache.temp_dir, f"s{i}")
            with open(src, "wb") as f:
                f.write(b"x" * 3000)
            paths.append(cache.put(i.to_bytes(8, "big"), b"\0" * 7 + b"\1", src))
            os.utime(paths[-1], (1000 + i, 1000 + i))
        os.utime(paths[0], None)                        # used just now: kept
        assert other.prune() <= 10_000 * PRUNE_TARGET_FRACTION
        kept = [os.path.exists(p) for p in paths]
        assert kept[0] and kept[-1] and not kept[1] and sum(kept) == 3
    finally:
        cache.close()
        other.close()
    owned = BlobCache(None)
    owned.close()
    assert not os.path.exists(owned.path)


def test_check_finds_a_rotten_blob_chunk_and_repair_copies_the_chunks(cluster, tmp_path):
    from neoarray.kv import LMDBStore
    from neoarray.records import blob_chunk_key
    storage = cluster.open_storage(blob_chunk_bytes=CHUNK_BYTES, blob_cache_dir=str(tmp_path / "c"),
                                   local_reads=False)
    db = ZODB.DB(storage)
    data = payload(3 * CHUNK_BYTES + 11, seed=5)
    try:
        oid, tid = write_blob(db, "b", data)
    finally:
        db.close()
    _, address = storage_of_index(cluster, 0)
    stub = srpc.StorageStub(wire.open_channel(address, cluster.cluster))
    key_tid = wire.call(stub.LoadBlobChunk, spb.LoadBlobChunkRequest(oid=oid, serial=tid, index=0), 10).blob_tid
    cluster.kill_master()           # as tests/test_check.py: no cell goes OUT_OF_DATE
    cluster.kill_storage(0)
    cluster.kill_storage(1)
    kv = LMDBStore(cluster.storage_dir(1))
    partition = int.from_bytes(oid, "big") % 4
    with kv.write() as txn:
        key = blob_chunk_key(partition, oid, key_tid, 1)
        value = bytearray(txn.get("blob", key))
        value[-1] ^= 0xFF
        txn.put("blob", key, bytes(value))
        txn.delete("blob", blob_chunk_key(partition, oid, key_tid, 2))
    kv.sync()
    kv.close()
    cluster.start()
    victim = f"S{cluster.storage_id(1)}"
    report = neoctl(cluster, "--json", "check", status=1)
    problems = [pr for part in report["partitions"] for pr in part["problems"]]
    assert len(problems) == 1 and problems[0]["corrupt"] == [victim], problems
    repaired = neoctl(cluster, "--json", "check", "--repair", "--yes")
    assert repaired["ok"] is True or repaired.get("remaining", 0) == 0, repaired
    assert neoctl(cluster, "--json", "check")["ok"] is True
    assert b"".join(chunks_on(cluster, 1, oid, tid)) == data


def test_a_storage_killed_before_a_blob_upload_costs_no_commit_and_catches_up(cluster, tmp_path):
    ids = storage_ids(cluster)
    storage = cluster.open_storage(blob_chunk_bytes=CHUNK_BYTES, blob_cache_dir=str(tmp_path / "w"))
    db = ZODB.DB(storage)
    data = payload(6 * CHUNK_BYTES + 3, seed=11)
    try:
        write_blob(db, "warm", b"the client knows both nodes")
        cluster.kill_storage(0)         # SIGKILL; the client still routes chunks to it
        oid, tid = write_blob(db, "b", data)
    finally:
        db.close()
    wait_cells(cluster, ids[0], "OOOO")
    cluster.start_storage(0)
    wait_cells(cluster, ids[0], "UUUU")
    assert b"".join(chunks_on(cluster, 0, oid, tid)) == data
    assert neoctl(cluster, "--json", "check")["ok"] is True
