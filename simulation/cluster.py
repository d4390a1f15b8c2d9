"""The cluster-level events of the simulated master: a storage node joins or is
lost, the cluster starts (RECOVERING -> VERIFYING -> RUNNING) and verifies what the
storage nodes hold, verdicts on held transactions, catch-up reports.

These follow ``master/node.py`` step by step over the real ``PartitionTable``,
``CatchUp`` and ``CommitCore``, with simulated calls instead of gRPC; they are kept
in this one module so that the simulation switches to the master's cluster core
(without I/O) once it exists.  Generators are processes of the master
(``simulation/world.py``).
"""
from __future__ import annotations

import functools

from master.commit import owner_of
from neoarray.ids import u64
from neoarray.states import ClusterState, NodeState

from .world import Call, Sleep

NODE_TIMEOUT_S = 2.0          # a storage silent that long is lost
RPC_S = 1.0
SETTLE_ATTEMPTS_MAX = 5


def storage_joined(m, nid: int, last_tid: bytes, last_oid: bytes) -> None:
    """``nid`` identified (``Master._storage_joined``)."""
    m.ids.raise_to(u64(last_oid), last_tid)
    m.log(f"S{nid} joined (it was {m.nodes.get(nid)}), cluster {m.cluster_state}")
    m.nodes[nid] = NodeState.RUNNING
    m.last_seen[nid] = m.world.now
    m.commits.reported.discard(nid)
    if m.cluster_state == ClusterState.RUNNING:
        if m.catchup.node_returned(m.pt, nid, m.last_committed):
            m.persist_pt()
        settle_unreported(m, nid)


def storage_lost(m, nid: int) -> None:
    """``nid`` stopped answering (``Master.storage_lost``)."""
    if m.nodes.get(nid) != NodeState.RUNNING:
        return
    running = m.running_storages()
    m.nodes[nid] = NodeState.DOWN
    m.log(f"S{nid} lost")
    if m.cluster_state == ClusterState.RUNNING and m.pt.node_lost(nid, running):
        m.persist_pt()
    if m.cluster_state == ClusterState.RUNNING and not m.pt.operational(m.running_storages()):
        m.cluster_state = ClusterState.RECOVERING


def session_ended(m, nid: int) -> None:
    """Client ``nid``'s event stream closed (``Master.unsubscribe``): what it does
    not finish is dead, its stores and votes are dropped."""
    if nid not in m.clients:
        return
    m.log(f"session of C{nid} ended")
    m.clients.discard(nid)
    keep = m.commits.session_ended(nid)
    m.carry_out(m.flow.settle())
    for sid in sorted(m.running_storages()):
        m.world.send(m.name, f"S{sid}", "abort_node", (nid, keep), 0)


def monitor(m) -> None:
    """Storage nodes silent for ``NODE_TIMEOUT_S`` are lost."""
    for nid in sorted(m.running_storages()):
        if m.world.now - m.last_seen.get(nid, 0.0) > NODE_TIMEOUT_S:
            storage_lost(m, nid)


def try_start(m):
    """RECOVERING -> VERIFYING -> RUNNING when the table can serve (``Master.try_start``)."""
    if m.cluster_state != ClusterState.RECOVERING:
        return
    running = m.running_storages()
    if not m.pt.operational(running):
        return
    if not m.pt.nodes() <= running and m.world.now - m.started_at < NODE_TIMEOUT_S:
        return
    m.cluster_state = ClusterState.VERIFYING
    verified = yield from verify(m, running)
    if not verified:
        if m.cluster_state == ClusterState.VERIFYING:
            m.cluster_state = ClusterState.RECOVERING
        return
    if m.cluster_state == ClusterState.VERIFYING:
        m.cluster_state = ClusterState.RUNNING
        running = m.running_storages()
        lost = [nid for nid in sorted(m.pt.nodes() - running) if m.pt.node_lost(nid, running)]
        returned = [nid for nid in sorted(running) if m.catchup.node_returned(m.pt, nid, m.last_committed)]
        if returned or lost:
            m.persist_pt()
        m.log(f"RUNNING, table {m.table()}, last committed 0x{m.last_committed.hex()}")


def verify(m, running: set[int]):
    """Learn the last ids and settle what the storage nodes hold (``Master._verify``)."""
    nids = sorted(running)
    replies = yield [Call(f"S{n}", "recovery_info", (), RPC_S) for n in nids]
    if any(r is None or not r.ok for r in replies):
        return False
    infos = {n: r.value for n, r in zip(nids, replies)}
    for last_tid, last_oid, _, _ in infos.values():
        m.ids.raise_to(u64(last_oid), last_tid)
        m.last_committed = max(m.last_committed, m.commits.published_bound(last_tid))
    reconciled = yield from reconcile(m, infos)
    m.ids.tid_reserved = max(m.ids.tid_reserved, m.ids.last_tid)
    return reconciled


