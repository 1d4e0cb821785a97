"""Transports: how frames travel between the client and the bus (`proto/README.md`, Framing).

- `StreamConnection`: `tcp://` and `tls://` (TLS 1.3, the standard `ssl` module). An
  `asyncio.Protocol` over a byte stream in which every frame is a 4-byte big-endian length, then
  the frame.
- `WebSocketConnection`: `ws://` and `wss://`, over the `websockets` package (the optional
  extra `arqonbus[ws]`). One binary message is one frame, with no length prefix.

The `Bus` sees only what `Connection` defines: `send(body)` queues one serialized
`ClientFrame`, `flush()` hands the queue to the network, `await drain()` waits while too much is
queued, `close()` flushes then closes, `abort()` drops the connection. Each incoming
`ServerFrame` goes to `bus._on_frame(conn, frame)` as soon as it is decoded, without awaiting
(the stream reader hands the common `Deliver` straight to `bus._on_deliver(subscription_id,
message)`), and the end of the connection to `bus._on_connection_lost(conn, exc)`. So requests,
subscriptions, history, jobs, reconnection and the causal context work the same on every
transport. `open_connection` dials the bus's endpoint and turns what can fail on the way (a
refused address, a TLS handshake, a WebSocket upgrade) into `ConnectFailed` or `ArqonTimeout`
with a message that says what failed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
import struct
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Union

from google.protobuf.message import DecodeError

from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus.errors import ArqonError, ArqonTimeout, ConnectFailed, ConnectionLost, ProtocolViolation

if TYPE_CHECKING:  # pragma: no cover
    from arqonbus.client import Bus

__all__ = [
    "Connection",
    "StreamConnection",
    "WebSocketConnection",
    "open_connection",
    "make_ssl_context",
    "describe_connect_error",
    "require_websockets",
    "WS_EXTRA_HINT",
]

log = logging.getLogger("arqonbus")

LENGTH_PREFIX_BYTES = 4
_LENGTH = struct.Struct(">I")
#: The bytes before the message in a `ServerFrame{deliver: Deliver{subscription_id, message}}`
#: with correlation id 0 (left out), a subscription id below 128 and a message of 128 to 16,383
#: bytes, as the bus writes it: `1a <2-byte length> 08 <id> 12 <2-byte length>`. The reader
#: takes this shape only when both lengths account for the whole frame, so the frame holds
#: nothing else; any other frame is decoded as a `ServerFrame`.
_DELIVER_HEADER = 8
#: Queued outgoing bytes that trigger a write before the end of the event-loop turn (streams), and
#: above which `drain()` waits (WebSocket).
WRITE_COALESCE_BYTES = 64 * 1024

WS_EXTRA_HINT = (
    "ws:// and wss:// URLs need the websockets package (13 or newer): "
    "pip install 'arqonbus[ws]' (or pip install 'websockets>=13')"
)

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------
# TLS


def make_ssl_context(
    ca: Optional[PathLike] = None,
    cert: Optional[PathLike] = None,
    key: Optional[PathLike] = None,
) -> ssl.SSLContext:
    """The client's TLS context: TLS 1.3 minimum (the server speaks nothing else), the server's
    certificate verified (against the PEM file `ca`, else the system's trusted CAs) with host
    name checking, and the client certificate `cert` (PEM, with its key in it or in `key`)
    presented when the server asks (mTLS)."""
    if key is not None and cert is None:
        raise ValueError("key= is the private key of the client certificate: give cert= too")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else os.fspath(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        context.load_cert_chain(os.fspath(cert), None if key is None else os.fspath(key))
    return context


# OpenSSL's reasons (`ssl.SSLError.reason`) for the TLS failures a client of the bus meets.
_CLIENT_CERT_REQUIRED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED"}
_CLIENT_CERT_REFUSED = {
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
}
_NO_COMMON_VERSION = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}


def describe_connect_error(exc: BaseException, tls: bool = False) -> str:
    """What failed, in words, for an error met while opening a connection (`tls`: over TLS)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        if "mismatch" in detail.lower():
            hint = "connect with a name the certificate carries, or pass server_hostname="
        else:
            hint = "trust the CA that signed it with ca=... (or pass an ssl_context=)"
        return f"TLS handshake failed: the server's certificate did not verify ({detail}); {hint}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _CLIENT_CERT_REQUIRED:
            return (
                f"TLS handshake failed: the server requires a client certificate (mTLS; {reason}); "
                "pass cert=... and key=..."
            )
        if reason in _CLIENT_CERT_REFUSED:
            return f"TLS handshake failed: the server refused the client certificate ({reason})"
        if reason in _NO_COMMON_VERSION:
            return f"TLS handshake failed: no common protocol version; the bus speaks TLS 1.3 only ({reason})"
        if reason in _NOT_TLS:
            return (
                f"TLS handshake failed: the server did not answer in TLS ({reason}); "
                "is this its tls_listen/wss_listen port?"
            )
        return f"TLS error: {exc}"
    if isinstance(exc, OSError):
        if str(exc):
            return str(exc)
        during = " during the TLS handshake (is this the server's tls_listen/wss_listen port?)" if tls else ""
        return f"{type(exc).__name__}: the server closed the connection{during}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------------------------
# The connection API


class Connection:
    """One session with the server over some transport (see the module's docstring)."""

    def __init__(self, bus: "Bus"):
        self._bus = bus
        self.welcome: "asyncio.Future[_pb.Welcome]" = bus._loop.create_future()
        self.closed: "asyncio.Future[None]" = bus._loop.create_future()
        #: The Error frame that announced the server's close, or the ProtocolViolation that made
        #: the client close, if any.
        self.close_error: Optional[ArqonError] = None
        self.lost = False

    def send(self, body: bytes) -> None:
        """Queues one serialized `ClientFrame`. Raises `ConnectionLost` when the connection is
        gone or closing."""
        raise NotImplementedError

    def flush(self) -> None:
        """Hands the queued frames to the network."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Waits while the frames queued and not yet written exceed the transport's limit."""
        raise NotImplementedError

    def close(self) -> None:
        """Sends what is queued, then closes; `closed` resolves when the connection is gone."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drops the connection now, discarding what is queued."""
        raise NotImplementedError

    def _lost(self, exc: Optional[BaseException]) -> None:
        """The connection ended (`exc` None: an orderly close)."""
        if self.lost:
            return
        self.lost = True
        if not self.welcome.done():
            self.welcome.set_exception(
                self.close_error
                or ConnectFailed(
                    f"could not connect to {self._bus.url}: the connection closed before the server's Welcome: "
                    f"{describe_connect_error(exc, self._bus.endpoint.uses_tls) if exc is not None else 'EOF'}"
                )
            )
            # Retrieved by the opener; avoid "exception never retrieved" if it gave up.
            self.welcome.exception()
        if not self.closed.done():
            self.closed.set_result(None)
        self._bus._on_connection_lost(self, exc)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# tcp:// and tls://


class StreamConnection(Connection, asyncio.Protocol):
    """A TCP or TLS session: splits the byte stream into length-prefixed frames."""

    def __init__(self, bus: "Bus", max_incoming_frame_bytes: int):
        super().__init__(bus)
        self._max_incoming = max_incoming_frame_bytes
        self._buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self._write_paused = False
        self._drain_waiters: List["asyncio.Future[None]"] = []
        self._out = bytearray()
        self._flush_scheduled = False

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        pos = 0
        try:
            if self._buf:
                # The previous read ended inside a frame: complete that frame from the head of
                # this read, then parse the rest of `data` where it lies (no copy of the read,
                # and a frame longer than many reads is copied once, not once per read).
                pos = self._complete_buffered_frame(data)
                if pos < 0 or self.lost:
                    return
            end = len(data)
            unpack_length = _LENGTH.unpack_from
            decode = _pb.ServerFrame.FromString
            decode_message = _pb.ArqonMessage.FromString
            on_frame = self._bus._on_frame
            on_deliver = self._bus._on_deliver
            max_incoming = self._max_incoming
            while end - pos >= LENGTH_PREFIX_BYTES:
                (length,) = unpack_length(data, pos)
                if length > max_incoming:
                    raise self._too_large(length)
                start = pos + LENGTH_PREFIX_BYTES
                if end - start < length:
                    break
                pos = start + length
                # The common frame, a Deliver of a 128 B to 16 KiB pulse to one of the first 127
                # subscriptions, is decoded without the ServerFrame and Deliver around its
                # message: two fewer protobuf objects per pulse (see _DELIVER_HEADER).
                sid = -1
                if data[start] == 0x1A and length >= _DELIVER_HEADER + 0x80:
                    d1, d2, tag1, sid, tag2, m1, m2 = data[start + 1 : start + _DELIVER_HEADER]
                    if not (
                        tag1 == 0x08
                        and tag2 == 0x12
                        and sid < 0x80
                        and d1 >= 0x80 > d2
                        and m1 >= 0x80 > m2
                        and d1 - 0x80 + (d2 << 7) == length - 3
                        and m1 - 0x80 + (m2 << 7) == length - _DELIVER_HEADER
                    ):
                        sid = -1
                try:
                    if sid >= 0:
                        message = decode_message(data[start + _DELIVER_HEADER : pos])
                    else:
                        frame = decode(data[start:pos])
                except DecodeError as exc:
                    raise ProtocolViolation(f"undecodable ServerFrame of {length} bytes: {exc}") from exc
                if sid >= 0:
                    on_deliver(sid, message)
                else:
                    on_frame(self, frame)
                if self.lost:
                    return
        except ProtocolViolation as exc:
            log.error("arqonbus: %s; closing the connection", exc)
            self.close_error = exc
            if self.transport is not None:
                self.transport.abort()
            return
        if pos < end:
            self._buf += memoryview(data)[pos:]

    def _complete_buffered_frame(self, data: bytes) -> int:
        """Adds the head of `data` to the partial frame held in `_buf`. When that completes it,
        dispatches it, empties `_buf` and returns how many bytes of `data` it took; else keeps
        all of `data` in `_buf` and returns -1. Raises `ProtocolViolation`."""
        buf = self._buf
        pos = 0
        if len(buf) < LENGTH_PREFIX_BYTES:
            pos = LENGTH_PREFIX_BYTES - len(buf)
            buf += data[:pos]
            if len(buf) < LENGTH_PREFIX_BYTES:
                return -1
        (length,) = _LENGTH.unpack_from(buf, 0)
        if length > self._max_incoming:
            raise self._too_large(length)
        missing = LENGTH_PREFIX_BYTES + length - len(buf)
        if len(data) - pos < missing:
            buf += memoryview(data)[pos:]
            return -1
        buf += memoryview(data)[pos : pos + missing]
        body = bytes(memoryview(buf)[LENGTH_PREFIX_BYTES:])
        buf.clear()
        try:
            frame = _pb.ServerFrame.FromString(body)
        except DecodeError as exc:
            raise ProtocolViolation(f"undecodable ServerFrame of {length} bytes: {exc}") from exc
        self._bus._on_frame(self, frame)
        return pos + missing

    def _too_large(self, length: int) -> ProtocolViolation:
        return ProtocolViolation(
            f"server frame of {length} bytes exceeds the client's limit of "
            f"{self._max_incoming} bytes (max_incoming_frame_bytes)"
        )

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._wake_drainers()
        self._lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    # Sending --------------------------------------------------------------------------------

    def send(self, body: bytes) -> None:
        """Queues one frame. Frames queued in one turn of the event loop go out in one write
        (one system call instead of one per frame), at the end of the turn or as soon as
        `WRITE_COALESCE_BYTES` are waiting."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionLost("not connected", cause=self.close_error)
        out = self._out
        out += len(body).to_bytes(LENGTH_PREFIX_BYTES, "big")
        out += body
        if len(out) >= WRITE_COALESCE_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._bus._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.lost or self.transport is None or self.transport.is_closing():
            return
        # The transport may keep a reference to what it could not send yet: give it its own
        # buffer rather than one this connection goes on appending to.
        out, self._out = self._out, bytearray()
        self.transport.write(out)

    async def drain(self) -> None:
        """Waits while the transport's write buffer is above its high-water mark."""
        if not self._write_paused or self.lost:
            return
        waiter = self._bus._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        if self.transport is None or self.lost:
            return
        self.flush()
        self.transport.close()  # sends what the transport still buffers first

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# --------------------------------------------------------------------------------------------
# ws:// and wss://


def require_websockets() -> None:
    """Raises `ImportError` naming the `arqonbus[ws]` extra when `websockets` (13+, the asyncio
    client) is not installed."""
    try:
        import websockets.asyncio.client  # noqa: F401
    except ImportError as exc:
        raise ImportError(WS_EXTRA_HINT) from exc


_ws_connection_class: Any = None


def _recording_ws_connection() -> Any:
    """`websockets`' client connection, remembering why its transport ended: a TLS alert during
    the upgrade (e.g. the server requires a client certificate) otherwise surfaces only as "did
    not receive a valid HTTP response"."""
    global _ws_connection_class
    if _ws_connection_class is None:
        from websockets.asyncio.client import ClientConnection

        class _ClientConnection(ClientConnection):
            #: The TCP (and TLS) connection was up: what failed after it was the upgrade.
            opened = False
            transport_error: Optional[BaseException] = None

            def connection_made(self, transport: Any) -> None:
                self.opened = True
                super().connection_made(transport)

            def connection_lost(self, exc: Optional[Exception]) -> None:
                self.transport_error = exc
                super().connection_lost(exc)

        _ws_connection_class = _ClientConnection
    return _ws_connection_class


class WebSocketConnection(Connection):
    """A WebSocket session: one binary message per frame.

    A reader task takes each message as `websockets` has it and dispatches its frame at once
    (so, as on a stream, acks and errors never wait behind unread pulses); a writer task sends
    the queued frames in order. `drain()` waits while more than `WRITE_COALESCE_BYTES` are queued.
    """

    def __init__(self, bus: "Bus", ws: Any):
        super().__init__(bus)
        #: The `websockets` client connection.
        self.ws = ws
        self._out: Deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._closing = False
        self._writer_wakeup: Optional["asyncio.Future[None]"] = None
        self._drain_waiters: List["asyncio.Future[None]"] = []
        loop = bus._loop
        self._writer = loop.create_task(self._write_loop())
        self._reader = loop.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        exc: Optional[BaseException] = None
        cancelled = False
        decode = _pb.ServerFrame.FromString
        on_frame = self._bus._on_frame
        try:
            while True:
                message = await self.ws.recv()
                if not isinstance(message, bytes):
                    raise ProtocolViolation("the server sent a text WebSocket message; frames are binary messages")
                try:
                    frame = decode(message)
                except DecodeError as err:
                    raise ProtocolViolation(f"undecodable ServerFrame of {len(message)} bytes: {err}") from err
                on_frame(self, frame)
                if self.lost:
                    return
        except ConnectionClosedOK:
            exc = None
        except ConnectionClosed as err:
            exc = err
        except ProtocolViolation as err:
            log.error("arqonbus: %s; closing the connection", err)
            self.close_error = err
            exc = err
            self.ws.transport.abort()
        except asyncio.CancelledError:
            # Only the event loop shutting down cancels the reader: drop the connection without
            # telling the bus (which would try to reconnect on a dying loop).
            cancelled = True
            raise
        finally:
            if cancelled:
                self.lost = True
                self._writer.cancel()
                self.abort()
            else:
                self._end(exc)

    async def _write_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = self._bus._loop
        ws = self.ws
        try:
            while True:
                while self._out:
                    body = self._out.popleft()
                    self._out_bytes -= len(body)
                    await ws.send(body)
                    if self._drain_waiters and self._out_bytes <= WRITE_COALESCE_BYTES:
                        self._wake_drainers()
                if self._closing:
                    await ws.close()
                    return
                self._writer_wakeup = loop.create_future()
                await self._writer_wakeup
                self._writer_wakeup = None
        except ConnectionClosed:
            return  # the reader reports the loss

    def _end(self, exc: Optional[BaseException]) -> None:
        self._out.clear()
        self._out_bytes = 0
        if not self._writer.done() and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._wake_drainers()
        self._lost(exc)

    def _wake_writer(self) -> None:
        wakeup = self._writer_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def send(self, body: bytes) -> None:
        """Queues one frame; the writer task sends the frames queued in a turn of the event loop
        right after it."""
        if self.lost or self._closing:
            raise ConnectionLost("not connected", cause=self.close_error)
        self._out.append(body)
        self._out_bytes += len(body)
        self._wake_writer()

    def flush(self) -> None:
        self._wake_writer()

    async def drain(self) -> None:
        if self._out_bytes <= WRITE_COALESCE_BYTES or self.lost:
            return
        waiter = self._bus._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if self.lost or self._closing:
            return
        self._closing = True
        self._wake_writer()

    def abort(self) -> None:
        transport = self.ws.transport
        if transport is not None:
            transport.abort()


# --------------------------------------------------------------------------------------------
# Dialling


async def open_connection(bus: "Bus") -> Connection:
    """Opens a connection to `bus.endpoint` (TCP, TLS, WebSocket or secure WebSocket) within
    `bus.connect_timeout`. Raises `ConnectFailed` saying what failed, or `ArqonTimeout`."""
    endpoint = bus.endpoint
    if endpoint.is_websocket:
        return await _open_websocket(bus)
    conn = StreamConnection(bus, bus.max_incoming_frame_bytes)
    tls: Any = {}
    if endpoint.uses_tls:
        tls = {"ssl": bus.ssl_context, "server_hostname": bus.server_hostname or endpoint.host}
    try:
        await asyncio.wait_for(
            bus._loop.create_connection(lambda: conn, endpoint.host, endpoint.port, **tls),
            bus.connect_timeout,
        )
    except asyncio.TimeoutError:
        raise ArqonTimeout(f"could not connect to {bus.url} within {bus.connect_timeout}s") from None
    except OSError as exc:  # ssl.SSLError included
        detail = describe_connect_error(exc, endpoint.uses_tls)
        raise ConnectFailed(f"could not connect to {bus.url}: {detail}") from exc
    return conn


async def _open_websocket(bus: "Bus") -> WebSocketConnection:
    require_websockets()
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    endpoint = bus.endpoint
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    uri = f"{endpoint.scheme}://{host}:{endpoint.port}{endpoint.path}"
    made: List[Any] = []
    connection_class = _recording_ws_connection()

    def factory(*args: Any, **kwargs: Any) -> Any:
        connection = connection_class(*args, **kwargs)
        made.append(connection)
        return connection

    options: Any = {
        "max_size": bus.max_incoming_frame_bytes,
        "compression": None,  # the bus does not negotiate permessage-deflate
        "open_timeout": None,  # bounded below, with the rest of the opening
        "create_connection": factory,
    }
    if endpoint.uses_tls:
        options["ssl"] = bus.ssl_context
        options["server_hostname"] = bus.server_hostname or endpoint.host
    try:
        ws = await asyncio.wait_for(ws_connect(uri, **options), bus.connect_timeout)
    except asyncio.TimeoutError:
        raise ArqonTimeout(f"could not connect to {bus.url} within {bus.connect_timeout}s") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ConnectFailed(
            f"could not connect to {bus.url}: the server refused the WebSocket upgrade "
            f"(HTTP {status} {exc.response.reason_phrase})"
        ) from exc
    except (InvalidHandshake, OSError) as exc:
        # OSError: refused, unreachable, ssl.SSLError; and, from websockets 13, the connection
        # closing before the server's answer to the upgrade.
        connection = made[-1] if made else None
        transport_error = connection.transport_error if connection is not None else None
        if isinstance(exc, ssl.SSLError):
            detail = describe_connect_error(exc)
        elif isinstance(transport_error, ssl.SSLError):
            detail = describe_connect_error(transport_error)  # a TLS alert, e.g. no client certificate
        elif isinstance(exc, InvalidHandshake) or (connection is not None and connection.opened):
            cause = exc.__cause__
            detail = f"the WebSocket upgrade failed: {exc}" + (f" ({cause})" if cause is not None else "")
            detail += f"; is this the server's {endpoint.scheme}_listen port?"
        else:
            detail = describe_connect_error(exc, endpoint.uses_tls)
        raise ConnectFailed(f"could not connect to {bus.url}: {detail}") from exc
    return WebSocketConnection(bus, ws)
