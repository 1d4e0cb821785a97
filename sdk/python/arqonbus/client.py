"""The asyncio client: `Bus`, its subscriptions and history queries.

One `Bus` is one connection (the server pins it to one shard for life), over TCP, TLS, WebSocket
or secure WebSocket as its URL says (`arqonbus.transport`; everything above the transport is the
same). Everything is pipelined on it: each request carries a fresh non-zero correlation id and
waits for the frame that carries the same id back, while `Deliver`/`Dropped` frames (correlation
id 0) are routed to subscriptions by their client-chosen subscription id.

The transport decodes every complete frame as it arrives and dispatches it without awaiting, so
acks, pongs and errors are never stuck behind a subscriber that is not reading. Each
subscription buffers at most `max_pending` pulses; past that the SDK drops and counts them
(`Subscription.dropped`), just as the server sheds for a slow connection.

Reconnecting is described in `Bus.reconnect` and in the README.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import ssl
import time
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Union,
)

from arqonbus import errors as _errors
from arqonbus import payload as _payload
from arqonbus._proto.arqon.circuit.v1 import circuit_pb2 as _circuit_pb
from arqonbus._proto.arqon.operator.v1 import operator_pb2 as _operator_pb
from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus._wire import PublishEncoder
from arqonbus.causal import CausalContext
from arqonbus.circuits import APPLY_TOPIC as CIRCUIT_APPLY_TOPIC
from arqonbus.circuits import REMOVE_TOPIC as CIRCUIT_REMOVE_TOPIC
from arqonbus.circuits import CircuitSpec, circuit_message
from arqonbus.delta import Chains
from arqonbus.errors import (
    ArqonError,
    ArqonTimeout,
    ClientClosed,
    ConnectionLost,
    DeltaError,
    FrameTooLarge,
    ProtocolViolation,
)
from arqonbus.params import (
    PARAM_TOPIC_PREFIX,
    SET_PARAM_TOPIC,
    LiveParams,
    ParamCallback,
    ParamValue,
    ParamValues,
    RealityParams,
    param_message,
)
from arqonbus.pulse import Pulse
from arqonbus.topics import matches as _topic_matches
from arqonbus.transport import Connection, make_ssl_context, open_connection, require_websockets
from arqonbus.url import DEFAULT_URL, Endpoint, parse_url

if TYPE_CHECKING:  # pragma: no cover
    from arqonbus.jobs import Job

__all__ = ["Bus", "Subscription", "History", "HistoryResult", "PingResult", "Start", "ALL", "connect"]

log = logging.getLogger("arqonbus")

PROTOCOL_VERSION = 1
#: A pattern that matches every topic: `*` (one segment) then `>` (one or more), i.e. every
#: topic of 2 to 8 segments.
ALL = "*.>"
#: Largest server frame the client accepts before calling the connection broken (on WebSocket,
#: the `max_size` of a message). Server frames are bounded by the server's own limits (1 MiB by
#: default, plus the envelope of a delivered pulse); this only guards against a corrupt stream.
DEFAULT_MAX_INCOMING_FRAME_BYTES = 64 * 1024 * 1024
#: Codes after which a reconnection cannot succeed without a change on the client's side.
_FATAL_HANDSHAKE_CODES = frozenset({_pb.UNAUTHENTICATED, _pb.UNSUPPORTED_VERSION})

SpectralLike = Union["_pb.SpectralMetadata", Mapping[str, Any], None]
PathLike = Union[str, "os.PathLike[str]"]
StartLike = Union["_pb.StartPosition", str, None]


# --------------------------------------------------------------------------------------------
# Small value types


class Start:
    """Where a subscription starts (`StartPosition`). Without one, it starts at `latest`."""

    @staticmethod
    def latest() -> "_pb.StartPosition":
        return _pb.StartPosition(latest=True)

    @staticmethod
    def from_sequence(sequence: int) -> "_pb.StartPosition":
        return _pb.StartPosition(from_sequence=sequence)

    @staticmethod
    def from_time(unix_nanos: int) -> "_pb.StartPosition":
        return _pb.StartPosition(from_time_unix_nanos=unix_nanos)

    @staticmethod
    def last(n: int) -> "_pb.StartPosition":
        return _pb.StartPosition(last_n=n)


def _start_position(start: StartLike) -> Optional["_pb.StartPosition"]:
    if start is None or start == "latest":
        return None
    if isinstance(start, _pb.StartPosition):
        return start
    raise TypeError(f"start must be None, 'latest' or a StartPosition (see arqonbus.Start), not {start!r}")


class PingResult:
    """The answer to `Bus.ping`: round-trip time and the server's clock."""

    __slots__ = ("rtt_seconds", "server_time_unix_nanos")

    def __init__(self, rtt_seconds: float, server_time_unix_nanos: int):
        self.rtt_seconds = rtt_seconds
        self.server_time_unix_nanos = server_time_unix_nanos

    def __repr__(self) -> str:
        return f"PingResult(rtt_seconds={self.rtt_seconds:.6f}, server_time_unix_nanos={self.server_time_unix_nanos})"


class HistoryResult(List[Pulse]):
    """The pulses of a history query, plus its `HistoryEnd` (`count`, `next_sequence`)."""

    count: int = 0
    next_sequence: int = 0


def _fill_spectral(target: "_pb.SpectralMetadata", spectral: SpectralLike) -> None:
    if isinstance(spectral, _pb.SpectralMetadata):
        target.CopyFrom(spectral)
        return
    if not isinstance(spectral, Mapping):
        raise TypeError(f"spectral must be a SpectralMetadata or a mapping, not {type(spectral).__name__}")
    unknown = set(spectral) - {"coherence", "criticality", "eigenvalues"}
    if unknown:
        raise ValueError(f"unknown spectral keys {sorted(unknown)}; use coherence, criticality, eigenvalues")
    if "coherence" in spectral:
        target.coherence = float(spectral["coherence"])
    if "criticality" in spectral:
        target.criticality = float(spectral["criticality"])
    if "eigenvalues" in spectral:
        target.eigenvalues.extend(float(x) for x in spectral["eigenvalues"])
    # An all-default SpectralMetadata still marks the field as present.
    target.SetInParent()


def _fill_payload(target: Any, payload: Any) -> None:
    """Writes `payload` into the `Any` field `target` (see `arqonbus.payload`), the common bytes
    and str cases without building an intermediate `Any`."""
    if isinstance(payload, bytes):
        target.type_url = _payload.BYTES_TYPE_URL
        target.value = payload
        return
    if isinstance(payload, str):
        target.type_url = _payload.TEXT_TYPE_URL
        target.value = payload.encode("utf-8")
        return
    packed = _payload.pack(payload)
    if packed is not None:
        target.type_url = packed.type_url
        target.value = packed.value


# --------------------------------------------------------------------------------------------
# Subscriptions


_END = object()


