from arqonbus._proto.arqon.v1 import arqon_pb2 as _arqon_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyInput(_message.Message):
    __slots__ = ("reality_id", "topic", "producer_id", "payload_type_url", "payload", "spectral", "payload_bytes", "frame_bytes", "params", "policy_name", "tenant", "subject")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    topic: str
    producer_id: str
    payload_type_url: str
    payload: bytes
    spectral: _arqon_pb2.SpectralMetadata
    payload_bytes: int
    frame_bytes: int
    params: _containers.ScalarMap[str, str]
    policy_name: str
    tenant: str
    subject: str
    def __init__(self, reality_id: _Optional[str] = ..., topic: _Optional[str] = ..., producer_id: _Optional[str] = ..., payload_type_url: _Optional[str] = ..., payload: _Optional[bytes] = ..., spectral: _Optional[_Union[_arqon_pb2.SpectralMetadata, _Mapping]] = ..., payload_bytes: _Optional[int] = ..., frame_bytes: _Optional[int] = ..., params: _Optional[_Mapping[str, str]] = ..., policy_name: _Optional[str] = ..., tenant: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class PolicyBinding(_message.Message):
    __slots__ = ("reality_glob", "topic_pattern")
    REALITY_GLOB_FIELD_NUMBER: _ClassVar[int]
    TOPIC_PATTERN_FIELD_NUMBER: _ClassVar[int]
    reality_glob: str
    topic_pattern: str
    def __init__(self, reality_glob: _Optional[str] = ..., topic_pattern: _Optional[str] = ...) -> None: ...

class PolicyLimits(_message.Message):
    __slots__ = ("fuel_per_call", "max_memory_pages", "deadline_ms")
    FUEL_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_PAGES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    fuel_per_call: int
    max_memory_pages: int
    deadline_ms: int
    def __init__(self, fuel_per_call: _Optional[int] = ..., max_memory_pages: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class PolicyLoad(_message.Message):
    __slots__ = ("name", "bindings", "limits", "wasm", "params", "order")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    WASM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    bindings: _containers.RepeatedCompositeFieldContainer[PolicyBinding]
    limits: PolicyLimits
    wasm: bytes
    params: _containers.ScalarMap[str, str]
    order: int
    def __init__(self, name: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[PolicyBinding, _Mapping]]] = ..., limits: _Optional[_Union[PolicyLimits, _Mapping]] = ..., wasm: _Optional[bytes] = ..., params: _Optional[_Mapping[str, str]] = ..., order: _Optional[int] = ...) -> None: ...

class PolicyUnload(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
