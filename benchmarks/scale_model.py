"""What 1,000 storage nodes holding an exabyte would ask of the master, the clients and
the records: the real master core, tweak planner, catch-up rules, cluster view and
array layout, run at that scale in one process (no sockets, no disks).

Three parts, one JSON line per figure (``{"bench": "scale_model", "part", "partitions",
"nodes", "figure", "value", "unit"}``), medians of ``--repeat`` runs:

``table``       per (partitions, nodes), ``replicas=2``: the partition table's
                ``create``; the cluster view every subscriber is sent (``ClusterInfo``
                bytes, its parse by a client); the persisted document (msgpack bytes,
                packing); the master's work per storage heartbeat (catch-up tasks and
                fed cells: ``replication_report``), and the build of the cell index
                it reads (once; then kept cell by cell); per published commit
                (``CatchUp.committed``); one lost node (cells that go
                OUT_OF_DATE, time); ``neoctl tweak`` after a node joins (plan time,
                cells moved).
``records``     per chunk of a 1-d array: the bytes of its entry in the array's chunk
                tree (``OOBTree`` buckets, measured on a real ``neoarray.ndarray`` in a
                ``MappingStorage``), the bytes a chunk record adds to its payload (the
                pickle around it), and a storage node's key and header per revision.
``fanout``      the master's cost of one invalidation push to one subscriber: the
                event's encoding and framing, and a ``sendmsg`` over a real socket pair
                drained by another thread.

Then ``{"summary": ...}``: the figures put together for an exabyte on 1,000 nodes
(see ``docs/scale.md``, which quotes a run).

Run::

    python benchmarks/scale_model.py                    # the sizes of docs/scale.md
    python benchmarks/scale_model.py --quick            # small sizes (tests, CI)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import types

import msgpack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import median_of
from master import tweak
from master.core import PartitionTable
from master.node import Master
from master.replication import CatchUp
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto_states import table_to_pb
from neoarray.states import CellState
from neoarray.transport import conn, frames

EXABYTE_BYTES = 10 ** 18
NODES_AT_SCALE = 1000
REPLICAS = 2
TID = (1 << 60).to_bytes(8, "big")


def _line(part: str, figure: str, value, unit: str, **where) -> dict:
    rec = {"bench": "scale_model", "part": part, **where, "figure": figure,
           "value": round(value, 6) if isinstance(value, float) else value, "unit": unit}
    print(json.dumps(rec), flush=True)
    return rec


def _view(pt: PartitionTable) -> cpb.ClusterInfo:
    """The cluster view's table the master sends for ``pt`` (``Master.table_view``, then
    its message, as ``master/service.py`` makes it)."""
    return cpb.ClusterInfo(state=cpb.CLUSTER_RUNNING, pt=table_to_pb(Master.table_view(types.SimpleNamespace(pt=pt))))


def table_figures(partitions: int, nodes: int, repeat: int) -> list[dict]:
    where = {"partitions": partitions, "nodes": nodes}
    out = []
    ids = list(range(1, nodes + 1))
    running = set(ids)
    create_s, pt = median_of(repeat, lambda: PartitionTable.create(partitions, REPLICAS, ids))
    out.append(_line("table", "create", create_s, "s", **where))
    cells = sum(len(row) for row in pt.rows)
    out.append(_line("table", "cells", cells, "cells", **where))

    view_s, view = median_of(repeat, lambda: _view(pt).SerializeToString())
    out.append(_line("table", "view_bytes", len(view), "bytes", **where))
    out.append(_line("table", "view_build_and_encode", view_s, "s", **where))
    parse_s, _ = median_of(repeat, lambda: cpb.ClusterInfo.FromString(view))
    out.append(_line("table", "view_parse", parse_s, "s", **where))
    doc_s, doc = median_of(repeat, lambda: msgpack.packb(pt.to_doc()))
    out.append(_line("table", "persisted_bytes", len(doc), "bytes", **where))
    out.append(_line("table", "persist_pack", doc_s, "s", **where))

    def rebuild():
        pt._index = None
        return pt.cells()
    index_s, _ = median_of(repeat, rebuild)
    out.append(_line("table", "cell_index_rebuild", index_s, "s", **where))
    catchup = CatchUp()
    beat_s, _ = median_of(repeat, lambda: (catchup.tasks(pt, ids[0], running, TID), pt.fed(running)))
    out.append(_line("table", "heartbeat_scan", beat_s, "s", **where))

    storages = [n for n in pt.rows[7]]          # the voters of a commit writing partition 7
    commit_s, _ = median_of(repeat, lambda: catchup.committed(pt, running, TID, pt.ptid, lambda: {7}, storages))
    out.append(_line("table", "commit_check", commit_s, "s", **where))

    copies = [PartitionTable.from_doc(pt.to_doc()) for _ in range(repeat)]
    for copy in copies:
        copy.cells()                        # as the master's table: indexed since its first heartbeat

    def lose():
        lost = copies.pop()
        lost.node_lost(ids[0], running)
        return sum(1 for row in lost.rows if row.get(ids[0]) == CellState.OUT_OF_DATE)
    lose_s, went = median_of(repeat, lose)
    out.append(_line("table", "node_lost", lose_s, "s", **where))
    out.append(_line("table", "node_lost_cells", went, "cells", **where))

    hosts = {n: f"h{n}" for n in [*ids, nodes + 1]}
    plan_s, rows = median_of(repeat, lambda: tweak.plan(pt.rows, REPLICAS, hosts, running | {nodes + 1}))
    moved = len(tweak.changes(pt.rows, rows))
    out.append(_line("table", "tweak_plan_one_node_joins", plan_s, "s", **where))
    out.append(_line("table", "tweak_cells_changed", moved, "cells", **where))
    return out


def record_figures(chunks: int) -> list[dict]:
    """Chunk-tree bytes per chunk and record overhead, on a real array in a MappingStorage."""
    import numpy as np
    import transaction
    import ZODB
    from ZODB.MappingStorage import MappingStorage

    import neoarray as na
    from neoarray.array.chunks import Chunk
    from neoarray.records import PARTITION, RECORD_HEAD

    db = ZODB.DB(MappingStorage())
    try:
        conn_ = db.open()
        arr = na.zeros((chunks * 8,), dtype="u1", chunks=(8,))
        conn_.root()["a"] = arr
        arr[:] = np.arange(chunks * 8, dtype="u8").astype("u1") | 1      # no chunk left all-fill
        transaction.commit()
        storage = db.storage
        tree_bytes = chunk_bytes = chunk_records = 0
        for oid in storage._data:
            data, _ = storage.load(oid)
            name = data[:120]
            if b"OOBucket" in name or b"OOBTree" in name:
                tree_bytes += len(data)
            elif Chunk.__name__.encode() in name:
                chunk_bytes += len(data)
                chunk_records += 1
        conn_.close()
    finally:
        db.close()
    key_bytes = PARTITION.size + 8 + 8
    return [
        _line("records", "chunk_tree_bytes_per_chunk", tree_bytes / chunks, "bytes", chunks=chunks),
        _line("records", "chunk_record_overhead_bytes", chunk_bytes / chunk_records - 8, "bytes", chunks=chunks),
        _line("records", "node_key_and_header_bytes", key_bytes + RECORD_HEAD.size, "bytes", chunks=chunks),
    ]


def fanout_figures(pushes: int, oids_per_commit: int) -> list[dict]:
    """One invalidation to one subscriber: build, encode, frame, send."""
    left, right = socket.socketpair()
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            if not right.recv(1 << 20):
                return
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    oids = [(i * 7919).to_bytes(8, "big") for i in range(oids_per_commit)]
    try:
        event = mpb.Event(invalidation=mpb.Invalidation(tid=TID, oids=oids))
        t0 = time.perf_counter()
        for i in range(pushes):
            body = event.SerializeToString()
            conn.write_frame(left, frames.Frame(frames.PUSH, i + 1, 0, body))
        per_push_s = (time.perf_counter() - t0) / pushes
    finally:
        stop.set()
        left.close()
        reader.join(5)
        right.close()
    return [_line("fanout", "push_per_subscriber", per_push_s, "s", oids_per_commit=oids_per_commit)]


def summary(figures: list[dict], chunk_mib: list[int]) -> dict:
    def get(part, figure, **where):
        for f in reversed(figures):
            if f["part"] == part and f["figure"] == figure and all(f.get(k) == v for k, v in where.items()):
                return f["value"]
        return None
    out = {"exabyte_bytes": EXABYTE_BYTES, "nodes": NODES_AT_SCALE, "replicas": REPLICAS, "chunks": {}}
    tree = get("records", "chunk_tree_bytes_per_chunk")
    head = get("records", "chunk_record_overhead_bytes")
    node_head = get("records", "node_key_and_header_bytes")
    for mib in chunk_mib:
        n = EXABYTE_BYTES // (mib << 20)
        per_node = n * (REPLICAS + 1) // NODES_AT_SCALE
        out["chunks"][f"{mib} MiB"] = {
            "chunks": n, "chunk_tree_bytes": round(n * tree), "record_overhead_bytes": round(n * head),
            "chunk_revisions_per_node": per_node, "node_key_bytes_per_node": per_node * node_head}
    push = get("fanout", "push_per_subscriber")
    if push:
        out["pushes_per_s_one_master_core"] = round(1 / push)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for tests and CI")
    p.add_argument("--repeat", type=int, default=3, help="runs per timed figure (median)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        tables, chunks, pushes = [(120, 10), (1200, 100)], 2000, 2000
    else:
        tables = [(1200, 100), (12_000, 1000), (120_000, 1000)]
        chunks, pushes = 50_000, 20_000
    figures = []
    for partitions, nodes in tables:
        figures += table_figures(partitions, nodes, args.repeat)
    figures += record_figures(chunks)
    figures += fanout_figures(pushes, 1)
    figures += fanout_figures(pushes // 10, 1000)
    print(json.dumps({"summary": summary(figures, [8, 64])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
