from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_TYPE_UNSPECIFIED: _ClassVar[NodeType]
    MASTER: _ClassVar[NodeType]
    STORAGE: _ClassVar[NodeType]
    CLIENT: _ClassVar[NodeType]
    ADMIN: _ClassVar[NodeType]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    RUNNING: _ClassVar[NodeState]
    PENDING: _ClassVar[NodeState]
    DOWN: _ClassVar[NodeState]
    UNKNOWN: _ClassVar[NodeState]

class CellState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELL_STATE_UNSPECIFIED: _ClassVar[CellState]
    UP_TO_DATE: _ClassVar[CellState]
    OUT_OF_DATE: _ClassVar[CellState]
    FEEDING: _ClassVar[CellState]
    CORRUPTED: _ClassVar[CellState]
    DISCARDED: _ClassVar[CellState]

class ClusterState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_STATE_UNSPECIFIED: _ClassVar[ClusterState]
    RECOVERING: _ClassVar[ClusterState]
    VERIFYING: _ClassVar[ClusterState]
    CLUSTER_RUNNING: _ClassVar[ClusterState]
    STOPPING: _ClassVar[ClusterState]
NODE_TYPE_UNSPECIFIED: NodeType
MASTER: NodeType
STORAGE: NodeType
CLIENT: NodeType
ADMIN: NodeType
NODE_STATE_UNSPECIFIED: NodeState
RUNNING: NodeState
PENDING: NodeState
DOWN: NodeState
UNKNOWN: NodeState
CELL_STATE_UNSPECIFIED: CellState
UP_TO_DATE: CellState
OUT_OF_DATE: CellState
FEEDING: CellState
CORRUPTED: CellState
DISCARDED: CellState
CLUSTER_STATE_UNSPECIFIED: ClusterState
RECOVERING: ClusterState
VERIFYING: ClusterState
CLUSTER_RUNNING: ClusterState
STOPPING: ClusterState

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stamp(_message.Message):
    __slots__ = ("epoch", "version")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    version: int
    def __init__(self, epoch: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "type", "address", "state", "host", "state_since", "data_path", "data_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    type: NodeType
    address: str
    state: NodeState
    host: str
    state_since: float
    data_path: str
    data_address: str
    def __init__(self, node_id: _Optional[int] = ..., type: _Optional[_Union[NodeType, str]] = ..., address: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ..., host: _Optional[str] = ..., state_since: _Optional[float] = ..., data_path: _Optional[str] = ..., data_address: _Optional[str] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("node_id", "state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    state: CellState
    def __init__(self, node_id: _Optional[int] = ..., state: _Optional[_Union[CellState, str]] = ...) -> None: ...

class PartitionRow(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class PartitionTable(_message.Message):
    __slots__ = ("ptid", "replicas", "rows")
    PTID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ptid: int
    replicas: int
    rows: _containers.RepeatedCompositeFieldContainer[PartitionRow]
    def __init__(self, ptid: _Optional[int] = ..., replicas: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[PartitionRow, _Mapping]]] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("state", "pt", "nodes", "last_tid", "last_oid")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LAST_TID_FIELD_NUMBER: _ClassVar[int]
    LAST_OID_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    pt: PartitionTable
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    last_tid: bytes
    last_oid: bytes
    def __init__(self, state: _Optional[_Union[ClusterState, str]] = ..., pt: _Optional[_Union[PartitionTable, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., last_tid: _Optional[bytes] = ..., last_oid: _Optional[bytes] = ...) -> None: ...

class TransactionMeta(_message.Message):
    __slots__ = ("tid", "user", "user_raw", "description", "extension", "oids", "packed", "ttid")
    TID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    USER_RAW_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    OIDS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    TTID_FIELD_NUMBER: _ClassVar[int]
    tid: bytes
    user: str
    user_raw: bytes
    description: bytes
    extension: bytes
    oids: _containers.RepeatedScalarFieldContainer[bytes]
    packed: bool
    ttid: bytes
    def __init__(self, tid: _Optional[bytes] = ..., user: _Optional[str] = ..., user_raw: _Optional[bytes] = ..., description: _Optional[bytes] = ..., extension: _Optional[bytes] = ..., oids: _Optional[_Iterable[bytes]] = ..., packed: _Optional[bool] = ..., ttid: _Optional[bytes] = ...) -> None: ...
