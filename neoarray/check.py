"""Replica check and repair (``neoctl check [--repair]``): compare every copy of a partition.

For each partition, every node that has a cell of it (in any state: an OUT_OF_DATE
copy is compared too) and is RUNNING lists its keys in bounded batches
(``Storage.CheckRecords``, see ``storage_node/check.py``): object revisions with their
recorded checksum, deletion flag, data tid and whether the data on that node matches
the checksum; transaction rows with their checksum.  The listings are merged in key
order, so memory stays at one batch per node however large the partition.  Only keys
with ``tid <=`` the master's last committed tid when the check starts are compared:
commits that finish meanwhile are not half seen.

A key is a problem when a copy lacks it (*missing*), fails its checksum (*corrupt*),
or the sound copies disagree (*differs*).  Then each transaction row of the partition
is checked for completeness: every object it names must have a revision at its tid
on some readable copy of that object's partition (looked up in batches,
``CheckRecordsRequest.keys``); a transaction that misses one is *incomplete* (torn),
which no copy can repair.  Packed transactions are skipped (pack removes revisions).  ``repair`` rewrites missing and corrupt
copies from a sound one (``Storage.RepairRecords``: checksums verified again by the
target, one LMDB transaction per batch; a blob record's chunks first, one
``Storage.RepairBlobChunk`` at a time); when sound copies disagree, or none is
sound, nothing is guessed: the key is reported as not repaired.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import wire
from .errors import NeoError, RequestRefused
from .ids import p64, u64
from .proto import storage_pb2 as spb
from .states import READABLE, NodeState, NodeType

OBJECT, TRANSACTION = "object", "transaction"
_ACTIONS = {spb.RepairOutcome.WRITTEN: "written", spb.RepairOutcome.REPLACED: "replaced",
            spb.RepairOutcome.UNCHANGED: "unchanged", spb.RepairOutcome.SKIPPED_BUSY: "skipped_busy",
            spb.RepairOutcome.SKIPPED_BLOB: "skipped: its blob chunks are not sound on this node"}
FIXED = ("written", "replaced", "unchanged")


@dataclass
class Limits:
    keys_per_batch_max: int = 5_000               # keys asked of a node per CheckRecords
    repair_records_per_batch_max: int = 1_000     # records per LoadMany / RepairRecords
    repair_bytes_per_batch_max: int = 32 << 20    # data bytes moved per repair batch
    problems_listed_per_partition_max: int = 1_000  # beyond: counted, not listed
    transactions_per_batch_max: int = 100         # transaction rows read per request (completeness)
    rpc_timeout_s: float = 60.0


@dataclass
class Problem:
    table: str
    oid: bytes                 # b"" for transactions
    tid: bytes
    missing: list[int]
    corrupt: list[int]
    differs: bool              # sound copies disagree: not repairable without guessing
    source: int | None         # a sound copy to repair from
    data_bytes: int = 0
    repaired: dict[int, str] = field(default_factory=dict)   # node -> action or "error: ..."
    incomplete: bool = False   # transaction ``tid`` names ``oid``, which has no revision at tid

    @property
    def targets(self) -> list[int]:
        return sorted(self.missing + self.corrupt)

    @property
    def fixed(self) -> bool:
        return (self.source is not None and not self.differs
                and all(self.repaired.get(n) in FIXED for n in self.targets))


@dataclass
class PartitionReport:
    partition: int
    nodes: list[int]                         # copies compared
    unchecked: dict[int, str]                # cells of nodes not running: node -> state
    objects: int = 0                         # distinct revisions seen
    transactions: int = 0
    problems: list[Problem] = field(default_factory=list)   # the first ones
    problems_total: int = 0
    not_fixed_total: int = 0                 # after repair
    not_looked_up: set = field(default_factory=set)   # partitions with no readable copy running


class Checker:
    """Checks (and repairs) partitions through ``admin`` (an ``AdminClient``)."""

    def __init__(self, admin, repair: bool = False, limits: Limits | None = None):
        self.admin = admin
        self.repair = repair
        self.limits = limits or Limits()
        self.pt = admin.partition_table()
        self.nodes = {n.node_id: n for n in admin.nodes() if n.type is NodeType.STORAGE}
        self.max_tid = admin.ids()["last_tid"]
        self._stubs: dict[int, object] = {}

    def partitions(self, wanted: list[int] | None) -> list[int]:
        count = len(self.pt.rows)
        for p in wanted or ():
            if not 0 <= p < count:
                raise RequestRefused(f"partition {p} out of range: the cluster has {count} (0..{count - 1})")
        return sorted(set(wanted)) if wanted else list(range(count))

    def _stub(self, nid: int):
        if nid not in self._stubs:
            self._stubs[nid] = self.admin.storage_stub(self.nodes[nid].address)
        return self._stubs[nid]

    def _call(self, nid: int, method: str, request):
        return wire.call(getattr(self._stub(nid), method), request, self.limits.rpc_timeout_s, f"{method} on S{nid}")

    # -- checking --------------------------------------------------------------------
    def check_partition(self, p: int) -> PartitionReport:
        cells = {c.node_id for c in self.pt.rows[p].cells}
        running = sorted(n for n in cells if n in self.nodes and self.nodes[n].state is NodeState.RUNNING)
        unchecked = {n: _node_state(self.nodes.get(n)) for n in sorted(cells) if n not in running}
        report = PartitionReport(p, running, unchecked)
        repairer = _Repairer(self, p) if self.repair else None
        for table, key_of in ((OBJECT, lambda r: r.oid + r.tid), (TRANSACTION, lambda r: r.tid)):
            streams = {n: self._listing(n, p, table) for n in running}
            for group in _merged(streams, key_of):
                self._count(report, table)
                problem = _classify(table, group, running)
                if problem is None:
                    continue
                report.problems_total += 1
                if len(report.problems) < self.limits.problems_listed_per_partition_max:
                    report.problems.append(problem)
                if repairer is not None:
                    repairer.add(problem)
                else:
                    report.not_fixed_total += 1
            if repairer is not None:
                repairer.flush()
        if repairer is not None:
            report.not_fixed_total = repairer.not_fixed
        self._check_complete(report)
        return report

    # -- completeness of transactions -------------------------------------------------
    def _readable_copies(self, p: int) -> list[int]:
        return sorted(c.node_id for c in self.pt.rows[p].cells if c.state in READABLE
                      and c.node_id in self.nodes and self.nodes[c.node_id].state is NodeState.RUNNING)

    def _check_complete(self, report: PartitionReport) -> None:
        """Each transaction row of the partition (from one readable copy) names objects
        that must have a revision at its tid on a readable copy of their partition."""
        copies = self._readable_copies(report.partition)
        if not copies:
            return
        batch, keys_max = self.limits.transactions_per_batch_max, self.limits.keys_per_batch_max
        pending: dict[int, list[bytes]] = {}      # partition -> [oid + tid] to look up
        min_tid = b""
        while True:
            reply = self._call(copies[0], "Transactions", spb.TransactionsRequest(
                partitions=[report.partition], min_tid=min_tid, max_tid=self.max_tid, limit=batch))
            for t in reply.transactions:
                if t.packed:
                    continue
                for oid in t.oids:
                    q = u64(oid) % len(self.pt.rows)
                    keys = pending.setdefault(q, [])
                    keys.append(oid + t.tid)
                    if len(keys) >= keys_max:
                        self._look_up(q, pending.pop(q), report)
            if len(reply.transactions) < batch:
                break
            min_tid = p64(u64(reply.transactions[-1].tid) + 1)
        for q, keys in pending.items():
            self._look_up(q, keys, report)

    def _look_up(self, q: int, keys: list[bytes], report: PartitionReport) -> None:
        copies = self._readable_copies(q)
        if not copies:
            report.not_looked_up.add(q)
            return
        found = set()
        for nid in copies:
            reply = self._call(nid, "CheckRecords", spb.CheckRecordsRequest(
                partition=q, table=spb.CHECK_OBJECTS, keys=keys))
            found.update(r.oid + r.tid for r in reply.records)
        for key in keys:
            if key not in found:
                report.problems_total += 1
                report.not_fixed_total += 1
                if len(report.problems) < self.limits.problems_listed_per_partition_max:
                    report.problems.append(Problem(TRANSACTION, key[:8], key[8:], copies, [], False, None,
                                                   incomplete=True))

    @staticmethod
    def _count(report: PartitionReport, table: str) -> None:
        if table == OBJECT:
            report.objects += 1
        else:
            report.transactions += 1

    def _listing(self, nid: int, p: int, table: str):
        """The records of one copy, batch by batch (a generator: one batch in memory)."""
        after = b""
        kind = spb.CHECK_OBJECTS if table == OBJECT else spb.CHECK_TRANSACTIONS
        while True:
            reply = self._call(nid, "CheckRecords", spb.CheckRecordsRequest(
                partition=p, table=kind, after=after, max_tid=self.max_tid,
                limit=self.limits.keys_per_batch_max))
            yield from reply.records
            if not reply.next_after:
                return
            after = reply.next_after


def _node_state(node) -> str:
    if node is None:
        return "UNKNOWN"
    return node.state.value                 # never RUNNING: called for the others


def _merged(streams: dict, key_of):
    """Merge per-node listings sorted by key: yields ``{node: record}`` per key."""
    heads = {n: next(it, None) for n, it in streams.items()}
    while True:
        live = [h for h in heads.values() if h is not None]
        if not live:
            return
        key = min(key_of(r) for r in live)
        group = {}
        for n, head in heads.items():
            if head is not None and key_of(head) == key:
                group[n] = head
                heads[n] = next(streams[n], None)
        yield group


def _classify(table: str, group: dict, nodes: list[int]) -> Problem | None:
    missing = [n for n in nodes if n not in group]
    corrupt = sorted(n for n, r in group.items() if not r.data_ok)
    sound = {n: r for n, r in group.items() if r.data_ok}
    kinds = {(r.checksum, r.deleted, r.data_tid, r.blob_checksum) for r in sound.values()}
    if not missing and not corrupt and len(kinds) <= 1:
        return None
    differs = len(kinds) > 1
    source = min(sound) if sound and not differs else None
    any_rec = next(iter(group.values()))
    size = sound[source].data_bytes if source is not None else 0
    return Problem(table, any_rec.oid, any_rec.tid, missing, corrupt, differs, source, size)


class _Repairer:
    """Batches repairs of one partition: reads from the sound copy, writes to the others."""

    def __init__(self, checker: Checker, partition: int):
        self.checker = checker
        self.partition = partition
        self.pending: list[Problem] = []
        self.pending_bytes = 0
        self.not_fixed = 0

    def add(self, problem: Problem) -> None:
        if problem.source is None:
            self.not_fixed += 1
            return
        self.pending.append(problem)
        self.pending_bytes += problem.data_bytes
        limits = self.checker.limits
        if (len(self.pending) >= limits.repair_records_per_batch_max
                or self.pending_bytes >= limits.repair_bytes_per_batch_max):
            self.flush()

    def flush(self) -> None:
        by_source: dict[int, list[Problem]] = {}
        for problem in self.pending:
            by_source.setdefault(problem.source, []).append(problem)
        self.pending, self.pending_bytes = [], 0
        for source, problems in by_source.items():
            self._repair_from(source, problems)
            self.not_fixed += sum(1 for pr in problems if not pr.fixed)

    def _repair_from(self, source: int, problems: list[Problem]) -> None:
        try:
            records = self._read(source, problems)
        except NeoError as exc:
            for pr in problems:
                pr.repaired.update({n: f"error: reading S{source}: {exc}" for n in pr.targets})
            return
        targets = sorted({n for pr in problems for n in pr.targets})
        for target in targets:
            mine = [(pr, records[id(pr)]) for pr in problems if target in pr.targets and id(pr) in records]
            self._write(target, mine, source)
        for pr in problems:
            if id(pr) not in records:
                pr.repaired.update({n: f"error: S{source} no longer holds it as listed" for n in pr.targets})

    def _read(self, source: int, problems: list[Problem]) -> dict:
        """``{id(problem): RepairObject or TransactionMeta}`` read from the sound copy."""
        out = {}
        objects = [pr for pr in problems if pr.table == OBJECT]
        if objects:
            reply = self.checker._call(source, "LoadMany", spb.LoadManyRequest(
                loads=[spb.LoadRequest(oid=pr.oid, serial=pr.tid) for pr in objects]))
            for pr, r in zip(objects, reply.loads):
                if r.status in (spb.FOUND, spb.DELETED) and r.serial == pr.tid:
                    out[id(pr)] = spb.RepairObject(oid=pr.oid, tid=pr.tid, data=r.data, checksum=r.checksum,
                                                   deleted=r.status == spb.DELETED, data_tid=r.data_tid,
                                                   blob_tid=r.blob_tid, blob_chunks=r.blob_chunks,
                                                   blob_bytes=r.blob_bytes)
        for pr in problems:
            if pr.table == TRANSACTION:
                reply = self.checker._call(source, "Transactions", spb.TransactionsRequest(
                    partitions=[self.partition], min_tid=pr.tid, max_tid=pr.tid, limit=1))
                if reply.transactions and reply.transactions[0].tid == pr.tid:
                    out[id(pr)] = reply.transactions[0]
        return out

    def _copy_blob_chunks(self, source: int, target: int, rec) -> None:
        """Copy the chunks of the blob of ``rec`` (a ``RepairObject``) from ``source`` to
        ``target``, one chunk at a time, before the record is repaired there."""
        for index in range(rec.blob_chunks):
            chunk = self.checker._call(source, "LoadBlobChunk", spb.LoadBlobChunkRequest(
                oid=rec.oid, serial=rec.tid, index=index))
            if chunk.status != spb.FOUND or chunk.blob_tid != rec.blob_tid:
                raise RequestRefused(f"S{source} no longer holds chunk {index} of the blob of "
                                     f"oid 0x{rec.oid.hex()} at 0x{rec.tid.hex()}")
            self.checker._call(target, "RepairBlobChunk", spb.RepairBlobChunkRequest(
                oid=rec.oid, blob_tid=rec.blob_tid, index=index, checksum=chunk.checksum, data=chunk.data))

    def _write(self, target: int, items: list, source: int) -> None:
        for pr, rec in list(items):
            if pr.table == OBJECT and rec.blob_tid:
                try:
                    self._copy_blob_chunks(source, target, rec)
                except NeoError as exc:
                    pr.repaired[target] = f"error: copying its blob: {exc}"
                    items.remove((pr, rec))
        if not items:
            return
        request = spb.RepairRecordsRequest(
            objects=[rec for pr, rec in items if pr.table == OBJECT],
            transactions=[rec for pr, rec in items if pr.table == TRANSACTION])
        ordered = [pr for pr, _ in items if pr.table == OBJECT] + [pr for pr, _ in items if pr.table == TRANSACTION]
        try:
            reply = self.checker._call(target, "RepairRecords", request)
        except NeoError as exc:
            for pr in ordered:
                pr.repaired[target] = f"error: {exc}"
            return
        for pr, outcome in zip(ordered, reply.outcomes):
            pr.repaired[target] = _ACTIONS.get(outcome.action, "unknown")


# -- neoctl check ------------------------------------------------------------------------

def check_command(admin, opts) -> tuple:
    """``neoctl check [--repair] [PARTITION...]``: ``(output, exit status)``; the status is
    1 when problems remain (with ``--repair``: when some could not be repaired)."""
    checker = Checker(admin, repair=opts.repair)
    reports = [checker.check_partition(p) for p in checker.partitions(opts.partition)]
    remaining = sum(r.not_fixed_total for r in reports)
    status = 1 if remaining else 0
    if opts.json:
        return {"max_tid": f"0x{checker.max_tid.hex()}", "repair": opts.repair, "ok": not remaining,
                "problems": sum(r.problems_total for r in reports), "remaining": remaining,
                "partitions": [_report_doc(r) for r in reports]}, status
    lines = [_report_text(r, opts.repair) for r in reports]
    total = sum(r.problems_total for r in reports)
    tail = (f"checked {len(reports)} partitions up to tid 0x{checker.max_tid.hex()}: "
            f"{sum(1 for r in reports if r.problems_total)} with problems, {total} problems")
    if opts.repair:
        tail += f", {total - remaining} repaired, {remaining} not repaired"
    return "\n".join([*lines, tail]), status


def _names(nodes) -> list[str]:
    return [f"S{n}" for n in nodes]


def _problem_doc(pr: Problem) -> dict:
    doc = {"table": pr.table, "tid": f"0x{pr.tid.hex()}", "missing": _names(pr.missing),
           "corrupt": _names(pr.corrupt), "differs": pr.differs, "incomplete": pr.incomplete,
           "source": f"S{pr.source}" if pr.source is not None else None}
    if pr.oid:
        doc["oid"] = f"0x{pr.oid.hex()}"
    if pr.repaired:
        doc["repaired"] = {f"S{n}": action for n, action in sorted(pr.repaired.items())}
    return doc


def _report_doc(r: PartitionReport) -> dict:
    return {"partition": r.partition, "nodes": _names(r.nodes),
            "unchecked": {f"S{n}": s for n, s in r.unchecked.items()}, "objects": r.objects,
            "transactions": r.transactions, "ok": not r.problems_total,
            "problems_total": r.problems_total, "not_fixed": r.not_fixed_total,
            "completeness_unchecked_partitions": sorted(r.not_looked_up),
            "problems": [_problem_doc(pr) for pr in r.problems]}


def _report_text(r: PartitionReport, repair: bool) -> str:
    where = " ".join(_names(r.nodes)) or "no running copy"
    if r.unchecked:
        where += "; not checked: " + " ".join(f"S{n} ({s})" for n, s in r.unchecked.items())
    if r.not_looked_up:
        where += ("; objects of partitions " + " ".join(map(str, sorted(r.not_looked_up)))
                  + " not looked up (no readable copy running)")
    head = (f"partition {r.partition}: {'OK' if not r.problems_total else f'{r.problems_total} problems'} "
            f"({where}; {r.objects} revisions, {r.transactions} transactions)")
    lines = [head, *(f"  {_problem_text(pr, repair)}" for pr in r.problems)]
    if r.problems_total > len(r.problems):
        lines.append(f"  ... and {r.problems_total - len(r.problems)} more")
    return "\n".join(lines)


def _problem_text(pr: Problem, repair: bool) -> str:
    if pr.incomplete:
        return (f"transaction tid 0x{pr.tid.hex()} is incomplete (torn): its object oid 0x{pr.oid.hex()} "
                f"has no revision at that tid on {' '.join(_names(pr.missing))}"
                + (": not repaired (no copy holds it)" if repair else ""))
    what = (f"object oid 0x{pr.oid.hex()} tid 0x{pr.tid.hex()}" if pr.table == OBJECT
            else f"transaction tid 0x{pr.tid.hex()}")
    found = []
    if pr.missing:
        found.append("missing on " + " ".join(_names(pr.missing)))
    if pr.corrupt:
        found.append("corrupt on " + " ".join(_names(pr.corrupt)))
    if pr.differs:
        found.append("differs between sound copies")
    text = f"{what}: {', '.join(found)}"
    if pr.source is None:
        return text + (": not repaired (no sound copy agreed on)" if repair else "")
    if repair:
        done = ", ".join(f"S{n} {pr.repaired.get(n, 'not attempted')}" for n in pr.targets)
        text += f" -> from S{pr.source}: {done}"
    return text
