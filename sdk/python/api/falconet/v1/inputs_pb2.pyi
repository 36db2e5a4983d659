from falconet.sdk.api.falco import outputs_pb2 as _outputs_pb2
from falconet.sdk.api.falconet.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[_outputs_pb2.response]
    def __init__(self, alerts: _Optional[_Iterable[_Union[_outputs_pb2.response, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("accepted", "last")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    last: _types_pb2.Cursor
    def __init__(self, accepted: _Optional[int] = ..., last: _Optional[_Union[_types_pb2.Cursor, _Mapping]] = ...) -> None: ...
