"""The processes of the simulated master's cluster events, the shell around the real
``ClusterCore`` (``master/cluster.py``) as ``master/node.py`` is: the cluster starts
(``try_start``: RECOVERING -> VERIFYING -> RUNNING, asking the storages what they
hold and carrying out the orders of the reconciliation), a storage node is settled
(``settle_unreported``), a heartbeat's verdicts and catch-up report.

The core decides; here are only the simulated calls (``Call``, instead of gRPC) and
the order of the core's calls, those of ``Master.try_start``, ``_verify``,
``_reconcile``, ``_settle_storage``, ``pending_verdicts`` and
``replication_report``.  Generators are processes of the master
(``simulation/world.py``).
"""
from __future__ import annotations

import functools

from master import table_core
from master.cluster import Pending, Recovered
from neoarray.errors import StaleCopy
from neoarray.states import ClusterState, NodeState

from .world import Call, Sleep

NODE_TIMEOUT_S = 2.0          # a storage silent that long is lost
RPC_S = 1.0
SETTLE_ATTEMPTS_MAX = 5


def try_start(m):
    """RECOVERING -> VERIFYING -> RUNNING when the table can serve (``Master.try_start``)."""
    running = m.cluster_core.try_start(m.world.now)
    if running is None:
        return
    verified = yield from verify(m, running)
    if not verified:
        m.cluster_core.verification_failed()
        return
    m.cluster_core.verified()
    if m.cluster_state == ClusterState.RUNNING:
        m.log(f"RUNNING, table {m.table()}, last committed 0x{m.last_committed.hex()}")


def _recovered(value) -> Recovered:
    """A storage's ``recovery_info`` reply as ``Master._recovery_info`` reads it."""
    last_tid, last_oid, locked, voted, stamp = value
    return Recovered(last_oid, last_tid, tuple(sorted(locked.items())), tuple(voted), stamp)


def verify(m, running: list[int]):
    """Learn the last ids and settle what the storage nodes hold (``Master._verify``);
    False when a node did not answer."""
    replies = yield [Call(f"S{n}", "recovery_info", (), RPC_S) for n in running]
    if any(r is None or not r.ok for r in replies):
        return False
    infos = {n: _recovered(r.value) for n, r in zip(running, replies)}
    try:
        m.cluster_core.recovered(infos)
    except StaleCopy as exc:            # (``Master.try_start``)
        m.stale(exc)
        return False
    return (yield from reconcile(m, infos))


def reconcile(m, infos: dict):
    """Carry out the orders of ``ClusterCore.reconcile`` (``Master._reconcile``, which
    sends them one after the other and stops at the first failure; here they go
    together); False when a node did not answer (it is settled again)."""
    done = m.cluster_core.reconcile(infos, m.live_session)
    calls = [Call(f"S{n}", "lock", (ttid, tid), RPC_S) for n, ttid, tid in done.locks]
    calls += [Call(f"S{n}", "abort", (ttid,), RPC_S) for n, ttid, _ in done.aborts]
    replies = yield calls
    for (nid, ttid, _), reply in zip(done.locks, replies):
        if reply is not None and reply.ok:
            m.cluster_core.lock_done(nid, ttid)
    if any(r is None or not r.ok for r in replies):
        return False
    for nid, ttids in m.cluster_core.reconciled(infos, done).items():
        m.to_unlock.setdefault(nid, []).extend(ttids)
    m.carry_out(m.flow.settle())
    return True


def settle_unreported(m, nid: int) -> None:
    """Settle ``nid`` once at a time (``Master._settle_unreported``)."""
    if nid not in m.settling:
        m.settling.add(nid)
        m.world.spawn(m.name, _settle_storage(m, nid))


def _settle_storage(m, nid: int):
    """``Master._settle_storage`` with the retries of ``Master._until_done``."""
    delay_s = 0.2
    try:
        for _ in range(SETTLE_ATTEMPTS_MAX):
            reply = yield Call(f"S{nid}", "recovery_info", (), RPC_S)
            if reply is not None and reply.ok:
                settled = yield from reconcile(m, {nid: _recovered(reply.value)})
                if settled:
                    return
            node = m.nodes.get(nid)
            if node is None or node.state != NodeState.RUNNING:
                return
            yield Sleep(delay_s)
            delay_s *= 2
    finally:
        m.settling.discard(nid)


def pending_verdicts(m, nid: int, pending) -> list[tuple[bytes, bytes | None]]:
    """Verdicts on what ``nid`` holds (``Master.pending_verdicts``): ``(ttid, lock
    tid or None to abort)``."""
    pending = [Pending(ttid, owner, voted, age_s) for ttid, owner, voted, age_s in pending]
    verdicts, settle = m.cluster_core.pending_verdicts(nid, pending, m.live_session)
    if settle:
        settle_unreported(m, nid)
    if verdicts:
        m.carry_out(m.flow.settle())
    return verdicts


def replication_report(m, nid: int, done) -> list:
    """Cells copied far enough become UP_TO_DATE; the node's catch-up tasks
    (``Master.replication_report``)."""
    node = m.nodes.get(nid)
    if m.cluster_state != ClusterState.RUNNING or node is None or node.state != NodeState.RUNNING:
        return []
    changed = False
    for p, tid in done:
        unpublished = functools.partial(m.commits.unpublished_on, nid, p, m.partitions)
        changed |= m.catchup.replicated(m.pt, nid, p, tid, unpublished)
    changed |= bool(table_core.drop_fed(m.pt, m.catchup, m.running_storages(), m.commits.queue, m.partitions))
    if changed:
        m.persist_pt()
        m.log(f"S{nid} caught up: table {m.table()}")
    return m.catchup.tasks(m.pt, nid, m.running_storages(), m.last_committed)
