"""The storage node's calls, at the wire.

The one place where the node's identification, heartbeats and partition-table reads
become messages of the contract (``proto/``), and where their answers' states are
read as the domain's (``neoarray.states``); ``node.py`` imports no protobuf.  Also the
catch-up's calls to other storage nodes (``ReplicaKeys``, ``ReplicaRecords``,
``LoadBlobChunk``) and the conversions of their values (``storage_node/replica.py``)
for the servicer, so that ``replication.py`` imports no protobuf either.  Each call
raises the domain exceptions of :func:`neoarray.wire.call`.
"""
from __future__ import annotations

from neoarray import wire
from neoarray.check_calls import BlobChunk, blob_chunk
from neoarray.proto import common_pb2 as cpb
from neoarray.proto import master_pb2 as mpb
from neoarray.proto import master_pb2_grpc as mrpc
from neoarray.proto import storage_pb2 as spb
from neoarray.proto import storage_pb2_grpc as srpc
from neoarray.proto_states import (
    CELL_TO_PB,
    CLUSTER_STATE_FROM_PB,
    NODE_TYPE_TO_PB,
    transaction_from_pb,
    transaction_to_pb,
)
from neoarray.records import BlobRef
from neoarray.states import CellState, ClusterState, NodeType

from .replica import KeysBatch, KeysQuery, RecordsBatch, RecordsQuery, ReplicaObject

OUT_OF_DATE_PB = CELL_TO_PB[CellState.OUT_OF_DATE]
MASTER_PB = NODE_TYPE_TO_PB[NodeType.MASTER]


def serve(servicer, server) -> None:
    """Add the Storage service to a gRPC ``server``."""
    srpc.add_StorageServicer_to_server(servicer, server)


def master_stub(channel):
    """The Master service on ``channel``."""
    return mrpc.MasterStub(channel)


def admin_stub(channel):
    """The Admin service on ``channel`` (the storage role may only read the table)."""
    return mrpc.AdminStub(channel)


def partition_table(admin, timeout_s: float):
    """The master's partition table."""
    return wire.call(admin.GetPartitionTable, cpb.Empty(), timeout_s, "partition table from the master")


def identify(stub, node_id: int, address: str, host: str, last_tid: bytes, last_oid: bytes, ptid: int,
             data_path: str, data_address: str, timeout_s: float, stamp: tuple[int, int] = (0, 0)):
    """Identify as a storage node: the master's ``IdentifyReply`` (the node id, the
    partitions, the cluster view).  ``stamp``: the newest master state stamp recorded."""
    request = mpb.IdentifyRequest(type=NODE_TYPE_TO_PB[NodeType.STORAGE], node_id=node_id,
                                  address=address, host=host, last_tid=last_tid, last_oid=last_oid, ptid=ptid,
                                  data_path=data_path, data_address=data_address,
                                  stamp=cpb.Stamp(epoch=stamp[0], version=stamp[1]))
    return wire.call(stub.Identify, request, timeout_s, "identify")


def heartbeat(stub, node_id: int, replicated, pending, timeout_s: float):
    """A heartbeat: ``replicated``, ``(partition, tid)`` the catch-up reached;
    ``pending``, ``(ttid, client node id, voted, age_s)`` of the transactions held.
    The master's ``HeartbeatReply`` (verdicts, state, ptid, catch-up tasks and rate,
    the master's epoch)."""
    request = mpb.HeartbeatRequest(
        node_id=node_id, replicated=[mpb.ReplicaDone(partition=p, tid=tid) for p, tid in replicated],
        pending=[mpb.PendingTransaction(ttid=t, node_id=n, voted=v, age_s=a) for t, n, v, a in pending])
    return wire.call(stub.Heartbeat, request, timeout_s)


def cluster_state(state_pb) -> ClusterState | None:
    """The cluster state an answer of the master carries (None: unset)."""
    return CLUSTER_STATE_FROM_PB.get(state_pb)


# -- catch-up: calls to another storage node (storage_node/replication.py) ---------------

def storage_stub(channel):
    """The Storage service on ``channel``."""
    return srpc.StorageStub(channel)


def replica_keys(stub, query: KeysQuery, timeout_s: float) -> KeysBatch:
    """A batch of the keys a source holds (``ReplicaKeys``)."""
    return keys_batch_from_pb(wire.call(stub.ReplicaKeys, keys_query_to_pb(query), timeout_s, "ReplicaKeys"))


def replica_records(stub, query: RecordsQuery, timeout_s: float) -> RecordsBatch:
    """The records of ``query.keys`` a source holds (``ReplicaRecords``)."""
    return records_batch_from_pb(wire.call(stub.ReplicaRecords, records_query_to_pb(query), timeout_s,
                                           "ReplicaRecords"))


def load_blob_chunk(stub, oid: bytes, serial: bytes, index: int, timeout_s: float) -> BlobChunk | None:
    """Chunk ``index`` of the blob of ``oid`` at ``serial`` (the call ``neoctl check``
    makes too); None when the source has none."""
    chunk = blob_chunk(stub, oid, serial, index, timeout_s, "LoadBlobChunk")
    return chunk if chunk.found else None


def keys_query_to_pb(q: KeysQuery) -> spb.ReplicaKeysRequest:
    return spb.ReplicaKeysRequest(partition=q.partition, table=q.table, min_tid=q.min_tid, max_tid=q.max_tid,
                                  after=q.after, keys_max=q.keys_max)


def keys_query_from_pb(m) -> KeysQuery:
    return KeysQuery(m.partition, m.table, m.max_tid, m.min_tid, m.after, m.keys_max)


def keys_batch_to_pb(b: KeysBatch) -> spb.ReplicaKeysReply:
    return spb.ReplicaKeysReply(keys=b.keys, next_after=b.next_after)


def keys_batch_from_pb(m) -> KeysBatch:
    return KeysBatch(list(m.keys), m.next_after)


def records_query_to_pb(q: RecordsQuery) -> spb.ReplicaRecordsRequest:
    return spb.ReplicaRecordsRequest(partition=q.partition, table=q.table, keys=q.keys, bytes_max=q.bytes_max)


def records_query_from_pb(m) -> RecordsQuery:
    return RecordsQuery(m.partition, m.table, list(m.keys), m.bytes_max)


def records_batch_to_pb(b: RecordsBatch) -> spb.ReplicaRecordsReply:
    reply = spb.ReplicaRecordsReply(keys_done=b.keys_done,
                                    transactions=[transaction_to_pb(t) for t in b.transactions])
    for o in b.objects:
        blob = o.blob
        reply.objects.add(oid=o.oid, tid=o.tid, deleted=o.data is None, data=o.data or b"", checksum=o.checksum,
                          data_tid=o.data_tid or b"", blob_tid=blob.key_tid if blob else b"",
                          blob_chunks=blob.chunks if blob else 0, blob_bytes=blob.nbytes if blob else 0)
    return reply


def records_batch_from_pb(m) -> RecordsBatch:
    transactions = [transaction_from_pb(t) for t in m.transactions]
    objects = [ReplicaObject(o.oid, o.tid, None if o.deleted else o.data, o.checksum, o.data_tid or None,
                             BlobRef(o.blob_tid, o.blob_chunks, o.blob_bytes)
                             if o.blob_tid and not o.deleted else None)
               for o in m.objects]
    return RecordsBatch(transactions, objects, m.keys_done)
