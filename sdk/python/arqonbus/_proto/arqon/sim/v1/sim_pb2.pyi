from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class KuramotoState(_message.Message):
    __slots__ = ("step", "coherence", "mean_phase", "coupling", "oscillators")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COHERENCE_FIELD_NUMBER: _ClassVar[int]
    MEAN_PHASE_FIELD_NUMBER: _ClassVar[int]
    COUPLING_FIELD_NUMBER: _ClassVar[int]
    OSCILLATORS_FIELD_NUMBER: _ClassVar[int]
    step: int
    coherence: float
    mean_phase: float
    coupling: float
    oscillators: int
    def __init__(self, step: _Optional[int] = ..., coherence: _Optional[float] = ..., mean_phase: _Optional[float] = ..., coupling: _Optional[float] = ..., oscillators: _Optional[int] = ...) -> None: ...
