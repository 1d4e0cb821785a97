from arqonbus._proto.arqon.v1 import arqon_pb2 as _arqon_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("message", "ack")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    message: _arqon_pb2.ArqonMessage
    ack: bool
    def __init__(self, message: _Optional[_Union[_arqon_pb2.ArqonMessage, _Mapping]] = ..., ack: bool = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("ack",)
    ACK_FIELD_NUMBER: _ClassVar[int]
    ack: _arqon_pb2.PubAck
    def __init__(self, ack: _Optional[_Union[_arqon_pb2.PubAck, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("reality_id", "pattern", "start", "filter")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    pattern: str
    start: _arqon_pb2.StartPosition
    filter: str
    def __init__(self, reality_id: _Optional[str] = ..., pattern: _Optional[str] = ..., start: _Optional[_Union[_arqon_pb2.StartPosition, _Mapping]] = ..., filter: _Optional[str] = ...) -> None: ...

class SubscribeEvent(_message.Message):
    __slots__ = ("pulse", "dropped")
    PULSE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    pulse: _arqon_pb2.ArqonMessage
    dropped: int
    def __init__(self, pulse: _Optional[_Union[_arqon_pb2.ArqonMessage, _Mapping]] = ..., dropped: _Optional[int] = ...) -> None: ...
