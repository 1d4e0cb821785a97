from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NvmJob(_message.Message):
    __slots__ = ("job_id", "program", "energy_joules", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    program: str
    energy_joules: float
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, job_id: _Optional[str] = ..., program: _Optional[str] = ..., energy_joules: _Optional[float] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NvmJobResult(_message.Message):
    __slots__ = ("job_id", "final", "progress", "data", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    final: bool
    progress: float
    data: bytes
    error: str
    def __init__(self, job_id: _Optional[str] = ..., final: bool = ..., progress: _Optional[float] = ..., data: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...
