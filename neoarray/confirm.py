"""What a destructive ``neoctl`` command removes, and the confirmation it needs.

``truncate``, ``drop``, ``kill``, lowering ``set replicas``, ``pack`` and ``check
--repair`` first say what goes (how many transactions and from which date, which node
and cells, which copies), then ask on a terminal.  ``--yes`` answers for scripts;
without a terminal (standard input not a TTY) and without ``--yes`` nothing is changed
and the command fails, naming ``--yes``: a command pasted or run by a script by mistake
changes nothing.

The texts are read from the cluster just before the change; what they show is what the
master holds then (a commit finishing meanwhile is not counted).
"""
from __future__ import annotations

import sys

from .admin import partition_ranges
from .errors import NeoError
from .ids import tid_repr
from .states import READABLE, CellState, NodeType
from .views import TableView, running_storages

TRANSACTIONS_COUNTED_MAX = 10_000      # a truncate preview counts this many at most


class NotConfirmed(NeoError):
    """The change was not confirmed: nothing was changed."""


def confirm(opts, what: str) -> None:
    """Ask before the change ``what`` describes, unless ``opts.yes``; raise
    ``NotConfirmed`` when the answer is not yes or no one can answer."""
    if opts.yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(f"{what}\nnothing changed: standard input is not a terminal, "
                           f"add --yes to confirm")
    sys.stderr.write(f"{what}\nProceed? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise NotConfirmed("not confirmed: nothing changed")


def truncate_text(admin, tid: bytes, last: bytes) -> str:
    """``truncate TID``: how many transactions after TID go, TID's date and the last one's."""
    count = admin.count_transactions(tid, last, TRANSACTIONS_COUNTED_MAX)
    many = ("an unknown number of transactions (a partition has no readable copy)" if count is None
            else f"more than {count} transactions" if count >= TRANSACTIONS_COUNTED_MAX
            else f"{count} transaction(s)")
    return (f"truncate deletes, on every storage node, {many} committed after\n"
            f"  {tid_repr(tid)} UTC, up to the last one\n  {tid_repr(last)} UTC;\n"
            f"clients are disconnected and drop their caches. This cannot be undone.")


def _cells(pt: TableView, nid: int) -> dict[int, CellState]:
    """Partition -> cell state of node ``nid``."""
    return {p: c.state for p, row in enumerate(pt.rows) for c in row.cells if c.node_id == nid}


def _last_copies(pt, nodes, nid: int) -> list[int]:
    """Partitions where ``nid`` holds the only readable copy on a running node."""
    running = running_storages(nodes)
    return [p for p, row in enumerate(pt.rows)
            if any(c.node_id == nid and c.state in READABLE for c in row.cells)
            and not any(c.node_id != nid and c.node_id in running and c.state in READABLE for c in row.cells)]


def node_text(admin, nid: int, verb: str) -> str:
    """``drop``/``kill`` S<nid>: the node, its cells, and whether it holds the last
    readable copy of a partition."""
    nodes, pt = admin.nodes(), admin.partition_table()
    node = next((n for n in nodes if n.node_id == nid and n.type is NodeType.STORAGE), None)
    if node is None:
        raise NeoError(f"{verb}: S{nid} is not a storage node of this cluster (see neoctl print node)")
    cells = _cells(pt, nid)
    letters = " ".join(f"{s.letter}={sum(1 for v in cells.values() if v == s)}"
                       for s in CellState if s in cells.values())
    last = _last_copies(pt, nodes, nid)
    what = (f"drop removes S{nid} from the cluster: its {len(cells)} cell(s) leave the partition table "
            f"and their data is deleted" if verb == "drop"
            else f"kill shuts S{nid} down: its {len(cells)} cell(s) are unreadable until it restarts")
    where = (f"  S{nid}: {node.state.value} at {node.address or '-'}, "
             f"cells: partitions {partition_ranges(cells)} ({letters or 'none'})")
    last_copies = f"{partition_ranges(last)} (the master refuses this)" if last else "none"
    return "\n".join([what, where, f"  last readable copy of partitions: {last_copies}"])


def replicas_text(admin, replicas: int) -> str | None:
    """Lowering ``set replicas``: the copies the next ``tweak`` removes (planned as the
    master plans it, ``master.tweak``); None when replicas do not go down."""
    from master import tweak as planner
    pt, nodes = admin.partition_table(), admin.nodes()
    if replicas >= pt.replicas:
        return None
    running = running_storages(nodes)
    hosts = {n.node_id: n.host for n in nodes if n.node_id in running}
    rows = [{c.node_id: c.state.letter for c in row.cells} for row in pt.rows]
    head = (f"set replicas {pt.replicas} -> {replicas}: each partition keeps {replicas + 1} "
            f"cop{'y' if replicas == 0 else 'ies'}; the next tweak removes")
    try:
        plan = planner.plan(rows, replicas, hosts, running)
    except planner.TweakError as exc:
        return f"{head} copies, which ones cannot be planned now ({exc})"
    going = [(p, n) for p, n, old, new in planner.changes(rows, plan) if not new or (new == "F" and old != "F")]
    count = f"{len(going)} cop{'y' if len(going) == 1 else 'ies'}{':' if going else ''}"
    return "\n".join([f"{head} {count}", *(f"  partition {p}: S{n}" for p, n in going)])


def pack_text(tid: bytes, gc: bool) -> str:
    """``pack TID``: up to which date history goes."""
    return (f"pack removes, on every storage node, the revisions older than\n  {tid_repr(tid)} UTC\n"
            f"that a later revision replaced (history and undo before that date are lost)"
            + ("; objects unreachable from the root are deleted" if gc else "")
            + ". This cannot be undone.")


def repair_text(partitions: list[int], count: int) -> str:
    """``check --repair``: it rewrites copies."""
    which = f"partitions {','.join(map(str, partitions))}" if partitions else f"all {count} partitions"
    return (f"check --repair compares every copy of {which} and rewrites the missing and corrupt\n"
            f"copies on the storage nodes from a sound one (`neoctl check` lists the problems without "
            f"changing anything).")
