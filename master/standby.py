"""Standby masters: follow the primary's durable state, take over when it is gone.

Roles.  A master process is either the *primary* (the ``Master`` of ``node.py``
serves the Master and Admin services) or a *standby*: it answers those services with
UNAVAILABLE and a message naming the primary, so clients, storages and neoctl that
reach it move on to the next address of their list, and it keeps a copy of the
primary's ``MasterState`` current in its own data directory.  ``RoleRouter`` switches
one gRPC server between the two, so a standby that takes over keeps its address.

Following.  ``StatePublisher`` (on the primary) serves ``Standby.FollowState``, a
long poll: it answers with the whole state document when it is newer than what the
follower holds, else when the state changes (or after ``wait_ms``).  Nothing queues:
one pending document, the latest, per follower.  Each request acknowledges the
version the follower persisted; when the primary persists a new OID/TID reservation
or partition table it waits (at most ``ack_timeout_s``) until its live followers
acknowledged it before handing out ids above the old one or acting on the table, so
a standby's copy covers every id the primary handed out and every cell it marked
OUT_OF_DATE.  A follower that does not acknowledge in time is no longer waited for
(and the standby raises the reservations by one more reserve block when it takes
over, against that window).  Then the storages are the witnesses (rule A of
``master/cluster.py``): while a standby it knows of (``--masters``, or one that followed
it: ``standbys`` in the state) has not acknowledged a new reservation or table, the
primary has every running storage record the state's stamp ``(epoch, version)``
(``Master.witness``) before acting on it.  A follower does not take the state of a
primary that took over from a copy not confirmed yet when it holds a newer state.

Taking over.  ``StandbyFollower`` polls; when no primary answered for
``node_timeout_s`` (and no other master answers as primary), it bumps the *epoch*
(master generation) in its copy, raises the id reservations and returns: the caller
starts the normal ``Master`` over the copied state, like a restart from the data
directory (RECOVERING, storages identify, verification, RUNNING), marked as taken over
from that copy (``taken_over_from``, rule B): it verifies only once every storage of
its table identified, and a storage that recorded a newer stamp makes it step down
(exit status 3, ``stale`` written: it restarts as a standby and never takes over from
that copy); once RUNNING, the copy is confirmed.

Fencing.  Every call of a master to a storage carries its epoch in the metadata
(``master/fencing.py``); a storage remembers durably the highest epoch it saw and
refuses older ones, and a primary refused that way steps down (exits).  A master
started with ``--masters`` asks the other masters first and becomes a standby of one
that answers as primary; a running primary also checks them every ``node_timeout_s``
and steps down when one answers as primary with a higher epoch.

Limits: there is no quorum among the masters; the storages are the witnesses.  Two
standbys that lose the primary at the same moment both take over with different epochs
(``take_over``'s token): storages obey the higher only.  A take-over waits for every
storage of its table (an absent one may hold the newer stamp; ``neoctl start`` forces
it, at that risk).  A stale copy whose newer state lives only on a master that is gone
for good cannot serve: the cluster waits for that master (its data directory).  A
stale master racing the old primary may fence it (its ``RecoveryInfo`` calls carry
the new epoch) before it reads the stamps and steps down: both step down, and the old
primary restarted takes over with its newer state.  Run one standby per cluster.
"""
from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass, field

import grpc
import lmdb
import msgpack

from neoarray import wire
from neoarray.errors import ClusterUnavailable, LimitExceeded, NeoError, RequestRefused
from neoarray.masters import MASTERS_MAX, is_address, parse_masters  # noqa: F401  (parse_masters: __main__)
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import standby_pb2 as pb
from neoarray.proto import standby_pb2_grpc as rpc
from neoarray.states import NodeState

from .cluster import (
    ACKED_KEYS,
    EPOCH_ROUND,
    TAKE_OVER_RECHECK_S,
    follows_state,
    known_stamp,
    may_take_over,
    must_take_over,
    must_witness,
    newer_primary,
    state_stamp,
    take_over,
)
from .state import MasterState