def _orders(m, infos: dict) -> tuple[list, list, bool]:
    """The Lock and abort orders that settle what ``infos`` report (``Master._reconcile``)."""
    core = m.commits
    for nid, (_, _, locked, _) in sorted(infos.items()):
        core.reported.add(nid)
        for ttid, tid in sorted(locked.items()):
            if core.finishing(ttid) is None:
                core.remember(ttid, tid)
                m.last_committed = max(m.last_committed, tid)
    everyone = core.everyone_reported(m.pt)
    locks, aborts = [], []
    for nid, (_, _, locked, voted) in sorted(infos.items()):
        for txn in list(core.queue):
            if txn.lock_answered and nid in txn.storages and txn.ttid not in voted:
                core.node_reported(txn, nid, txn.ttid in locked)
        for ttid in voted:
            txn = core.finishing(ttid)
            if txn is not None:
                if not txn.lock_answered:
                    continue
                if txn.decided:
                    locks.append((nid, ttid, txn.tid))
                else:
                    core.vote_reported(txn, nid)
                continue
            owner = owner_of(ttid)
            verdict = core.verdict(ttid, owner, True, 0.0, owner in m.clients, everyone)
            if verdict is not None:
                (locks if verdict[1] else aborts).append((nid, ttid, verdict[1]))
    locks += [order for order in core.late_locks(m.running_storages()) if order not in locks]
    return locks, aborts, everyone


def reconcile(m, infos: dict):
    """Carry out ``_orders``; False when a node did not answer (it is settled again)."""
    core = m.commits
    locks, aborts, everyone = _orders(m, infos)
    calls = [Call(f"S{n}", "lock", (ttid, tid), RPC_S) for n, ttid, tid in locks]
    calls += [Call(f"S{n}", "abort", (ttid,), RPC_S) for n, ttid, _ in aborts]
    replies = yield calls
    for (nid, ttid, _), reply in zip(locks, replies):
        txn = core.finishing(ttid)
        if reply is not None and reply.ok and txn is not None:
            core.node_reported(txn, nid, locked=True)
    if any(r is None or not r.ok for r in replies):
        return False
    if everyone:
        done = {ttid for info in infos.values() for ttid in info[2]} | {ttid for _, ttid, _ in locks}
        done = sorted(t for t in done if core.finishing(t) is None)
        for nid in sorted(m.running_storages()):
            m.to_unlock.setdefault(nid, []).extend(done)
    m.carry_out(m.flow.settle())
    return True


def settle_unreported(m, nid: int) -> None:
    """Settle ``nid`` once at a time (``Master._settle_unreported``)."""
    if nid not in m.settling:
        m.settling.add(nid)
        m.world.spawn("M", _settle_storage(m, nid))


def _settle_storage(m, nid: int):
    delay_s = 0.2
    try:
        for _ in range(SETTLE_ATTEMPTS_MAX):
            reply = yield Call(f"S{nid}", "recovery_info", (), RPC_S)
            if reply is not None and reply.ok:
                settled = yield from reconcile(m, {nid: reply.value})
                if settled:
                    return
            if m.nodes.get(nid) != NodeState.RUNNING:
                return
            yield Sleep(delay_s)
            delay_s *= 2
    finally:
        m.settling.discard(nid)


def pending_verdicts(m, nid: int, pending) -> list[tuple[bytes, bytes]]:
    """Verdicts on what ``nid`` holds (``Master.pending_verdicts``)."""
    core = m.commits
    if m.cluster_state != ClusterState.RUNNING:
        return []
    if nid not in core.reported:
        settle_unreported(m, nid)
        return []
    everyone = core.everyone_reported(m.pt)
    out = []
    for ttid, owner, voted, age_s in pending:
        owner = owner or owner_of(ttid)
        verdict = core.verdict(ttid, owner, voted, age_s, owner in m.clients, everyone)
        if verdict is not None:
            out.append((ttid, verdict[1] or b""))
    if out:
        m.carry_out(m.flow.settle())
    return out


def replication_report(m, nid: int, done) -> list:
    """Cells copied far enough become UP_TO_DATE; the node's catch-up tasks
    (``Master.replication_report``)."""
    if m.cluster_state != ClusterState.RUNNING or m.nodes.get(nid) != NodeState.RUNNING:
        return []
    changed = False
    for p, tid in done:
        unpublished = functools.partial(m.commits.unpublished_on, nid, p, m.partitions)
        changed |= m.catchup.replicated(m.pt, nid, p, tid, unpublished)
    if changed:
        m.persist_pt()
        m.log(f"S{nid} caught up: table {m.table()}")
    return m.catchup.tasks(m.pt, nid, m.running_storages(), m.last_committed)
