"""The master's cluster core: which nodes there are, which are alive, the cluster
state, and what verification settles.

No I/O, no threads, no clock: ``Master`` (``master/node.py``) calls it under its lock
with the time (``now_s``, seconds of a monotonic clock) and carries out what it
returns: actions (``DropChannel``, ``Settle``, ``TryStart``, ``BROADCAST``), the
storages to verify, the Lock and AbortTransaction orders of a reconciliation, the
Unlock orders.  Its durable state (the storage nodes, the next node id, the
partition table) goes through ``persist(**values)``, called *before* the core acts on
a change, as ``IdAllocator``'s reservations (``master/core.py``).  A simulation drives
it the same way with a simulated clock: every output comes in a sorted order.

The rules:

Registration (``identify``).  A node says its type, the id it was given before (0
for none), its addresses and, for a storage, the last oid and tid it holds.  Refused
before anything is registered: names longer than ``NAME_CHARS_MAX``, a last tid or
oid that is not an id, a storage address that is not ``host:port``; any node while
the cluster is STOPPING; a storage naming an id this cluster does not know (its data
belongs elsewhere); a new node beyond ``nodes_max``.  A node whose id is known with
the same type is the same node coming back (same id); any other gets a new id.
Node ids are never handed out twice: the counter is persisted before an id is used
(and a standby that takes over skips ``NODE_ID_RESERVE``).  A storage raises the id
allocation to what it holds; it is RUNNING when it is a member (it has cells or was
added) or when there is no partition table yet, else PENDING (``neoctl add`` makes it
a member).  A member coming back while the cluster runs gets its OUT_OF_DATE cells'
catch-up (``master/replication.py``) and is settled (what it voted or locked
meanwhile); otherwise the master tries to start the cluster.  Clients and admin
connections are RUNNING at once.

Liveness (``heartbeat``, ``silent``).  Each heartbeat of a known node that is not
DOWN records ``now_s``; a DOWN or unknown node must identify again.  A RUNNING or
PENDING storage not heard from for more than ``node_timeout_s`` is lost.

Loss (``storage_lost``).  The node goes DOWN.  While RUNNING, its readable cells go
OUT_OF_DATE where another readable copy on a running node remains (FEEDING ones are
dropped: ``PartitionTable.node_lost``), and the table is persisted; if some partition
is left without a readable copy on a running node, the cluster goes back to
RECOVERING.  The master drops its channel to the node and tells everyone.

Cluster states (``try_start``, ``verified``, ``stop``).  A master starts RECOVERING.
Without a partition table, it creates one once ``storages_expected`` storages (RUNNING
or PENDING) are there, or at once with ``force`` (``neoctl start``) if any is; they
all become RUNNING members.  With a table that can serve (every partition has a
readable cell on a running node), it moves to VERIFYING, except in its first
``node_timeout_s`` when some member is still away (unless forced: a member that does
not come back is marked out of date once the cluster runs).  Verification asks the
running storages what they hold (``recovered``, ``reconcile``); if it fails the
cluster is RECOVERING again, as it is when storages lost meanwhile (a storage lost
while VERIFYING changes no cell) leave the table unable to serve; once done it is
RUNNING: members still away lose their readable cells (``node_lost``), those back
with OUT_OF_DATE cells copy up to the last committed tid.  ``stop`` makes it STOPPING (for good: identification is refused) and
names the storages to shut down.  Commits, new oids and final statuses need RUNNING
and no truncation under way (``require_running``).

Verification (``recovered``, ``reconcile``, ``reconciled``), by the rules of
``master/commit.py``: the id allocation and the last committed tid rise to what the
storages hold; a transaction some node locked was committed (by an earlier master:
remembered, and every node that only voted it locks it too); a transaction being
finished learns which of its voters hold it; a vote of a dead transaction is
aborted, one whose client may still finish it stays.  Once every node of the table
has reported, the records of locked transactions are forgotten (Unlock) on every
running storage.  A heartbeat's pending transactions get verdicts only from a node
that reported (``pending_verdicts``); one that did not is settled first.

Take-over (``take_over``, ``must_take_over``).  A standby that has followed a primary
and has not heard from it for ``node_timeout_s`` (plus a jitter) asks the other
masters; if none answers as primary it takes over: epoch + 1, and the oid, tid and
node-id reservations of its copy are raised by a whole reservation each (the copy may
lag the primary's).

Storage nodes as witnesses (with two masters there is no quorum among them).  Every
write of the master's state raises its *version* (``master/state.py``); the state's
*stamp* is ``(epoch, version)``, compared lexicographically (``newer_stamp``).
Rule A (``must_witness``): a confirmed primary about to act on a new acknowledged
state (``ACKED_KEYS``) that some standby it knows of has not acknowledged has every
running storage durably record the stamp first (``RecordStamp``); a storage that
does not answer is lost (``storage_lost``: bounded, each loss leaves one storage
fewer to ask).  When none of those asked recorded it (``unwitnessed``: the primary is
cut off from every storage), the primary does not act on the state at all: it steps
down (``Unwitnessed``), since a standby taking over from an older copy would find no
witness of it (simulation seed 201117 with ``--stores-in-vote``: a commit
acknowledged on a table that marked a voter OUT_OF_DATE, recorded nowhere; the
standby that took over served that voter as UP_TO_DATE without the commit).  When
every standby acknowledged, nothing more is done.  Rule B
(``copy_stamp``): a master that took over from a copy keeps the copy's stamp
(``taken_over_from``, persisted, kept through further take-overs until confirmed);
it starts verifying only once every storage of its table is back (no grace period;
``neoctl start`` forces it, at the risk named in the log), and a storage reporting a
newer stamp (identify, ``RecoveryInfo``) makes it stale (``check_stamp`` raises
``StaleCopy``: the shell steps down).  Once RUNNING the copy is confirmed
(``taken_over_from`` cleared); an unconfirmed master records no stamps (it served
nothing yet; its confirmation is an acknowledged write, witnessed if need be).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from neoarray.errors import ClusterUnavailable, LimitExceeded, RequestRefused, StaleCopy
from neoarray.ids import MAX_TID, Z64, checked_id, p64, u64
from neoarray.masters import NO_STAMP, is_address, newer_stamp
from neoarray.states import ClusterState, NodeState, NodeType

from .commit import NODE_ID_RESERVE, owner_of
from .core import OID_RESERVE, TID_RESERVE, PartitionTable

log = logging.getLogger("neoarray.master")

NAME_CHARS_MAX = 4096        # address, host and data path of a node
# node types in the view pushed to clients and storage nodes (``Master.cluster_view``)
VIEW_NODE_TYPES = frozenset({NodeType.STORAGE, NodeType.MASTER})
# written state a standby must hold before the primary acts on it: id reservations
# (never hand out an id twice), the partition table (a cell marked OUT_OF_DATE
# because it missed a commit must not be readable again after a take-over), and the
# confirmation of a take-over (rule B)
ACKED_KEYS = frozenset({"oid_reserved", "tid_reserved", "pt", "taken_over_from"})
IDENTIFYING_TYPES = (NodeType.STORAGE, NodeType.CLIENT, NodeType.ADMIN)


@dataclass
class NodeInfo:
    node_id: int
    type: NodeType
    address: str = ""
    host: str = ""
    state: NodeState = NodeState.UNKNOWN
    since: float = 0.0              # ``now_s`` of its last change of state
    last_seen: float = 0.0          # ``now_s`` of its last identify or heartbeat
    read_only: bool = False
    data_path: str = ""
    data_address: str = ""          # storages: their framed data plane (neoarray/transport)

    def set_state(self, state: NodeState, now_s: float) -> None:
        if state != self.state:
            self.state, self.since = state, now_s


@dataclass(frozen=True)
class Identity:
    """What a node says when it identifies."""
    type: NodeType
    node_id: int = 0                # the id it was given before (0: none)
    address: str = ""
    host: str = ""
    read_only: bool = False
    data_path: str = ""
    data_address: str = ""
    last_oid: bytes = b""           # storages: the last ids they hold
    last_tid: bytes = b""
    stamp: tuple[int, int] = NO_STAMP   # storages: the newest master state stamp recorded


@dataclass(frozen=True)
class Recovered:
    """What a storage holds (its ``RecoveryInfo``): last ids, the transactions it
    locked ``(ttid, tid)`` and those it only voted."""
    last_oid: bytes = b""
    last_tid: bytes = b""
    locked: tuple[tuple[bytes, bytes], ...] = ()
    voted: tuple[bytes, ...] = ()
    stamp: tuple[int, int] = NO_STAMP     # the newest master state stamp it recorded


@dataclass(frozen=True)
class Pending:
    """A transaction a storage reports holding in a heartbeat."""
    ttid: bytes
    node_id: int = 0                # its client (0: the one its ttid names)
    voted: bool = False
    age_s: float = 0.0


@dataclass
class Reconciliation:
    """Orders a reconciliation needs: ``locks`` ``(node, ttid, tid)`` and ``aborts``
    ``(node, ttid, None)``; ``everyone``: every node of the table has reported."""
    locks: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    aborts: list[tuple[int, bytes, None]] = field(default_factory=list)
    everyone: bool = False


# -- actions: what the shell carries out, in the order given -----------------------
@dataclass(frozen=True)
class DropChannel:
    """Close the channel to ``node_id`` (it restarted or was lost)."""
    node_id: int


@dataclass(frozen=True)
class Settle:
    """Ask ``node_id`` what it holds and reconcile it (``reconcile``)."""
    node_id: int


@dataclass(frozen=True)
class TryStart:
    """Call ``try_start`` again, later, outside the lock."""


@dataclass(frozen=True)
class Broadcast:
    """Send the cluster view to every subscriber (after the lock is released)."""


TRY_START, BROADCAST = TryStart(), Broadcast()


def check_identity(who: Identity) -> None:
    """Refuse, before anything is registered, names longer than ``NAME_CHARS_MAX`` and
    last ids a node cannot hold (they would move the id allocation out of range)."""
    for what in ("address", "host", "data_path", "data_address"):
        if len(getattr(who, what)) > NAME_CHARS_MAX:
            raise RequestRefused(f"identify: {what} longer than {NAME_CHARS_MAX} characters")
    if who.last_tid and (len(who.last_tid) != 8 or who.last_tid > MAX_TID):
        raise RequestRefused(f"identify: last_tid 0x{who.last_tid.hex()} is not a tid "
                             f"(8 bytes, at most 0x{MAX_TID.hex()})")
    if who.last_oid:
        checked_id(who.last_oid, "identify: last_oid")
    if who.type == NodeType.STORAGE:     # the master calls them: an address it cannot dial wedges nothing
        _check_address(who.address, "address")
        if who.data_address:
            _check_address(who.data_address, "data_address")


def _check_address(address: str, what: str) -> None:
    """``RequestRefused`` unless ``address`` is ``host:port`` with a port in 1..65535."""
    if not is_address(address):
        raise RequestRefused(f"identify: storage {what} {address[:80]!r} is not host:port "
                             f"(a port from 1 to 65535)")


def may_take_over(state_held: bool, stale: bool) -> bool:
    """Whether a standby's copy may be taken over from (``must_take_over``'s
    ``followed``): it holds a state and no storage showed it stale (rule B; following
    a primary replaces the state, and the mark with it)."""
    return state_held and not stale


TAKE_OVER_RECHECK_S = 1.0     # a standby that found no primary asks once more after this


def must_take_over(followed: bool, silent_s: float, node_timeout_s: float, jitter_s: float) -> bool:
    """Whether a standby asks the other masters if one is primary (before taking over):
    it followed a primary and heard nothing for ``node_timeout_s + jitter_s``.  When
    none answers as primary it asks once more ``TAKE_OVER_RECHECK_S`` later, and takes
    over only if none does then either: a round of ``Role`` calls that began while the
    primary was cut off can end unanswered just after the network healed, and a
    standby with an older copy then took over with a newer epoch, deposed the primary,
    found its copy stale and stepped down (simulation seeds 207482, 808312: seconds
    without a primary after the faults)."""
    return followed and silent_s >= node_timeout_s + jitter_s


def newer_primary(is_primary: bool, epoch: int, higher_than: int) -> bool:
    """Whether a master's answer to ``Role`` names a primary to follow or to step down
    for: it is primary with an epoch above ``higher_than`` (a standby asks with the
    epoch it holds minus one, never following an older primary; a primary asks with
    its own, stepping down only for a newer one)."""
    return is_primary and epoch > higher_than


def follows_state(epoch: int, epoch_held: int, base=None, held_stamp=NO_STAMP) -> bool:
    """Whether a standby takes the state a primary of ``epoch`` sends it: never from a
    primary older than the copy it holds (an old primary restarted alone), nor from a
    primary that took over from a copy not confirmed yet (``base``, its
    ``taken_over_from``) older than the state held (``held_stamp``, ``state_stamp``):
    that primary may be stale, and the newer state held here must not be lost
    (simulation seed 3076)."""
    return epoch >= epoch_held and (base is None or not newer_stamp(held_stamp, base))


def known_stamp(held, stale_stamp=None) -> tuple[int, int]:
    """The newest master state a standby knows of: its copy's (``held``,
    ``state_stamp``), or the newer one a storage showed that copy stale with
    (``stale_stamp``, rule B, kept with the mark).  Given to ``follows_state`` as the
    state held, it keeps a master shown stale from following a primary that took over
    from a copy older than that: such a copy is stale too, and following it cleared the
    mark that keeps this master from taking over (simulation seed 401555: two standbys
    shown stale took turns following each other's stale take-overs, each deposing the
    primary that held the newest state, and the cluster never came back)."""
    if stale_stamp and newer_stamp(stale_stamp, held):
        return tuple(stale_stamp)
    return tuple(held)


def state_stamp(epoch: int, version: int, taken_over_from=None) -> tuple[int, int]:
    """The stamp a master state stands for: the copy's it was taken over from while not
    confirmed, else its own ``(epoch, version)``."""
    return tuple(taken_over_from) if taken_over_from else (epoch, version)


STANDBY_FIRST, TAKE_OVER, PRIMARY_NOW = "standby first", "take over", "primary"


def start_role(standby_of: bool, has_peers: bool, primary_found: bool, stale: bool = False) -> str:
    """How a master process starts (``master/__main__.py``): ``STANDBY_FIRST`` when
    told to (``--standby-of``) or when another master answers as primary; else, with
    other masters (``--masters``), ``TAKE_OVER``: its state may be a copy of another
    primary's (it followed one), whose epoch it must never use as its own (simulation
    seed 187: two masters obeyed with one epoch); alone, ``PRIMARY_NOW``.  A master
    whose state a storage showed stale (``stale``, rule B) waits as a standby: it
    takes over again only after following a primary (``may_take_over``)."""
    if standby_of or primary_found or stale:
        return STANDBY_FIRST
    return TAKE_OVER if has_peers else PRIMARY_NOW


EPOCH_ROUND = 1 << 32         # epochs of one round of take-overs: round * EPOCH_ROUND + token


def take_over(epoch: int, oid_reserved: int, tid_reserved: bytes, next_node_id: int, token: int,
              version: int = 0, taken_over_from=None) -> dict:
    """The state values a standby writes when it takes over, from its copy's: an epoch of
    the next round, told apart by ``token`` (1 .. ``EPOCH_ROUND`` - 1, drawn by each
    standby: two standbys taking over from the same copy at once get different epochs,
    storages obey the higher only, so never two masters with one epoch), and reservations
    raised by a whole one each (the copy may lag).  ``taken_over_from``: the stamp the
    copy is checked against (rule B), the copy's ``(epoch, version)``, or the one of an
    earlier take-over not confirmed yet (``taken_over_from`` of the copy: what that
    master copied was never checked)."""
    if not 0 < token < EPOCH_ROUND:
        raise RequestRefused(f"take_over: token {token} is not in 1..{EPOCH_ROUND - 1}")
    return {"epoch": (max(epoch, 1) // EPOCH_ROUND + 1) * EPOCH_ROUND + token,
            "oid_reserved": oid_reserved + OID_RESERVE,
            "tid_reserved": p64(u64(tid_reserved) + TID_RESERVE),
            "next_node_id": next_node_id + NODE_ID_RESERVE,
            "taken_over_from": list(taken_over_from) if taken_over_from else [epoch, version]}


def must_witness(confirmed: bool, followers_known, acknowledged) -> bool:
    """Rule A: whether a primary has every running storage record its state's stamp
    before acting on a new acknowledged state: it is confirmed (an unconfirmed
    take-over serves nothing yet) and some standby it knows of (``followers_known``,
    addresses) is not among those that acknowledged that state (``acknowledged``)."""
    return confirmed and bool(set(followers_known) - set(acknowledged))


def unwitnessed(asked, failed) -> bool:
    """Rule A: whether a state no storage recorded must not be acted on: storages were
    asked (``asked``) and every one of them failed (``failed``)."""
    return bool(asked) and set(asked) <= set(failed)


def stale_copy(copy_stamp, stamp) -> bool:
    """Rule B: whether a storage's recorded ``stamp`` shows that the copy a master took
    over from (``copy_stamp``; None: confirmed) lacks what another master acted on."""
    return copy_stamp is not None and newer_stamp(stamp, copy_stamp)


class ClusterCore:
    """Nodes, liveness, cluster state and verification of one master (the rules are
    the module's).  ``ids`` (``IdAllocator``), ``commits`` (``CommitCore``) and
    ``catchup`` (``CatchUp``) are the master's cores it reads and changes;
    ``members()``: the storage nodes that are part of the cluster (None: those with
    cells)."""

    def __init__(self, pt: PartitionTable, stored_nodes: dict, next_node_id: int, *,
                 storages_expected: int, node_timeout_s: float, nodes_max: int, now_s: float,
                 persist, ids, commits, catchup, members=None, copy_stamp=None):
        self.pt = pt
        # rule B: the stamp of the copy this master took over from, until confirmed
        self.copy_stamp = tuple(copy_stamp) if copy_stamp else None
        self.partitions = pt.partitions
        self.persist = persist
        self.ids, self.commits, self.catchup = ids, commits, catchup
        self.members = members or self.pt_nodes
        self.storages_expected = storages_expected
        self.node_timeout_s = node_timeout_s
        self.nodes_max = nodes_max
        self.next_node_id = next_node_id
        self.started_at_s = now_s
        self.cluster_state = ClusterState.RECOVERING
        self.last_committed = Z64                 # newest tid acknowledged (published)
        self.nodes: dict[int, NodeInfo] = {}
        for nid, (typ, address, host) in stored_nodes.items():
            typ = NodeType(typ)
            state = NodeState.DOWN if typ == NodeType.STORAGE else NodeState.UNKNOWN
            self.nodes[int(nid)] = NodeInfo(int(nid), typ, address, host, state, since=now_s)

    # -- views and persistence ------------------------------------------------------
    def pt_nodes(self) -> set[int]:
        return self.pt.nodes()

    def running_storages(self) -> set[int]:
        return {n.node_id for n in self.nodes.values()
                if n.type == NodeType.STORAGE and n.state == NodeState.RUNNING}

    def storage_ids(self) -> set[int]:
        return {n.node_id for n in self.nodes.values() if n.type == NodeType.STORAGE}

    def persist_table(self) -> None:
        self.persist(pt=self.pt.to_doc())

    def persist_nodes(self) -> None:
        self.persist(nodes={str(n.node_id): [n.type, n.address, n.host]
                            for n in self.nodes.values() if n.type == NodeType.STORAGE})

    def new_node_id(self) -> int:
        """A node id never handed out before (persisted before it is used)."""
        nid = self.next_node_id
        while nid in self.nodes:
            nid += 1
        self.persist(next_node_id=nid + 1)
        self.next_node_id = nid + 1
        return nid

    def confirmed(self) -> bool:
        """Whether this master's state is its own or a copy confirmed (rule B)."""
        return self.copy_stamp is None

    def check_stamp(self, nid: int, stamp) -> None:
        """Rule B: ``StaleCopy`` when storage ``nid`` recorded a state stamp newer
        than the copy this master took over from."""
        if stale_copy(self.copy_stamp, stamp):
            raise StaleCopy(f"storage node S{nid} recorded the master state stamp {tuple(stamp)}, newer than "
                            f"{self.copy_stamp} of the copy this master took over from: the copy is stale, "
                            f"this master must not serve (the master that wrote it, or a standby of it, must)",
                            stamp)

    def require_running(self, truncating: bool = False) -> None:
        if self.cluster_state != ClusterState.RUNNING:
            raise ClusterUnavailable(f"cluster is {self.cluster_state}, not RUNNING")
        if truncating:
            raise ClusterUnavailable("the cluster is being truncated (neoctl truncate): retry")

    # -- nodes ----------------------------------------------------------------------
    def identify(self, who: Identity, now_s: float) -> tuple[int, list]:
        """Register ``who`` (the rules: Registration); its node id and the actions."""
        if who.type not in IDENTIFYING_TYPES:
            raise RequestRefused(f"unknown node type {who.type}")
        check_identity(who)
        if who.type == NodeType.STORAGE:
            self.check_stamp(who.node_id, who.stamp)
        if self.cluster_state == ClusterState.STOPPING:
            raise ClusterUnavailable("cluster is stopping")
        nid, typ = who.node_id, who.type
        known = self.nodes.get(nid)
        if known is None or known.type != typ:
            if typ == NodeType.STORAGE and nid:
                raise RequestRefused(f"storage node {nid} is not known to this cluster "
                                     f"(its data belongs elsewhere?)")
            if len(self.nodes) >= self.nodes_max:
                raise LimitExceeded(f"{len(self.nodes)} nodes known, nodes_max={self.nodes_max}: "
                                    f"a new {typ.lower()} is refused")
            nid = self.new_node_id()
            known = self.nodes[nid] = NodeInfo(nid, typ, since=now_s)
        known.address, known.host, known.read_only = who.address, who.host, who.read_only
        known.data_path, known.data_address = who.data_path, who.data_address
        known.last_seen = now_s
        if typ != NodeType.STORAGE:
            known.set_state(NodeState.RUNNING, now_s)
            return nid, []          # a client or admin connection changes no one's view
        return nid, self._storage_joined(known, who, now_s) + [BROADCAST]

    def _storage_joined(self, node: NodeInfo, who: Identity, now_s: float) -> list:
        actions: list = [DropChannel(node.node_id)]
        self.ids.raise_to(u64(who.last_oid or Z64), who.last_tid or Z64)
        in_pt = node.node_id in self.members()
        node.set_state(NodeState.RUNNING if in_pt or not self.pt.rows else NodeState.PENDING, now_s)
        self.persist_nodes()
        log.info("storage node S%d at %s is %s", node.node_id, node.address, node.state)
        # what it holds now is told again, also when it joins while the cluster is not
        # RUNNING: a verification already under way does not ask it (simulation seed 16986)
        self.commits.reported.discard(node.node_id)
        if self.cluster_state == ClusterState.RUNNING and in_pt:
            if self.catchup.node_returned(self.pt, node.node_id, self.last_committed):
                self.persist_table()
                log.info("S%d is back with OUT_OF_DATE cells: they copy up to tid 0x%s (ptid %d)",
                         node.node_id, self.last_committed.hex(), self.pt.ptid)
            actions.append(Settle(node.node_id))
        else:
            actions.append(TRY_START)
        return actions

    def show_master(self, address: str, state: NodeState, now_s: float) -> int | None:
        """A standby master at ``address`` is ``state`` (RUNNING: it follows this one;
        DOWN: it stopped); its node id, or None when there is nothing to show."""
        node = next((n for n in self.nodes.values()
                     if n.type == NodeType.MASTER and n.address == address), None)
        if node is None:
            if state == NodeState.DOWN:
                return None
            nid = self.new_node_id()
            node = self.nodes[nid] = NodeInfo(nid, NodeType.MASTER, address, address.rpartition(":")[0],
                                              since=now_s)
        node.set_state(state, now_s)
        return node.node_id

    def session_ended(self, nid: int) -> bool:
        """The event stream of ``nid`` closed: a client or admin connection is
        forgotten.  Whether it was in the cluster view."""
        node = self.nodes.get(nid)
        if node is not None and node.type != NodeType.STORAGE:
            del self.nodes[nid]
        return node is not None and node.type in VIEW_NODE_TYPES

    # -- liveness and loss ------------------------------------------------------------
    def heartbeat(self, nid: int, now_s: float) -> bool:
        """Record a heartbeat; False: ``nid`` must identify again."""
        node = self.nodes.get(nid)
        if node is None or node.state == NodeState.DOWN:
            return False
        node.last_seen = now_s
        return True

    def silent(self, now_s: float) -> list[int]:
        """RUNNING or PENDING storages not heard from for ``node_timeout_s``."""
        return sorted(n.node_id for n in self.nodes.values()
                      if n.type == NodeType.STORAGE and n.state in (NodeState.RUNNING, NodeState.PENDING)
                      and now_s - n.last_seen > self.node_timeout_s)

    def storage_lost(self, nid: int, why: str, now_s: float) -> list:
        """Storage ``nid`` is lost (the rules: Loss); the actions (none when it was
        already DOWN or is unknown)."""
        node = self.nodes.get(nid)
        if node is None or node.state == NodeState.DOWN:
            return []
        log.warning("storage node S%d lost: %s", nid, why)
        running = self.running_storages()
        node.set_state(NodeState.DOWN, now_s)
        if self.cluster_state == ClusterState.RUNNING and self.pt.node_lost(nid, running):
            self.persist_table()
        if self.cluster_state == ClusterState.RUNNING and not self.pt.operational(self.running_storages()):
            log.warning("partition table not operational: back to RECOVERING")
            self.cluster_state = ClusterState.RECOVERING
        return [DropChannel(nid), BROADCAST]

    # -- cluster state ------------------------------------------------------------------
    def try_start(self, now_s: float, force: bool = False) -> list[int] | None:
        """RECOVERING -> VERIFYING when the table can serve (the rules: Cluster
        states); the storages to verify, or None when it cannot start yet."""
        if self.cluster_state != ClusterState.RECOVERING:
            return None
        running = self.running_storages()
        if not self.pt.rows:
            pending = {n.node_id for n in self.nodes.values()
                       if n.type == NodeType.STORAGE and n.state == NodeState.PENDING}
            ready = sorted(running | pending)
            if not ready or (len(ready) < self.storages_expected and not force):
                return None
            self.pt = PartitionTable.create(self.partitions, self.pt.replicas, ready)
            for nid in ready:
                self.nodes[nid].set_state(NodeState.RUNNING, now_s)
            self.persist_table()
            running = self.running_storages()
        if not self.pt.operational(running):
            return None
        away = sorted(self.pt.nodes() - running)
        if away and self.copy_stamp is not None:
            if not force:
                return None     # rule B: every member must tell its stamp, no grace period
            log.warning("cluster start forced while storage nodes %s of the table are away and this "
                        "master's copy is not confirmed: if one of them recorded a newer master state, "
                        "acknowledged commits may be lost", away)
        if not force and away and now_s - self.started_at_s < self.node_timeout_s:
            return None     # just started: give every member a heartbeat period to come back
                            # (one that does not is marked out of date when the cluster runs)
        self.cluster_state = ClusterState.VERIFYING
        return sorted(running)

    def verification_failed(self) -> None:
        self.cluster_state = ClusterState.RECOVERING

    def verified(self) -> None:
        """Verification is done: VERIFYING -> RUNNING; members still down (a restarted
        master reloads every node DOWN, some may have died before the previous master
        noticed) miss what is committed from now on: their cells go OUT_OF_DATE, so
        they catch up when they return."""
        # the reservations also cover ids handed out by the previous run
        self.ids.tid_reserved = max(self.ids.tid_reserved, self.ids.last_tid)
        if self.cluster_state != ClusterState.VERIFYING:
            return
        running = self.running_storages()
        if not self.pt.operational(running):
            log.warning("a storage was lost during verification: partition table not operational, "
                        "back to RECOVERING")
            self.cluster_state = ClusterState.RECOVERING
            return
        self.cluster_state = ClusterState.RUNNING
        if self.copy_stamp is not None:
            log.info("the copy this master took over from (stamp %s) is confirmed", self.copy_stamp)
            self.copy_stamp = None
            self.persist(taken_over_from=None)
        lost = [nid for nid in sorted(self.pt.nodes() - running) if self.pt.node_lost(nid, running)]
        returned = [nid for nid in sorted(running)
                    if self.catchup.node_returned(self.pt, nid, self.last_committed)]
        if returned or lost:
            self.persist_table()
        if self.cluster_state == ClusterState.RUNNING:     # (a storage lost meanwhile: rule A)
            log.info("cluster RUNNING (ptid %d, last tid 0x%s)", self.pt.ptid, self.last_committed.hex())

    def stop(self) -> list[int]:
        """The cluster is STOPPING; the storages to shut down."""
        self.cluster_state = ClusterState.STOPPING
        return sorted(n.node_id for n in self.nodes.values()
                      if n.type == NodeType.STORAGE and n.state != NodeState.DOWN)

    # -- verification -------------------------------------------------------------------
    def recovered(self, infos: dict[int, Recovered]) -> None:
        """The id allocation and the last committed tid rise to what storages hold;
        ``StaleCopy`` first when one recorded a newer master state (rule B)."""
        for nid in sorted(infos):
            self.check_stamp(nid, infos[nid].stamp)
        for nid in sorted(infos):
            info = infos[nid]
            self.ids.raise_to(u64(info.last_oid or Z64), info.last_tid or Z64)
            # not beyond a commit still queued (locked on some node, not published): a
            # returning cell would copy up to it before its sources hold it (seed 20832)
            self.last_committed = max(self.last_committed, self.commits.published_bound(info.last_tid or Z64))

    def reconcile(self, infos: dict[int, Recovered], live_session) -> Reconciliation:
        """Settle what storage nodes hold (the rules: Verification): the Lock and
        AbortTransaction orders to send (``lock_done`` after each Lock, then
        ``reconciled``).  ``live_session(node)``: a client's session is live."""
        core = self.commits
        for nid in sorted(infos):
            core.reported.add(nid)
            for ttid, tid in infos[nid].locked:
                if core.finishing(ttid) is None:
                    core.remember(ttid, tid)          # committed by an earlier master
                    self.last_committed = max(self.last_committed, tid)
        out = Reconciliation(everyone=core.everyone_reported(self.pt))
        for nid in sorted(infos):
            self._reconcile_node(nid, infos[nid], live_session, out)
        # voters that told their vote of a transaction decided since: they lock it too,
        # or their readable cells miss a published commit (seed 16986)
        out.locks += [order for order in core.late_locks(self.running_storages()) if order not in out.locks]
        return out

    def _reconcile_node(self, nid: int, info: Recovered, live_session, out: Reconciliation) -> None:
        core = self.commits
        locked = {ttid for ttid, _ in info.locked}
        voted = set(info.voted)
        for txn in core.queue:
            if txn.lock_answered and nid in txn.storages and txn.ttid not in voted:
                core.node_reported(txn, nid, txn.ttid in locked)
        for ttid in info.voted:
            txn = core.finishing(ttid)
            if txn is not None:
                if not txn.lock_answered:
                    continue                            # its Lock orders are on their way
                if txn.decided:
                    out.locks.append((nid, ttid, txn.tid))
                else:
                    core.vote_reported(txn, nid)
                continue
            owner = owner_of(ttid)
            verdict = core.verdict(ttid, owner, True, 0.0, live_session(owner), out.everyone)
            if verdict is not None:
                if verdict[1]:
                    out.locks.append((nid, ttid, verdict[1]))
                else:
                    out.aborts.append((nid, ttid, None))

    def lock_done(self, nid: int, ttid: bytes) -> None:
        """``nid`` carried out a Lock order of a reconciliation."""
        txn = self.commits.finishing(ttid)
        if txn is not None:
            self.commits.node_reported(txn, nid, locked=True)

    def reconciled(self, infos: dict[int, Recovered], done: Reconciliation) -> dict[int, list[bytes]]:
        """The Unlock orders once a reconciliation's orders were sent: when every node
        of the table has reported, the locked records of transactions committed by an
        earlier master may go, on every running storage."""
        if not done.everyone:
            return {}
        ttids = {ttid for info in infos.values() for ttid, _ in info.locked}
        ttids.update(ttid for _, ttid, _ in done.locks)
        ttids = sorted(t for t in ttids if self.commits.finishing(t) is None)
        return {nid: list(ttids) for nid in sorted(self.running_storages())} if ttids else {}

    def pending_verdicts(self, nid: int, pending: list[Pending], live_session) -> tuple[list, bool]:
        """A heartbeat's pending transactions: ``(verdicts, settle)``, the verdicts
        ``(ttid, lock tid or None to abort)`` of those that must end, and whether
        ``nid`` must be settled first (it has not reported what it holds: no verdict
        before that)."""
        core = self.commits
        if self.cluster_state != ClusterState.RUNNING:
            return [], False
        if nid not in core.reported:
            return [], True
        everyone = core.everyone_reported(self.pt)
        out = []
        for p in pending:
            owner = p.node_id or owner_of(p.ttid)
            verdict = core.verdict(p.ttid, owner, p.voted, p.age_s, live_session(owner), everyone)
            if verdict is not None:
                out.append((p.ttid, verdict[1]))
        return out, False


class ClusterViews:
    """The cluster core's state as attributes of the shell that holds the core in
    ``cluster_core`` (``Master``, and the simulation's master)."""

    cluster_core: ClusterCore

    @property
    def nodes(self) -> dict[int, NodeInfo]:
        return self.cluster_core.nodes

    @property
    def pt(self) -> PartitionTable:
        return self.cluster_core.pt

    @property
    def cluster_state(self) -> ClusterState:
        return self.cluster_core.cluster_state

    @property
    def last_committed(self) -> bytes:
        """The newest tid acknowledged (published)."""
        return self.cluster_core.last_committed

    @last_committed.setter
    def last_committed(self, tid: bytes) -> None:
        self.cluster_core.last_committed = tid
