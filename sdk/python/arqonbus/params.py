"""Reality parameters: control values a controller sets for a whole reality.

A controller sets one with `Bus.set_param(reality, name, value)` (a publish on
`sys.control.param.set` carrying a `Param`). The bus sequences the change as a pulse on
`sys.param.<name>` in the reality, `Param{name, value, version, set_by}` with versions 1, 2, 3...
per name, and delivers it once to every connection subscribed to anything in the reality, to a
subscription whose pattern matches the topic if it has one, else to any of its subscriptions in
the reality. A new subscription first receives the current value of each parameter.

On the SDK's side (`arqonbus.client.Bus`):

- `get_params(reality)` asks once (`ParamsGet`) and returns a `ParamValues` dict;
- `params(reality)` returns a `LiveParams` mapping, seeded by `ParamsGet` and kept current by
  the `sys.param.*` pulses that reach any subscription of the bus in the reality (the bus opens
  a subscription of its own to `sys.param.>` when it has none there);
- `on_param(reality, callback)` calls `callback(name, value, version)` on each new version.

A `sys.param.*` pulse that reaches a subscription whose pattern does not match it (the
broadcast rule) goes to this machinery only, never to that subscription's iterator. Versions
dedupe the overlap of the snapshot, the `ParamsGet` answer and the broadcasts: within one
connection a value older than the version held is ignored. Across a reconnect the first value
the new connection brings is taken, whatever its version, and the `ParamsGet` the bus sends
then drops names the server no longer has, so a server restart that forgot an ephemeral
reality's parameters (and starts their versions again at 1) is followed too.

Values are a float (`Param.number`), a str (`text`) or bytes (`binary`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Union

from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus.payload import type_url_of

if TYPE_CHECKING:  # pragma: no cover
    from arqonbus.client import Bus, Subscription

__all__ = [
    "PARAM_TOPIC_PREFIX",
    "PARAM_TYPE_URL",
    "SET_PARAM_TOPIC",
    "LiveParams",
    "ParamCallback",
    "ParamInfo",
    "ParamValue",
    "ParamValues",
    "param_message",
    "param_value",
]

log = logging.getLogger("arqonbus")

#: The topic a controller publishes a `Param` on to set it.
SET_PARAM_TOPIC = "sys.control.param.set"
#: The bus sequences each change on `sys.param.<name>`.
PARAM_TOPIC_PREFIX = "sys.param."
#: The pattern of the subscription the bus opens when it has none in a watched reality.
PARAM_PATTERN = "sys.param.>"
PARAM_TYPE_URL = type_url_of(_pb.Param)

ParamValue = Union[float, str, bytes]
#: `callback(name, value, version)`; it may be a coroutine function (run as a task).
ParamCallback = Callable[[str, ParamValue, int], Any]


def param_message(name: str, value: ParamValue) -> "_pb.Param":
    """The `Param` that sets `name` to `value`: a float or int is `number`, a str `text`,
    bytes (or bytearray, memoryview) `binary`. A bool is refused: say 1.0 or "true"."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a parameter name is one or more topic segments like 'lab.gain', not {name!r}")
    param = _pb.Param(name=name)
    if isinstance(value, bool):
        raise TypeError(f"parameter {name!r}: a bool is not a parameter value; use a number (1.0) or a str")
    if isinstance(value, (int, float)):
        param.number = float(value)
    elif isinstance(value, str):
        param.text = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        param.binary = bytes(value)
    else:
        raise TypeError(f"parameter {name!r}: the value must be a float, int, str or bytes, not {type(value).__name__}")
    return param


def param_value(param: "_pb.Param") -> Optional[ParamValue]:
    """The value a `Param` carries (None when it carries none)."""
    kind = param.WhichOneof("value")
    if kind is None:
        return None
    return getattr(param, kind)