log = logging.getLogger("neoarray.master.standby")

RUN = secrets.token_hex(8)          # this process's run token (a restart changes it)
WAIT_MS_MAX = 10_000                # longest a FollowState call is held
FOLLOW_WAIT_MS = 1_000              # what followers ask for
REFUSED_PREFIXES = ("/neoarray.v1.Master/", "/neoarray.v1.Admin/")


# ---------------------------------------------------------------- role router

class _Capture:
    """Stands for a ``grpc.Server`` to the generated ``add_*_to_server`` functions:
    keeps the handlers they register, for ``RoleRouter``."""

    def __init__(self):
        self.handlers: list = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service, handlers) -> None:
        pass      # the generic handler registered with them serves the same methods


def handlers_of(*pairs) -> list:
    """The gRPC handlers of ``(add_XServicer_to_server, servicer)`` pairs."""
    capture = _Capture()
    for add, servicer in pairs:
        add(servicer, capture)
    return capture.handlers


class RoleRouter(grpc.GenericRpcHandler):
    """One server, two roles: serves the handlers of the current role."""

    def __init__(self, handlers=()):
        self.handlers = list(handlers)

    def switch(self, handlers) -> None:
        self.handlers = list(handlers)

    def service(self, handler_call_details):
        for handler in self.handlers:
            found = handler.service(handler_call_details)
            if found is not None:
                return found
        return None


class _RefuseAsStandby(grpc.GenericRpcHandler):
    """Every Master and Admin method answers UNAVAILABLE, naming the primary."""

    def __init__(self, follower: StandbyFollower):
        self.follower = follower

    def service(self, details):
        if not details.method.startswith(REFUSED_PREFIXES):
            return None

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAVAILABLE, self.follower.refusal())
        if details.method.endswith("/Subscribe"):
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


class StandbyServicer(rpc.StandbyServicer):
    """The Standby service of a standby: it tells its role; following it is refused."""

    def __init__(self, follower: StandbyFollower):
        self.follower = follower

    def FollowState(self, request, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, self.follower.refusal())

    def Role(self, request, context):
        return pb.RoleReply(role=pb.STANDBY, epoch=self.follower.epoch(), primary=self.follower.primary)


def standby_handlers(follower: StandbyFollower) -> list:
    return [_RefuseAsStandby(follower),
            *handlers_of((rpc.add_StandbyServicer_to_server, StandbyServicer(follower)))]


# ---------------------------------------------------------------- primary side

@dataclass
class _Follower:
    acked: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    node_id: int = 0


def _check_follower_address(address: str) -> None:
    """A follower names itself by its ``host:port`` (shown as a MASTER node)."""
    if not is_address(address):
        raise RequestRefused(f"FollowState: {address[:100]!r} is not the host:port of a standby master")


