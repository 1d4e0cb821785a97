from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    DECODE_FAILED: _ClassVar[ErrorCode]
    HELLO_REQUIRED: _ClassVar[ErrorCode]
    INVALID_TOPIC: _ClassVar[ErrorCode]
    INVALID_REALITY: _ClassVar[ErrorCode]
    UNAUTHENTICATED: _ClassVar[ErrorCode]
    PERMISSION_DENIED: _ClassVar[ErrorCode]
    POLICY_DENIED: _ClassVar[ErrorCode]
    POLICY_FAULT: _ClassVar[ErrorCode]
    SLOW_CONSUMER: _ClassVar[ErrorCode]
    QUOTA_EXCEEDED: _ClassVar[ErrorCode]
    HISTORY_UNAVAILABLE: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    SHUTTING_DOWN: _ClassVar[ErrorCode]
    LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    STORAGE_FAILED: _ClassVar[ErrorCode]
    TYPE_MISMATCH: _ClassVar[ErrorCode]
    TIMED_OUT: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
FRAME_TOO_LARGE: ErrorCode
DECODE_FAILED: ErrorCode
HELLO_REQUIRED: ErrorCode
INVALID_TOPIC: ErrorCode
INVALID_REALITY: ErrorCode
UNAUTHENTICATED: ErrorCode
PERMISSION_DENIED: ErrorCode
POLICY_DENIED: ErrorCode
POLICY_FAULT: ErrorCode
SLOW_CONSUMER: ErrorCode
QUOTA_EXCEEDED: ErrorCode
HISTORY_UNAVAILABLE: ErrorCode
INTERNAL: ErrorCode
UNSUPPORTED_VERSION: ErrorCode
INVALID_REQUEST: ErrorCode
SHUTTING_DOWN: ErrorCode
LIMIT_EXCEEDED: ErrorCode
STORAGE_FAILED: ErrorCode
TYPE_MISMATCH: ErrorCode
TIMED_OUT: ErrorCode

class SpectralMetadata(_message.Message):
    __slots__ = ("coherence", "criticality", "eigenvalues")
    COHERENCE_FIELD_NUMBER: _ClassVar[int]
    CRITICALITY_FIELD_NUMBER: _ClassVar[int]
    EIGENVALUES_FIELD_NUMBER: _ClassVar[int]
    coherence: float
    criticality: float
    eigenvalues: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, coherence: _Optional[float] = ..., criticality: _Optional[float] = ..., eigenvalues: _Optional[_Iterable[float]] = ...) -> None: ...

class ArqonMessage(_message.Message):
    __slots__ = ("id", "sequence", "topic", "producer_id", "reality_id", "trace_context", "spectral", "payload", "timestamp_unix_nanos", "causal", "reply_to", "emitted_by", "input_sequence", "delta", "tenant", "subject")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CausalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    EMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    INPUT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    sequence: int
    topic: str
    producer_id: str
    reality_id: str
    trace_context: _containers.ScalarMap[str, str]
    spectral: SpectralMetadata
    payload: _any_pb2.Any
    timestamp_unix_nanos: int
    causal: _containers.ScalarMap[str, int]
    reply_to: str
    emitted_by: str
    input_sequence: int
    delta: DeltaInfo
    tenant: str
    subject: str
    def __init__(self, id: _Optional[str] = ..., sequence: _Optional[int] = ..., topic: _Optional[str] = ..., producer_id: _Optional[str] = ..., reality_id: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., spectral: _Optional[_Union[SpectralMetadata, _Mapping]] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., timestamp_unix_nanos: _Optional[int] = ..., causal: _Optional[_Mapping[str, int]] = ..., reply_to: _Optional[str] = ..., emitted_by: _Optional[str] = ..., input_sequence: _Optional[int] = ..., delta: _Optional[_Union[DeltaInfo, _Mapping]] = ..., tenant: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class DeltaInfo(_message.Message):
    __slots__ = ("keyframe", "base_sequence", "checksum")
    KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    BASE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    keyframe: bool
    base_sequence: int
    checksum: int
    def __init__(self, keyframe: bool = ..., base_sequence: _Optional[int] = ..., checksum: _Optional[int] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("name", "number", "text", "binary", "version", "set_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: float
    text: str
    binary: bytes
    version: int
    set_by: str
    def __init__(self, name: _Optional[str] = ..., number: _Optional[float] = ..., text: _Optional[str] = ..., binary: _Optional[bytes] = ..., version: _Optional[int] = ..., set_by: _Optional[str] = ...) -> None: ...

class ParamsGet(_message.Message):
    __slots__ = ("reality_id",)
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    def __init__(self, reality_id: _Optional[str] = ...) -> None: ...

class Params(_message.Message):
    __slots__ = ("reality_id", "params")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    params: _containers.RepeatedCompositeFieldContainer[ParamEntry]
    def __init__(self, reality_id: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamEntry, _Mapping]]] = ...) -> None: ...

