"""What the import tests share: a FileStorage with a history worth copying (metadata,
undo records, deletions by undo, blobs), and the comparison of two storages'
histories record by record."""
import random

import transaction
import ZODB
import ZODB.blob
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage


def open_filestorage(path, blob_dir=None, read_only=False):
    return FileStorage(str(path), blob_dir=str(blob_dir) if blob_dir else None, read_only=read_only)


def commit(tm, user: str, description: str, **extension):
    t = tm.get()
    t.user, t.description = user, description
    for key, value in extension.items():
        t.setExtendedInfo(key, value)
    tm.commit()


def make_history(path, blob_dir, transactions: int = 20, blob_bytes: int = 3000, seed: int = 1) -> list[bytes]:
    """A FileStorage at ``path`` (blobs in ``blob_dir``) with ``transactions``
    ordinary transactions and two undos (one of them of a blob); returns its tids."""
    rng = random.Random(seed)
    db = ZODB.DB(open_filestorage(path, blob_dir))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    root["items"] = PersistentMapping()
    commit(tm, "alice", "setup", source="make_history")
    for i in range(transactions):
        items = root["items"]
        items[f"k{i}"] = PersistentMapping(n=i, text="x" * rng.randrange(10, 400))
        if i and rng.random() < 0.5:
            items[f"k{rng.randrange(i)}"]["n"] = -i
        if i % 5 == 2:
            items[f"blob{i}"] = ZODB.blob.Blob(rng.randbytes(blob_bytes + i))
        commit(tm, f"user{i % 3}", f"transaction {i}", step=i, tags=["a", i])
    db.undo(db.undoLog(0, 1)[0]["id"], tm.get())       # back-pointer records
    commit(tm, "bob", "undo one")
    items = root["items"]
    items["blob_to_undo"] = ZODB.blob.Blob(b"first")
    commit(tm, "bob", "a blob")
    with items["blob_to_undo"].open("w") as f:
        f.write(b"second version of the blob")
    commit(tm, "bob", "the blob changed")
    db.undo(db.undoLog(0, 1)[0]["id"], tm.get())
    commit(tm, "bob", "blob change undone")
    conn.close()
    tids = [t.tid for t in db.storage.iterator()]
    db.close()
    return tids


def append(path, blob_dir, name: str, value) -> bytes:
    """Commit one more transaction to the FileStorage at ``path``; its tid."""
    db = ZODB.DB(open_filestorage(path, blob_dir))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()["items"][name] = value
    commit(tm, "carol", f"appended {name}")
    tid = db.lastTransaction()
    conn.close()
    db.close()
    return tid


def history(storage, stop=None) -> list:
    """Every transaction of ``storage`` as plain values: (tid, status, user,
    description, extension, [(oid, tid, data, data_txn, blob bytes or None)])."""
    out = []
    it = storage.iterator(None, stop)
    for txn in it:
        records = []
        for r in txn:
            blob = None
            if r.data is not None and ZODB.blob.is_blob_record(r.data):
                with open(storage.loadBlob(r.oid, r.tid), "rb") as f:
                    blob = f.read()
            records.append((r.oid, r.tid, r.data, r.data_txn or None, blob))
        out.append((txn.tid, txn.status, txn.user, txn.description, txn.extension,
                    sorted(records, key=lambda rec: rec[0])))
    if hasattr(it, "close"):
        it.close()
    return out
