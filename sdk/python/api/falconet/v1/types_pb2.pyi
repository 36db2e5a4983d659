from falconet.sdk.api.falco import schema_pb2 as _schema_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cursor(_message.Message):
    __slots__ = ("epoch", "sequence")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    sequence: int
    def __init__(self, epoch: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("min_priority", "rules", "tags", "sources", "hosts")
    MIN_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    min_priority: _schema_pb2.priority
    rules: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.RepeatedScalarFieldContainer[str]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, min_priority: _Optional[_Union[_schema_pb2.priority, str]] = ..., rules: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., sources: _Optional[_Iterable[str]] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class Start(_message.Message):
    __slots__ = ("position", "after")
    class Position(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        POSITION_UNSPECIFIED: _ClassVar[Start.Position]
        POSITION_OLDEST: _ClassVar[Start.Position]
        POSITION_NOW: _ClassVar[Start.Position]
    POSITION_UNSPECIFIED: Start.Position
    POSITION_OLDEST: Start.Position
    POSITION_NOW: Start.Position
    POSITION_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    position: Start.Position
    after: Cursor
    def __init__(self, position: _Optional[_Union[Start.Position, str]] = ..., after: _Optional[_Union[Cursor, _Mapping]] = ...) -> None: ...
