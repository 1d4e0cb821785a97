from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(_message.Message):
    __slots__ = ("name", "operator", "input_topic", "input_type", "output_topic", "output_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOPIC_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOPIC_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    operator: str
    input_topic: str
    input_type: str
    output_topic: str
    output_type: str
    def __init__(self, name: _Optional[str] = ..., operator: _Optional[str] = ..., input_topic: _Optional[str] = ..., input_type: _Optional[str] = ..., output_topic: _Optional[str] = ..., output_type: _Optional[str] = ...) -> None: ...

class Circuit(_message.Message):
    __slots__ = ("name", "reality_id", "stages")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    reality_id: str
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    def __init__(self, name: _Optional[str] = ..., reality_id: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ...) -> None: ...

class CircuitRemove(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
