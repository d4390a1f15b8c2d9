from neoarray.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINAL_UNKNOWN: _ClassVar[FinalStatus]
    COMMITTED: _ClassVar[FinalStatus]
    NOT_COMMITTED: _ClassVar[FinalStatus]
FINAL_UNKNOWN: FinalStatus
COMMITTED: FinalStatus
NOT_COMMITTED: FinalStatus

class IdentifyRequest(_message.Message):
    __slots__ = ("type", "node_id", "address", "host", "read_only", "last_tid", "last_oid", "ptid", "data_path", "data_address", "stamp")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    LAST_TID_FIELD_NUMBER: _ClassVar[int]
    LAST_OID_FIELD_NUMBER: _ClassVar[int]
    PTID_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    type: _common_pb2.NodeType
    node_id: int
    address: str
    host: str
    read_only: bool
    last_tid: bytes
    last_oid: bytes
    ptid: int
    data_path: str
    data_address: str
    stamp: _common_pb2.Stamp
    def __init__(self, type: _Optional[_Union[_common_pb2.NodeType, str]] = ..., node_id: _Optional[int] = ..., address: _Optional[str] = ..., host: _Optional[str] = ..., read_only: _Optional[bool] = ..., last_tid: _Optional[bytes] = ..., last_oid: _Optional[bytes] = ..., ptid: _Optional[int] = ..., data_path: _Optional[str] = ..., data_address: _Optional[str] = ..., stamp: _Optional[_Union[_common_pb2.Stamp, _Mapping]] = ...) -> None: ...

