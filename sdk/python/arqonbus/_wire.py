"""Hand-written protobuf encoding of the frame the SDK sends most: a `ClientFrame` carrying a
`Publish` of a bytes, str or empty payload.

Building that frame through the generated classes costs a dozen attribute writes on protobuf
objects per publish, most of a publish's time. Here the parts that stay the same from one
publish to the next (topic, producer, reality; the causal map until it changes) are encoded
once and joined with the per-publish parts (correlation id, payload bytes). Fields are written in
field-number order, as the generated code writes them; `tests/test_wire.py` checks that what
this writes parses to the same `ClientFrame` the generated classes build.

Field numbers and wire types come from `proto/arqon/v1/arqon.proto`: a tag byte is
`field_number << 3 | wire_type` (0: varint, 2: length-delimited).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["varint", "PublishEncoder"]

# ClientFrame: correlation_id = 1 (varint), publish = 3. Publish: message = 1, ack = 2 (bool).
_FRAME_CID = b"\x08"
_FRAME_PUBLISH = b"\x1a"
_PUBLISH_MESSAGE = b"\x0a"
_PUBLISH_ACK_TRUE = b"\x10\x01"
# ArqonMessage: id = 1, topic = 3, producer_id = 4, reality_id = 5, payload = 8, causal = 10
# (map entries: key = 1, value = 2 varint), reply_to = 11. google.protobuf.Any: type_url = 1,
# value = 2.
_MESSAGE_ID = b"\x0a"
_MESSAGE_TOPIC = b"\x1a"
_MESSAGE_PRODUCER = b"\x22"
_MESSAGE_REALITY = b"\x2a"
_MESSAGE_PAYLOAD = b"\x42"
_MESSAGE_CAUSAL = b"\x52"
_MESSAGE_REPLY_TO = b"\x5a"
_ANY_TYPE_URL = b"\x0a"
_ANY_VALUE = b"\x12"
_ENTRY_KEY = b"\x0a"
_ENTRY_VALUE = b"\x10"

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]

#: Frame templates kept per `PublishEncoder`; past this the cache starts again.
MAX_TEMPLATES = 256


def varint(n: int) -> bytes:
    """The base-128 varint encoding of `n` (0 <= n < 2**64)."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    if n >> 64:
        raise ValueError(f"{n} does not fit a uint64 field")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string_field(tag: bytes, value: str) -> bytes:
    """A length-delimited string field; nothing for "" (proto3 leaves defaults out)."""
    if not value:
        return b""
    data = value.encode("utf-8")
    return tag + varint(len(data)) + data


class PublishEncoder:
    """Encodes `ClientFrame{correlation_id, publish{message, ack}}` for one `Bus`.

    A frame is `08 <correlation id> | everything up to the payload's bytes | the payload's
    bytes | the rest`. For a given reality, topic, producer, payload type and size, id,
    reply_to, ack and causal map, the two parts around the payload are the same, so they are
    kept (`MAX_TEMPLATES` of them, one causal map) and a publish joins four pieces.
    """

    __slots__ = ("_templates", "_causal_seen", "_causal_bytes")

    def __init__(self) -> None:
        # key -> (the causal encoding it was built with, bytes before the value, bytes after).
        self._templates: Dict[tuple, Tuple[bytes, bytes, bytes]] = {}
        # The causal map last encoded (a copy) and its encoding.
        self._causal_seen: Dict[str, int] = {}
        self._causal_bytes = b""

    def _causal(self, clock: Dict[str, int]) -> bytes:
        if clock == self._causal_seen:
            return self._causal_bytes
        parts = []
        for reality_id, sequence in clock.items():
            key = reality_id.encode("utf-8")
            entry = _ENTRY_KEY + varint(len(key)) + key + _ENTRY_VALUE + varint(sequence)
            parts.append(_MESSAGE_CAUSAL + varint(len(entry)) + entry)
        self._causal_bytes = b"".join(parts)
        self._causal_seen = dict(clock)
        return self._causal_bytes

    def encode(
        self,
        correlation_id: int,
        reality: str,
        topic: str,
        producer_id: str,
        type_url: Optional[str],
        value: bytes,
        clock: Dict[str, int],
        id: str = "",
        reply_to: str = "",
        ack: bool = False,
    ) -> bytes:
        """The serialized frame. `correlation_id` >= 1. `type_url` None: no payload (`value`
        must be b""). Every str must be a `str` (the caller checks; anything else goes through
        the generated classes, which raise the usual TypeError). Raises UnicodeEncodeError for
        a str that is not valid Unicode (lone surrogates)."""
        causal = self._causal(clock) if clock else b""
        key = (reality, topic, producer_id, type_url, len(value), id, reply_to, ack)
        template = self._templates.get(key)
        if template is None or template[0] is not causal:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
            template = self._templates[key] = _template(
                reality, topic, producer_id, type_url, len(value), causal, id, reply_to, ack
            )
        return b"".join((_FRAME_CID, varint(correlation_id), template[1], value, template[2]))


def _template(
    reality: str,
    topic: str,
    producer_id: str,
    type_url: Optional[str],
    size: int,
    causal: bytes,
    id: str,
    reply_to: str,
    ack: bool,
) -> Tuple[bytes, bytes, bytes]:
    """(causal, the frame from the publish field to the payload's bytes, the frame after them),
    the correlation id left out."""
    head = (
        _string_field(_MESSAGE_ID, id)
        + _string_field(_MESSAGE_TOPIC, topic)
        + _string_field(_MESSAGE_PRODUCER, producer_id)
        + _string_field(_MESSAGE_REALITY, reality)
    )
    if type_url is None:
        payload_head = b""
    else:
        any_head = _string_field(_ANY_TYPE_URL, type_url)
        if size:
            any_head += _ANY_VALUE + varint(size)
        # An Any with only its type_url still marks the payload as present.
        payload_head = _MESSAGE_PAYLOAD + varint(len(any_head) + size) + any_head
    tail = causal + _string_field(_MESSAGE_REPLY_TO, reply_to)
    message_size = len(head) + len(payload_head) + size + len(tail)
    message_prefix = _PUBLISH_MESSAGE + varint(message_size)
    ack_field = _PUBLISH_ACK_TRUE if ack else b""
    publish_size = len(message_prefix) + message_size + len(ack_field)
    before = _FRAME_PUBLISH + varint(publish_size) + message_prefix + head + payload_head
    return causal, before, tail + ack_field
