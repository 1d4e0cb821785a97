"""Packing payloads into `google.protobuf.Any` and back.

What `publish(payload=...)` accepts, and how it travels:

| given | carried as (`Any.type_url`) |
| --- | --- |
| `bytes`, `bytearray`, `memoryview` | `type.googleapis.com/google.protobuf.BytesValue` |
| `str` | `type.googleapis.com/google.protobuf.StringValue` (UTF-8) |
| a protobuf message | its own type URL, `type.googleapis.com/<full.name>` |
| a `google.protobuf.Any` | as is |
| `None` | no payload |

The wrappers are the protobuf well-known types, so any language can read them without an
ArqonBus-specific convention.
"""

from __future__ import annotations

from typing import Any as _AnyT
from typing import Optional, Type, TypeVar, Union

from google.protobuf import any_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

__all__ = ["PayloadLike", "TYPE_URL_PREFIX", "pack", "unpack", "decode", "type_url_of"]

TYPE_URL_PREFIX = "type.googleapis.com/"
BYTES_TYPE_URL = TYPE_URL_PREFIX + "google.protobuf.BytesValue"
STRING_TYPE_URL = TYPE_URL_PREFIX + "google.protobuf.StringValue"

PayloadLike = Union[bytes, bytearray, memoryview, str, Message, None]
M = TypeVar("M", bound=Message)


def encode_wrapper(value: bytes) -> bytes:
    """The encoding of a `BytesValue`/`StringValue` holding `value` (field 1, length-delimited),
    byte for byte what protobuf writes: nothing for an empty value."""
    if not value:
        return b""
    n = len(value)
    prefix = bytearray(b"\x0a")
    while n >= 0x80:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return bytes(prefix) + value


def type_url_of(message_type: Union[Message, Type[Message]]) -> str:
    return TYPE_URL_PREFIX + message_type.DESCRIPTOR.full_name


def pack(payload: PayloadLike) -> Optional[any_pb2.Any]:
    """The `Any` that carries `payload` (see the module documentation), or None."""
    if payload is None:
        return None
    if isinstance(payload, any_pb2.Any):
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return any_pb2.Any(
            type_url=BYTES_TYPE_URL, value=wrappers_pb2.BytesValue(value=bytes(payload)).SerializeToString()
        )
    if isinstance(payload, str):
        return any_pb2.Any(type_url=STRING_TYPE_URL, value=wrappers_pb2.StringValue(value=payload).SerializeToString())
    if isinstance(payload, Message):
        packed = any_pb2.Any()
        packed.Pack(payload)
        return packed
    raise TypeError(
        f"payload must be bytes, str, a protobuf message or a google.protobuf.Any, not {type(payload).__name__}"
    )


def unpack(packed: any_pb2.Any, message_type: Type[M]) -> M:
    """Decodes `packed` as `message_type`; raises TypeError when the type URL is another one."""
    if not packed.Is(message_type.DESCRIPTOR):
        raise TypeError(f"payload is {packed.type_url or '<no type_url>'}, not {type_url_of(message_type)}")
    out = message_type()
    packed.Unpack(out)
    return out


def decode(packed: Optional[any_pb2.Any]) -> _AnyT:
    """The payload as a Python value: bytes for BytesValue, str for StringValue, the message
    for a type this process has loaded (e.g. `NvmJob`), else the `Any` itself."""
    if packed is None:
        return None
    if packed.type_url == BYTES_TYPE_URL:
        return wrappers_pb2.BytesValue.FromString(packed.value).value
    if packed.type_url == STRING_TYPE_URL:
        return wrappers_pb2.StringValue.FromString(packed.value).value
    if not packed.type_url:
        return packed
    name = packed.type_url.rsplit("/", 1)[-1]
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return packed
    cls = message_factory.GetMessageClass(descriptor)
    out = cls()
    out.ParseFromString(packed.value)
    return out