class StatePublisher(rpc.StandbyServicer):
    """The primary's side: serves its state to followers, waits for their acknowledgement
    of id reservations, shows them as MASTER nodes."""

    def __init__(self, master, ack_timeout_s: float, peers=()):
        self.m = master
        self.ack_timeout_s = ack_timeout_s
        self.version = 0
        self.cond = threading.Condition()
        self.followers: dict[str, _Follower] = {}
        # every standby seen, even gone (one may take over), remembered across restarts
        self.known: list[str] = list(master.state_db.get("standbys", []))[-MASTERS_MAX:]
        self.peers = list(peers)            # the other masters given: any may hold a copy
        master.state_db.on_change = self._changed

    def _changed(self, names) -> None:
        """Called after every write of the state: wake followers; a new id reservation
        or partition table is not used before live followers hold it (bounded by
        ``ack_timeout_s``), nor, when a standby that may hold a copy did not
        acknowledge it, before every running storage recorded its stamp (rule A)."""
        with self.cond:
            self.version += 1
            version = self.version
            self.cond.notify_all()
        if ACKED_KEYS & set(names):
            acked = self._wait_acked(version)
            if must_witness(self.m.cluster_core.confirmed(), set(self.peers) | set(self.known), acked):
                self.m.witness()

    def _wait_acked(self, version: int) -> set[str]:
        """Wait (at most ``ack_timeout_s``) until live followers hold ``version``; the
        addresses of those that do."""
        deadline = time.monotonic() + self.ack_timeout_s
        with self.cond:
            while True:
                self._forget_silent()
                late = [a for a, f in self.followers.items() if f.acked < version]
                left = deadline - time.monotonic()
                if not late:
                    return set(self.followers)
                if left <= 0:
                    for address in late:
                        log.warning("standby master %s did not acknowledge the state "
                                    "within %.1f s: no longer waited for", address, self.ack_timeout_s)
                        self._drop(address)
                    return set(self.followers)
                self.cond.wait(min(left, 0.1))

    def _remember(self, known: list[str]) -> None:
        """Persist the standbys seen (a restarted primary still witnesses for them)."""
        try:
            self.m.state_db.put(standbys=known)
        except lmdb.Error:          # closed by a stop racing this call
            pass

    def _forget_silent(self) -> None:
        now = time.monotonic()
        for address in [a for a, f in self.followers.items()
                        if now - f.last_seen > self.m.limits.node_timeout_s]:
            log.warning("standby master %s is silent", address)
            self._drop(address)

    def _drop(self, address: str) -> None:
        follower = self.followers.pop(address)
        self.m.pool.submit(self._show, address, follower.node_id, NodeState.DOWN)

    def FollowState(self, request, context):
        _check_follower_address(request.address)
        wait_s = min(request.wait_ms, WAIT_MS_MAX) / 1000
        deadline = time.monotonic() + wait_s
        with self.cond:
            follower = self.followers.get(request.address)
            if follower is None:
                if len(self.followers) >= MASTERS_MAX:
                    raise LimitExceeded(f"{len(self.followers)} standby masters follow this one, "
                                        f"MASTERS_MAX={MASTERS_MAX}: {request.address} is refused")
                follower = self.followers[request.address] = _Follower()
                if request.address not in self.known:
                    self.known = (self.known + [request.address])[-MASTERS_MAX:]
                    self.m.pool.submit(self._remember, list(self.known))
                self.m.pool.submit(self._show, request.address, 0, NodeState.RUNNING)
            follower.last_seen = time.monotonic()
            if request.known_run == RUN:
                follower.acked = max(follower.acked, request.known_version)
                self.cond.notify_all()
                while (request.known_version >= self.version and not self.m.stopped.is_set()
                       and context.is_active() and time.monotonic() < deadline):
                    self.cond.wait(min(deadline - time.monotonic(), 0.5))
            version = self.version
        if self.m.stopped.is_set():
            raise ClusterUnavailable("the primary master is stopping")
        try:
            doc = self.m.state_db.snapshot()   # read after the version: at least that new
        except lmdb.Error as exc:              # closed by a stop racing this call
            raise ClusterUnavailable(f"the primary master is stopping ({exc})") from None
        return pb.FollowStateReply(run=RUN, version=version, state=msgpack.packb(doc), epoch=self.m.epoch)

    def Role(self, request, context):
        return pb.RoleReply(role=pb.PRIMARY, epoch=self.m.epoch)

    def _show(self, address: str, node_id: int, state: NodeState) -> None:
        """A standby appears (or goes) in the master's node list, type MASTER."""
        with self.m.lock:
            nid = self.m.cluster_core.show_master(address, state, time.monotonic())
            if nid is None:
                return
            with self.cond:
                if address in self.followers:
                    self.followers[address].node_id = nid
        self.m.broadcast_cluster()


# ---------------------------------------------------------------- standby side