def _wake_future(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class Subscription:
    """A subscription to one pattern in one reality.

    Use it in one of three ways:

        async with bus.subscribe("lab", "rig.*.temp") as sub:   # unsubscribes on exit
            async for pulse in sub: ...

        async for pulse in bus.subscribe("lab", "rig.>"):      # unsubscribes when the loop ends
            ...

        sub = await bus.subscribe("lab", "rig.>")               # you call sub.unsubscribe()
        pulse = await sub.get(timeout=5)

    `next_sequence` is the `Subscribed.next_sequence` of the latest (re)subscription: pulses
    from that sequence on are delivered in order. `last_sequence` is the sequence of the last
    pulse received. `dropped` counts pulses this subscription missed (server `Dropped` frames
    plus local overflow of `max_pending`); `resubscribed` counts re-subscriptions after a
    reconnect.

    Pulses of delta-only topics (docs/delta.md) arrive as keyframes and deltas; the
    subscription keeps each topic's last state and yields every pulse with its whole state. A
    pulse it cannot prove (its base is not the state held, the delta is malformed, the CRC-32
    differs) is not yielded: `get()` and the iteration raise `DeltaError` in its place, and the
    pulses after it come as usual (that topic's deltas fail too until its next keyframe).
    """

    def __init__(
        self,
        bus: "Bus",
        reality: str,
        pattern: str,
        start: StartLike,
        causal: bool,
        max_pending: int,
        timeout: Optional[float],
        filter: str = "",
    ):
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._bus = bus
        self.id = next(bus._subscription_ids)
        self.reality = reality
        self.pattern = pattern
        self.start = _start_position(start)
        self.causal = causal
        if not isinstance(filter, str):
            raise TypeError(f"filter must be a str, not {type(filter).__name__}")
        #: The spectral filter sent with `Subscribe` ("" = none); kept for re-subscriptions.
        self.filter = filter
        self.max_pending = max_pending
        self._timeout = timeout
        self.next_sequence = 0
        self.dropped = 0
        self.dropped_locally = 0
        self.resubscribed = 0
        #: The sequence of the last pulse received for this subscription (0: none yet).
        self.last_sequence = 0
        self._queue: Deque[Any] = collections.deque()
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._started = False
        self._closed = False
        self._error: Optional[BaseException] = None
        # The last state of each delta-only topic, as this subscription's chain left it.
        self._chains = Chains(f"subscription {self.id} ({pattern!r} in {reality!r})", bus.max_incoming_frame_bytes)
        # The bus's own `sys.param.>` subscription (`Bus.params`): what it gets goes to the
        # parameters only, never to an iterator.
        self._params_only = False

    # Lifecycle --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._started and not self._closed and self._error is None

    def _subscribe_frame(self, cid: int, start: Optional["_pb.StartPosition"]) -> "_pb.ClientFrame":
        frame = _pb.ClientFrame(correlation_id=cid)
        sub = frame.subscribe
        sub.subscription_id = self.id
        sub.reality_id = self.reality
        sub.pattern = self.pattern
        sub.causal = self.causal
        sub.filter = self.filter
        if start is not None:
            sub.start.CopyFrom(start)
        return frame

    async def _start(self) -> "Subscription":
        if self._started:
            return self
        self._started = True
        bus = self._bus
        bus._subscriptions[self.id] = self  # before sending: a Deliver may beat Subscribed
        try:
            answer = await bus._request(
                lambda cid: self._subscribe_frame(cid, self.start),
                f"Subscribe {self.pattern!r} in {self.reality!r}",
                self._timeout,
            )
        except BaseException:
            bus._subscriptions.pop(self.id, None)
            self._closed = True
            bus._subscription_ended(self.reality)
            raise
        self.next_sequence = answer.subscribed.next_sequence
        return self

    async def unsubscribe(self) -> None:
        """Stops the subscription. Pulses already buffered can still be read; then the
        iteration ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        bus = self._bus
        if bus._subscriptions.pop(self.id, None) is not None:
            conn = bus._conn
            if conn is not None and not conn.lost:
                frame = _pb.ClientFrame(correlation_id=next(bus._correlation_ids))
                frame.unsubscribe.subscription_id = self.id
                try:
                    conn.send(frame.SerializeToString())
                except ConnectionLost:
                    pass
            bus._subscription_ended(self.reality)
        self._wake()

    close = unsubscribe

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> "Subscription":
        return await self._start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.unsubscribe()

    # Reading ----------------------------------------------------------------------------------

    def _push(self, item: Any) -> None:
        # `Bus._on_deliver` does the same inline for each delivered pulse: keep the two alike.
        if self._closed:
            return
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            self.dropped_locally += 1
            return
        self._queue.append(item)
        self._wake()

    def _on_dropped(self, count: int) -> None:
        self.dropped += count
        log.warning(
            "arqonbus: subscription %d (%r in %r) missed %d pulses: the server shed them "
            "because this connection was not reading fast enough",
            self.id,
            self.pattern,
            self.reality,
            count,
        )

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next_or_end(self, timeout: Optional[float] = None) -> Optional[Pulse]:
        """The next pulse; None when the subscription has ended; raises the connection's error
        once buffered pulses are read."""
        if not self._started:
            await self._start()
        loop = self._bus._loop
        deadline = None if timeout is None else loop.time() + timeout
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self._closed:
                return None
            remaining = None
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ArqonTimeout(f"no pulse on {self.pattern!r} in {self.reality!r} within {timeout}s")
            waiter = self._waiter = loop.create_future()
            expiry = None
            if remaining is not None:
                # A timer that wakes the waiter (the loop above then finds the deadline passed):
                # it adds about 3 us to each wait, asyncio.wait_for(shield(...)) added 13 us, and
                # a reader that keeps up waits once per read from the socket.
                expiry = loop.call_later(remaining, _wake_future, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if expiry is not None:
                    expiry.cancel()
        item = self._queue.popleft()
        if isinstance(item, DeltaError):
            raise item  # in the place of the pulse it could not rebuild
        return item

    async def get(self, timeout: Optional[float] = None) -> Pulse:
        """The next pulse. Raises `ArqonTimeout` after `timeout` seconds, and
        `StopAsyncIteration` when the subscription has ended."""
        queue = self._queue
        if queue:
            # The common case when pulses come faster than they are read: one is waiting, so
            # no deadline, no future and no second coroutine.
            item = queue.popleft()
            if item.__class__ is Pulse:
                return item
            raise item  # a DeltaError, in the place of the pulse it could not rebuild
        pulse = await self._next_or_end(timeout)
        if pulse is None:
            raise StopAsyncIteration
        return pulse

    def __aiter__(self) -> AsyncIterator[Pulse]:
        if not self._started:
            # `async for p in bus.subscribe(...)`: the loop owns the subscription.
            return self._owned_iteration()
        return self

    async def __anext__(self) -> Pulse:
        queue = self._queue
        if queue:  # as in `get`
            item = queue.popleft()
            if item.__class__ is Pulse:
                return item
            raise item
        pulse = await self._next_or_end()
        if pulse is None:
            raise StopAsyncIteration
        return pulse

    async def _owned_iteration(self) -> AsyncIterator[Pulse]:
        await self._start()
        try:
            while True:
                pulse = await self._next_or_end()
                if pulse is None:
                    return
                yield pulse
        finally:
            await self.unsubscribe()

    def __repr__(self) -> str:
        state = "active" if self.active else ("closed" if self._closed else "new")
        return f"Subscription(id={self.id}, reality={self.reality!r}, pattern={self.pattern!r}, {state})"


# --------------------------------------------------------------------------------------------
# History


class History:
    """A `HistoryGet` query: `await` it for a `HistoryResult`, or `async for` its pulses.

    Raises `HistoryUnavailable` (with `.first_available_sequence`) when the reality does not
    keep the asked range; ephemeral realities keep nothing. Pulses of delta-only topics come
    with their whole state, rebuilt within the read; one that cannot be proven raises
    `DeltaError` in its place (so `await` raises it; `async for` may go on after it).
    """

    def __init__(self, bus: "Bus", request: "_pb.HistoryGet", timeout: Optional[float]):
        self._bus = bus
        self._request = request
        self._timeout = timeout
        self._queue: Deque[Any] = collections.deque()
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._error: Optional[BaseException] = None
        self._started = False
        self.done = False
        self.count = 0
        self.next_sequence = 0
        # Delta chains are per history read (docs/delta.md): the read's first pulse of each
        # delta-only topic is a keyframe.
        self._chains = Chains(
            f"the history read of {request.pattern!r} in {request.reality_id!r}", bus.max_incoming_frame_bytes
        )

    async def _begin(self) -> None:
        if self._started:
            return
        self._started = True
        bus = self._bus
        conn = await bus._connection()
        cid = next(bus._correlation_ids)
        frame = _pb.ClientFrame(correlation_id=cid)
        frame.history_get.CopyFrom(self._request)
        bus._streams[cid] = self
        try:
            conn.send(frame.SerializeToString())
        except BaseException:
            bus._streams.pop(cid, None)
            raise

    def _on_chunk(self, chunk: "_pb.HistoryChunk") -> None:
        for message in chunk.messages:
            if message.HasField("delta"):
                try:
                    self._chains.rebuild(message)
                except DeltaError as exc:
                    self._queue.append(exc)
                    continue
            self._queue.append(Pulse(message))
        self._wake()

    def _on_end(self, end: "_pb.HistoryEnd") -> None:
        self.count = end.count
        self.next_sequence = end.next_sequence
        self.done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next_or_end(self) -> Optional[Pulse]:
        await self._begin()
        loop = self._bus._loop
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self.done:
                return None
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), self._timeout)
            except asyncio.TimeoutError:
                raise ArqonTimeout(
                    f"no history frame for {self._request.reality_id!r} within {self._timeout}s"
                ) from None
            finally:
                self._waiter = None
        item = self._queue.popleft()
        if isinstance(item, DeltaError):
            raise item
        return item

    def __aiter__(self) -> "History":
        return self

    async def __anext__(self) -> Pulse:
        pulse = await self._next_or_end()
        if pulse is None:
            raise StopAsyncIteration
        return pulse

    async def _collect(self) -> HistoryResult:
        result = HistoryResult()
        while True:
            pulse = await self._next_or_end()
            if pulse is None:
                break
            result.append(pulse)
        result.count = self.count
        result.next_sequence = self.next_sequence
        return result

    def __await__(self):
        return self._collect().__await__()


# --------------------------------------------------------------------------------------------
# The bus


class _Connector:
    """What `Bus.connect(...)` returns: await it, or use it as `async with`."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._bus: Optional[Bus] = None

    def __await__(self):
        return self._factory().__await__()

    async def __aenter__(self) -> "Bus":
        self._bus = await self._factory()
        return self._bus

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._bus is not None:
            await self._bus.close()


class Bus:
    """An asyncio connection to an ArqonBus server. Create it with `await Bus.connect(...)`
    (see there for the URL schemes and the options)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: Optional[str] = None,
        name: str = "arqonbus-python",
        producer_id: Optional[str] = None,
        manifest: Optional["_pb.OperatorManifest"] = None,
        connect_timeout: float = 10.0,
        request_timeout: Optional[float] = 30.0,
        reconnect: bool = True,
        reconnect_timeout: float = 60.0,
        max_pending: int = 10_000,
        check_frame_size: bool = True,
        max_incoming_frame_bytes: int = DEFAULT_MAX_INCOMING_FRAME_BYTES,
        on_error: Optional[Callable[[ArqonError], None]] = None,
        ca: Optional[PathLike] = None,
        cert: Optional[PathLike] = None,
        key: Optional[PathLike] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        server_hostname: Optional[str] = None,
    ):
        self.endpoint: Endpoint = parse_url(url)
        self.url = str(self.endpoint)
        tls_options = {
            "ca": ca,
            "cert": cert,
            "key": key,
            "ssl_context": ssl_context,
            "server_hostname": server_hostname,
        }
        given = [name for name, value in tls_options.items() if value is not None]
        #: The TLS context of `tls://` and `wss://` connections (None for the others).
        self.ssl_context: Optional[ssl.SSLContext] = None
        #: The name the server's certificate must carry; None: the URL's host.
        self.server_hostname = server_hostname
        if self.endpoint.uses_tls:
            if ssl_context is not None:
                if ca is not None or cert is not None or key is not None:
                    raise ValueError("give ssl_context= or ca=/cert=/key=, not both")
                self.ssl_context = ssl_context
            else:
                self.ssl_context = make_ssl_context(ca, cert, key)
        elif given:
            raise ValueError(
                f"{', '.join(n + '=' for n in given)} apply to tls:// and wss:// URLs only, not {self.url}"
            )
        if self.endpoint.is_websocket:
            require_websockets()
        self.token = token
        self.name = name
        self.producer_id = producer_id if producer_id is not None else name
        self.manifest = manifest
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.auto_reconnect = reconnect
        self.reconnect_timeout = reconnect_timeout
        self.max_pending = max_pending
        self.check_frame_size = check_frame_size
        self.max_incoming_frame_bytes = max_incoming_frame_bytes
        self.on_error = on_error
        #: The causal context attached to every publish (see `arqonbus.causal`).
        self.causal = CausalContext()
        self._publish_encoder = PublishEncoder()
        #: The server's `Welcome` for the current connection.
        self.welcome: Optional["_pb.Welcome"] = None
        #: How many times this bus has connected (1 after `connect`, +1 per reconnect).
        self.connections = 0
        #: The last error the server reported for a request nobody awaited (unacked publish).
        self.last_error: Optional[ArqonError] = None

        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._conn: Optional[Connection] = None
        self._connected = asyncio.Event()
        self._correlation_ids = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[_pb.ServerFrame]"] = {}
        self._streams: Dict[int, History] = {}
        self._subscriptions: Dict[int, Subscription] = {}
        self._reconnect_task: Optional["asyncio.Task[None]"] = None
        # Re-Subscribe in flight: correlation id -> (subscription, started at `latest`).
        self._resubscribing: Dict[int, Tuple[Subscription, bool]] = {}
        self._restart_check: Optional[Tuple[Dict[str, int], Set[str]]] = None
        # Realities whose parameters this bus follows (`params`, `on_param`).
        self._params: Dict[str, RealityParams] = {}
        self._closed = False
        # Set when automatic reconnection gave up (or is off): what every call raises.
        self._broken: Optional[ArqonError] = None

    # Connecting -------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, url: str = DEFAULT_URL, token: Optional[str] = None, name: str = "arqonbus-python", **options: Any
    ) -> _Connector:
        """Connects and performs the Hello/Welcome handshake.

        `url` is `tcp://host:port` (or `host:port`), `tls://host:port`, `ws://host:port[/path]`
        or `wss://host:port[/path]` (see `arqonbus.url`). `await Bus.connect(url)` returns the
        `Bus`; `async with Bus.connect(url) as bus:` closes it on exit. Options are those of
        `Bus(...)`: `producer_id`, `manifest` (an `OperatorManifest`, the SAM handshake),
        `connect_timeout`, `request_timeout`, `reconnect` (automatic reconnection, default on),
        `reconnect_timeout`, `max_pending`, `check_frame_size`, `max_incoming_frame_bytes` (also
        the WebSocket `max_size`), `on_error`, and for `tls://`/`wss://`: `ca` (PEM file of the
        CA to trust; default: the system's), `cert` and `key` (PEM client certificate and key,
        for mTLS), `ssl_context` (a ready `ssl.SSLContext` instead of those three) and
        `server_hostname` (the name the server's certificate must carry; default: the URL's
        host). TLS is 1.3 at least and the server's certificate is always verified unless an
        `ssl_context` says otherwise.

        Raises `ConnectFailed` (a `ConnectionLost`) saying what failed when the connection
        cannot be opened: refused, TLS handshake (certificate not verified, client certificate
        required or refused), WebSocket upgrade refused, closed before the `Welcome`.
        `ArqonTimeout` after `connect_timeout`; the server's error (e.g. `Unauthenticated`)
        when it refuses the session.
        """

        async def factory() -> "Bus":
            bus = cls(url, token=token, name=name, **options)
            await bus._establish()
            return bus

        return _Connector(factory)

    async def _open(self) -> None:
        """Opens a new session (TCP, TLS, WebSocket or secure WebSocket, per the URL) and
        handshakes; installs it as the current connection."""
        conn = await open_connection(self)
        hello = _pb.ClientFrame(correlation_id=next(self._correlation_ids))
        hello.hello.protocol_version = PROTOCOL_VERSION
        hello.hello.client_name = self.name
        if self.token:
            hello.hello.token = self.token
        if self.manifest is not None:
            hello.hello.manifest.CopyFrom(self.manifest)
        try:
            try:
                conn.send(hello.SerializeToString())
            except ConnectionLost:
                pass  # already closing (e.g. a TLS alert): `welcome` fails with the reason
            welcome = await asyncio.wait_for(asyncio.shield(conn.welcome), self.connect_timeout)
        except asyncio.TimeoutError:
            conn.abort()
            raise ArqonTimeout(f"no Welcome from {self.url} within {self.connect_timeout}s") from None
        except BaseException:
            conn.abort()
            raise
        self.welcome = welcome
        self.connections += 1
        self._conn = conn
        log.debug("arqonbus: connected to %s, session %s, shard %d", self.url, welcome.session_id, welcome.shard)

    async def _establish(self) -> None:
        """Connects, restores the subscriptions, then lets requests through."""
        await self._open()
        conn = self._conn
        try:
            await self._resubscribe()
            if conn is None or conn.lost or self._conn is not conn:
                # Lost after the last Subscribed arrived (a server shutting down may still
                # welcome a session and then close it): not established, try again.
                raise ConnectionLost(f"connection to {self.url} lost while re-subscribing")
        except BaseException:
            # Detach before closing, so the close is not taken for a new loss to recover from.
            if conn is not None and self._conn is conn:
                self._conn = None
            if conn is not None and not conn.lost:
                conn.abort()
            raise
        self._broken = None
        self._connected.set()
        if self.connections > 1:
            # Parameters may have changed, or been forgotten by a restart, while away.
            for watcher in self._params.values():
                if watcher.started:
                    task = self._loop.create_task(watcher.seed(authoritative=True))
                    task.add_done_callback(watcher._background_done)

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._conn is not None and not self._conn.lost

    @property
    def max_frame_bytes(self) -> int:
        return self.welcome.max_frame_bytes if self.welcome is not None else 0

    async def _connection(self) -> Connection:
        """The live connection, waiting for an automatic reconnection in progress."""
        conn = self._conn
        if conn is not None and not conn.lost and self._connected.is_set():
            return conn
        if self._closed:
            raise ClientClosed("the bus is closed")
        if self._broken is not None:
            raise self._broken
        if self._reconnect_task is None:
            raise ConnectionLost("not connected; call reconnect()")
        try:
            await asyncio.wait_for(self._connected.wait(), self.reconnect_timeout)
        except asyncio.TimeoutError:
            raise ConnectionLost(f"not reconnected to {self.url} within {self.reconnect_timeout}s") from None
        return await self._connection()

    async def reconnect(self) -> None:
        """Opens a new connection (dropping the current one if any) and re-subscribes every
        open subscription.

        A subscription resumes from the sequence after the last pulse it received, so on a
        retained reality nothing is missed or repeated; on an ephemeral one (which keeps no
        history) it resumes at `latest` and pulses published while the client was away are
        missed. Requests in flight on the old connection fail with `ConnectionLost`; nothing
        is resent. If a reality re-subscribed at `latest` shows by its `next_sequence` that it
        restarted (ephemeral realities restart at 1 when the server does), its causal entry is
        lowered to match, so later publishes do not claim to depend on pulses the server forgot.
        """
        if self._closed:
            raise ClientClosed("the bus is closed")
        task = self._reconnect_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        old = self._conn
        if old is not None and not old.lost:
            old.abort()
            await asyncio.shield(old.closed)
        await self._establish()

    async def _resubscribe(self) -> None:
        subs = [s for s in self._subscriptions.values() if not s._closed]
        if not subs:
            return
        conn = self._conn
        assert conn is not None
        # Checked in _on_frame when each `latest` re-Subscribed arrives, in order with the
        # Deliver frames around it, so that no pulse observed after it is undone by the check.
        self._restart_check = (self.causal.snapshot(), set())
        try:
            results = await asyncio.gather(*(self._resubscribe_one(conn, sub) for sub in subs), return_exceptions=True)
        finally:
            self._resubscribing.clear()
            self._restart_check = None
        for sub, result in zip(subs, results):
            if isinstance(result, BaseException) and not isinstance(result, ServerErrorTypes):
                raise result  # ConnectionLost, cancellation: the whole attempt failed
            if isinstance(result, BaseException):
                log.error("arqonbus: re-subscribing %r in %r failed: %s", sub.pattern, sub.reality, result)
                self._subscriptions.pop(sub.id, None)
                sub._fail(result)

    async def _resubscribe_one(self, conn: Connection, sub: Subscription) -> None:
        """Re-subscribes `sub` where it left off: from the sequence after the last one it
        received (no gap, no duplicate) when the reality keeps history, else at `latest`."""
        sub._error = None
        sub._chains.clear()  # the server starts new chains, with keyframes, for the new subscription
        if sub.last_sequence:
            start: Optional["_pb.StartPosition"] = Start.from_sequence(sub.last_sequence + 1)
        else:
            start = sub.start  # nothing received yet: the subscription's own start
        while True:
            cid = next(self._correlation_ids)
            fut = self._loop.create_future()
            self._pending[cid] = fut
            self._resubscribing[cid] = (sub, start is None)
            conn.send(sub._subscribe_frame(cid, start).SerializeToString())
            try:
                answer = await self._await_answer(cid, fut, f"re-Subscribe {sub.pattern!r}", self.request_timeout)
            except _errors.HistoryUnavailable:
                if start is None:
                    raise
                log.warning(
                    "arqonbus: %r in %r resumes at the latest pulse: the reality keeps no history, "
                    "so pulses published while disconnected are missed",
                    sub.pattern,
                    sub.reality,
                )
                start = None
                continue
            sub.next_sequence = answer.subscribed.next_sequence
            sub.resubscribed += 1
            return

    def _check_restart(self, reality: str, next_sequence: int) -> None:
        """On the first re-Subscribed of `reality`: if the server's next sequence is not past
        what this client had seen, the reality restarted; lower its causal entry to match."""
        if self._restart_check is None:
            return
        before, handled = self._restart_check
        if reality in handled:
            return
        handled.add(reality)
        seen = before.get(reality, 0)
        if seen and next_sequence <= seen:
            log.warning(
                "arqonbus: reality %r restarted (next sequence %d, this client had seen %d); lowering its causal entry",
                reality,
                next_sequence,
                seen,
            )
            self.causal.forget(reality)
            self.causal.observe(reality, next_sequence - 1)

    async def _reconnect_loop(self, cause: ConnectionLost) -> None:
        deadline = self._loop.time() + self.reconnect_timeout
        delay = 0.05
        last: BaseException = cause
        while not self._closed and self._loop.time() < deadline:
            try:
                await self._establish()
                log.info("arqonbus: reconnected to %s", self.url)
                return
            except _errors.ServerError as exc:
                if exc.code in _FATAL_HANDSHAKE_CODES:
                    last = exc
                    break
                last = exc
            except (ArqonError, OSError) as exc:
                last = exc
            await asyncio.sleep(min(delay, max(0.0, deadline - self._loop.time())))
            delay = min(delay * 2, 1.0)
        if self._closed:
            return
        broken = ConnectionLost(
            f"could not reconnect to {self.url} within {self.reconnect_timeout}s: {last}",
            cause=cause.cause,
        )
        self._broken = broken
        for sub in list(self._subscriptions.values()):
            sub._fail(broken)
        self._connected.set()  # wake waiters; they see _broken
        self._connected.clear()

    def _on_connection_lost(self, conn: Connection, exc: Optional[Exception]) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._connected.clear()
        if self._closed:
            error: ArqonError = ClientClosed("the bus is closed")
        else:
            cause = conn.close_error
            detail = (
                f"the server closed the connection: {cause}"
                if cause
                else f"connection to {self.url} lost: {exc or 'EOF'}"
            )
            error = ConnectionLost(detail, cause=cause)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
                # Its awaiter, if still there, gets the error; if it was cancelled meanwhile,
                # the loop should not log the error as never retrieved.
                fut.exception()
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(error)
        if self._closed:
            return
        if (
            self.auto_reconnect
            and isinstance(error, ConnectionLost)
            and not (error.cause is not None and error.cause.code in _FATAL_HANDSHAKE_CODES)
        ):
            if self._reconnect_task is not None and not self._reconnect_task.done():
                return  # lost while re-establishing: the running loop tries again
            log.warning("arqonbus: %s; reconnecting", error)
            self._reconnect_task = self._loop.create_task(self._reconnect_loop(error))
            self._reconnect_task.add_done_callback(self._reconnect_done)
        else:
            self._broken = error
            for sub in self._subscriptions.values():
                sub._fail(error)

    def _reconnect_done(self, task: "asyncio.Task[None]") -> None:
        if self._reconnect_task is task:
            self._reconnect_task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("arqonbus: reconnection failed: %s", task.exception())

    async def close(self) -> None:
        """Flushes what was written, closes the connection and ends every subscription."""
        if self._closed:
            return
        self._closed = True
        task = self._reconnect_task
        if task is not None:
            task.cancel()
        for sub in list(self._subscriptions.values()):
            sub._closed = True
            sub._wake()
        self._subscriptions.clear()
        conn = self._conn
        if conn is not None and not conn.lost:
            conn.close()  # sends what is queued first
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 5.0)
            except asyncio.TimeoutError:
                conn.abort()
        self._conn = None

    async def __aenter__(self) -> "Bus":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # Frames from the server --------------------------------------------------------------------

    def _on_deliver(self, subscription_id: int, message: "_pb.ArqonMessage") -> None:
        """A pulse for subscription `subscription_id` (a `Deliver`; the stream reader decodes
        the common ones without a `ServerFrame` around them)."""
        # This runs once per delivered pulse: each attribute of a protobuf message costs a
        # lookup, so each is read once, and `Subscription._push` is inlined.
        sequence = message.sequence
        # Merge the pulse's causal map and its own (reality, sequence).
        clock = self.causal._clock
        carried = message.causal
        for reality_id in carried:
            seen = carried[reality_id]
            if seen > clock.get(reality_id, 0):
                clock[reality_id] = seen
        reality_id = message.reality_id
        if sequence > clock.get(reality_id, 0):
            clock[reality_id] = sequence
        sub = self._subscriptions.get(subscription_id)
        if message.HasField("delta"):
            if sub is None:
                return
            try:
                sub._chains.rebuild(message)  # the whole state, or DeltaError
            except DeltaError as exc:
                sub.last_sequence = sequence
                sub._push(exc)
                return
        elif message.topic.startswith(PARAM_TOPIC_PREFIX):
            self._on_param_pulse(sub, message)
            return
        if sub is None:
            return
        sub.last_sequence = sequence
        if sub._closed:
            return
        queue = sub._queue
        if len(queue) >= sub.max_pending:
            sub.dropped += 1
            sub.dropped_locally += 1
            return
        queue.append(Pulse(message, subscription_id))
        waiter = sub._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_frame(self, conn: Connection, frame: "_pb.ServerFrame") -> None:
        kind = frame.WhichOneof("kind")
        if kind == "deliver":
            deliver = frame.deliver
            self._on_deliver(deliver.subscription_id, deliver.message)
            return
        cid = frame.correlation_id
        if kind == "pub_ack":
            ack = frame.pub_ack
            self.causal.observe(ack.reality_id, ack.sequence)
            self._resolve(cid, frame)
        elif kind == "subscribed":
            resubscribed = self._resubscribing.pop(cid, None)
            if resubscribed is not None and resubscribed[1]:
                self._check_restart(resubscribed[0].reality, frame.subscribed.next_sequence)
            self._resolve(cid, frame)
        elif kind in ("pong", "params", "presence"):
            self._resolve(cid, frame)
        elif kind == "ping":
            # The server's keepalive: the session was idle for half of its idle_timeout_ms.
            pong = _pb.ClientFrame()
            pong.pong.nonce = frame.ping.nonce
            conn.send(pong.SerializeToString())
        elif kind == "history_chunk":
            stream = self._streams.get(cid)
            if stream is not None:
                for message in frame.history_chunk.messages:
                    if message.causal:
                        self.causal.merge(message.causal)
                    self.causal.observe(message.reality_id, message.sequence)
                stream._on_chunk(frame.history_chunk)
        elif kind == "history_end":
            stream = self._streams.pop(cid, None)
            if stream is not None:
                stream._on_end(frame.history_end)
        elif kind == "dropped":
            sub = self._subscriptions.get(frame.dropped.subscription_id)
            if sub is not None:
                sub._on_dropped(frame.dropped.count)
        elif kind == "error":
            self._on_error_frame(conn, frame)
        elif kind == "welcome":
            if conn.welcome.done():
                log.error("arqonbus: unexpected second Welcome from %s; ignored", self.url)
            else:
                conn.welcome.set_result(frame.welcome)
        else:
            log.warning("arqonbus: ignoring a ServerFrame of unknown kind %r (a newer server?)", kind)

    def _resolve(self, cid: int, frame: "_pb.ServerFrame") -> None:
        fut = self._pending.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    def _on_error_frame(self, conn: Connection, frame: "_pb.ServerFrame") -> None:
        cid = frame.correlation_id
        error = _errors.error_from_proto(frame.error, cid)
        if error.closes_connection:
            conn.close_error = error
        if not conn.welcome.done():
            conn.welcome.set_exception(error)
            return
        fut = self._pending.pop(cid, None) if cid else None
        if fut is not None:
            if not fut.done():
                fut.set_exception(error)
            return
        stream = self._streams.pop(cid, None) if cid else None
        if stream is not None:
            stream._fail(error)
            return
        # Nobody waits for this answer: an unacked publish, or a connection-level error.
        self._report(error, f"server error for correlation id {cid}")

    def _report(self, error: BaseException, what: str) -> None:
        """An error nobody awaits: to `last_error` and `on_error`, or to the log."""
        if isinstance(error, ArqonError):
            self.last_error = error
            if self.on_error is not None:
                try:
                    self.on_error(error)
                except Exception:  # a user callback must not break the reader
                    log.exception("arqonbus: on_error callback raised")
                return
        log.warning("arqonbus: %s: %s", what, error)

    # Reality parameters ------------------------------------------------------------------------

    def _on_param_pulse(self, sub: Optional[Subscription], message: "_pb.ArqonMessage") -> None:
        """A `sys.param.*` pulse: to the parameters of its reality, if watched, and to `sub`'s
        iterator only when `sub`'s pattern matches it (the bus also delivers parameters to a
        subscription whose pattern does not match, so every session in a reality hears them)."""
        watcher = self._params.get(message.reality_id)
        if watcher is not None:
            try:
                watcher.offer_pulse(message, self.connections)
            except Exception:  # a malformed Param must not break the reader
                log.exception("arqonbus: could not read the parameter pulse %r", message.topic)
        if sub is None or sub._params_only or not _topic_matches(sub.pattern, message.topic):
            return
        # A new subscription first gets each parameter's latest pulse, with its original (older)
        # sequence: that must not move the resumption point back.
        if message.sequence > sub.last_sequence:
            sub.last_sequence = message.sequence
        sub._push(Pulse(message, sub.id))

    def _has_subscription_in(self, reality: str) -> bool:
        return any(s.reality == reality and not s._closed and s._error is None for s in self._subscriptions.values())

    def _subscription_ended(self, reality: str) -> None:
        """A subscription in `reality` ended: if the bus follows its parameters and has no
        other subscription there, it opens its own so they keep coming."""
        watcher = self._params.get(reality)
        if watcher is not None and watcher.started and not self._closed and not self._has_subscription_in(reality):
            watcher.feed_soon()

    def _watch(self, reality: str) -> RealityParams:
        watcher = self._params.get(reality)
        if watcher is None:
            watcher = self._params[reality] = RealityParams(self, reality)
        return watcher

    async def _params_get(self, reality: str, timeout: Optional[float]) -> Tuple[int, ParamValues]:
        """`ParamsGet`: the connection count it was answered on (see `RealityParams.offer`) and
        the answer."""
        await self._connection()
        epoch = self.connections

        def build(cid: int) -> "_pb.ClientFrame":
            frame = _pb.ClientFrame(correlation_id=cid)
            frame.params_get.reality_id = reality
            return frame

        answer = await self._request(build, f"ParamsGet for {reality!r}", timeout)
        if answer.WhichOneof("kind") != "params":
            raise ProtocolViolation(f"ParamsGet for {reality!r} was answered with {answer.WhichOneof('kind')}")
        return epoch, ParamValues.from_proto(answer.params)

    # Requests -------------------------------------------------------------------------------

    async def _await_answer(
        self, cid: int, fut: "asyncio.Future[_pb.ServerFrame]", what: str, timeout: Optional[float]
    ) -> "_pb.ServerFrame":
        if timeout is None:
            return await fut
        handle = self._loop.call_later(timeout, self._expire, cid, fut, what, timeout)
        try:
            return await fut
        finally:
            handle.cancel()

    def _expire(self, cid: int, fut: "asyncio.Future[Any]", what: str, timeout: float) -> None:
        if self._pending.get(cid) is fut:
            del self._pending[cid]
        if not fut.done():
            fut.set_exception(ArqonTimeout(f"no answer to {what} from {self.url} within {timeout}s"))

    async def _request(
        self, build: Callable[[int], "_pb.ClientFrame"], what: str, timeout: Optional[float] = None
    ) -> "_pb.ServerFrame":
        conn = await self._connection()
        cid = next(self._correlation_ids)
        fut = self._loop.create_future()
        self._pending[cid] = fut
        try:
            conn.send(build(cid).SerializeToString())
        except BaseException:
            self._pending.pop(cid, None)
            raise
        return await self._await_answer(cid, fut, what, self.request_timeout if timeout is None else timeout)

    # Public API -----------------------------------------------------------------------------

    def _publish_frame(
        self,
        cid: int,
        reality: str,
        topic: str,
        payload: Any,
        pid: Optional[str],
        id: str,
        reply_to: str,
        spectral: SpectralLike,
        trace_context: Optional[Mapping[str, str]],
        ack: bool,
    ) -> "_pb.ClientFrame":
        """The `Publish` frame built with the generated classes, which check every type: the
        reference for `arqonbus._wire` and the path for everything it does not cover."""
        frame = _pb.ClientFrame(correlation_id=cid)
        publish = frame.publish
        message = publish.message
        message.topic = topic
        message.reality_id = reality
        if pid:
            message.producer_id = pid
        if id:
            message.id = id
        if reply_to:
            message.reply_to = reply_to
        if payload is not None:
            _fill_payload(message.payload, payload)
        if spectral is not None:
            _fill_spectral(message.spectral, spectral)
        if trace_context:
            message.trace_context.update(trace_context)
        clock = self.causal._clock
        if clock:
            causal = message.causal
            for reality_id, sequence in clock.items():
                causal[reality_id] = sequence
        if ack:
            publish.ack = True
        return frame

    async def publish(
        self,
        reality: str,
        topic: str,
        payload: Any = None,
        *,
        ack: bool = False,
        spectral: SpectralLike = None,
        trace_context: Optional[Mapping[str, str]] = None,
        reply_to: str = "",
        id: str = "",
        producer_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Optional["_pb.PubAck"]:
        """Publishes one pulse to `topic` in `reality`.

        `payload`: bytes, str, a protobuf message (packed into `Any`) or an `Any`.
        `spectral`: a `SpectralMetadata` or a mapping with `coherence`, `criticality`,
        `eigenvalues`. `trace_context`: W3C `traceparent`/`tracestate` and other keys.
        The bus's causal context is attached automatically.

        With `ack=True` waits for the `PubAck` and returns it (its sequence is merged into the
        causal context), or raises the server's error (`InvalidTopic`, `PolicyDenied`, ...).
        Without, returns None once the frame is queued on the connection (frames queued in one
        turn of the event loop are written together, at the end of the turn or every 64 KiB);
        a server error is then reported to `on_error` (default: logged) and kept in
        `last_error`.
        Raises `FrameTooLarge` (with `.local = True`, nothing sent) when the frame would exceed
        the server's `max_frame_bytes`.
        """
        conn = self._conn
        if conn is None or conn.lost or not self._connected.is_set():
            conn = await self._connection()
        cid = next(self._correlation_ids)
        pid = self.producer_id if producer_id is None else producer_id
        body = None
        payload_class = payload.__class__
        if (
            spectral is None
            and not trace_context
            and (payload_class is bytes or payload_class is str or payload is None)
            and reality.__class__ is str
            and topic.__class__ is str
            and pid.__class__ is str
            and id.__class__ is str
            and reply_to.__class__ is str
        ):
            # The common publish, encoded by hand (arqonbus._wire): the same bytes the generated
            # classes write, at a fraction of the cost.
            try:
                if payload is None:
                    type_url, value = None, b""
                elif payload_class is bytes:
                    type_url, value = _payload.BYTES_TYPE_URL, payload
                else:
                    type_url, value = _payload.TEXT_TYPE_URL, payload.encode("utf-8")
                body = self._publish_encoder.encode(
                    cid, reality, topic, pid, type_url, value, self.causal._clock, id, reply_to, ack
                )
            except UnicodeEncodeError:
                body = None  # the generated classes say what is wrong with it
        if body is None:
            body = self._publish_frame(
                cid, reality, topic, payload, pid, id, reply_to, spectral, trace_context, ack
            ).SerializeToString()
        limit = self.max_frame_bytes
        if self.check_frame_size and limit and len(body) > limit:
            err = FrameTooLarge(
                f"publish to {topic!r} would be a frame of {len(body)} bytes; the server's "
                f"max_frame_bytes is {limit} (nothing was sent)"
            )
            err.local = True
            raise err
        if not ack:
            conn.send(body)
            await conn.drain()
            return None
        fut = self._loop.create_future()
        self._pending[cid] = fut
        try:
            conn.send(body)
        except BaseException:
            self._pending.pop(cid, None)
            raise
        await conn.drain()
        answer = await self._await_answer(
            cid, fut, f"Publish to {topic!r} in {reality!r}", self.request_timeout if timeout is None else timeout
        )
        return answer.pub_ack

    async def set_operator_param(
        self,
        reality: str,
        operator: str,
        name: str,
        value: Union[float, int, str],
        *,
        timeout: Optional[float] = None,
    ) -> int:
        """Sets parameter `name` of hosted operator `operator` in `reality` (controllers only).

        The bus audits the change and sequences it into the reality (topic
        `sys.operator.param`), so every later input, and a replay of the log, sees it from that
        position. Returns that sequence. Raises `PermissionDenied` for a session that is not a
        controller and `InvalidRequest` for an unknown operator or a bad value.
        """
        value_pb = _operator_pb.ParamValue()
        if isinstance(value, str):
            value_pb.text = value
        else:
            value_pb.number = float(value)
        change = _operator_pb.OperatorParamSet(operator=operator, name=name, value=value_pb)
        ack = await self.publish(reality, "sys.control.operator.param", change, ack=True, timeout=timeout)
        return ack.sequence

    async def fork(
        self,
        reality: str,
        name: str,
        *,
        from_sequence: int,
        params: Optional[Mapping[str, Union[float, int, str]]] = None,
        timeout: Optional[float] = None,
    ) -> Tuple[str, int]:
        """Forks retained `reality` into `reality~name` on the live bus (controllers only).

        The bus replays the recording through its operators: pulses before `from_sequence` are
        copied (the operators replay them to rebuild their state), and from there on `params`
        (`{"operator.name": value}`) are pinned. The fork is retained — read it with `history`
        or `subscribe(..., start=Start.from_sequence(1))` — and live afterwards: pulses
        published into it go through its operators from the replayed state. Returns the fork's
        reality and its last sequence. Raises `InvalidRequest` when the reality is not retained,
        no retention rule matches the fork, or the fork already exists.
        """
        request = _operator_pb.RealityFork(name=name, from_sequence=from_sequence)
        for key, value in (params or {}).items():
            if isinstance(value, str):
                request.params[key].text = value
            else:
                request.params[key].number = float(value)
        ack = await self.publish(
            reality, "sys.control.reality.fork", request, ack=True,
            timeout=120.0 if timeout is None else timeout,
        )
        return ack.reality_id, ack.sequence

    async def set_param(
        self, reality: str, name: str, value: ParamValue, *, timeout: Optional[float] = None
    ) -> "_pb.PubAck":
        """Sets reality parameter `name` (one or more topic segments, e.g. `"lab.gain"`) of
        `reality` to `value` (controllers only): a float or int travels as a number, a str as
        text, bytes as binary; a bool raises TypeError.

        The bus sequences the change on `sys.param.<name>` and delivers it to every session
        subscribed in the reality. Returns the `PubAck`, whose `sequence` is that pulse's.
        Raises `PermissionDenied` for a session that is not a controller.
        """
        param = param_message(name, value)
        ack = await self.publish(reality, SET_PARAM_TOPIC, param, ack=True, timeout=timeout)
        assert ack is not None
        return ack

    async def apply_circuit(self, spec: "CircuitSpec", *, timeout: Optional[float] = None) -> "_pb.PubAck":
        """Installs a typed circuit (controllers only; audited; replaces the circuit of its name).
        `spec` is a `Circuit` message, a mapping, a TOML `Path` or TOML text
        (`arqonbus.circuits`). The bus type-checks every edge and the operators online now;
        a refusal raises `InvalidRequest` naming the edge or the stage."""
        circuit = circuit_message(spec)
        ack = await self.publish(circuit.reality_id, CIRCUIT_APPLY_TOPIC, circuit, ack=True, timeout=timeout)
        assert ack is not None
        return ack

    async def remove_circuit(self, name: str, *, timeout: Optional[float] = None) -> "_pb.PubAck":
        """Removes the circuit `name` (controllers only; audited); its checks stop."""
        remove = _circuit_pb.CircuitRemove(name=name)
        ack = await self.publish("sys", CIRCUIT_REMOVE_TOPIC, remove, ack=True, timeout=timeout)
        assert ack is not None
        return ack

    async def presence(self, reality: str, *, timeout: Optional[float] = None) -> List["_pb.PresenceEntry"]:
        """Who is present in `reality` — the sessions with a subscription there — every page of
        it (`PresenceGet`), ordered by session id. Each `PresenceEntry` has `session_id`,
        `client_name`, `tenant`, `subject`, `manifest_name`, `capabilities`, `patterns` and
        `connected_since_unix_nanos`."""
        entries: List["_pb.PresenceEntry"] = []
        while True:
            offset = len(entries)

            def build(cid: int) -> "_pb.ClientFrame":
                frame = _pb.ClientFrame(correlation_id=cid)
                frame.presence_get.reality_id = reality
                frame.presence_get.offset = offset
                return frame

            answer = await self._request(build, f"PresenceGet for {reality!r}", timeout)
            if answer.WhichOneof("kind") != "presence":
                raise ProtocolViolation(f"PresenceGet for {reality!r} was answered with {answer.WhichOneof('kind')}")
            entries.extend(answer.presence.entries)
            if not answer.presence.entries or len(entries) >= answer.presence.total:
                return entries

    def presence_changes(self, reality: str, **options: Any) -> "Subscription":
        """A subscription to `sys.presence.changes` in `reality`: each pulse's
        `unpack(PresenceChange)` has `present` (joined or changed, whole entries) and `left`
        (session ids), coalesced by the bus over a short window — in realities the server
        announces (its `[presence] announce` globs). The subscription itself makes this bus
        present there."""
        return self.subscribe(reality, "sys.presence.changes", **options)

    async def get_params(self, reality: str, *, timeout: Optional[float] = None) -> ParamValues:
        """The current parameters of `reality`, asked once (`ParamsGet`): a dict name -> value
        (float, str or bytes) with `.version(name)` and `.info[name]` (a `ParamInfo`: version,
        sequence, timestamp, set_by). For values kept current, see `params`."""
        _, values = await self._params_get(reality, timeout)
        return values

    async def params(self, reality: str, *, timeout: Optional[float] = None) -> LiveParams:
        """A live, read-only mapping of the parameters of `reality` (name -> value, with
        `.version(name)` and `.info(name)`), the same object for each call.

        It is seeded with `ParamsGet` and kept current by the `sys.param.*` pulses that reach
        any subscription of this bus in the reality; when the bus has none there (or its last
        one ends) it opens one of its own to `sys.param.>`. A value older than the version held
        is ignored, so the snapshot, the answer and the broadcasts can overlap.
        """
        watcher = self._watch(reality)
        await watcher.start(self.request_timeout if timeout is None else timeout)
        return watcher.mapping

    def on_param(self, reality: str, callback: ParamCallback) -> Callable[[], None]:
        """Calls `callback(name, value, version)` for each new version of a parameter of
        `reality` this bus learns, from now on (the current values first). The callback runs on
        the bus's event loop, in the reader, so it must be quick; a coroutine function is run as
        a task. Starts following the reality as `params` does, in the background (a failure goes
        to `on_error`). Returns a function that removes the callback."""
        watcher = self._watch(reality)
        watcher.callbacks.append(callback)
        for info in list(watcher.held.values()):
            watcher._call(callback, info)
        watcher.start_soon()

        def remove() -> None:
            if callback in watcher.callbacks:
                watcher.callbacks.remove(callback)

        return remove

    def subscribe(
        self,
        reality: str,
        pattern: str,
        *,
        start: StartLike = None,
        causal: bool = False,
        max_pending: Optional[int] = None,
        timeout: Optional[float] = None,
        filter: Optional[str] = None,
    ) -> Subscription:
        """Subscribes to `pattern` (`*` = one segment, a last `>` = one or more) in `reality`.

        Returns a `Subscription`: `await` it, use it with `async with`, or iterate it
        directly with `async for` (see `Subscription`). `start` is `None`/`"latest"` or a
        `StartPosition` from `arqonbus.Start` (`from_sequence`, `from_time`, `last`).
        `causal=True` asks the server for causal delivery across this connection's
        subscriptions.

        `filter` is a spectral filter evaluated by the server before anything is sent, e.g.
        `"coherence >= 0.9 && criticality < 0.1"`, `"eigenvalues[0] > 1.5"`,
        `"len(eigenvalues) >= 3"`, `'producer == "omega-7"'` (grammar: proto/README.md).
        A filter the server cannot parse raises `InvalidRequest` naming the byte of the error.
        """
        return Subscription(
            self,
            reality,
            pattern,
            start,
            causal,
            self.max_pending if max_pending is None else max_pending,
            timeout,
            filter or "",
        )

    def history(
        self,
        reality: str,
        pattern: str = ALL,
        *,
        from_sequence: Optional[int] = None,
        from_time_unix_nanos: Optional[int] = None,
        to_sequence: Optional[int] = None,
        to_time_unix_nanos: Optional[int] = None,
        limit: int = 0,
        timeout: Optional[float] = None,
    ) -> History:
        """A bounded replay of `reality` (`from` inclusive, `to` exclusive). `await` it for a
        `HistoryResult` or iterate it with `async for`. Raises `HistoryUnavailable` when the
        reality keeps no history (realities are ephemeral by default)."""
        request = _pb.HistoryGet(reality_id=reality, pattern=pattern, limit=limit)
        if from_sequence is not None and from_time_unix_nanos is not None:
            raise ValueError("give from_sequence or from_time_unix_nanos, not both")
        if to_sequence is not None and to_time_unix_nanos is not None:
            raise ValueError("give to_sequence or to_time_unix_nanos, not both")
        if from_sequence is not None:
            request.from_sequence = from_sequence
        if from_time_unix_nanos is not None:
            request.from_time_unix_nanos = from_time_unix_nanos
        if to_sequence is not None:
            request.to_sequence = to_sequence
        if to_time_unix_nanos is not None:
            request.to_time_unix_nanos = to_time_unix_nanos
        return History(self, request, self.request_timeout if timeout is None else timeout)

    async def ping(self, timeout: Optional[float] = None) -> PingResult:
        """Round trip to the server."""
        nonce = time.monotonic_ns() & 0xFFFFFFFFFFFF
        started = time.perf_counter()

        def build(cid: int) -> "_pb.ClientFrame":
            frame = _pb.ClientFrame(correlation_id=cid)
            frame.ping.nonce = nonce
            return frame

        answer = await self._request(build, "Ping", timeout)
        rtt = time.perf_counter() - started
        if answer.pong.nonce != nonce:
            raise ProtocolViolation(f"Pong carries nonce {answer.pong.nonce}, the Ping sent {nonce}")
        return PingResult(rtt, answer.pong.server_time_unix_nanos)

    def submit(
        self,
        reality: str,
        topic: str,
        job: Any,
        *,
        timeout: float = 60.0,
        reply_to: Optional[str] = None,
        spectral: SpectralLike = None,
        trace_context: Optional[Mapping[str, str]] = None,
    ) -> "Job":
        """Submits a job and streams its results; see `arqonbus.jobs.Job`.

        async for pulse in bus.submit("lab", "nvm.job.submit", NvmJob(program="rabi"), timeout=30):
            result = pulse.unpack(NvmJobResult)
        """
        from arqonbus.jobs import Job

        return Job(
            self,
            reality,
            topic,
            job,
            timeout=timeout,
            reply_to=reply_to,
            spectral=spectral,
            trace_context=trace_context,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.connected else "disconnected")
        return f"Bus({self.url!r}, {state})"


ServerErrorTypes = (_errors.ServerError, ArqonTimeout)


def connect(
    url: str = DEFAULT_URL, token: Optional[str] = None, name: str = "arqonbus-python", **options: Any
) -> _Connector:
    """Same as `Bus.connect`."""
    return Bus.connect(url, token=token, name=name, **options)
