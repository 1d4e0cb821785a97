"""A blocking facade over the asyncio client, for notebooks and scripts.

    import arqonbus.sync
    bus = arqonbus.sync.connect("tcp://127.0.0.1:4720")
    bus.publish("lab", "rig.temp.read", b"21.5")
    for pulse in bus.subscribe("lab", "rig.>", timeout=10):
        print(pulse)

Every `BlockingBus` runs its asyncio `Bus` on a private event loop in a daemon thread and waits
for each call's result from the calling thread. The calling thread's own event loop (Jupyter
runs one in the kernel's main thread) is never touched, so the facade works inside a running
notebook without `nest_asyncio`. Calling a `BlockingBus` from its own loop thread (e.g. from an
`on_error` callback) would wait on itself, and raises `RuntimeError` instead.

A `KeyboardInterrupt` (the notebook's stop button) while a call waits cancels that call on the
loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, Iterator, Optional, TypeVar

from arqonbus.client import ALL, Bus, HistoryResult, PingResult, StartLike, Subscription
from arqonbus.errors import ArqonTimeout
from arqonbus.jobs import Job
from arqonbus.params import LiveParams, ParamCallback, ParamValues
from arqonbus.pulse import Pulse
from arqonbus.url import DEFAULT_URL

__all__ = ["BlockingBus", "BlockingSubscription", "BlockingJob", "connect"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arqonbus-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a BlockingBus method was called from the bus's own event-loop thread; "
                "use the asyncio Bus (BlockingBus.aio) there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the call's own time-out (ArqonTimeout is a TimeoutError too)
            future.cancel()
            raise ArqonTimeout(f"call did not complete within {timeout}s") from None
        except BaseException:
            # KeyboardInterrupt in the caller: do not leave the coroutine running.
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)


class BlockingSubscription:
    """A `Subscription` read from a plain `for` loop. Iteration ends when it is closed; with a
    `timeout` given to `subscribe`, each wait for the next pulse raises `ArqonTimeout` after
    that many seconds."""

    def __init__(self, owner: "BlockingBus", sub: Subscription, timeout: Optional[float]):
        self._owner = owner
        self.aio = sub
        self.timeout = timeout

    @property
    def next_sequence(self) -> int:
        return self.aio.next_sequence

    @property
    def dropped(self) -> int:
        return self.aio.dropped

    def get(self, timeout: Optional[float] = None) -> Pulse:
        """The next pulse; `ArqonTimeout` after `timeout` seconds; StopIteration when closed."""
        pulse = self._owner._run(self.aio._next_or_end(timeout))
        if pulse is None:
            raise StopIteration
        return pulse

    def __iter__(self) -> Iterator[Pulse]:
        return self

    def __next__(self) -> Pulse:
        return self.get(self.timeout)

    def close(self) -> None:
        self._owner._run(self.aio.unsubscribe())

    unsubscribe = close

    def __enter__(self) -> "BlockingSubscription":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class BlockingJob:
    """A submitted job read from a plain `for` loop (see `arqonbus.jobs.Job`)."""

    def __init__(self, owner: "BlockingBus", job: Job):
        self._owner = owner
        self.aio = job

    @property
    def job_id(self) -> str:
        return self.aio.job_id

    @property
    def reply_to(self) -> str:
        return self.aio.reply_to

    @property
    def results(self) -> list:
        return self.aio.results

    @property
    def final(self):
        return self.aio.final

    def __iter__(self) -> Iterator[Pulse]:
        return self

    def __next__(self) -> Pulse:
        pulse = self._owner._run(self.aio._next_result())
        if pulse is None:
            raise StopIteration
        return pulse

    def result(self):
        """Waits for the final `NvmJobResult` and returns it."""
        return self._owner._run(self.aio.result())

    def close(self) -> None:
        self._owner._run(self.aio.close())


class BlockingBus:
    """The blocking twin of `Bus`. Create it with `arqonbus.sync.connect(...)` or
    `BlockingBus.connect(...)`; use it as a `with` context manager or call `close()`."""

    def __init__(self, runner: _LoopThread, bus: Bus):
        self._runner = runner
        #: The asyncio `Bus` underneath (to be used only from its loop, `self.loop`).
        self.aio = bus

    @classmethod
    def connect(
        cls, url: str = DEFAULT_URL, token: Optional[str] = None, name: str = "arqonbus-python", **options: Any
    ) -> "BlockingBus":
        runner = _LoopThread()

        async def open_bus() -> Bus:
            return await Bus.connect(url, token=token, name=name, **options)

        try:
            bus = runner.run(open_bus())
        except BaseException:
            runner.stop()
            raise
        return cls(runner, bus)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._runner.loop

    def _run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return self._runner.run(coro, timeout)

    @property
    def causal(self):
        return self.aio.causal

    @property
    def welcome(self):
        return self.aio.welcome

    @property
    def connected(self) -> bool:
        return self.aio.connected

    def publish(self, reality: str, topic: str, payload: Any = None, **options: Any):
        """See `Bus.publish`; returns the `PubAck` when `ack=True`."""
        return self._run(self.aio.publish(reality, topic, payload, **options))

    def set_operator_param(self, reality: str, operator: str, name: str, value: Any, **options: Any) -> int:
        """See `Bus.set_operator_param`; returns the sequence the change was recorded at."""
        return self._run(self.aio.set_operator_param(reality, operator, name, value, **options))

    def fork(self, reality: str, name: str, **options: Any):
        """See `Bus.fork`; returns (fork reality, last sequence)."""
        return self._run(self.aio.fork(reality, name, **options))

    def set_param(self, reality: str, name: str, value: Any, **options: Any):
        """See `Bus.set_param`; returns the `PubAck` (its `sequence` is the change's)."""
        return self._run(self.aio.set_param(reality, name, value, **options))

    def presence(self, reality: str, **options: Any) -> list:
        """See `Bus.presence`: the `PresenceEntry`s of the sessions subscribed in `reality`."""
        return self._run(self.aio.presence(reality, **options))

    def get_params(self, reality: str, **options: Any) -> ParamValues:
        """See `Bus.get_params`: name -> value, with `.version(name)` and `.info`."""
        return self._run(self.aio.get_params(reality, **options))

    def params(self, reality: str, **options: Any) -> LiveParams:
        """See `Bus.params`: the live mapping, updated on the bus's loop thread and readable
        from this one."""
        return self._run(self.aio.params(reality, **options))

    def on_param(self, reality: str, callback: ParamCallback) -> Callable[[], None]:
        """See `Bus.on_param`. The callback runs on the bus's loop thread (`self.loop`), so it
        must not call this `BlockingBus`; the function returned removes it."""

        async def register() -> Callable[[], None]:
            return self.aio.on_param(reality, callback)

        remove = self._run(register())

        def remove_threadsafe() -> None:
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(remove)

        return remove_threadsafe

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
    ) -> BlockingSubscription:
        """Subscribes now (waits for `Subscribed`). `timeout` bounds each wait for a pulse while
        iterating. `filter` is a spectral filter the server applies (see `Bus.subscribe`)."""
        sub = self.aio.subscribe(
            reality, pattern, start=start, causal=causal, max_pending=max_pending, filter=filter
        )
        self._run(sub._start())
        return BlockingSubscription(self, sub, timeout)

    def history(self, reality: str, pattern: str = ALL, **options: Any) -> HistoryResult:
        """See `Bus.history`; returns the whole `HistoryResult`."""

        async def collect() -> HistoryResult:
            return await self.aio.history(reality, pattern, **options)

        return self._run(collect())

    def ping(self, timeout: Optional[float] = None) -> PingResult:
        return self._run(self.aio.ping(timeout))

    def submit(self, reality: str, topic: str, job: Any, *, timeout: float = 60.0, **options: Any) -> BlockingJob:
        """Submits now (subscribed and acked when this returns); iterate the result."""
        job_obj = self.aio.submit(reality, topic, job, timeout=timeout, **options)
        self._run(job_obj._submit())
        return BlockingJob(self, job_obj)

    def reconnect(self) -> None:
        self._run(self.aio.reconnect())

    def close(self) -> None:
        if self._runner.loop.is_closed():
            return
        try:
            self._run(self.aio.close(), timeout=10)
        finally:
            self._runner.stop()

    def __enter__(self) -> "BlockingBus":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Blocking{self.aio!r}"


def connect(
    url: str = DEFAULT_URL, token: Optional[str] = None, name: str = "arqonbus-python", **options: Any
) -> BlockingBus:
    """Connects a `BlockingBus` (see `Bus.connect` for the options)."""
    return BlockingBus.connect(url, token=token, name=name, **options)