class ParamInfo(NamedTuple):
    """One parameter's value and where it comes from."""

    name: str
    value: Optional[ParamValue]
    #: 1 for the first value of this name in the reality, then +1 per set.
    version: int
    #: The sequence of its `sys.param.<name>` pulse.
    sequence: int
    timestamp_unix_nanos: int
    #: The controller that set it.
    set_by: str

    @classmethod
    def from_proto(cls, param: "_pb.Param", sequence: int, timestamp_unix_nanos: int, name: str = "") -> "ParamInfo":
        return cls(name or param.name, param_value(param), param.version, sequence, timestamp_unix_nanos, param.set_by)


class ParamValues(Dict[str, Optional[ParamValue]]):
    """What `Bus.get_params` returns: name -> value, with `info[name]` (a `ParamInfo`) and
    `version(name)`."""

    def __init__(self, reality: str, infos: List[ParamInfo]):
        super().__init__((i.name, i.value) for i in infos)
        self.reality = reality
        self.info: Dict[str, ParamInfo] = {i.name: i for i in infos}

    @classmethod
    def from_proto(cls, params: "_pb.Params") -> "ParamValues":
        return cls(
            params.reality_id,
            [ParamInfo.from_proto(e.param, e.sequence, e.timestamp_unix_nanos) for e in params.params],
        )

    def version(self, name: str) -> int:
        """The version of `name`; KeyError when the reality has no such parameter."""
        return self.info[name].version


class LiveParams(Mapping[str, Optional[ParamValue]]):
    """The current parameters of one reality, kept up to date by the bus (`Bus.params`).

    Read-only: name -> value, `version(name)`, `info(name)` (a `ParamInfo`). The bus updates it
    on its event loop; reading it from another thread (the blocking facade) is safe, and
    iterating goes over the names present when the iteration began.
    """

    __slots__ = ("_watcher",)

    def __init__(self, watcher: "RealityParams"):
        self._watcher = watcher

    @property
    def reality(self) -> str:
        return self._watcher.reality

    def __getitem__(self, name: str) -> Optional[ParamValue]:
        return self._watcher.held[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._watcher.held))

    def __len__(self) -> int:
        return len(self._watcher.held)

    def __contains__(self, name: object) -> bool:
        return name in self._watcher.held

    def version(self, name: str) -> int:
        """The version of `name` held; KeyError when the reality has no such parameter (yet)."""
        return self._watcher.held[name].version

    def info(self, name: str) -> ParamInfo:
        return self._watcher.held[name]

    def __repr__(self) -> str:
        items = ", ".join(f"{n!r}: {i.value!r} (v{i.version})" for n, i in list(self._watcher.held.items()))
        return f"LiveParams({self.reality!r}, {{{items}}})"


