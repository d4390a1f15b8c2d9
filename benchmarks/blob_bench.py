"""Blobs and moving in: neoarray side by side with ZEO (a ``runzeo`` process on
127.0.0.1 over a FileStorage with a blob directory; its clients keep their own blob
cache, ``shared-blob-dir false``, as neoarray's clients do).

Figures, each the median of ``--reps`` repetitions, as throughputs (higher is better):

``blob_write_<size>``  MB/s: commits of one new blob of that size each (the file is
                       handed over with ``Blob.consumeFile``, so the time is the upload
                       and the commit).
``blob_read_<size>``   MB/s: a new client with an empty blob cache reads each blob whole
                       (``loadBlob`` and reading the file).
``import_txn``         transactions/s, ``import_mb`` MB/s: copying one generated
                       FileStorage (small records, a blob every 50 transactions) with
                       ``neoarray import`` into a new cluster, against ``zodbconvert``
                       (RelStorage's script: ``copyTransactionsFrom``) into a new ZEO
                       server and into a new neoarray cluster; each is the whole command,
                       process start included.

Rows: ``neoarray`` (``LocalCluster``, 1 storage node, replicas=0; blob bytes over its
data plane) and ``zeo``; the import rows are ``neoarray-import``,
``zodbconvert-neoarray`` and ``zodbconvert-zeo``.  Output: one JSON object per figure
on stdout (``{"bench", "storage", "value", "unit"}``), then ``{"summary": ...}`` with
the ratios neoarray/ZEO (> 1: neoarray faster).

Run::

    python benchmarks/blob_bench.py                      # 1 MiB and 100 MiB blobs, 2,000 transactions
    python benchmarks/blob_bench.py --quick              # 1 MiB and 8 MiB blobs, 200 transactions, 1 rep
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import transaction
import ZODB
import ZODB.blob
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

from benchmarks.zodb_bench import (
    _CHILDREN,
    _free_port,
    _kill_children,
    _on_sigterm,
    _wait_port,
)
from neoarray.cluster import LocalCluster

MIB = 1 << 20
PIECE_BYTES = MIB


def median(values):
    return statistics.median(values) if values else None


def random_file(path: str, nbytes: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.writelines(rng.randbytes(min(PIECE_BYTES, nbytes - start)) for start in range(0, nbytes, PIECE_BYTES))


# -- the peers --------------------------------------------------------------------------
class NeoPeer:
    name = "neoarray"

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.cluster = LocalCluster(os.path.join(workdir, "neo"), storages=1, replicas=0, partitions=4)

    def __enter__(self):
        self.cluster.start()
        return self

    def __exit__(self, *exc):
        self.cluster.stop()

    def storage(self, cache_dir: str):
        return self.cluster.open_storage(blob_cache_dir=cache_dir)

    def zconfig(self, cache_dir: str, role: str) -> str:
        return (f"%import neoarray\n<neoarray {role}>\n  master {self.cluster.address}\n"
                f"  cluster {self.cluster.cluster}\n  blob-cache-dir {cache_dir}\n</neoarray>\n")


class ZeoPeer:
    name = "zeo"

    def __init__(self, workdir: str):
        self.dir = os.path.join(workdir, "zeo")
        self.proc = None
        self.port = None

    def __enter__(self):
        os.makedirs(self.dir)
        self.port = _free_port()
        conf = os.path.join(self.dir, "zeo.conf")
        with open(conf, "w") as f:
            f.write(f"<zeo>\n  address 127.0.0.1:{self.port}\n</zeo>\n<filestorage 1>\n"
                    f"  path {self.dir}/Data.fs\n  blob-dir {self.dir}/blobs\n</filestorage>\n")
        log = os.path.join(self.dir, "zeo.log")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ZEO.runzeo", "-C", conf],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _CHILDREN.append(self.proc)
        _wait_port(self.port, self.proc, log)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def storage(self, cache_dir: str):
        from ZEO.ClientStorage import ClientStorage
        return ClientStorage(("127.0.0.1", self.port), blob_dir=cache_dir, shared_blob_dir=False, wait_timeout=30)

    def zconfig(self, cache_dir: str, role: str) -> str:
        return (f"<zeoclient {role}>\n  server 127.0.0.1:{self.port}\n  blob-dir {cache_dir}\n"
                f"  shared-blob-dir false\n</zeoclient>\n")


# -- blob write and read ----------------------------------------------------------------
def blob_rates(peer, workdir: str, nbytes: int, count: int, reps: int) -> tuple[list, list]:
    """([write MB/s per rep], [read MB/s per rep]) for ``count`` blobs of ``nbytes``."""
    source = os.path.join(workdir, f"source-{nbytes}.bin")
    if not os.path.exists(source):
        random_file(source, nbytes, nbytes)
    writes, reads = [], []
    for rep in range(reps):
        db = ZODB.DB(peer.storage(os.path.join(workdir, f"{peer.name}-w-{nbytes}-{rep}")))
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        refs, elapsed_s = [], 0.0
        for i in range(count):
            copy = os.path.join(workdir, f"copy-{peer.name}")
            shutil.copyfile(source, copy)
            blob = ZODB.blob.Blob()
            conn.root()[f"b{rep}-{i}"] = blob
            started = time.perf_counter()
            blob.consumeFile(copy)
            tm.commit()
            elapsed_s += time.perf_counter() - started
            refs.append(blob._p_oid)
        serials = [db.storage.load(oid)[1] for oid in refs]
        conn.close()
        db.close()
        writes.append(nbytes * count / MIB / elapsed_s)
        reader = peer.storage(os.path.join(workdir, f"{peer.name}-r-{nbytes}-{rep}"))
        try:
            started = time.perf_counter()
            for oid, serial in zip(refs, serials):
                with open(reader.loadBlob(oid, serial), "rb") as f:
                    while f.read(PIECE_BYTES):
                        pass
            reads.append(nbytes * count / MIB / (time.perf_counter() - started))
        finally:
            reader.close()
    return writes, reads


# -- import -------------------------------------------------------------------------------
def make_source(path: str, blob_dir: str, transactions: int, seed: int = 7) -> int:
    """A FileStorage of ``transactions`` transactions (a few small records each, a
    256 KiB blob every 50th); the bytes of its records and blobs."""
    rng = random.Random(seed)
    db = ZODB.DB(FileStorage(path, blob_dir=blob_dir))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    for i in range(transactions):
        holder = root.setdefault(f"h{i % 50}", PersistentMapping())
        holder[i] = PersistentMapping(text=rng.randbytes(rng.randrange(200, 2000)).hex())
        if i % 50 == 49:
            holder[f"blob{i}"] = ZODB.blob.Blob(rng.randbytes(256 << 10))
        tm.get().note(f"transaction {i}")
        tm.commit()
    conn.close()
    nbytes = 0
    for txn in db.storage.iterator():
        for r in txn:
            nbytes += len(r.data or b"")
            if r.data and ZODB.blob.is_blob_record(r.data):
                nbytes += os.path.getsize(db.storage.loadBlob(r.oid, r.tid))
    db.close()
    return nbytes


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
    elapsed_s = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {out.stderr[-2000:]}")
    return elapsed_s


def import_seconds(kind: str, workdir: str, fs: str, blobs: str, rep: int) -> float:
    """Seconds of one copy of the source into a new peer (``kind``: neoarray-import,
    zodbconvert-neoarray, zodbconvert-zeo)."""
    where = os.path.join(workdir, f"{kind}-{rep}")
    os.makedirs(where)
    peer = ZeoPeer(where) if kind.endswith("zeo") else NeoPeer(where)
    with peer:
        if kind == "neoarray-import":
            c = peer.cluster
            return timed([sys.executable, "-m", "neoarray.cli", "import", fs, "--blob-dir", blobs,
                          "-a", c.address, "-c", c.cluster, "--quiet"])
        conf = os.path.join(where, "convert.conf")
        with open(conf, "w") as f:
            f.write(f"<filestorage source>\n  path {fs}\n  blob-dir {blobs}\n  read-only true\n</filestorage>\n"
                    + peer.zconfig(os.path.join(where, "cache"), "destination"))
        return timed([os.path.join(os.path.dirname(sys.executable), "zodbconvert"), conf])


# -- the run --------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run")
    p.add_argument("--reps", type=int, help="repetitions of each figure (default 3; --quick: 1)")
    p.add_argument("--transactions", type=int, help="transactions of the imported FileStorage "
                   "(default 2000; --quick: 200)")
    cfg = p.parse_args(argv)
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.transactions = cfg.transactions or (200 if cfg.quick else 2000)
    cfg.sizes = [(1, 10), (8, 2)] if cfg.quick else [(1, 20), (100, 1)]    # (MiB, blobs per rep)
    return cfg


def emit(bench: str, storage: str, values: list, unit: str, results: dict) -> None:
    value = round(median(values), 2)
    results.setdefault(bench, {})[storage] = value
    print(json.dumps({"bench": bench, "storage": storage, "value": value, "unit": unit,
                      "reps": [round(v, 2) for v in values]}), flush=True)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_kill_children)
    workdir = tempfile.mkdtemp(prefix="blob-bench-")
    results: dict = {}
    try:
        for make in (NeoPeer, ZeoPeer):
            peer_dir = os.path.join(workdir, make.name)
            os.makedirs(peer_dir)
            with make(peer_dir) as peer:
                for mib, count in cfg.sizes:
                    writes, reads = blob_rates(peer, peer_dir, mib * MIB, count, cfg.reps)
                    emit(f"blob_write_{mib}MiB", peer.name, writes, "MB/s", results)
                    emit(f"blob_read_{mib}MiB", peer.name, reads, "MB/s", results)
        fs, blobs = os.path.join(workdir, "source.fs"), os.path.join(workdir, "source-blobs")
        nbytes = make_source(fs, blobs, cfg.transactions)
        for kind in ("neoarray-import", "zodbconvert-neoarray", "zodbconvert-zeo"):
            seconds = [import_seconds(kind, workdir, fs, blobs, rep) for rep in range(cfg.reps)]
            emit("import_txn", kind, [cfg.transactions / s for s in seconds], "transactions/s", results)
            emit("import_mb", kind, [nbytes / 1e6 / s for s in seconds], "MB/s", results)
        ratios = {bench: round(by["neoarray"] / by["zeo"], 2) for bench, by in results.items()
                  if "neoarray" in by and by.get("zeo")}
        for bench in ("import_txn", "import_mb"):
            by = results[bench]
            ratios[f"{bench}:neoarray-import/zodbconvert-zeo"] = round(by["neoarray-import"] / by["zodbconvert-zeo"], 2)
            ratios[f"{bench}:neoarray-import/zodbconvert-neoarray"] = round(
                by["neoarray-import"] / by["zodbconvert-neoarray"], 2)
        print(json.dumps({"summary": ratios, "transactions": cfg.transactions, "import_bytes": nbytes,
                          "reps": cfg.reps}), flush=True)
    finally:
        _kill_children()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
