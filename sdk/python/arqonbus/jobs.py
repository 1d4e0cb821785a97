"""Jobs: publish a request with a private reply topic and stream the answers back.

`Bus.submit(reality, topic, job, timeout=...)`:

1. picks a fresh reply topic `nvm.job.result.<32 hex digits>` (4 segments of `[a-z0-9_-]`),
2. subscribes to it in `reality` and waits for `Subscribed`, so no answer can be missed,
3. publishes `job` to `topic` with `reply_to` set and `ack=True` (a policy refusal, a bad
   topic, ... raises here),
4. yields every pulse published on the reply topic until one whose `NvmJobResult.final` is
   true, then unsubscribes. If the final result has not arrived `timeout` seconds after the
   submission, raises `JobTimeout`.

An `NvmJob` whose `job_id` is empty gets the reply topic's hex as its id (on a copy; the
caller's message is not changed).

The operator side (see `examples/nvm_operator.py`) answers on the job pulse's `reply_to`, in
the same reality, with `NvmJobResult` payloads carrying the same `job_id`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, List, Mapping, Optional

from arqonbus._proto.arqon.nvm.v1 import nvm_pb2 as _nvm
from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus.errors import ArqonTimeout, JobTimeout
from arqonbus.pulse import Pulse

if TYPE_CHECKING:  # pragma: no cover
    from arqonbus.client import Bus, Subscription

__all__ = ["Job", "REPLY_TOPIC_PREFIX", "new_reply_topic"]

REPLY_TOPIC_PREFIX = "nvm.job.result"


def new_reply_topic(prefix: str = REPLY_TOPIC_PREFIX) -> str:
    """A fresh topic for one job's answers: `<prefix>.<32 lowercase hex digits>`."""
    return f"{prefix}.{uuid.uuid4().hex}"


class Job:
    """A submitted job. `async for pulse in job` streams its result pulses; `await job`
    submits it and returns the job (for `job.ack`, `job.job_id`); `await job.result()` waits
    for the final `NvmJobResult` and returns it, keeping every result in `job.results`."""

    def __init__(
        self,
        bus: "Bus",
        reality: str,
        topic: str,
        job: Any,
        *,
        timeout: float,
        reply_to: Optional[str] = None,
        spectral: Any = None,
        trace_context: Optional[Mapping[str, str]] = None,
    ):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._bus = bus
        self.reality = reality
        self.topic = topic
        self.timeout = timeout
        self.reply_to = reply_to or new_reply_topic()
        if isinstance(job, _nvm.NvmJob) and not job.job_id:
            copy = _nvm.NvmJob()
            copy.CopyFrom(job)
            copy.job_id = self.reply_to.rsplit(".", 1)[-1]
            job = copy
        self.job = job
        self.job_id: str = job.job_id if isinstance(job, _nvm.NvmJob) else ""
        self._spectral = spectral
        self._trace_context = trace_context
        self._subscription: Optional["Subscription"] = None
        self._deadline = 0.0
        self.ack: Optional["_pb.PubAck"] = None
        self.results: List["_nvm.NvmJobResult"] = []
        self.final: Optional["_nvm.NvmJobResult"] = None
        self._submitted = False
        self._finished = False

    async def _submit(self) -> "Job":
        if self._submitted:
            return self
        self._submitted = True
        bus = self._bus
        self._deadline = bus._loop.time() + self.timeout
        self._subscription = await bus.subscribe(self.reality, self.reply_to)
        try:
            self.ack = await bus.publish(
                self.reality,
                self.topic,
                self.job,
                ack=True,
                reply_to=self.reply_to,
                spectral=self._spectral,
                trace_context=self._trace_context,
            )
        except BaseException:
            await self._subscription.unsubscribe()
            raise
        return self

    def __await__(self):
        return self._submit().__await__()

    async def _next_result(self) -> Optional[Pulse]:
        """The next result pulse, or None after the final one."""
        if self._finished:
            return None
        await self._submit()
        assert self._subscription is not None
        remaining = self._deadline - self._bus._loop.time()
        try:
            if remaining <= 0:
                raise ArqonTimeout("deadline passed")
            pulse = await self._subscription._next_or_end(remaining)
        except ArqonTimeout:
            await self.close()
            raise JobTimeout(
                f"job {self.job_id or self.reply_to!r} on {self.topic!r} in {self.reality!r}: "
                f"no final result within {self.timeout}s ({len(self.results)} results so far)"
            ) from None
        if pulse is None:
            self._finished = True
            return None
        if pulse.is_(_nvm.NvmJobResult):
            result = pulse.unpack(_nvm.NvmJobResult)
            self.results.append(result)
            if result.final:
                self.final = result
                await self.close()
        return pulse

    def __aiter__(self) -> AsyncIterator[Pulse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Pulse]:
        try:
            while True:
                pulse = await self._next_result()
                if pulse is None:
                    return
                yield pulse
        finally:
            await self.close()

    async def result(self) -> "_nvm.NvmJobResult":
        """Waits for the final result and returns it (all results are in `self.results`)."""
        async for _ in self:
            pass
        if self.final is None:
            raise JobTimeout(f"job {self.job_id or self.reply_to!r} ended without a final result")
        return self.final

    async def close(self) -> None:
        """Stops listening for results (the operator is not told)."""
        self._finished = True
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def __aenter__(self) -> "Job":
        return await self._submit()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"Job(job_id={self.job_id!r}, topic={self.topic!r}, reply_to={self.reply_to!r}, "
            f"results={len(self.results)})"
        )