class IdentifyReply(_message.Message):
    __slots__ = ("node_id", "num_partitions", "info", "data_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    num_partitions: int
    info: _common_pb2.ClusterInfo
    data_address: str
    def __init__(self, node_id: _Optional[int] = ..., num_partitions: _Optional[int] = ..., info: _Optional[_Union[_common_pb2.ClusterInfo, _Mapping]] = ..., data_address: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...

class Invalidation(_message.Message):
    __slots__ = ("tid", "ttid", "oids")
    TID_FIELD_NUMBER: _ClassVar[int]
    TTID_FIELD_NUMBER: _ClassVar[int]
    OIDS_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    ttid: bytes
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, tid: _Optional[bytes] = ..., ttid: _Optional[bytes] = ..., oids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("invalidation", "cluster")
    INVALIDATION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    invalidation: Invalidation
    cluster: _common_pb2.ClusterInfo
    def __init__(self, invalidation: _Optional[_Union[Invalidation, _Mapping]] = ..., cluster: _Optional[_Union[_common_pb2.ClusterInfo, _Mapping]] = ...) -> None: ...

class NewOidsRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class NewOidsReply(_message.Message):
    __slots__ = ("oids",)
    OIDS_FIELD_NUMBER: _ClassVar[int]
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, oids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("node_id", "tid")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    tid: bytes
    def __init__(self, node_id: _Optional[int] = ..., tid: _Optional[bytes] = ...) -> None: ...

class BeginReply(_message.Message):
    __slots__ = ("ttid",)
    TTID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    def __init__(self, ttid: _Optional[bytes] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("node_id", "ttid", "oids", "storage_ids", "view_ptid")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TTID_FIELD_NUMBER: _ClassVar[int]
    OIDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    VIEW_PTID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    ttid: bytes
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    storage_ids: _containers.RepeatedScalarFieldContainer[int]
    view_ptid: int
    def __init__(self, node_id: _Optional[int] = ..., ttid: _Optional[bytes] = ..., oids: _Optional[_Iterable[bytes]] = ..., storage_ids: _Optional[_Iterable[int]] = ..., view_ptid: _Optional[int] = ...) -> None: ...

class FinishReply(_message.Message):
    __slots__ = ("tid", "prev_tid")
    TID_FIELD_NUMBER: _ClassVar[int]
    PREV_TID_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    prev_tid: bytes
    def __init__(self, tid: _Optional[bytes] = ..., prev_tid: _Optional[bytes] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("node_id", "ttid", "storage_ids")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TTID_FIELD_NUMBER: _ClassVar[int]
    STORAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    ttid: bytes
    storage_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[int] = ..., ttid: _Optional[bytes] = ..., storage_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class FinalTidRequest(_message.Message):
    __slots__ = ("ttid",)
    TTID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    def __init__(self, ttid: _Optional[bytes] = ...) -> None: ...

class FinalTidReply(_message.Message):
    __slots__ = ("tid", "status")
    TID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    status: FinalStatus
    def __init__(self, tid: _Optional[bytes] = ..., status: _Optional[_Union[FinalStatus, str]] = ...) -> None: ...

class LastIdsReply(_message.Message):
    __slots__ = ("last_oid", "last_tid", "ptid")
    LAST_OID_FIELD_NUMBER: _ClassVar[int]
    LAST_TID_FIELD_NUMBER: _ClassVar[int]
    PTID_FIELD_NUMBER: _ClassVar[int]
    last_oid: bytes
    last_tid: bytes
    ptid: int
    def __init__(self, last_oid: _Optional[bytes] = ..., last_tid: _Optional[bytes] = ..., ptid: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "replicated", "pending")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    replicated: _containers.RepeatedCompositeFieldContainer[ReplicaDone]
    pending: _containers.RepeatedCompositeFieldContainer[PendingTransaction]
    def __init__(self, node_id: _Optional[int] = ..., replicated: _Optional[_Iterable[_Union[ReplicaDone, _Mapping]]] = ..., pending: _Optional[_Iterable[_Union[PendingTransaction, _Mapping]]] = ...) -> None: ...

class PendingTransaction(_message.Message):
    __slots__ = ("ttid", "node_id", "voted", "age_s")
    TTID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VOTED_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    node_id: int
    voted: bool
    age_s: float
    def __init__(self, ttid: _Optional[bytes] = ..., node_id: _Optional[int] = ..., voted: _Optional[bool] = ..., age_s: _Optional[float] = ...) -> None: ...

class PendingVerdict(_message.Message):
    __slots__ = ("ttid", "lock_tid")
    TTID_FIELD_NUMBER: _ClassVar[int]
    LOCK_TID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    lock_tid: bytes
    def __init__(self, ttid: _Optional[bytes] = ..., lock_tid: _Optional[bytes] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("state", "ptid", "replicate", "replication_bytes_per_s", "verdicts", "epoch")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PTID_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.ClusterState
    ptid: int
    replicate: _containers.RepeatedCompositeFieldContainer[ReplicaTask]
    replication_bytes_per_s: int
    verdicts: _containers.RepeatedCompositeFieldContainer[PendingVerdict]
    epoch: int
    def __init__(self, state: _Optional[_Union[_common_pb2.ClusterState, str]] = ..., ptid: _Optional[int] = ..., replicate: _Optional[_Iterable[_Union[ReplicaTask, _Mapping]]] = ..., replication_bytes_per_s: _Optional[int] = ..., verdicts: _Optional[_Iterable[_Union[PendingVerdict, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReplicaSource(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class ReplicaTask(_message.Message):
    __slots__ = ("partition", "until_tid", "sources")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    UNTIL_TID_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    partition: int
    until_tid: bytes
    sources: _containers.RepeatedCompositeFieldContainer[ReplicaSource]
    def __init__(self, partition: _Optional[int] = ..., until_tid: _Optional[bytes] = ..., sources: _Optional[_Iterable[_Union[ReplicaSource, _Mapping]]] = ...) -> None: ...

class ReplicaDone(_message.Message):
    __slots__ = ("partition", "tid")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    partition: int
    tid: bytes
    def __init__(self, partition: _Optional[int] = ..., tid: _Optional[bytes] = ...) -> None: ...

class NodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_common_pb2.Node, _Mapping]]] = ...) -> None: ...

class ClusterStateReply(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.ClusterState
    def __init__(self, state: _Optional[_Union[_common_pb2.ClusterState, str]] = ...) -> None: ...

class SetClusterStateRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.ClusterState
    def __init__(self, state: _Optional[_Union[_common_pb2.ClusterState, str]] = ...) -> None: ...

class AddNodesRequest(_message.Message):
    __slots__ = ("node_ids", "all")
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    all: bool
    def __init__(self, node_ids: _Optional[_Iterable[int]] = ..., all: _Optional[bool] = ...) -> None: ...

class AddNodesReply(_message.Message):
    __slots__ = ("node_ids",)
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TweakRequest(_message.Message):
    __slots__ = ("exclude_node_ids", "dry_run")
    EXCLUDE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    exclude_node_ids: _containers.RepeatedScalarFieldContainer[int]
    dry_run: bool
    def __init__(self, exclude_node_ids: _Optional[_Iterable[int]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class NodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...

class SetReplicasRequest(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    def __init__(self, replicas: _Optional[int] = ...) -> None: ...

class CellChange(_message.Message):
    __slots__ = ("partition", "node_id", "old_state", "new_state")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OLD_STATE_FIELD_NUMBER: _ClassVar[int]
    NEW_STATE_FIELD_NUMBER: _ClassVar[int]
    partition: int
    node_id: int
    old_state: _common_pb2.CellState
    new_state: _common_pb2.CellState
    def __init__(self, partition: _Optional[int] = ..., node_id: _Optional[int] = ..., old_state: _Optional[_Union[_common_pb2.CellState, str]] = ..., new_state: _Optional[_Union[_common_pb2.CellState, str]] = ...) -> None: ...

class TableChangeReply(_message.Message):
    __slots__ = ("changes", "pt")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PT_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[CellChange]
    pt: _common_pb2.PartitionTable
    def __init__(self, changes: _Optional[_Iterable[_Union[CellChange, _Mapping]]] = ..., pt: _Optional[_Union[_common_pb2.PartitionTable, _Mapping]] = ...) -> None: ...

class TruncateRequest(_message.Message):
    __slots__ = ("tid",)
    TID_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    def __init__(self, tid: _Optional[bytes] = ...) -> None: ...

class TruncateReply(_message.Message):
    __slots__ = ("tid", "last_tid_before", "transactions_removed", "revisions_removed")
    TID_FIELD_NUMBER: _ClassVar[int]
    LAST_TID_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    last_tid_before: bytes
    transactions_removed: int
    revisions_removed: int
    def __init__(self, tid: _Optional[bytes] = ..., last_tid_before: _Optional[bytes] = ..., transactions_removed: _Optional[int] = ..., revisions_removed: _Optional[int] = ...) -> None: ...

class SetReplicationRateRequest(_message.Message):
    __slots__ = ("bytes_per_s", "node_ids")
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    bytes_per_s: int
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bytes_per_s: _Optional[int] = ..., node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SetReplicationRateReply(_message.Message):
    __slots__ = ("rates", "default_set", "default_bytes_per_s")
    class RatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    RATES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SET_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    rates: _containers.ScalarMap[int, int]
    default_set: bool
    default_bytes_per_s: int
    def __init__(self, rates: _Optional[_Mapping[int, int]] = ..., default_set: _Optional[bool] = ..., default_bytes_per_s: _Optional[int] = ...) -> None: ...
