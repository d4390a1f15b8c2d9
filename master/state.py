"""The master's durable state, in a small LMDB environment of its own.

Keys (ascii) -> msgpack values: ``cluster`` (name), ``partitions``, ``replicas``,
``pt`` (the partition table document), ``nodes`` ({node id: [type, address, host]}),
``next_node_id``, ``oid_reserved`` (int), ``tid_reserved`` (8 bytes).  Every write is
fsynced before the master acts on it.
"""
from __future__ import annotations

import os

import lmdb
import msgpack


class MasterState:
    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=1 << 30, max_dbs=1, sync=True)

    def get(self, name: str, default=None):
        with self.env.begin() as txn:
            raw = txn.get(name.encode())
        return default if raw is None else msgpack.unpackb(raw, strict_map_key=False)

    def put(self, **values) -> None:
        with self.env.begin(write=True) as txn:
            for name, value in values.items():
                txn.put(name.encode(), msgpack.packb(value))

    def close(self) -> None:
        self.env.close()
