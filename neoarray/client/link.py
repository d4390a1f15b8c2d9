"""The client's link to the cluster: master connection, event stream, routing.

``ClusterLink`` identifies to the master, keeps the cluster view (partition table,
node addresses, state) current from the event stream, hands invalidations to a
callback in TID order, and reconnects (with bounded back-off) whenever the master
goes away; after a reconnection the ``on_reconnect`` callback runs, since events may
have been missed.  ``master`` may list several masters (``host:port,host:port``, a
primary and its standbys): on losing the primary the link tries each address in turn
(a standby answers UNAVAILABLE) until one answers as primary; standbys the primary
shows in the cluster view (MASTER nodes) join the list.

Transports: only Identify goes over gRPC, to the address the user gave; the master's
reply names its framed data plane (``neoarray.transport``), where every other call to
the master goes, the event stream included, and the cluster view names each storage
node's, where loads, stores and votes go.
"""
from __future__ import annotations

import itertools
import logging
import socket
import threading
import time

from ZODB import POSException

from .. import diagnose, security, wire
from ..errors import ClusterNameMismatch, ClusterUnavailable, NeoError
from ..masters import learn_masters, next_address, parse_masters
from ..states import READABLE, CellState, ClusterState, NodeType
from ..transport.client import FramedChannel
from ..transport.client import Stub as FramedStub
from ..views import ClusterView, Invalidation, running_storages
from . import calls

log = logging.getLogger("neoarray.client")

SUSPECT_S = 5.0            # a storage that failed a commit is left out of new ones this long


