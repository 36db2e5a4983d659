from falconet.sdk.api.falco import outputs_pb2 as _outputs_pb2
from falconet.sdk.api.falconet.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("filter", "start", "max_batch")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    filter: _types_pb2.Filter
    start: _types_pb2.Start
    max_batch: int
    def __init__(self, filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., start: _Optional[_Union[_types_pb2.Start, _Mapping]] = ..., max_batch: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[_outputs_pb2.response]
    def __init__(self, alerts: _Optional[_Iterable[_Union[_outputs_pb2.response, _Mapping]]] = ...) -> None: ...

class GetAllRequest(_message.Message):
    __slots__ = ("filter", "max_batch")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    filter: _types_pb2.Filter
    max_batch: int
    def __init__(self, filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., max_batch: _Optional[int] = ...) -> None: ...

class GetAllResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[_outputs_pb2.response]
    def __init__(self, alerts: _Optional[_Iterable[_Union[_outputs_pb2.response, _Mapping]]] = ...) -> None: ...