class PresenceEntry(_message.Message):
    __slots__ = ("session_id", "client_name", "tenant", "subject", "manifest_name", "capabilities", "patterns", "connected_since_unix_nanos")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_name: str
    tenant: str
    subject: str
    manifest_name: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    patterns: _containers.RepeatedScalarFieldContainer[str]
    connected_since_unix_nanos: int
    def __init__(self, session_id: _Optional[str] = ..., client_name: _Optional[str] = ..., tenant: _Optional[str] = ..., subject: _Optional[str] = ..., manifest_name: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., patterns: _Optional[_Iterable[str]] = ..., connected_since_unix_nanos: _Optional[int] = ...) -> None: ...

class PresenceChange(_message.Message):
    __slots__ = ("present", "left")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    present: _containers.RepeatedCompositeFieldContainer[PresenceEntry]
    left: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, present: _Optional[_Iterable[_Union[PresenceEntry, _Mapping]]] = ..., left: _Optional[_Iterable[str]] = ...) -> None: ...

class PresenceGet(_message.Message):
    __slots__ = ("reality_id", "offset", "limit")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    offset: int
    limit: int
    def __init__(self, reality_id: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("reality_id", "entries", "total")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    entries: _containers.RepeatedCompositeFieldContainer[PresenceEntry]
    total: int
    def __init__(self, reality_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[PresenceEntry, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ParamEntry(_message.Message):
    __slots__ = ("param", "sequence", "timestamp_unix_nanos")
    PARAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    param: Param
    sequence: int
    timestamp_unix_nanos: int
    def __init__(self, param: _Optional[_Union[Param, _Mapping]] = ..., sequence: _Optional[int] = ..., timestamp_unix_nanos: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "first_available_sequence")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_AVAILABLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    first_available_sequence: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., first_available_sequence: _Optional[int] = ...) -> None: ...

class SchemaRef(_message.Message):
    __slots__ = ("topic_pattern", "type_url")
    TOPIC_PATTERN_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    topic_pattern: str
    type_url: str
    def __init__(self, topic_pattern: _Optional[str] = ..., type_url: _Optional[str] = ...) -> None: ...

class OperatorManifest(_message.Message):
    __slots__ = ("name", "version", "capabilities", "input_schemas", "output_schemas", "descriptor_set")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_SET_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    input_schemas: _containers.RepeatedCompositeFieldContainer[SchemaRef]
    output_schemas: _containers.RepeatedCompositeFieldContainer[SchemaRef]
    descriptor_set: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., input_schemas: _Optional[_Iterable[_Union[SchemaRef, _Mapping]]] = ..., output_schemas: _Optional[_Iterable[_Union[SchemaRef, _Mapping]]] = ..., descriptor_set: _Optional[bytes] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "client_name", "token", "manifest")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    client_name: str
    token: str
    manifest: OperatorManifest
    def __init__(self, protocol_version: _Optional[int] = ..., client_name: _Optional[str] = ..., token: _Optional[str] = ..., manifest: _Optional[_Union[OperatorManifest, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "server_version", "shard", "protocol_version", "max_frame_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    server_version: str
    shard: int
    protocol_version: int
    max_frame_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., server_version: _Optional[str] = ..., shard: _Optional[int] = ..., protocol_version: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("message", "ack")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    message: ArqonMessage
    ack: bool
    def __init__(self, message: _Optional[_Union[ArqonMessage, _Mapping]] = ..., ack: bool = ...) -> None: ...

class PubAck(_message.Message):
    __slots__ = ("reality_id", "sequence", "id", "timestamp_unix_nanos")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    sequence: int
    id: str
    timestamp_unix_nanos: int
    def __init__(self, reality_id: _Optional[str] = ..., sequence: _Optional[int] = ..., id: _Optional[str] = ..., timestamp_unix_nanos: _Optional[int] = ...) -> None: ...

class StartPosition(_message.Message):
    __slots__ = ("latest", "from_sequence", "from_time_unix_nanos", "last_n")
    LATEST_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FROM_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    latest: bool
    from_sequence: int
    from_time_unix_nanos: int
    last_n: int
    def __init__(self, latest: bool = ..., from_sequence: _Optional[int] = ..., from_time_unix_nanos: _Optional[int] = ..., last_n: _Optional[int] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("subscription_id", "reality_id", "pattern", "start", "causal", "filter")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    reality_id: str
    pattern: str
    start: StartPosition
    causal: bool
    filter: str
    def __init__(self, subscription_id: _Optional[int] = ..., reality_id: _Optional[str] = ..., pattern: _Optional[str] = ..., start: _Optional[_Union[StartPosition, _Mapping]] = ..., causal: bool = ..., filter: _Optional[str] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("subscription_id", "next_sequence")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    next_sequence: int
    def __init__(self, subscription_id: _Optional[int] = ..., next_sequence: _Optional[int] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    def __init__(self, subscription_id: _Optional[int] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("subscription_id", "message")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    message: ArqonMessage
    def __init__(self, subscription_id: _Optional[int] = ..., message: _Optional[_Union[ArqonMessage, _Mapping]] = ...) -> None: ...

class Dropped(_message.Message):
    __slots__ = ("subscription_id", "count")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    count: int
    def __init__(self, subscription_id: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class HistoryGet(_message.Message):
    __slots__ = ("reality_id", "pattern", "from_sequence", "from_time_unix_nanos", "to_sequence", "to_time_unix_nanos", "limit")
    REALITY_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FROM_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    TO_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    reality_id: str
    pattern: str
    from_sequence: int
    from_time_unix_nanos: int
    to_sequence: int
    to_time_unix_nanos: int
    limit: int
    def __init__(self, reality_id: _Optional[str] = ..., pattern: _Optional[str] = ..., from_sequence: _Optional[int] = ..., from_time_unix_nanos: _Optional[int] = ..., to_sequence: _Optional[int] = ..., to_time_unix_nanos: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryChunk(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ArqonMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ArqonMessage, _Mapping]]] = ...) -> None: ...

class HistoryEnd(_message.Message):
    __slots__ = ("count", "next_sequence")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    count: int
    next_sequence: int
    def __init__(self, count: _Optional[int] = ..., next_sequence: _Optional[int] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce", "server_time_unix_nanos")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    server_time_unix_nanos: int
    def __init__(self, nonce: _Optional[int] = ..., server_time_unix_nanos: _Optional[int] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("correlation_id", "hello", "publish", "subscribe", "unsubscribe", "history_get", "ping", "params_get", "presence_get", "pong")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_GET_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PARAMS_GET_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_GET_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    correlation_id: int
    hello: Hello
    publish: Publish
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    history_get: HistoryGet
    ping: Ping
    params_get: ParamsGet
    presence_get: PresenceGet
    pong: Pong
    def __init__(self, correlation_id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., history_get: _Optional[_Union[HistoryGet, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., params_get: _Optional[_Union[ParamsGet, _Mapping]] = ..., presence_get: _Optional[_Union[PresenceGet, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("correlation_id", "welcome", "deliver", "pub_ack", "error", "history_chunk", "history_end", "dropped", "pong", "subscribed", "params", "presence", "ping")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    PUB_ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HISTORY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    HISTORY_END_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    correlation_id: int
    welcome: Welcome
    deliver: Deliver
    pub_ack: PubAck
    error: Error
    history_chunk: HistoryChunk
    history_end: HistoryEnd
    dropped: Dropped
    pong: Pong
    subscribed: Subscribed
    params: Params
    presence: Presence
    ping: Ping
    def __init__(self, correlation_id: _Optional[int] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., pub_ack: _Optional[_Union[PubAck, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., history_chunk: _Optional[_Union[HistoryChunk, _Mapping]] = ..., history_end: _Optional[_Union[HistoryEnd, _Mapping]] = ..., dropped: _Optional[_Union[Dropped, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., params: _Optional[_Union[Params, _Mapping]] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ...) -> None: ...