class ClusterLink:
    def __init__(self, master: str, cluster: str, on_invalidation, on_reconnect,
                 rpc_timeout_s: float = 30.0, connect_timeout_s: float = 30.0,
                 read_only: bool = False, message_bytes_max: int = wire.MESSAGE_BYTES_MAX,
                 tls: security.TLSConfig | None = None):
        self.master_addresses = parse_masters(master, "master")
        self.master_address = self.master_addresses[0]     # the one in use
        self.cluster = cluster
        self.on_invalidation = on_invalidation
        self.on_reconnect = on_reconnect
        self.rpc_timeout_s = rpc_timeout_s
        self.read_only = read_only
        self.message_bytes_max = message_bytes_max
        self.tls = tls
        self.channel = wire.open_channel(self.master_address, cluster, message_bytes_max, tls=tls)
        # one channel per master address, kept until close: another thread may still be
        # calling on the one in use when the link moves on (closing it under a call
        # crashed grpcio with a segmentation fault in a fault test)
        self._master_channels = {self.master_address: self.channel}
        self.control = calls.master_stub(self.channel)    # gRPC: Identify
        self.master = self.control                        # every other call: the data plane once known
        self.data_channel: FramedChannel | None = None
        self.node_id = 0
        self.partitions = 0
        self.info: ClusterView | None = None
        self.addresses: dict[int, str] = {}            # storage node -> its gRPC address
        self.data_addresses: dict[int, str] = {}       # storage node -> its data plane
        self.running: set[int] = set()
        self._readable_rows: dict[int, tuple[int, ...]] = {}    # partition -> its readable running cells
        self.stubs: dict[str, object] = {}             # storage address -> stub
        self.channels: dict[str, object] = {}          # storage address -> its channel
        self.framed_nodes: set[int] = set()
        self.changed = threading.Condition()
        self.closed = threading.Event()
        self.connected = threading.Event()
        self.generation = 0
        self._rr = itertools.count()
        self.suspect_s = SUSPECT_S
        self._suspects: dict[int, float] = {}      # node id -> monotonic time it is trusted again
        self._suspects_lock = threading.Lock()
        self.on_info = None            # called with the nodes whenever the view changes
        self._stream = self._events_of_stream = None
        self._connect(connect_timeout_s)
        self.thread = threading.Thread(target=self._events, daemon=True, name="neoarray-events")
        self.thread.start()

    # -- connection ---------------------------------------------------------------
    def _connect(self, timeout_s: float) -> None:
        """Identify to the first master that answers as primary, trying each address
        of the list in turn (back-off doubling to 1 s after each full round), and open
        the event stream: its first event (the view) is awaited here, so a refused
        subscription (``subscribers_max``) fails the connection instead of a thread.

        The first connection (none yet) asks each failing address why
        (``diagnose.connection``) and gives up before ``timeout_s`` once every address
        has a cause: at once for a lasting one (a TLS mismatch), after
        ``diagnose.REFUSED_WAIT_S`` when nothing listens.  A reconnection (the master
        restarting) waits out ``timeout_s`` as before."""
        start = time.monotonic()
        deadline = start + timeout_s
        causes: dict[str, diagnose.Cause | None] | None = {} if not self.node_id else None
        delay = 0.05
        tried = 0
        while True:
            try:
                identity = calls.identify(self.control, socket.gethostname(), self.read_only,
                                          min(self.rpc_timeout_s, max(timeout_s, 1.0)),
                                          f"identify at {self.master_address}")
                self._open_data_plane(identity.data_address)
                stream, events, first = self._subscribe(identity.node_id, max(deadline - time.monotonic(), 1.0))
                break
            except ClusterNameMismatch:
                raise
            except ClusterUnavailable as exc:
                if self.closed.is_set():        # closed while reconnecting: give up at once
                    raise
                if causes is not None:
                    causes[self.master_address] = diagnose.connection(self.master_address, self.tls)
                self._connect_failed(exc, start, timeout_s, causes)
                tried += 1
                self._next_master()
                if tried % len(self.master_addresses) == 0:
                    self.closed.wait(delay)
                    delay = min(delay * 2, 1.0)
        self.node_id = identity.node_id
        self.partitions = identity.partitions
        self._set_info(first if isinstance(first, ClusterView) else identity.view)
        self._stream, self._events_of_stream = stream, events
        self.connected.set()

    def _connect_failed(self, exc: ClusterUnavailable, start: float, timeout_s: float, causes) -> None:
        """Raise ``ClusterUnavailable`` if it is time to give up connecting (see
        ``_connect``), naming each address and what is wrong there."""
        waited_s = time.monotonic() - start
        known = [causes.get(a) for a in self.master_addresses] if causes else [None]
        explained = all(known) and (all(c.lasting for c in known)
                                    or waited_s > min(timeout_s, diagnose.REFUSED_WAIT_S))
        addresses = ",".join(self.master_addresses)
        if explained:
            raise ClusterUnavailable(f"no master answers as primary at {addresses}: "
                                     f"{'; '.join(map(str, known))}") from None
        if waited_s > timeout_s:
            found = "".join(f"; {c}" for c in known if c)
            raise ClusterUnavailable(f"no master answers as primary at {addresses} after {timeout_s:.0f} s "
                                     f"(last: {exc}{found})") from None

    def _open_data_plane(self, address: str) -> None:
        """Master calls go to the framed data plane at ``address`` (gRPC without one)."""
        old = self.data_channel
        if address:
            self.data_channel = FramedChannel(address, self.cluster, self.message_bytes_max, tls=self.tls)
            self.master = FramedStub(self.data_channel, "neoarray.v1.Master")
        else:
            self.data_channel, self.master = None, self.control
        if old is not None:
            old.close()

    def _subscribe(self, node_id: int, timeout_s: float):
        """Open the event stream and read its first event within ``timeout_s``: ``(the
        stream, to cancel; its events, failures as domain exceptions; the first event)``."""
        stream = calls.subscribe(self.master, node_id)
        late = threading.Event()
        timer = threading.Timer(timeout_s, lambda: (late.set(), stream.cancel()))
        timer.start()
        events = calls.events(stream)
        try:
            return stream, events, next(events)
        except ClusterUnavailable:
            if late.is_set():
                raise ClusterUnavailable(f"subscribe: no first event within {timeout_s:.1f} s") from None
            raise
        except StopIteration:
            raise ClusterUnavailable("subscribe: the master ended the event stream at once") from None
        finally:
            timer.cancel()

    def _next_master(self) -> None:
        """Switch to the next address of the master list (nothing to do with one)."""
        if len(self.master_addresses) < 2:
            return
        self.master_address = next_address(self.master_addresses, self.master_address)
        self.channel = self._master_channels.get(self.master_address)
        if self.channel is None:
            self.channel = self._master_channels[self.master_address] = wire.open_channel(
                self.master_address, self.cluster, self.message_bytes_max, tls=self.tls)
        self.control = calls.master_stub(self.channel)

    def _events(self) -> None:
        while not self.closed.is_set():
            try:
                for event in self._events_of_stream:
                    if isinstance(event, Invalidation):
                        self.on_invalidation(event.tid, event.ttid, event.oids)
                    else:
                        self._set_info(event)
            except (NeoError, POSException.POSError) as exc:    # calls.events: the stream broke
                if self.closed.is_set():
                    return
                log.warning("lost the master at %s: %s", self.master_address, exc)
            if self.closed.is_set():
                return
            self.connected.clear()
            self._reconnect()

    def _reconnect(self) -> None:
        delay = 0.1
        while not self.closed.is_set():
            try:
                self._connect(self.rpc_timeout_s)
                self.generation += 1
                self.on_reconnect(self.info)
                return
            except NeoError as exc:
                if self.closed.is_set():
                    return
                log.warning("reconnecting to the master: %s", exc)
                self.closed.wait(delay)
                delay = min(delay * 2, 2.0)

    def _set_info(self, info: ClusterView) -> None:
        with self.changed:
            # node states first: a transaction that reads the new ptid at tpc_begin
            # (its view_ptid) then routes its stores with the new states
            storages = [n for n in info.nodes if n.type is NodeType.STORAGE]
            self.addresses = {n.node_id: n.address for n in storages}
            self.data_addresses = {n.node_id: n.data_address or n.address for n in storages}
            self.framed_nodes = {n.node_id for n in storages if n.data_address}
            self.running = running_storages(info.nodes)
            self.info = info
            # after info and running: a row made from an older view lands in the old dict
            self._readable_rows = {}        # made again row by row, as loads ask
            self.master_addresses = learn_masters(self.master_addresses, info.nodes, NodeType.MASTER)
            gone = [a for a in self.channels if a not in self.data_addresses.values()]
            for address in gone:        # a node restarted on another data port, or left
                self.stubs.pop(address, None)
                self.channels.pop(address).close()
            self.changed.notify_all()
        if self.on_info is not None:
            self.on_info(info.nodes)

    def close(self) -> None:
        self.closed.set()
        if self._stream is not None:
            self._stream.cancel()
        if self.data_channel is not None:
            self.data_channel.close()
        for channel in [*self._master_channels.values(), *self.channels.values()]:
            channel.close()

    # -- routing --------------------------------------------------------------------
    def partition(self, oid: bytes) -> int:
        return int.from_bytes(oid, "big") % self.partitions

    def wait_running(self, timeout_s: float) -> None:
        """Block until the cluster is RUNNING (or raise ``ClusterUnavailable``)."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.info is None or self.info.state is not ClusterState.RUNNING:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    state = self.info.state if self.info and self.info.state else "unknown"
                    raise ClusterUnavailable(f"cluster {self.cluster!r} is {state}, not RUNNING")
                self.changed.wait(min(left, 0.5))

    def readable(self, partition: int) -> list[int]:
        """Readable cells of ``partition`` on running nodes, rotated to spread load."""
        rows = self._readable_rows
        nodes = rows.get(partition)
        if nodes is None:           # once per partition and cluster view, not per load
            info, running = self.info, self.running
            row = info.table.rows[partition].cells if info and partition < len(info.table.rows) else ()
            nodes = rows[partition] = tuple(c.node_id for c in row
                                            if c.state in READABLE and c.node_id in running)
        if len(nodes) > 1:
            k = next(self._rr) % len(nodes)
            return [*nodes[k:], *nodes[:k]]
        return list(nodes)

    def writable(self, partition: int, suspects: bool = False) -> list[int]:
        """Cells of ``partition`` that take writes, on running nodes; nodes that
        failed a commit moments ago (``suspect``) are left out unless ``suspects`` or
        every node is suspected."""
        row = self.info.table.rows[partition].cells if self.info and self.info.table.rows else ()
        nodes = [c.node_id for c in row if c.state is not CellState.CORRUPTED and c.node_id in self.running]
        skip = () if suspects else self._suspected()
        return [n for n in nodes if n not in skip] or nodes     # all suspected: try them anyway

    def suspect(self, node_id: int) -> None:
        """``node_id`` failed a call of a commit: new transactions leave it out for
        ``suspect_s`` (the master marks the cells it missed OUT_OF_DATE), so that they
        do not each wait on a dead node until the master notices."""
        with self._suspects_lock:
            self._suspects[node_id] = time.monotonic() + self.suspect_s

    def _suspected(self) -> set[int]:
        if not self._suspects:
            return set()
        now = time.monotonic()
        with self._suspects_lock:
            for nid in [n for n, until in self._suspects.items() if until <= now]:
                del self._suspects[nid]
            return set(self._suspects)

    def storage(self, node_id: int):
        """The stub of storage node ``node_id``, over its framed data plane (gRPC for a
        node that has none), on a channel kept for its address."""
        address = self.data_addresses.get(node_id)
        if address is None:
            raise ClusterUnavailable(f"storage node S{node_id} is unknown")
        stub = self.stubs.get(address)
        if stub is None:
            with self.changed:
                stub = self.stubs.get(address)
                if stub is None:
                    if node_id in self.framed_nodes:
                        channel = FramedChannel(address, self.cluster, self.message_bytes_max, tls=self.tls)
                        stub = FramedStub(channel, "neoarray.v1.Storage")
                    else:
                        channel = wire.open_channel(address, self.cluster, self.message_bytes_max, tls=self.tls)
                        stub = calls.storage_stub(channel)
                    self.channels[address] = channel
                    self.stubs[address] = stub
        return stub
