from google.protobuf import any_pb2 as _any_pb2
from arqonbus._proto.arqon.v1 import arqon_pb2 as _arqon_pb2
from arqonbus._proto.arqon.policy.v1 import policy_pb2 as _policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperatorInput(_message.Message):
    __slots__ = ("reality_id", "topic", "sequence", "timestamp_unix_nanos", "producer_id", "payload_type_url", "payload", "spectral", "reply_to", "operator_name", "emitted_by")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_NAME_FIELD_NUMBER: _ClassVar[int]
    EMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    topic: str
    sequence: int
    timestamp_unix_nanos: int
    producer_id: str
    payload_type_url: str
    payload: bytes
    spectral: _arqon_pb2.SpectralMetadata
    reply_to: str
    operator_name: str
    emitted_by: str
    def __init__(self, reality_id: _Optional[str] = ..., topic: _Optional[str] = ..., sequence: _Optional[int] = ..., timestamp_unix_nanos: _Optional[int] = ..., producer_id: _Optional[str] = ..., payload_type_url: _Optional[str] = ..., payload: _Optional[bytes] = ..., spectral: _Optional[_Union[_arqon_pb2.SpectralMetadata, _Mapping]] = ..., reply_to: _Optional[str] = ..., operator_name: _Optional[str] = ..., emitted_by: _Optional[str] = ...) -> None: ...

class Emit(_message.Message):
    __slots__ = ("topic", "payload", "spectral")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: _any_pb2.Any
    spectral: _arqon_pb2.SpectralMetadata
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., spectral: _Optional[_Union[_arqon_pb2.SpectralMetadata, _Mapping]] = ...) -> None: ...

class ParamValue(_message.Message):
    __slots__ = ("number", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: float
    text: str
    def __init__(self, number: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class OperatorLimits(_message.Message):
    __slots__ = ("fuel_per_call", "max_memory_pages", "deadline_ms", "max_emits_per_call", "max_emit_bytes_per_call")
    FUEL_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_PAGES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_EMITS_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_EMIT_BYTES_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    fuel_per_call: int
    max_memory_pages: int
    deadline_ms: int
    max_emits_per_call: int
    max_emit_bytes_per_call: int
    def __init__(self, fuel_per_call: _Optional[int] = ..., max_memory_pages: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., max_emits_per_call: _Optional[int] = ..., max_emit_bytes_per_call: _Optional[int] = ...) -> None: ...

class OperatorLoad(_message.Message):
    __slots__ = ("name", "bindings", "limits", "wasm", "params", "manifest")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    WASM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    bindings: _containers.RepeatedCompositeFieldContainer[_policy_pb2.PolicyBinding]
    limits: OperatorLimits
    wasm: bytes
    params: _containers.MessageMap[str, ParamValue]
    manifest: _arqon_pb2.OperatorManifest
    def __init__(self, name: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[_policy_pb2.PolicyBinding, _Mapping]]] = ..., limits: _Optional[_Union[OperatorLimits, _Mapping]] = ..., wasm: _Optional[bytes] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., manifest: _Optional[_Union[_arqon_pb2.OperatorManifest, _Mapping]] = ...) -> None: ...

class OperatorUnload(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class OperatorParamSet(_message.Message):
    __slots__ = ("operator", "name", "value")
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    operator: str
    name: str
    value: ParamValue
    def __init__(self, operator: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...

class RealityFork(_message.Message):
    __slots__ = ("name", "from_sequence", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_sequence: int
    params: _containers.MessageMap[str, ParamValue]
    def __init__(self, name: _Optional[str] = ..., from_sequence: _Optional[int] = ..., params: _Optional[_Mapping[str, ParamValue]] = ...) -> None: ...

class OperatorFault(_message.Message):
    __slots__ = ("operator", "input_sequence", "reason", "consecutive_faults", "parked")
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    INPUT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    PARKED_FIELD_NUMBER: _ClassVar[int]
    operator: str
    input_sequence: int
    reason: str
    consecutive_faults: int
    parked: bool
    def __init__(self, operator: _Optional[str] = ..., input_sequence: _Optional[int] = ..., reason: _Optional[str] = ..., consecutive_faults: _Optional[int] = ..., parked: bool = ...) -> None: ...
