"""Local reads: a client on the same host as a storage node reads its LMDB directly.

A load over gRPC costs a round trip (~0.5-0.8 ms in Python); LMDB lets readers of
other processes share an environment safely, so a client that finds a storage node's
directory on its own host opens it read-only and loads records in microseconds.
Routing is unchanged: only readable cells of running nodes are read, and the records
are decoded and checksum-verified by the same code as on the node
(``neoarray.records``).  A directory that cannot be opened, or that belongs to another
node, is simply not used.

py-lmdb refuses to open one environment twice in a process ("The environment ... is
already open in this process"), so the clients of one process (two ``ZODB.DB`` over one
co-located cluster, say) share one read-only environment per directory
(:func:`open_shared`), reference counted: the last client to close it closes it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

import msgpack

from ..kv import LMDBStore
from ..records import RecordReader
from ..states import NodeType

log = logging.getLogger("neoarray.client")

_shared_lock = threading.Lock()
_shared: dict[str, list] = {}       # real path -> [LMDBStore, users]


def open_shared(path: str) -> LMDBStore:
    """The process's read-only environment of ``path``, opened by its first user; give
    it back with :func:`close_shared`."""
    key = os.path.realpath(path)
    with _shared_lock:
        held = _shared.get(key)
        if held is None:
            held = _shared[key] = [LMDBStore(key, readonly=True), 0]
        held[1] += 1
        return held[0]


def close_shared(kv: LMDBStore) -> None:
    """One user of ``kv`` (from :func:`open_shared`) is done; the last closes it."""
    with _shared_lock:
        held = _shared.get(kv.path)
        if held is None or held[0] is not kv:
            return
        held[1] -= 1
        if held[1] == 0:
            del _shared[kv.path]
            kv.close()


def shared_users(path: str) -> int:
    """How many clients of this process share the environment of ``path`` (0: none open)."""
    with _shared_lock:
        held = _shared.get(os.path.realpath(path))
        return 0 if held is None else held[1]


class LocalReaders:
    def __init__(self, partitions: int):
        self.partitions = partitions
        self.host = socket.gethostname()
        self.readers: dict[int, RecordReader] = {}
        self.refused: set[tuple[int, str]] = set()
        self.lock = threading.Lock()

    def update(self, nodes) -> None:
        """Open the directories of storage nodes on this host (the cluster view
        changed): ``nodes``, the view's ``neoarray.views.NodeView``."""
        for node in nodes:
            if node.type is not NodeType.STORAGE or node.node_id in self.readers or not node.data_path:
                continue
            key = (node.node_id, node.data_path)
            if node.host != self.host or key in self.refused:
                continue
            reader = self._open(node.node_id, node.data_path)
            with self.lock:
                if reader is None:
                    self.refused.add(key)
                else:
                    self.readers[node.node_id] = reader

    def _open(self, node_id: int, path: str) -> RecordReader | None:
        if not os.path.exists(os.path.join(path, "data.mdb")):
            return None
        try:
            kv = open_shared(path)
        except Exception as exc:   # noqa: BLE001  (not ours to read: use the network)
            log.info("no local reads from S%d at %s: %s", node_id, path, exc)
            return None
        with kv.read() as txn:
            owner = txn.get("config", b"node_id")
        if owner is None or msgpack.unpackb(owner) != node_id:
            close_shared(kv)
            return None
        log.info("reading S%d locally from %s", node_id, path)
        return RecordReader(kv, self.partitions)

    def get(self, node_id: int) -> RecordReader | None:
        return self.readers.get(node_id)

    def close(self) -> None:
        with self.lock:
            for reader in self.readers.values():
                close_shared(reader.kv)
            self.readers.clear()
