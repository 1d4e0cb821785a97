"""`Pulse`: one received message, a thin read-only view over the `ArqonMessage` envelope."""

from __future__ import annotations

from typing import Any as _AnyT
from typing import Dict, Optional, Type, TypeVar

from google.protobuf.message import Message

from arqonbus import payload as _payload
from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus.delta import PulseDelta

__all__ = ["Pulse", "PulseDelta"]

M = TypeVar("M", bound=Message)
_BYTES_TYPE_URL = _payload.BYTES_TYPE_URL


class Pulse:
    """A pulse as delivered (or replayed). `message` is the full `ArqonMessage`."""

    __slots__ = ("message", "subscription_id")

    def __init__(self, message: "_pb.ArqonMessage", subscription_id: int = 0):
        self.message = message
        self.subscription_id = subscription_id

    @property
    def reality(self) -> str:
        return self.message.reality_id

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def sequence(self) -> int:
        return self.message.sequence

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def producer_id(self) -> str:
        """What the publisher claims to be: NOT verified by the bus (see `tenant`, `subject`)."""
        return self.message.producer_id

    @property
    def tenant(self) -> str:
        """The publisher's authenticated tenant, stamped by the bus ("" on the bus's own pulses)."""
        return self.message.tenant

    @property
    def subject(self) -> str:
        """The publisher's authenticated subject (`session-<id>` for a session without a token)."""
        return self.message.subject

    @property
    def timestamp_unix_nanos(self) -> int:
        return self.message.timestamp_unix_nanos

    @property
    def reply_to(self) -> str:
        return self.message.reply_to

    @property
    def emitted_by(self) -> str:
        """The hosted operator that emitted this pulse ("" for pulses clients published)."""
        return self.message.emitted_by

    @property
    def input_sequence(self) -> int:
        """For an operator's output: the sequence of the input it was computed from (else 0)."""
        return self.message.input_sequence

    @property
    def delta(self) -> Optional[PulseDelta]:
        """How a pulse of a delta-only topic travelled (docs/delta.md): a `PulseDelta` with
        `keyframe`, `base_sequence` and the `checksum` the SDK verified; None for other pulses.
        Either way `value` and `payload` hold the whole state: the SDK applied the delta."""
        if not self.message.HasField("delta"):
            return None
        info = self.message.delta
        return PulseDelta(info.keyframe, info.base_sequence, info.checksum)

    @property
    def causal(self) -> Dict[str, int]:
        return dict(self.message.causal)

    @property
    def trace_context(self) -> Dict[str, str]:
        return dict(self.message.trace_context)

    @property
    def spectral(self) -> Optional["_pb.SpectralMetadata"]:
        return self.message.spectral if self.message.HasField("spectral") else None

    @property
    def payload(self):
        """The raw `google.protobuf.Any` (None when the pulse has no payload)."""
        return self.message.payload if self.message.HasField("payload") else None

    @property
    def type_url(self) -> str:
        return self.message.payload.type_url

    @property
    def value(self) -> _AnyT:
        """The decoded payload: bytes, str, a known protobuf message, or the `Any` itself."""
        payload = self.message.payload
        if payload.type_url == _BYTES_TYPE_URL:  # the common case, without the lookups below
            return payload.value
        return _payload.decode(self.payload)

    @property
    def data(self) -> bytes:
        """The payload as bytes: a `bytes` payload itself, a `str` payload encoded as UTF-8,
        otherwise the encoded message (`Any.value`)."""
        payload = self.message.payload
        if payload.type_url == _BYTES_TYPE_URL:  # as in `value`
            return payload.value
        value = self.value
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        return self.message.payload.value

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    def is_(self, message_type: Type[Message]) -> bool:
        """Whether the payload is a `message_type`."""
        return self.message.HasField("payload") and self.message.payload.Is(message_type.DESCRIPTOR)

    def unpack(self, message_type: Type[M]) -> M:
        """The payload decoded as `message_type`; TypeError when it is another type."""
        return _payload.unpack(self.message.payload, message_type)

    def __repr__(self) -> str:
        return (
            f"Pulse(reality={self.reality!r}, topic={self.topic!r}, sequence={self.sequence}, "
            f"type_url={self.type_url!r}, {len(self.message.payload.value)} payload bytes)"
        )
