"""Exceptions: one class per wire `ErrorCode`, all subclasses of `ArqonError`.

A server `Error{code, message}` becomes an instance of the class registered for `code`
(`InvalidTopic` for `INVALID_TOPIC`, ...), carrying `.code`, `.message` and the request's
`.correlation_id`. Codes this SDK does not know yet become a plain `ArqonError` with the number,
so a newer server never makes the client crash on an error frame.

Errors that do not come from the server (connection lost or refused, time-outs, an unsupported
URL scheme) are also `ArqonError`s, with `.code = None`.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb

__all__ = [
    "ArqonError",
    "ServerError",
    "FrameTooLarge",
    "DecodeFailed",
    "HelloRequired",
    "InvalidTopic",
    "InvalidReality",
    "Unauthenticated",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyFault",
    "SlowConsumer",
    "QuotaExceeded",
    "HistoryUnavailable",
    "InternalError",
    "UnsupportedVersion",
    "InvalidRequest",
    "ShuttingDown",
    "LimitExceeded",
    "StorageFailed",
    "TypeMismatch",
    "TimedOut",
    "ConnectionLost",
    "ConnectFailed",
    "ClientClosed",
    "ProtocolViolation",
    "ArqonTimeout",
    "JobTimeout",
    "UnsupportedScheme",
    "DeltaError",
    "ERROR_CLASSES",
    "error_from_proto",
]


class ArqonError(Exception):
    """Base class of every error the SDK raises.

    `code` is the wire `ErrorCode` number for errors the server sent, `None` otherwise.
    """

    code: Optional[int] = None
    #: Whether the server closes the connection after sending this error (proto/README.md).
    closes_connection: bool = False

    def __init__(self, message: str = "", *, code: Optional[int] = None, correlation_id: int = 0):
        if code is not None:
            self.code = code
        self.message = message
        self.correlation_id = correlation_id
        super().__init__(message)

    @property
    def code_name(self) -> Optional[str]:
        if self.code is None:
            return None
        try:
            return _pb.ErrorCode.Name(self.code)
        except ValueError:
            return f"UNKNOWN_{self.code}"

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.code_name} ({self.code}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ServerError(ArqonError):
    """An `Error` frame from the server. The subclasses below are one per `ErrorCode`."""


class FrameTooLarge(ServerError):
    """A frame exceeded `max_frame_bytes` (`Welcome.max_frame_bytes`).

    Raised by the server (which then closes the connection) or, before anything is sent, by
    the SDK itself when a publish would not fit; then `.local` is True and the connection is
    left open.
    """

    code = _pb.FRAME_TOO_LARGE
    closes_connection = True
    local = False


class DecodeFailed(ServerError):
    code = _pb.DECODE_FAILED
    closes_connection = True


class HelloRequired(ServerError):
    code = _pb.HELLO_REQUIRED
    closes_connection = True


class InvalidTopic(ServerError):
    code = _pb.INVALID_TOPIC


class InvalidReality(ServerError):
    code = _pb.INVALID_REALITY


class Unauthenticated(ServerError):
    code = _pb.UNAUTHENTICATED
    closes_connection = True


class PermissionDenied(ServerError):
    code = _pb.PERMISSION_DENIED


class PolicyDenied(ServerError):
    code = _pb.POLICY_DENIED


class PolicyFault(ServerError):
    code = _pb.POLICY_FAULT


class SlowConsumer(ServerError):
    code = _pb.SLOW_CONSUMER
    closes_connection = True


class QuotaExceeded(ServerError):
    code = _pb.QUOTA_EXCEEDED


class HistoryUnavailable(ServerError):
    """The reality keeps no history for the asked range (ephemeral realities keep none).

    `first_available_sequence` is the first sequence the reality still keeps (0 when none).
    """

    code = _pb.HISTORY_UNAVAILABLE
    first_available_sequence = 0


class InternalError(ServerError):
    code = _pb.INTERNAL


class UnsupportedVersion(ServerError):
    code = _pb.UNSUPPORTED_VERSION
    closes_connection = True


class InvalidRequest(ServerError):
    code = _pb.INVALID_REQUEST


class ShuttingDown(ServerError):
    code = _pb.SHUTTING_DOWN
    closes_connection = True


class LimitExceeded(ServerError):
    code = _pb.LIMIT_EXCEEDED


class StorageFailed(ServerError):
    """A retained reality could not store the pulse (disk full, failed flush, quarantined).
    Nothing was acknowledged or delivered."""

    code = _pb.STORAGE_FAILED


class TypeMismatch(ServerError):
    """An operator's pulse carried a payload type its manifest (or a circuit edge) does not
    declare for the topic. The message names the topic, the expected and the actual type URL."""

    code = _pb.TYPE_MISMATCH


class TimedOut(ServerError):
    """A frame did not complete within the server's `limits.frame_timeout_ms`, or the session sent
    nothing (not even the answer to a keepalive Ping) for `limits.idle_timeout_ms`."""

    code = _pb.TIMED_OUT
    closes_connection = True


#: Wire code -> exception class. `tests/test_errors.py` checks that every `ErrorCode` of the
#: proto (except UNSPECIFIED) has its class here.
ERROR_CLASSES: Dict[int, Type[ServerError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        FrameTooLarge,
        DecodeFailed,
        HelloRequired,
        InvalidTopic,
        InvalidReality,
        Unauthenticated,
        PermissionDenied,
        PolicyDenied,
        PolicyFault,
        SlowConsumer,
        QuotaExceeded,
        HistoryUnavailable,
        InternalError,
        UnsupportedVersion,
        InvalidRequest,
        ShuttingDown,
        LimitExceeded,
        StorageFailed,
        TypeMismatch,
        TimedOut,
    )
}


def error_from_proto(err: "_pb.Error", correlation_id: int = 0) -> ArqonError:
    """The exception for one `Error` frame."""
    cls = ERROR_CLASSES.get(err.code)
    if cls is None:
        exc: ArqonError = ServerError(err.message, code=err.code, correlation_id=correlation_id)
        return exc
    exc = cls(err.message, correlation_id=correlation_id)
    if isinstance(exc, HistoryUnavailable):
        exc.first_available_sequence = err.first_available_sequence
    return exc


class ConnectionLost(ArqonError):
    """The connection to the server closed or broke.

    `cause` is the server error that announced the close (e.g. `FrameTooLarge`), if there was
    one. Requests in flight at that moment fail with this error: the SDK cannot know whether the
    server processed them, so it never resends them.
    """

    def __init__(self, message: str = "connection lost", *, cause: Optional[ArqonError] = None):
        super().__init__(message)
        self.cause = cause


class ConnectFailed(ConnectionLost):
    """A connection could not be opened: the address refused it, the TLS handshake failed
    (the server's certificate did not verify, the server requires a client certificate or
    refused the one given), the WebSocket upgrade was refused, or the server closed the
    connection before its `Welcome`. The message says which. A `ConnectionLost`, so code that
    handles a lost connection handles this too.
    """

    def __init__(self, message: str = "could not connect", *, cause: Optional[ArqonError] = None):
        super().__init__(message, cause=cause)


class ClientClosed(ArqonError):
    """The `Bus` was closed by this program."""


class ProtocolViolation(ArqonError):
    """The server sent something the protocol does not allow (a bug in the server or the SDK)."""


class ArqonTimeout(ArqonError, TimeoutError):
    """An operation did not complete within its time-out."""


class JobTimeout(ArqonTimeout):
    """A job's final result did not arrive within the `timeout` given to `Bus.submit`."""


class UnsupportedScheme(ArqonError, ValueError):
    """The URL's scheme is not one this SDK can connect with (`tcp`, `tls`, `ws`, `wss`)."""


class DeltaError(ArqonError):
    """A pulse of a delta-only topic could not be reconstructed (docs/delta.md): a malformed
    ArqonDelta 1 delta, a delta whose base is not the state this receiver holds, or a state
    whose CRC-32 is not the pulse's `delta.checksum`. The SDK never hands out a state it could
    not prove, so the pulse is not delivered; a subscription raises this in its place.

    `topic` and `sequence` name the pulse when the error is about one ("" and 0 for an error
    of `arqonbus.delta.apply` itself).
    """

    def __init__(self, message: str = "", *, topic: str = "", sequence: int = 0):
        super().__init__(message)
        self.topic = topic
        self.sequence = sequence
