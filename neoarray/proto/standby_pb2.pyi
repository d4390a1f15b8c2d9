from neoarray.proto import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MasterRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASTER_ROLE_UNSPECIFIED: _ClassVar[MasterRole]
    PRIMARY: _ClassVar[MasterRole]
    STANDBY: _ClassVar[MasterRole]
MASTER_ROLE_UNSPECIFIED: MasterRole
PRIMARY: MasterRole
STANDBY: MasterRole

class FollowStateRequest(_message.Message):
    __slots__ = ("address", "known_run", "known_version", "wait_ms")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_RUN_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    address: str
    known_run: str
    known_version: int
    wait_ms: int
    def __init__(self, address: _Optional[str] = ..., known_run: _Optional[str] = ..., known_version: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class FollowStateReply(_message.Message):
    __slots__ = ("run", "version", "state", "epoch")
    RUN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    run: str
    version: int
    state: bytes
    epoch: int
    def __init__(self, run: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class RoleReply(_message.Message):
    __slots__ = ("role", "epoch", "primary")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    role: MasterRole
    epoch: int
    primary: str
    def __init__(self, role: _Optional[_Union[MasterRole, str]] = ..., epoch: _Optional[int] = ..., primary: _Optional[str] = ...) -> None: ...
