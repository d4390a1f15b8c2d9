"""The master's durable state, in a small LMDB environment of its own.

Keys (ascii) -> msgpack values: ``cluster`` (name), ``partitions``, ``replicas``,
``pt`` (the partition table document), ``nodes`` ({node id: [type, address, host]}),
``next_node_id``, ``oid_reserved`` (int), ``tid_reserved`` (8 bytes), ``members``,
``epoch`` (the master generation, bumped when a standby takes over: master/standby.py),
``version`` (raised by every ``put``, in the same transaction: with the epoch, the
state's *stamp*, which storages record as witnesses, master/cluster.py), and
``taken_over_from`` (the stamp of the copy a take-over started from, until confirmed).
Every write is fsynced before the master acts on it; ``writes`` counts them.

``on_change`` (when set) is called after every write with the names written: the
primary streams the whole state to its standby masters from there.
"""
from __future__ import annotations

import os

import lmdb
import msgpack


class MasterState:
    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=1 << 30, max_dbs=1, sync=True)
        self.on_change = None
        self.writes = 0

    def get(self, name: str, default=None):
        with self.env.begin() as txn:
            raw = txn.get(name.encode())
        return default if raw is None else msgpack.unpackb(raw, strict_map_key=False)

    def put(self, **values) -> None:
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"version")
            version = 0 if raw is None else msgpack.unpackb(raw)
            for name, value in values.items():
                txn.put(name.encode(), msgpack.packb(value))
            txn.put(b"version", msgpack.packb(version + 1))
            self.writes += 1
        if self.on_change is not None:
            self.on_change(tuple(values))

    def stamp(self) -> tuple[int, int]:
        """``(epoch, version)`` of the state now (read in one transaction)."""
        with self.env.begin() as txn:
            epoch, version = txn.get(b"epoch"), txn.get(b"version")
        return (0 if epoch is None else msgpack.unpackb(epoch)), (0 if version is None else msgpack.unpackb(version))

    def snapshot(self) -> dict:
        """Every key and its value: the document a standby master copies."""
        with self.env.begin() as txn:
            return {k.decode(): msgpack.unpackb(v, strict_map_key=False) for k, v in txn.cursor()}

    def replace(self, doc: dict) -> None:
        """Make the state exactly ``doc`` (a standby's copy of its primary's), durably."""
        with self.env.begin(write=True) as txn:
            for key in [k for k, _ in txn.cursor() if k.decode() not in doc]:
                txn.delete(key)
            for name, value in doc.items():
                txn.put(name.encode(), msgpack.packb(value))
            self.writes += 1

    def close(self) -> None:
        self.env.close()
