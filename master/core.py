"""The master's pure core: id allocation and the partition table.

No I/O: durability goes through the ``persist`` callback the runtime passes in, and
which is always called *before* a reserved id is handed out, so no OID or TID is ever
handed out twice, even across a ``kill -9`` of the master.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from neoarray.ids import MAX_TID, next_tid, p64, u64
from neoarray.states import READABLE, CellState

OID_RESERVE = 10_000         # OIDs reserved per write of the master's state
TID_RESERVE = 1 << 28        # ~3.75 s of TimeStamp units reserved per write
OID_MAX = (1 << 64) - 1      # oids are 8 bytes


class IdAllocator:
    """OIDs in batches and strictly increasing, time-based TIDs.

    ``persist(oid_reserved=..., tid_reserved=...)`` must durably record an upper
    bound before ids below it are handed out; a restarted master continues from
    the recorded bounds (and from what the storages report, whichever is higher).
    """

    def __init__(self, persist, last_oid: int, oid_reserved: int, last_tid: bytes, tid_reserved: bytes):
        self.persist = persist
        self.last_oid = max(last_oid, oid_reserved)
        self.oid_reserved = self.last_oid
        self.last_tid = max(last_tid, tid_reserved)
        self.tid_reserved = self.last_tid

    def raise_to(self, last_oid: int, last_tid: bytes) -> None:
        """Never go below what a storage reports to hold."""
        self.last_oid = max(self.last_oid, last_oid)
        self.last_tid = max(self.last_tid, last_tid)

    def new_oids(self, count: int) -> list[bytes]:
        first = self.last_oid + 1
        last = self.last_oid + count
        if last > OID_MAX:
            raise ValueError(f"no {count} oids left: the last oid handed out is 0x{self.last_oid:016x}")
        if last > self.oid_reserved:
            self.oid_reserved = last + OID_RESERVE
            self.persist(oid_reserved=self.oid_reserved)
        self.last_oid = last
        return [p64(o) for o in range(first, last + 1)]

    def new_tid(self, partitions: int = 1, partition: int = 0, now: float | None = None) -> bytes:
        """A new TID with ``tid % partitions == partition`` (its metadata's partition)."""
        tid = u64(next_tid(self.last_tid, now))
        tid += (partition - tid) % partitions
        return self._hand_out(p64(tid))

    def take_tid(self, tid: bytes) -> bytes:
        """Hand out a TID chosen by a client (restore); it must be new."""
        if tid <= self.last_tid:
            raise ValueError(f"tid 0x{tid.hex()} is not after the last tid 0x{self.last_tid.hex()}")
        if tid > MAX_TID:
            raise ValueError(f"tid 0x{tid.hex()} is beyond the largest tid 0x{MAX_TID.hex()}")
        return self._hand_out(tid)

    def _hand_out(self, tid: bytes) -> bytes:
        if tid > self.tid_reserved:
            self.tid_reserved = p64(u64(tid) + TID_RESERVE)
            self.persist(tid_reserved=self.tid_reserved)
        self.last_tid = tid
        return tid


@dataclass
class PartitionTable:
    """Cells of each partition: ``rows[p]`` maps a storage node id to a cell state."""
    partitions: int
    replicas: int
    rows: list[dict[int, CellState]] = field(default_factory=list)
    ptid: int = 0
    # (node, partition) -> ptid at which tweak created the cell: a transaction whose
    # client view is older may have skipped it (``master/replication.py``)
    added: dict[tuple[int, int], int] = field(default_factory=dict)
    # state -> node -> its partitions in that state (``cells``); None until built
    _index: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, partitions: int, replicas: int, nodes: list[int]) -> PartitionTable:
        """Spread ``replicas + 1`` cells per partition evenly over ``nodes``."""
        if not nodes:
            raise ValueError("cannot create a partition table without storage nodes")
        copies = min(replicas + 1, len(nodes))
        rows = [{nodes[(p + i) % len(nodes)]: CellState.UP_TO_DATE for i in range(copies)}
                for p in range(partitions)]
        return cls(partitions, replicas, rows, ptid=1)

    def cells(self) -> dict[CellState, dict[int, list[int]]]:
        """Cell state -> node -> its partitions in that state (ascending).  Built once,
        then kept by ``set_cell``, ``remove`` and ``set_rows``, through which every
        change of a cell goes (``tests/master/test_table_index.py`` checks both);
        heartbeats, commits and verdicts read it instead of scanning every
        partition (0.4 s a heartbeat at 120,000 partitions: ``docs/scale.md``).
        Read-only for callers."""
        if self._index is None:
            index: dict[CellState, dict[int, list[int]]] = {}
            for p, row in enumerate(self.rows):
                for n, s in row.items():
                    index.setdefault(s, {}).setdefault(n, []).append(p)
            self._index = index
        return self._index

    def _index_add(self, state: CellState, node: int, p: int) -> None:
        bisect.insort(self._index.setdefault(state, {}).setdefault(node, []), p)

    def _index_drop(self, state: CellState, node: int, p: int) -> None:
        by_node = self._index[state]
        ps = by_node[node]
        del ps[bisect.bisect_left(ps, p)]
        if not ps:
            del by_node[node]
            if not by_node:
                del self._index[state]

    def cells_of(self, node: int, state: CellState) -> list[int]:
        """The partitions where ``node`` has a cell in ``state`` (a new list)."""
        return list(self.cells().get(state, {}).get(node, ()))

    def nodes(self) -> set[int]:
        return {n for by_node in self.cells().values() for n in by_node}

    def readable(self, p: int, running: set[int]) -> list[int]:
        return [n for n, s in self.rows[p].items() if s in READABLE and n in running]

    def writable(self, p: int, running: set[int]) -> list[int]:
        return [n for n, s in self.rows[p].items() if s != CellState.CORRUPTED and n in running]

    def operational(self, running: set[int]) -> bool:
        return bool(self.rows) and all(self.readable(p, running) for p in range(self.partitions))

    def node_lost(self, node: int, running: set[int]) -> bool:
        """Cells of a lost node go OUT_OF_DATE where another readable copy remains
        (FEEDING ones, which were leaving, are dropped)."""
        changed = False
        alive = running - {node}
        for p in sorted(p for s in READABLE for p in self.cells_of(node, s)):
            if self.readable(p, alive):
                if self.rows[p][node] == CellState.FEEDING:
                    self.remove(node, p)
                else:
                    self.set_cell(p, node, CellState.OUT_OF_DATE)
                changed = True
        if changed:
            self.ptid += 1
        return changed

    def set_cell(self, p: int, node: int, state: CellState) -> None:
        """The cell of ``node`` in partition ``p`` is now ``state`` (the caller
        increases the ptid once its change is whole)."""
        old = self.rows[p].get(node)
        self.rows[p][node] = state
        if self._index is not None:
            if old is not None:
                self._index_drop(old, node, p)
            self._index_add(state, node, p)

    def remove(self, node: int, p: int) -> None:
        state = self.rows[p].pop(node)
        self.added.pop((node, p), None)
        if self._index is not None:
            self._index_drop(state, node, p)

    def set_rows(self, rows: list[dict[int, CellState]]) -> None:
        """Replace the rows (a tweak); new cells are remembered in ``added``."""
        self.ptid += 1
        for p, (old, new) in enumerate(zip(self.rows, rows)):
            for n in old.keys() - new.keys():
                self.added.pop((n, p), None)
            for n in new.keys() - old.keys():
                self.added[(n, p)] = self.ptid
        self.rows = rows
        self._index = None

    def fed(self, running: set[int]) -> list[tuple[int, int]]:
        """FEEDING cells whose replacement is done: their partition has an UP_TO_DATE
        cell on a running node and no OUT_OF_DATE cell."""
        out = []
        for p in sorted({p for ps in self.cells().get(CellState.FEEDING, {}).values() for p in ps}):
            row = self.rows[p]
            if (CellState.OUT_OF_DATE not in row.values()
                    and any(s == CellState.UP_TO_DATE and m in running for m, s in row.items())):
                out += [(n, p) for n, s in sorted(row.items()) if s == CellState.FEEDING]
        return out

    def drop_refusal(self, node: int, running: set[int]) -> str | None:
        """Why removing every cell of ``node`` is unsafe (None: it is safe)."""
        for p, row in enumerate(self.rows):
            if node not in row:
                continue
            rest = {n: s for n, s in row.items() if n != node and n in running}
            if not any(s in READABLE for s in rest.values()):
                return f"S{node} holds the last readable copy of partition {p}"
            if CellState.UP_TO_DATE not in rest.values():
                return f"partition {p} would have no UP_TO_DATE copy on a running node left"
        return None

    def to_doc(self) -> dict:
        return {"partitions": self.partitions, "replicas": self.replicas, "ptid": self.ptid,
                "rows": [sorted(row.items()) for row in self.rows],
                "added": sorted([n, p, ptid] for (n, p), ptid in self.added.items())}

    @classmethod
    def from_doc(cls, doc: dict) -> PartitionTable:
        rows = [{int(n): CellState(s) for n, s in row} for row in doc["rows"]]
        added = {(n, p): ptid for n, p, ptid in doc.get("added", [])}
        return cls(doc["partitions"], doc["replicas"], rows, doc["ptid"], added)
