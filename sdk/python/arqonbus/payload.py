"""Packing payloads into `google.protobuf.Any` and back.

What `publish(payload=...)` accepts, and how it travels:

| given | `Any.type_url` | `Any.value` |
| --- | --- | --- |
| `bytes`, `bytearray`, `memoryview` | `application/octet-stream` | the bytes |
| `str` | `text/plain; charset=utf-8` | its UTF-8 encoding |
| a protobuf message | `type.googleapis.com/<full.name>` | its encoding |
| a `google.protobuf.Any` | as given | as given |
| `None` | no payload | |

Raw bytes use the same type URL as the Rust client (`Outgoing::bytes`) and the `arqonbus pub`
CLI, so what one publishes the others read as is (`arqonbus sub` prints text payloads as text).
`decode` also understands the protobuf wrapper types `BytesValue` and `StringValue`, which other
clients may use.
"""

from __future__ import annotations

from typing import Any as _AnyT
from typing import Optional, Type, TypeVar, Union

from google.protobuf import any_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

__all__ = [
    "BYTES_TYPE_URL",
    "TEXT_TYPE_URL",
    "TYPE_URL_PREFIX",
    "PayloadLike",
    "decode",
    "pack",
    "type_url_of",
    "unpack",
]

TYPE_URL_PREFIX = "type.googleapis.com/"
#: Raw bytes, as the Rust client and the CLI publish them.
BYTES_TYPE_URL = "application/octet-stream"
#: UTF-8 text.
TEXT_TYPE_URL = "text/plain; charset=utf-8"
_WRAPPED_BYTES_URL = TYPE_URL_PREFIX + "google.protobuf.BytesValue"
_WRAPPED_STRING_URL = TYPE_URL_PREFIX + "google.protobuf.StringValue"

PayloadLike = Union[bytes, bytearray, memoryview, str, Message, None]
M = TypeVar("M", bound=Message)


def type_url_of(message_type: Union[Message, Type[Message]]) -> str:
    return TYPE_URL_PREFIX + message_type.DESCRIPTOR.full_name


def pack(payload: PayloadLike) -> Optional[any_pb2.Any]:
    """The `Any` that carries `payload` (see the module documentation), or None."""
    if payload is None:
        return None
    if isinstance(payload, any_pb2.Any):
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return any_pb2.Any(type_url=BYTES_TYPE_URL, value=bytes(payload))
    if isinstance(payload, str):
        return any_pb2.Any(type_url=TEXT_TYPE_URL, value=payload.encode("utf-8"))
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
    """The payload as a Python value: bytes for raw bytes, str for text, the message for a
    protobuf type this process has loaded (e.g. `NvmJob`), else the `Any` itself."""
    if packed is None:
        return None
    url = packed.type_url
    if url == BYTES_TYPE_URL:
        return packed.value
    if url.startswith("text/"):
        return packed.value.decode("utf-8", errors="replace")
    if url == _WRAPPED_BYTES_URL:
        return wrappers_pb2.BytesValue.FromString(packed.value).value
    if url == _WRAPPED_STRING_URL:
        return wrappers_pb2.StringValue.FromString(packed.value).value
    if not url.startswith(TYPE_URL_PREFIX):
        return packed
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(url[len(TYPE_URL_PREFIX) :])
    except KeyError:
        return packed
    out = message_factory.GetMessageClass(descriptor)()
    out.ParseFromString(packed.value)
    return out
