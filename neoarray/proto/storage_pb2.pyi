from neoarray.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_STATUS_UNSPECIFIED: _ClassVar[LoadStatus]
    FOUND: _ClassVar[LoadStatus]
    NO_OBJECT: _ClassVar[LoadStatus]
    NO_REVISION: _ClassVar[LoadStatus]
    DELETED: _ClassVar[LoadStatus]

class VoteStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_STATUS_UNSPECIFIED: _ClassVar[VoteStatus]
    VOTED: _ClassVar[VoteStatus]
    CONFLICTS: _ClassVar[VoteStatus]
    BUSY: _ClassVar[VoteStatus]

class CheckTable(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_TABLE_UNSPECIFIED: _ClassVar[CheckTable]
    CHECK_OBJECTS: _ClassVar[CheckTable]
    CHECK_TRANSACTIONS: _ClassVar[CheckTable]

class ReplicaTable(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_TABLE_UNSPECIFIED: _ClassVar[ReplicaTable]
    REPLICA_TRANSACTIONS: _ClassVar[ReplicaTable]
    REPLICA_OBJECTS: _ClassVar[ReplicaTable]
LOAD_STATUS_UNSPECIFIED: LoadStatus
FOUND: LoadStatus
NO_OBJECT: LoadStatus
NO_REVISION: LoadStatus
DELETED: LoadStatus
VOTE_STATUS_UNSPECIFIED: VoteStatus
VOTED: VoteStatus
CONFLICTS: VoteStatus
BUSY: VoteStatus
CHECK_TABLE_UNSPECIFIED: CheckTable
CHECK_OBJECTS: CheckTable
CHECK_TRANSACTIONS: CheckTable
REPLICA_TABLE_UNSPECIFIED: ReplicaTable
REPLICA_TRANSACTIONS: ReplicaTable
REPLICA_OBJECTS: ReplicaTable

class LoadRequest(_message.Message):
    __slots__ = ("oid", "before", "serial")
    OID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    before: bytes
    serial: bytes
    def __init__(self, oid: _Optional[bytes] = ..., before: _Optional[bytes] = ..., serial: _Optional[bytes] = ...) -> None: ...

class LoadReply(_message.Message):
    __slots__ = ("status", "serial", "next_serial", "data", "checksum", "oid", "data_tid", "blob_tid", "blob_chunks", "blob_bytes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NEXT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    OID_FIELD_NUMBER: _ClassVar[int]
    DATA_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    status: LoadStatus
    serial: bytes
    next_serial: bytes
    data: bytes
    checksum: int
    oid: bytes
    data_tid: bytes
    blob_tid: bytes
    blob_chunks: int
    blob_bytes: int
    def __init__(self, status: _Optional[_Union[LoadStatus, str]] = ..., serial: _Optional[bytes] = ..., next_serial: _Optional[bytes] = ..., data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., oid: _Optional[bytes] = ..., data_tid: _Optional[bytes] = ..., blob_tid: _Optional[bytes] = ..., blob_chunks: _Optional[int] = ..., blob_bytes: _Optional[int] = ...) -> None: ...

class LoadManyRequest(_message.Message):
    __slots__ = ("loads",)
    LOADS_FIELD_NUMBER: _ClassVar[int]
    loads: _containers.RepeatedCompositeFieldContainer[LoadRequest]
    def __init__(self, loads: _Optional[_Iterable[_Union[LoadRequest, _Mapping]]] = ...) -> None: ...

class LoadManyReply(_message.Message):
    __slots__ = ("loads",)
    LOADS_FIELD_NUMBER: _ClassVar[int]
    loads: _containers.RepeatedCompositeFieldContainer[LoadReply]
    def __init__(self, loads: _Optional[_Iterable[_Union[LoadReply, _Mapping]]] = ...) -> None: ...

class ObjectRecord(_message.Message):
    __slots__ = ("oid", "serial", "data", "checksum", "deleted", "data_tid", "has_blob", "blob_chunks", "blob_bytes")
    OID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATA_TID_FIELD_NUMBER: _ClassVar[int]
    HAS_BLOB_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    serial: bytes
    data: bytes
    checksum: int
    deleted: bool
    data_tid: bytes
    has_blob: bool
    blob_chunks: int
    blob_bytes: int
    def __init__(self, oid: _Optional[bytes] = ..., serial: _Optional[bytes] = ..., data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., deleted: _Optional[bool] = ..., data_tid: _Optional[bytes] = ..., has_blob: _Optional[bool] = ..., blob_chunks: _Optional[int] = ..., blob_bytes: _Optional[int] = ...) -> None: ...

class StoreBlobChunkRequest(_message.Message):
    __slots__ = ("ttid", "node_id", "oid", "index", "checksum", "data")
    TTID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    node_id: int
    oid: bytes
    index: int
    checksum: int
    data: bytes
    def __init__(self, ttid: _Optional[bytes] = ..., node_id: _Optional[int] = ..., oid: _Optional[bytes] = ..., index: _Optional[int] = ..., checksum: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class LoadBlobChunkRequest(_message.Message):
    __slots__ = ("oid", "serial", "index")
    OID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    serial: bytes
    index: int
    def __init__(self, oid: _Optional[bytes] = ..., serial: _Optional[bytes] = ..., index: _Optional[int] = ...) -> None: ...

class LoadBlobChunkReply(_message.Message):
    __slots__ = ("status", "blob_chunks", "blob_bytes", "checksum", "data", "blob_tid", "no_blob")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BLOB_TID_FIELD_NUMBER: _ClassVar[int]
    NO_BLOB_FIELD_NUMBER: _ClassVar[int]
    status: LoadStatus
    blob_chunks: int
    blob_bytes: int
    checksum: int
    data: bytes
    blob_tid: bytes
    no_blob: bool
    def __init__(self, status: _Optional[_Union[LoadStatus, str]] = ..., blob_chunks: _Optional[int] = ..., blob_bytes: _Optional[int] = ..., checksum: _Optional[int] = ..., data: _Optional[bytes] = ..., blob_tid: _Optional[bytes] = ..., no_blob: _Optional[bool] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("ttid", "node_id", "objects")
    TTID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    node_id: int
    objects: _containers.RepeatedCompositeFieldContainer[ObjectRecord]
    def __init__(self, ttid: _Optional[bytes] = ..., node_id: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[ObjectRecord, _Mapping]]] = ...) -> None: ...

class StoreReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ObjectCheck(_message.Message):
    __slots__ = ("oid", "serial")
    OID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    serial: bytes
    def __init__(self, oid: _Optional[bytes] = ..., serial: _Optional[bytes] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("oid", "committed_serial", "serial", "read_conflict")
    OID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SERIAL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    READ_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    committed_serial: bytes
    serial: bytes
    read_conflict: bool
    def __init__(self, oid: _Optional[bytes] = ..., committed_serial: _Optional[bytes] = ..., serial: _Optional[bytes] = ..., read_conflict: _Optional[bool] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("ttid", "node_id", "checks", "meta", "has_meta", "oids", "restore", "objects", "only_voter")
    TTID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    HAS_META_FIELD_NUMBER: _ClassVar[int]
    OIDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    ONLY_VOTER_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    node_id: int
    checks: _containers.RepeatedCompositeFieldContainer[ObjectCheck]
    meta: _common_pb2.TransactionMeta
    has_meta: bool
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    restore: bool
    objects: _containers.RepeatedCompositeFieldContainer[ObjectRecord]
    only_voter: bool
    def __init__(self, ttid: _Optional[bytes] = ..., node_id: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[ObjectCheck, _Mapping]]] = ..., meta: _Optional[_Union[_common_pb2.TransactionMeta, _Mapping]] = ..., has_meta: _Optional[bool] = ..., oids: _Optional[_Iterable[bytes]] = ..., restore: _Optional[bool] = ..., objects: _Optional[_Iterable[_Union[ObjectRecord, _Mapping]]] = ..., only_voter: _Optional[bool] = ...) -> None: ...

class VoteReply(_message.Message):
    __slots__ = ("status", "conflicts", "busy_with")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_WITH_FIELD_NUMBER: _ClassVar[int]
    status: VoteStatus
    conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    busy_with: bytes
    def __init__(self, status: _Optional[_Union[VoteStatus, str]] = ..., conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., busy_with: _Optional[bytes] = ...) -> None: ...

class AbortTransactionRequest(_message.Message):
    __slots__ = ("ttid",)
    TTID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    def __init__(self, ttid: _Optional[bytes] = ...) -> None: ...

class AbortNodeRequest(_message.Message):
    __slots__ = ("node_id", "keep_ttids")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_TTIDS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    keep_ttids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, node_id: _Optional[int] = ..., keep_ttids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("oid", "size")
    OID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    size: int
    def __init__(self, oid: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("tid", "size")
    TID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    size: int
    def __init__(self, tid: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[Revision]
    def __init__(self, revisions: _Optional[_Iterable[_Union[Revision, _Mapping]]] = ...) -> None: ...

class TransactionsRequest(_message.Message):
    __slots__ = ("partitions", "min_tid", "max_tid", "limit", "descending")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_TID_FIELD_NUMBER: _ClassVar[int]
    MAX_TID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    min_tid: bytes
    max_tid: bytes
    limit: int
    descending: bool
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., min_tid: _Optional[bytes] = ..., max_tid: _Optional[bytes] = ..., limit: _Optional[int] = ..., descending: _Optional[bool] = ...) -> None: ...

class TransactionsReply(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransactionMeta]
    def __init__(self, transactions: _Optional[_Iterable[_Union[_common_pb2.TransactionMeta, _Mapping]]] = ...) -> None: ...

class ObjectsSinceRequest(_message.Message):
    __slots__ = ("partitions", "after_oid", "limit")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    AFTER_OID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    after_oid: bytes
    limit: int
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., after_oid: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class ObjectsSinceReply(_message.Message):
    __slots__ = ("oids",)
    OIDS_FIELD_NUMBER: _ClassVar[int]
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, oids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PackRequest(_message.Message):
    __slots__ = ("tid", "gc_oids", "prune_history")
    TID_FIELD_NUMBER: _ClassVar[int]
    GC_OIDS_FIELD_NUMBER: _ClassVar[int]
    PRUNE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    gc_oids: _containers.RepeatedScalarFieldContainer[bytes]
    prune_history: bool
    def __init__(self, tid: _Optional[bytes] = ..., gc_oids: _Optional[_Iterable[bytes]] = ..., prune_history: _Optional[bool] = ...) -> None: ...

class PackReply(_message.Message):
    __slots__ = ("revisions_removed",)
    REVISIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    revisions_removed: int
    def __init__(self, revisions_removed: _Optional[int] = ...) -> None: ...

class LockRequest(_message.Message):
    __slots__ = ("ttid", "tid")
    TTID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    tid: bytes
    def __init__(self, ttid: _Optional[bytes] = ..., tid: _Optional[bytes] = ...) -> None: ...

class UnlockRequest(_message.Message):
    __slots__ = ("ttids",)
    TTIDS_FIELD_NUMBER: _ClassVar[int]
    ttids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ttids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LockedTransaction(_message.Message):
    __slots__ = ("ttid", "tid")
    TTID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    ttid: bytes
    tid: bytes
    def __init__(self, ttid: _Optional[bytes] = ..., tid: _Optional[bytes] = ...) -> None: ...

class RecoveryInfoReply(_message.Message):
    __slots__ = ("last_tid", "last_oid", "voted_ttids", "locked", "ptid", "stamp")
    LAST_TID_FIELD_NUMBER: _ClassVar[int]
    LAST_OID_FIELD_NUMBER: _ClassVar[int]
    VOTED_TTIDS_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    PTID_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    last_tid: bytes
    last_oid: bytes
    voted_ttids: _containers.RepeatedScalarFieldContainer[bytes]
    locked: _containers.RepeatedCompositeFieldContainer[LockedTransaction]
    ptid: int
    stamp: _common_pb2.Stamp
    def __init__(self, last_tid: _Optional[bytes] = ..., last_oid: _Optional[bytes] = ..., voted_ttids: _Optional[_Iterable[bytes]] = ..., locked: _Optional[_Iterable[_Union[LockedTransaction, _Mapping]]] = ..., ptid: _Optional[int] = ..., stamp: _Optional[_Union[_common_pb2.Stamp, _Mapping]] = ...) -> None: ...

class ChunkExtent(_message.Message):
    __slots__ = ("sizes", "offset")
    SIZES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sizes: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    def __init__(self, sizes: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class ReduceRequest(_message.Message):
    __slots__ = ("oids", "before", "kernel", "dtype", "acc_dtype", "chunk_shape", "order", "extents", "codec", "codec_level", "bins", "lo", "hi", "codec_config", "span_start", "span_stop")
    OIDS_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ACC_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHAPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    EXTENTS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    CODEC_LEVEL_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    CODEC_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SPAN_START_FIELD_NUMBER: _ClassVar[int]
    SPAN_STOP_FIELD_NUMBER: _ClassVar[int]
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    before: bytes
    kernel: str
    dtype: str
    acc_dtype: str
    chunk_shape: _containers.RepeatedScalarFieldContainer[int]
    order: str
    extents: _containers.RepeatedCompositeFieldContainer[ChunkExtent]
    codec: str
    codec_level: int
    bins: int
    lo: float
    hi: float
    codec_config: str
    span_start: int
    span_stop: int
    def __init__(self, oids: _Optional[_Iterable[bytes]] = ..., before: _Optional[bytes] = ..., kernel: _Optional[str] = ..., dtype: _Optional[str] = ..., acc_dtype: _Optional[str] = ..., chunk_shape: _Optional[_Iterable[int]] = ..., order: _Optional[str] = ..., extents: _Optional[_Iterable[_Union[ChunkExtent, _Mapping]]] = ..., codec: _Optional[str] = ..., codec_level: _Optional[int] = ..., bins: _Optional[int] = ..., lo: _Optional[float] = ..., hi: _Optional[float] = ..., codec_config: _Optional[str] = ..., span_start: _Optional[int] = ..., span_stop: _Optional[int] = ...) -> None: ...

class ReducedChunk(_message.Message):
    __slots__ = ("oid", "status", "serial", "state")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[ReducedChunk.Status]
        REDUCED: _ClassVar[ReducedChunk.Status]
        NO_OBJECT: _ClassVar[ReducedChunk.Status]
        NO_REVISION: _ClassVar[ReducedChunk.Status]
        DELETED: _ClassVar[ReducedChunk.Status]
        NOT_A_CHUNK: _ClassVar[ReducedChunk.Status]
    STATUS_UNSPECIFIED: ReducedChunk.Status
    REDUCED: ReducedChunk.Status
    NO_OBJECT: ReducedChunk.Status
    NO_REVISION: ReducedChunk.Status
    DELETED: ReducedChunk.Status
    NOT_A_CHUNK: ReducedChunk.Status
    OID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    status: ReducedChunk.Status
    serial: bytes
    state: bytes
    def __init__(self, oid: _Optional[bytes] = ..., status: _Optional[_Union[ReducedChunk.Status, str]] = ..., serial: _Optional[bytes] = ..., state: _Optional[bytes] = ...) -> None: ...

class ReduceReply(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ReducedChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[ReducedChunk, _Mapping]]] = ...) -> None: ...

class CheckRecordsRequest(_message.Message):
    __slots__ = ("partition", "table", "after", "max_tid", "limit", "keys")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_TID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    table: CheckTable
    after: bytes
    max_tid: bytes
    limit: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, partition: _Optional[int] = ..., table: _Optional[_Union[CheckTable, str]] = ..., after: _Optional[bytes] = ..., max_tid: _Optional[bytes] = ..., limit: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CheckedRecord(_message.Message):
    __slots__ = ("oid", "tid", "checksum", "data_ok", "deleted", "data_tid", "data_bytes", "blob_checksum")
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DATA_OK_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATA_TID_FIELD_NUMBER: _ClassVar[int]
    DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    tid: bytes
    checksum: int
    data_ok: bool
    deleted: bool
    data_tid: bytes
    data_bytes: int
    blob_checksum: int
    def __init__(self, oid: _Optional[bytes] = ..., tid: _Optional[bytes] = ..., checksum: _Optional[int] = ..., data_ok: _Optional[bool] = ..., deleted: _Optional[bool] = ..., data_tid: _Optional[bytes] = ..., data_bytes: _Optional[int] = ..., blob_checksum: _Optional[int] = ...) -> None: ...

class CheckRecordsReply(_message.Message):
    __slots__ = ("records", "next_after")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[CheckedRecord]
    next_after: bytes
    def __init__(self, records: _Optional[_Iterable[_Union[CheckedRecord, _Mapping]]] = ..., next_after: _Optional[bytes] = ...) -> None: ...

class RepairObject(_message.Message):
    __slots__ = ("oid", "tid", "data", "checksum", "deleted", "data_tid", "blob_tid", "blob_chunks", "blob_bytes")
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATA_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    tid: bytes
    data: bytes
    checksum: int
    deleted: bool
    data_tid: bytes
    blob_tid: bytes
    blob_chunks: int
    blob_bytes: int
    def __init__(self, oid: _Optional[bytes] = ..., tid: _Optional[bytes] = ..., data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., deleted: _Optional[bool] = ..., data_tid: _Optional[bytes] = ..., blob_tid: _Optional[bytes] = ..., blob_chunks: _Optional[int] = ..., blob_bytes: _Optional[int] = ...) -> None: ...

class RepairRecordsRequest(_message.Message):
    __slots__ = ("objects", "transactions")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[RepairObject]
    transactions: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransactionMeta]
    def __init__(self, objects: _Optional[_Iterable[_Union[RepairObject, _Mapping]]] = ..., transactions: _Optional[_Iterable[_Union[_common_pb2.TransactionMeta, _Mapping]]] = ...) -> None: ...

class RepairBlobChunkRequest(_message.Message):
    __slots__ = ("oid", "blob_tid", "index", "checksum", "data")
    OID_FIELD_NUMBER: _ClassVar[int]
    BLOB_TID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    blob_tid: bytes
    index: int
    checksum: int
    data: bytes
    def __init__(self, oid: _Optional[bytes] = ..., blob_tid: _Optional[bytes] = ..., index: _Optional[int] = ..., checksum: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RepairOutcome(_message.Message):
    __slots__ = ("oid", "tid", "action")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[RepairOutcome.Action]
        WRITTEN: _ClassVar[RepairOutcome.Action]
        REPLACED: _ClassVar[RepairOutcome.Action]
        UNCHANGED: _ClassVar[RepairOutcome.Action]
        SKIPPED_BUSY: _ClassVar[RepairOutcome.Action]
        SKIPPED_BLOB: _ClassVar[RepairOutcome.Action]
    ACTION_UNSPECIFIED: RepairOutcome.Action
    WRITTEN: RepairOutcome.Action
    REPLACED: RepairOutcome.Action
    UNCHANGED: RepairOutcome.Action
    SKIPPED_BUSY: RepairOutcome.Action
    SKIPPED_BLOB: RepairOutcome.Action
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    tid: bytes
    action: RepairOutcome.Action
    def __init__(self, oid: _Optional[bytes] = ..., tid: _Optional[bytes] = ..., action: _Optional[_Union[RepairOutcome.Action, str]] = ...) -> None: ...

class RepairRecordsReply(_message.Message):
    __slots__ = ("outcomes", "data_rows_dropped")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    DATA_ROWS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[RepairOutcome]
    data_rows_dropped: int
    def __init__(self, outcomes: _Optional[_Iterable[_Union[RepairOutcome, _Mapping]]] = ..., data_rows_dropped: _Optional[int] = ...) -> None: ...

class ReplicaKeysRequest(_message.Message):
    __slots__ = ("partition", "table", "min_tid", "max_tid", "after", "keys_max")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    MIN_TID_FIELD_NUMBER: _ClassVar[int]
    MAX_TID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    KEYS_MAX_FIELD_NUMBER: _ClassVar[int]
    partition: int
    table: ReplicaTable
    min_tid: bytes
    max_tid: bytes
    after: bytes
    keys_max: int
    def __init__(self, partition: _Optional[int] = ..., table: _Optional[_Union[ReplicaTable, str]] = ..., min_tid: _Optional[bytes] = ..., max_tid: _Optional[bytes] = ..., after: _Optional[bytes] = ..., keys_max: _Optional[int] = ...) -> None: ...

class ReplicaKeysReply(_message.Message):
    __slots__ = ("keys", "next_after")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    next_after: bytes
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., next_after: _Optional[bytes] = ...) -> None: ...

class ReplicaRecordsRequest(_message.Message):
    __slots__ = ("partition", "table", "keys", "bytes_max")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    BYTES_MAX_FIELD_NUMBER: _ClassVar[int]
    partition: int
    table: ReplicaTable
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    bytes_max: int
    def __init__(self, partition: _Optional[int] = ..., table: _Optional[_Union[ReplicaTable, str]] = ..., keys: _Optional[_Iterable[bytes]] = ..., bytes_max: _Optional[int] = ...) -> None: ...

class ReplicaObject(_message.Message):
    __slots__ = ("oid", "tid", "deleted", "data", "checksum", "data_tid", "blob_tid", "blob_chunks", "blob_bytes")
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DATA_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_TID_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    oid: bytes
    tid: bytes
    deleted: bool
    data: bytes
    checksum: int
    data_tid: bytes
    blob_tid: bytes
    blob_chunks: int
    blob_bytes: int
    def __init__(self, oid: _Optional[bytes] = ..., tid: _Optional[bytes] = ..., deleted: _Optional[bool] = ..., data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., data_tid: _Optional[bytes] = ..., blob_tid: _Optional[bytes] = ..., blob_chunks: _Optional[int] = ..., blob_bytes: _Optional[int] = ...) -> None: ...

class ReplicaRecordsReply(_message.Message):
    __slots__ = ("transactions", "objects", "keys_done")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    KEYS_DONE_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransactionMeta]
    objects: _containers.RepeatedCompositeFieldContainer[ReplicaObject]
    keys_done: int
    def __init__(self, transactions: _Optional[_Iterable[_Union[_common_pb2.TransactionMeta, _Mapping]]] = ..., objects: _Optional[_Iterable[_Union[ReplicaObject, _Mapping]]] = ..., keys_done: _Optional[int] = ...) -> None: ...

class StorageTruncateRequest(_message.Message):
    __slots__ = ("tid", "until_tid", "check_only")
    TID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_TID_FIELD_NUMBER: _ClassVar[int]
    CHECK_ONLY_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    until_tid: bytes
    check_only: bool
    def __init__(self, tid: _Optional[bytes] = ..., until_tid: _Optional[bytes] = ..., check_only: _Optional[bool] = ...) -> None: ...

class StorageTruncateReply(_message.Message):
    __slots__ = ("transactions_removed", "revisions_removed", "aborted")
    TRANSACTIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    transactions_removed: int
    revisions_removed: int
    aborted: int
    def __init__(self, transactions_removed: _Optional[int] = ..., revisions_removed: _Optional[int] = ..., aborted: _Optional[int] = ...) -> None: ...
