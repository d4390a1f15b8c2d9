"""The partition dropper of a storage node, over a real backend and manager (no gRPC).

A node that left a partition (``neoctl drop`` or ``tweak``) deletes its rows; a commit
its client stored there with an older table may still lock afterwards and write rows
again, and the dropper must go over the partition again (the CI failure of
``test_add_tweak_drop_tweak_under_load_loses_nothing``: 2 keys left for good).
"""
import threading
import time
import types

import pytest

from neoarray.ids import Z64, p64
from neoarray.kv import MemoryStore
from neoarray.proto import common_pb2 as cpb
from storage_node.backend import Backend, Stored, TransactionInfo, checksum
from storage_node.dropper import PartitionDropper
from storage_node.manager import VOTED, TransactionManager

NODE_ID = 1
PARTITIONS = 2
TIMEOUT_S = 10.0


def table(held: set[int]) -> cpb.PartitionTable:
    """This node has an UP_TO_DATE cell of ``held``; node 2 holds every partition."""
    rows = []
    for p in range(PARTITIONS):
        cells = [cpb.Cell(node_id=2, state=cpb.UP_TO_DATE)]
        if p in held:
            cells.append(cpb.Cell(node_id=NODE_ID, state=cpb.UP_TO_DATE))
        rows.append(cpb.PartitionRow(cells=cells))
    return cpb.PartitionTable(ptid=1, replicas=1, rows=rows)


@pytest.fixture
def node():
    backend = Backend(MemoryStore(), partitions=PARTITIONS)
    manager = TransactionManager(backend)
    n = types.SimpleNamespace(node_id=NODE_ID, backend=backend, manager=manager, stopped=threading.Event())
    n.dropper = PartitionDropper(n, rows_per_batch_max=3)
    manager.on_written = n.dropper.written
    yield n
    n.stopped.set()
    n.dropper.wakeup.set()
    n.dropper.thread.join(5)


def commit(manager: TransactionManager, ttid: int, tid: int, oids: list[int]) -> None:
    records = [Stored(p64(oid), Z64, b"data %d" % oid, checksum(b"data %d" % oid)) for oid in oids]
    manager.store(p64(ttid), 7, records)
    meta = TransactionInfo(p64(tid), b"", b"", b"", [p64(o) for o in oids], p64(ttid), False)
    assert manager.vote(p64(ttid), 7, [], meta, [p64(o) for o in oids]).status == VOTED
    manager.lock(p64(ttid), p64(tid))


def rows_of(backend: Backend, p: int) -> int:
    pk = p.to_bytes(4, "big")
    with backend.kv.read() as txn:
        return (sum(1 for _ in txn.keys("obj", pk, pk + b"\xff" * 17))
                + sum(1 for _ in txn.keys("trans", pk, pk + b"\xff" * 9)))


def wait_rows(backend: Backend, p: int, expected: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while (held := rows_of(backend, p)) != expected:
        assert time.monotonic() < deadline, f"partition {p}: {held} rows, not {expected}"
        time.sleep(0.02)


def test_rows_locked_after_the_partition_was_emptied_are_dropped_too(node):
    # oids 2, 4, 6 and tid 10 are of partition 0; oids 1, 3, 5, 7 of partition 1
    commit(node.manager, 1, 10, [1, 3, 5, 7, 2, 4, 6])
    assert rows_of(node.backend, 1) == 4 and rows_of(node.backend, 0) == 4
    node.dropper.table_changed(table(held={0}))
    node.dropper.start()
    wait_rows(node.backend, 1, 0)
    deadline = time.monotonic() + TIMEOUT_S
    while 1 not in node.dropper.emptied:        # found empty: the dropper rests on it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # a client with the older table locks a commit here after the node left partition 1
    commit(node.manager, 2, 12, [9, 11])
    wait_rows(node.backend, 1, 0)
    assert rows_of(node.backend, 0) == 4 + 1         # partition 0 (held) is untouched, tid 12 added
    assert node.dropper.rows_dropped == 4 + 2


def test_a_partition_given_back_is_not_dropped(node):
    commit(node.manager, 1, 10, [1, 3])
    node.dropper.table_changed(table(held={0, 1}))
    node.dropper.start()
    time.sleep(0.3)
    assert rows_of(node.backend, 1) == 2
    assert not node.dropper.still_orphan(1)
    node.dropper.table_changed(table(held={0}))
    assert node.dropper.still_orphan(1)
    wait_rows(node.backend, 1, 0)
