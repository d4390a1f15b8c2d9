"""Planning ``neoctl tweak``: an even spread of cells with minimal movement.  Pure.

``plan(rows, replicas, hosts)`` takes the current rows (``{node: state}`` per
partition), the wanted extra copies and the *target* nodes (running members that are
not being emptied) with the host each reports, and returns the new rows:

1. **Keep** the cells already on target nodes, at most ``replicas + 1`` per partition,
   preferring UP_TO_DATE, then OUT_OF_DATE (catching up), then FEEDING (a leaving cell
   kept again goes back to UP_TO_DATE: it was written all along), then a host not
   already used by the partition, then the less loaded node.  CORRUPTED cells go.
2. **Quotas**: ``partitions * (replicas + 1)`` cells over ``n`` nodes gives each node
   ``total // n`` cells, and the ``total % n`` nodes keeping the most cells one more
   (ties: the lower node id), so a balanced table keeps its cells.
3. **Shed** the cells of nodes above quota: first where the node shares a host with
   another cell of the partition, then OUT_OF_DATE cells, then the highest partitions.
4. **Fill** each partition up to ``replicas + 1`` cells with new OUT_OF_DATE cells:
   nodes under quota first, then a host the partition does not use yet, then the less
   loaded node, then the lower id.

Cells not kept: readable ones (UP_TO_DATE, FEEDING) on running nodes become FEEDING,
dropped by the master once the partition has no OUT_OF_DATE cell left; others go.
On a table this produced, steps 1-4 change nothing: tweaking twice is a no-op.
"""
from __future__ import annotations

from neoarray.states import READABLE, CellState

_KEEP_ORDER = {CellState.UP_TO_DATE: 0, CellState.OUT_OF_DATE: 1, CellState.FEEDING: 2}


class TweakError(ValueError):
    """The table cannot be tweaked as asked (too few nodes)."""


def plan(rows: list[dict[int, str]], replicas: int, hosts: dict[int, str],
         running: set[int]) -> list[dict[int, str]]:
    """New rows for ``rows`` spread over the target nodes ``hosts`` (node -> host);
    ``running``: every running node (where leaving readable cells may keep feeding)."""
    copies = replicas + 1
    if len(hosts) < copies:
        raise TweakError(f"{copies} copies of each partition (replicas={replicas}) need at least "
                         f"{copies} running storage nodes in the table, there are {len(hosts)}")
    chosen = [_keep(row, copies, hosts) for row in rows]
    quota = _quotas(chosen, len(rows) * copies, hosts)
    _shed(chosen, quota, hosts)
    _fill(chosen, copies, quota, hosts)
    return [_new_row(row, set(keep), running) for row, keep in zip(rows, chosen)]


def _load(chosen: list[list[int]]) -> dict[int, int]:
    load: dict[int, int] = {}
    for nodes in chosen:
        for n in nodes:
            load[n] = load.get(n, 0) + 1
    return load


def _keep(row: dict[int, str], copies: int, hosts: dict[int, str]) -> list[int]:
    holders = sorted((n for n, s in row.items() if n in hosts and s != CellState.CORRUPTED),
                     key=lambda n: (_KEEP_ORDER[row[n]], n))
    kept, used = [], set()
    for distinct_only in (True, False):
        for n in holders:
            if len(kept) < copies and n not in kept and (not distinct_only or hosts[n] not in used):
                kept.append(n)
                used.add(hosts[n])
    return sorted(kept)


def _quotas(chosen: list[list[int]], total: int, hosts: dict[int, str]) -> dict[int, int]:
    base, extra = divmod(total, len(hosts))
    load = _load(chosen)
    ranked = sorted(hosts, key=lambda n: (-load.get(n, 0), n))
    return {n: base + (1 if i < extra else 0) for i, n in enumerate(ranked)}


def _shed(chosen: list[list[int]], quota: dict[int, int], hosts: dict[int, str]) -> None:
    load = _load(chosen)
    where: dict[int, list[int]] = {}       # node -> its partitions (one scan, not one per node)
    for p, nodes in enumerate(chosen):
        for n in nodes:
            where.setdefault(n, []).append(p)
    for node in sorted(quota):
        excess = load.get(node, 0) - quota[node]
        if excess <= 0:
            continue
        mine = where.get(node, [])         # only this node's own removals change its list

        def shared_host(p, node=node):
            return any(hosts[m] == hosts[node] for m in chosen[p] if m != node)
        for p in sorted(mine, key=lambda p: (not shared_host(p), -p))[:excess]:
            chosen[p].remove(node)


def _fill(chosen: list[list[int]], copies: int, quota: dict[int, int], hosts: dict[int, str]) -> None:
    load = _load(chosen)
    for nodes in chosen:
        while len(nodes) < copies:
            used = {hosts[n] for n in nodes}
            candidates = [n for n in hosts if n not in nodes]
            best = min(candidates, key=lambda n: (load.get(n, 0) >= quota[n], hosts[n] in used,
                                                  load.get(n, 0), n))
            nodes.append(best)
            load[best] = load.get(best, 0) + 1
        nodes.sort()


def _new_row(row: dict[int, str], keep: set[int], running: set[int]) -> dict[int, str]:
    new = {}
    for n in sorted(keep | set(row)):
        state = row.get(n)
        if n in keep:
            if state is None:
                new[n] = CellState.OUT_OF_DATE
            else:
                new[n] = CellState.UP_TO_DATE if state == CellState.FEEDING else state
        elif state in READABLE and n in running:
            new[n] = CellState.FEEDING
    return new


def changes(old: list[dict[int, str]], new: list[dict[int, str]]) -> list[tuple[int, int, str, str]]:
    """``[(partition, node, old state or "", new state or "")]`` for every cell that differs."""
    out = []
    for p, (a, b) in enumerate(zip(old, new)):
        for n in sorted(set(a) | set(b)):
            if a.get(n) != b.get(n):
                out.append((p, n, a.get(n, ""), b.get(n, "")))
    return out