def ask_role(address: str, cluster: str, timeout_s: float, tls=None):
    """The ``RoleReply`` of the master at ``address``, or None when it does not answer."""
    channel = wire.open_channel(address, cluster, tls=tls)
    try:
        return wire.call(rpc.StandbyStub(channel).Role, cpb.Empty(), timeout_s, f"role of {address}")
    except NeoError:
        return None
    finally:
        channel.close()


def find_primary(peers, cluster: str, timeout_s: float, higher_than: int = -1,
                 tls=None) -> tuple[str, int]:
    """The first of ``peers`` answering as primary with an epoch above ``higher_than``:
    ``(address, epoch)``, or ``("", 0)``."""
    for address in peers:
        role = ask_role(address, cluster, timeout_s, tls)
        if role is not None and newer_primary(role.role == pb.PRIMARY, role.epoch, higher_than):
            return address, role.epoch
    return "", 0


class StandbyFollower:
    """Keeps ``path`` (a ``MasterState``) a copy of the primary's; ``follow`` returns
    when this master must take over."""

    def __init__(self, path: str, cluster: str, peers, own_address: str,
                 node_timeout_s: float, rpc_timeout_s: float = 10.0, tls=None):
        self.tls = tls
        self.state = MasterState(path)
        known = self.state.get("cluster")
        if known is not None and known != cluster:
            raise RequestRefused(f"this master's data belongs to cluster {known!r}, not {cluster!r}")
        self.cluster = cluster
        self.peers = [a for a in peers if a != own_address]
        if not self.peers:
            raise RequestRefused("a standby master needs the address of another master")
        self.own_address = own_address
        self.node_timeout_s = node_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.primary = ""
        self.run, self.version = "", 0
        self.last_contact = time.monotonic()
        self.closed_epoch: int | None = None    # the epoch once the state is closed

    def epoch(self) -> int:
        """The epoch held; once the state is closed (taking over, or stopping: the gRPC
        server still answers ``Role`` until the primary's handlers replace these), the
        last one, instead of an error from the closed database."""
        if self.closed_epoch is None:
            try:
                return self.state.get("epoch", 0)
            except lmdb.Error:
                if self.closed_epoch is None:
                    raise
        return self.closed_epoch

    def refusal(self) -> str:
        where = f"the primary is at {self.primary}" if self.primary else "no primary answers it now"
        return f"this master ({self.own_address}) is a standby: {where}; ask the primary"

    def follow(self, stopped: threading.Event) -> bool:
        """Follow until ``stopped`` (False) or until it must take over (True)."""
        channel = stub = None
        while not stopped.is_set():
            if stub is None:
                # never a primary older than the state held (an old primary restarted alone)
                self.primary, _ = find_primary(self.peers, self.cluster, self.rpc_timeout_s,
                                               higher_than=self.epoch() - 1, tls=self.tls)
                if self.primary:
                    log.info("following the primary master at %s", self.primary)
                    channel = wire.open_channel(self.primary, self.cluster, tls=self.tls)
                    stub = rpc.StandbyStub(channel)
            if stub is not None and self._poll(stub):
                continue
            if stub is not None:
                channel.close()
                channel = stub = None
                self.primary = ""
            if self._must_take_over(stopped):
                return True
            stopped.wait(0.2)
        return False

    def _poll(self, stub) -> bool:
        """One FollowState; persists a newer state.  False: the primary did not answer."""
        request = pb.FollowStateRequest(address=self.own_address, known_run=self.run,
                                        known_version=self.version, wait_ms=FOLLOW_WAIT_MS)
        try:
            reply = wire.call(stub.FollowState, request, self.rpc_timeout_s + FOLLOW_WAIT_MS / 1000)
        except NeoError as exc:
            log.warning("lost the primary master at %s: %s", self.primary, exc)
            return False
        if not follows_state(reply.epoch, self.epoch()):
            log.error("the master at %s has epoch %d, older than this copy's %d: not following it",
                      self.primary, reply.epoch, self.epoch())
            return False
        if (reply.run, reply.version) != (self.run, self.version):
            doc = msgpack.unpackb(reply.state, strict_map_key=False)
            held = known_stamp(state_stamp(*self.state.stamp(), self.state.get("taken_over_from")),
                               self.state.get("stale_stamp"))
            if not follows_state(reply.epoch, self.epoch(), doc.get("taken_over_from"), held):
                log.error("the master at %s took over from a copy %s not confirmed yet, older than the state "
                          "%s held here: not following it (it may be stale)", self.primary,
                          doc.get("taken_over_from"), held)
                return False
            self.state.replace(doc)
            self.run, self.version = reply.run, reply.version
        self.last_contact = time.monotonic()
        return True

    def _must_take_over(self, stopped: threading.Event) -> bool:
        # else nothing to take over with, or a copy a storage showed stale
        followed = may_take_over(self.state.get("cluster") is not None, bool(self.state.get("stale")))
        if not must_take_over(followed, time.monotonic() - self.last_contact, self.node_timeout_s,
                              random.uniform(0, 0.5)):
            return False
        # a master that does not answer Role within the node timeout counts as gone, as
        # for a primary's watch of its peers (``watch_peers``): asking twice then costs
        # at most that per silent peer, not rpc_timeout_s
        timeout_s = min(self.rpc_timeout_s, self.node_timeout_s)
        for again in (False, True):     # no primary twice, TAKE_OVER_RECHECK_S apart
            if again and stopped.wait(TAKE_OVER_RECHECK_S):
                return False
            if find_primary(self.peers, self.cluster, timeout_s, higher_than=self.epoch() - 1, tls=self.tls)[0]:
                return False
        return True

    def take_over(self) -> int:
        """Bump the epoch and raise the id reservations in the copy; close it.
        Node ids skip ``NODE_ID_RESERVE``: the copy may lag the primary's counter, and
        a session id handed out twice would let a client finish another's transaction
        (``master/commit.py``).  Returns the new epoch (``Master`` then opens the
        directory)."""
        values = take_over(self.epoch(), self.state.get("oid_reserved", 0),
                           self.state.get("tid_reserved", bytes(8)), self.state.get("next_node_id", 1),
                           token=1 + secrets.randbelow(EPOCH_ROUND - 1), version=self.state.get("version", 0),
                           taken_over_from=self.state.get("taken_over_from"))
        epoch = values["epoch"]
        self.state.put(**values)
        self.closed_epoch = epoch
        self.state.close()
        log.warning("the primary master %s has been unreachable for %.1f s: taking over with epoch %d",
                    self.peers, time.monotonic() - self.last_contact, epoch)
        return epoch

    def close(self) -> None:
        self.closed_epoch = self.epoch()
        self.state.close()


def stale_at_start(path: str) -> bool:
    """Whether the state in ``path`` was shown stale by a storage (``Master.stale``):
    the master then starts as a standby (``cluster.start_role``)."""
    state = MasterState(path)
    try:
        return bool(state.get("stale"))
    finally:
        state.close()


def take_over_at_start(path: str, cluster: str, peers, own_address: str, node_timeout_s: float) -> None:
    """A master started with other masters, none answering as primary: a new epoch over
    the state it holds (``cluster.start_role``); a fresh directory has none to take."""
    follower = StandbyFollower(path, cluster, peers, own_address, node_timeout_s)
    if follower.state.get("cluster") is None:
        follower.close()
        return
    follower.take_over()


def watch_peers(master, peers, cluster: str, interval_s: float, step_down, tls=None) -> None:
    """A primary's check of the other masters (``peers()``: those it was given and the
    standbys that followed it): one answering as primary with a higher epoch took over;
    this one steps down (``step_down(reason)``)."""
    while not master.stopped.wait(interval_s):
        address, epoch = find_primary(peers(), cluster, interval_s, higher_than=master.epoch, tls=tls)
        if address:
            step_down(f"the master at {address} is primary with epoch {epoch} > {master.epoch}")
            return
