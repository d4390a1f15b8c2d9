"""The master's orders to storage nodes, at the wire.

The one place where the master's orders (lock, unlock, abort, recovery, partition
table, shutdown, truncate, state stamps) become messages of the contract (``proto/``) and their
answers plain values; ``node.py`` and ``committing.py`` import no protobuf and never
see a raw ``grpc.RpcError``.  Every call carries the master's epoch
(``fencing.EpochFence``) and raises the domain exceptions of
:func:`neoarray.wire.call`: a refusal (INVALID_ARGUMENT) is ``RequestRefused``, a node
that does not answer ``ClusterUnavailable``, and a refusal of a stale epoch
``StaleEpoch``, reported to the fence (the master steps down) before it is raised.
The stub is gRPC's or the framed data plane's (``neoarray.transport``) alike.
"""
from __future__ import annotations

from collections.abc import Sequence

from neoarray import wire
from neoarray.errors import StaleEpoch
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.proto_states import table_to_pb
from neoarray.views import TableView

from .cluster import Recovered
from .fencing import EpochFence


def grpc_stub(channel):
    """The Storage service on a gRPC ``channel``."""
    return srpc.StorageStub(channel)


class PendingOrder:
    """An order sent to a node, its answer not read yet (``StorageCalls.lock_sent``,
    ``record_stamp_sent``)."""

    __slots__ = ("_fence", "_future")

    def __init__(self, future, fence: EpochFence):
        self._future = future
        self._fence = fence

    def result(self) -> None:
        """Wait for the answer; a failure is raised as a domain exception."""
        try:
            wire.result(self._future)
        except StaleEpoch as exc:
            self._fence.refused(exc)
            raise


class StorageCalls:
    """The master's orders to one storage node, over ``stub``."""

    __slots__ = ("_fence", "_stub")

    def __init__(self, stub, fence: EpochFence):
        self._stub = stub
        self._fence = fence

    def _call(self, name: str, request, timeout_s: float, what: str = ""):
        try:
            return wire.call(getattr(self._stub, name), request, timeout_s, what, self._fence.metadata())
        except StaleEpoch as exc:
            self._fence.refused(exc)
            raise

    # -- the commit path ---------------------------------------------------------------
    def lock(self, ttid: bytes, tid: bytes, timeout_s: float) -> None:
        """Lock ``ttid`` (voted here) as ``tid``: its records become readable once unlocked."""
        self._call("Lock", spb.LockRequest(ttid=ttid, tid=tid), timeout_s)

    def _sent(self, name: str, request, timeout_s: float) -> PendingOrder:
        """Send the order ``name`` and return at once (orders to several nodes go out
        together); ``.result()`` waits for the answer."""
        future = getattr(self._stub, name).future(request, timeout=timeout_s, metadata=self._fence.metadata())
        return PendingOrder(future, self._fence)

    def lock_sent(self, ttid: bytes, tid: bytes, timeout_s: float) -> PendingOrder:
        """The order of :meth:`lock`, sent (:meth:`_sent`)."""
        return self._sent("Lock", spb.LockRequest(ttid=ttid, tid=tid), timeout_s)

    def record_stamp_sent(self, stamp: tuple[int, int], timeout_s: float) -> PendingOrder:
        """The order to record durably the master state stamp ``(epoch, version)``
        (``master/cluster.py``, rule A), sent (:meth:`_sent`)."""
        epoch, version = stamp
        return self._sent("RecordStamp", cpb.Stamp(epoch=epoch, version=version), timeout_s)

    def unlock(self, ttids: Sequence[bytes], timeout_s: float) -> None:
        """Forget the lock records of ``ttids`` (acknowledged everywhere)."""
        self._call("Unlock", spb.UnlockRequest(ttids=list(ttids)), timeout_s)

    def abort_transaction(self, ttid: bytes, timeout_s: float) -> None:
        """Drop what the node holds of ``ttid`` (stores, vote)."""
        self._call("AbortTransaction", spb.AbortTransactionRequest(ttid=ttid), timeout_s)

    def abort_node(self, client_id: int, keep_ttids: Sequence[bytes], timeout_s: float) -> None:
        """Drop the transactions of client ``client_id`` but ``keep_ttids``."""
        self._call("AbortNode", spb.AbortNodeRequest(node_id=client_id, keep_ttids=list(keep_ttids)), timeout_s)

    # -- recovery, table, shutdown, truncation -----------------------------------------------
    def recovery_info(self, timeout_s: float, what: str = "") -> Recovered:
        """What the node holds: its last ids, the transactions it locked and voted."""
        info = self._call("RecoveryInfo", cpb.Empty(), timeout_s, what)
        return Recovered(info.last_oid, info.last_tid, tuple((lt.ttid, lt.tid) for lt in info.locked),
                         tuple(info.voted_ttids), (info.stamp.epoch, info.stamp.version))

    def set_partition_table(self, table: TableView, timeout_s: float) -> None:
        """Give the node the partition table ``table``."""
        self._call("SetPartitionTable", table_to_pb(table), timeout_s)

    def shutdown(self, timeout_s: float, what: str = "") -> None:
        """Ask the node to shut down."""
        self._call("Shutdown", cpb.Empty(), timeout_s, what)

    def truncate(self, tid: bytes, until: bytes, check_only: bool, timeout_s: float,
                 what: str = "") -> tuple[int, int]:
        """Delete the transactions in ``(tid, until]`` (``check_only``: tell what would
        go): ``(transactions, revisions)`` removed."""
        reply = self._call("Truncate", spb.StorageTruncateRequest(tid=tid, until_tid=until, check_only=check_only),
                           timeout_s, what)
        return reply.transactions_removed, reply.revisions_removed