class RealityParams:
    """The bus's record of one watched reality's parameters: the values held (with the
    connection each came on), the callbacks, and the subscription of its own when the bus needs
    one. Made by `Bus.params` / `Bus.on_param`; fed by `Bus._on_frame`."""

    def __init__(self, bus: "Bus", reality: str):
        self.bus = bus
        self.reality = reality
        self.held: Dict[str, ParamInfo] = {}
        # Name -> `bus.connections` when its value arrived (see `offer`).
        self._epochs: Dict[str, int] = {}
        self.callbacks: List[ParamCallback] = []
        self.mapping = LiveParams(self)
        #: The `sys.param.>` subscription the bus opened because it had none in the reality.
        self.feed: Optional["Subscription"] = None
        self._started: Optional["asyncio.Task[None]"] = None
        # The start task whose failure `start_soon` reports (once).
        self._watched: Optional["asyncio.Task[None]"] = None
        self._feeding: Optional["asyncio.Task[None]"] = None

    # Values -----------------------------------------------------------------------------------

    def offer(self, info: ParamInfo, epoch: int) -> bool:
        """Takes `info` if it is newer than what is held: a higher version, or the first value
        of this name on a newer connection. Calls the callbacks when it is taken."""
        held = self.held.get(info.name)
        if held is not None and epoch <= self._epochs[info.name] and info.version <= held.version:
            return False
        self.held[info.name] = info
        self._epochs[info.name] = epoch
        for callback in list(self.callbacks):
            self._call(callback, info)
        return True

    def offer_pulse(self, message: "_pb.ArqonMessage", epoch: int) -> None:
        """A `sys.param.<name>` pulse, from any subscription of the bus in the reality."""
        payload = message.payload
        if payload.type_url != PARAM_TYPE_URL:
            log.warning(
                "arqonbus: %r in %r carries %r, not an arqon.v1.Param; ignored",
                message.topic,
                message.reality_id,
                payload.type_url,
            )
            return
        param = _pb.Param.FromString(payload.value)
        name = param.name or message.topic[len(PARAM_TOPIC_PREFIX) :]
        self.offer(ParamInfo.from_proto(param, message.sequence, message.timestamp_unix_nanos, name), epoch)

    def take_snapshot(self, values: ParamValues, epoch: int, authoritative: bool) -> None:
        """Offers each entry of a `ParamsGet` answer. `authoritative` (the first answer on a
        new connection) also drops names held from an older connection that the server no
        longer has."""
        for info in values.info.values():
            self.offer(info, epoch)
        if authoritative:
            for name in [n for n in self.held if n not in values.info and self._epochs[n] < epoch]:
                del self.held[name]
                del self._epochs[name]

    def _call(self, callback: ParamCallback, info: ParamInfo) -> None:
        try:
            result = callback(info.name, info.value, info.version)
        except Exception:  # a user callback must not break the reader
            log.exception("arqonbus: on_param callback for %r in %r raised", info.name, self.reality)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: "asyncio.Future[Any]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("arqonbus: on_param callback in %r failed: %r", self.reality, task.exception())

    # Feeding ----------------------------------------------------------------------------------

    def _start_task(self, timeout: Optional[float]) -> "asyncio.Task[None]":
        task = self._started
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._started = self.bus._loop.create_task(self._start(timeout))
        return task

    async def start(self, timeout: Optional[float] = None) -> None:
        """Makes sure the parameters reach the bus and seeds them with `ParamsGet`; once (a
        failed start is tried again by the next call)."""
        await asyncio.shield(self._start_task(timeout))

    async def _start(self, timeout: Optional[float]) -> None:
        await self.ensure_feed()
        await self.seed(authoritative=False, timeout=timeout)

    def start_soon(self) -> None:
        """`start` in the background (for `on_param`, which is not awaited); a failure goes to
        the bus's `on_error` or its log."""
        task = self._start_task(None)
        if task is not self._watched:
            self._watched = task
            task.add_done_callback(self._background_done)

    def _background_done(self, task: "asyncio.Future[Any]") -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.bus._report(task.exception(), f"watching the parameters of {self.reality!r}")

    @property
    def started(self) -> bool:
        return self._started is not None

    async def seed(self, *, authoritative: bool, timeout: Optional[float] = None) -> None:
        epoch, values = await self.bus._params_get(self.reality, timeout)
        self.take_snapshot(values, epoch, authoritative)

    async def ensure_feed(self) -> None:
        """Opens the bus's own `sys.param.>` subscription in the reality if the bus has no
        other subscription there (the server delivers parameters only to sessions subscribed
        in the reality)."""
        if self.feed is not None and not self.feed._closed:
            return
        if self.bus._has_subscription_in(self.reality):
            return
        sub = self.bus.subscribe(self.reality, PARAM_PATTERN, max_pending=1)
        sub._params_only = True
        self.feed = sub
        try:
            await sub._start()
        except BaseException:
            self.feed = None
            raise

    def feed_soon(self) -> None:
        """`ensure_feed` in the background: the last subscription of the bus in the reality
        has just ended."""
        if self._feeding is not None and not self._feeding.done():
            return
        self._feeding = self.bus._loop.create_task(self.ensure_feed())
        self._feeding.add_done_callback(self._background_done)
