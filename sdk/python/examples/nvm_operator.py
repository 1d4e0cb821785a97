#!/usr/bin/env python3
"""Reference NVM operator: answers `nvm.job.submit` jobs with streamed `NvmJobResult`s.

    python examples/nvm_operator.py --url tcp://127.0.0.1:4720 --reality lab

It connects with an operator manifest (the SAM handshake: what it reads and writes), subscribes
to `nvm.job.submit` in each `--reality`, and for every job pulse publishes, on the pulse's
`reply_to` topic in the same reality, `--steps` progress results (`final=False`, growing
`progress`) and then one final result (`final=True`, `progress=1.0`) whose `data` is a small JSON
report of the "run". A job that is not an `NvmJob`, or asks for negative energy, gets a final
result with `error` set. Jobs run concurrently, at most `--max-concurrent` at a time.

It prints `ready` once subscribed (tests wait for that line) and one line per job answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from pathlib import Path

try:
    import arqonbus
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import arqonbus

from arqonbus import Bus, NvmJob, NvmJobResult, OperatorManifest, Pulse, SchemaRef
from arqonbus.payload import type_url_of

SUBMIT_TOPIC = "nvm.job.submit"


def manifest() -> OperatorManifest:
    return OperatorManifest(
        name="nvm-reference-operator",
        version=arqonbus.__version__,
        capabilities=["nvm.job"],
        input_schemas=[SchemaRef(topic_pattern=SUBMIT_TOPIC, type_url=type_url_of(NvmJob))],
        output_schemas=[SchemaRef(topic_pattern="nvm.job.result.>", type_url=type_url_of(NvmJobResult))],
    )


def simulate(job: NvmJob, steps: int) -> bytes:
    """A stand-in for the rig: a damped oscillation sampled once per step."""
    samples = [round(math.exp(-i / 4) * math.cos(i * job.energy_joules), 6) for i in range(steps + 1)]
    report = {
        "job_id": job.job_id,
        "program": job.program,
        "energy_joules": job.energy_joules,
        "parameters": dict(job.parameters),
        "samples": samples,
    }
    return json.dumps(report, sort_keys=True).encode()


async def answer(bus: Bus, pulse: Pulse, steps: int, step_delay: float) -> None:
    reality, reply_to = pulse.reality, pulse.reply_to
    if not reply_to:
        print(f"job pulse {pulse.sequence} in {reality} has no reply_to; ignored", file=sys.stderr, flush=True)
        return
    trace = pulse.trace_context
    if not pulse.is_(NvmJob):
        final = NvmJobResult(final=True, progress=1.0, error=f"expected an NvmJob payload, got {pulse.type_url!r}")
        await bus.publish(reality, reply_to, final, ack=True, trace_context=trace)
        return
    job = pulse.unpack(NvmJob)
    if job.energy_joules < 0:
        final = NvmJobResult(job_id=job.job_id, final=True, progress=1.0, error="energy_joules must not be negative")
        await bus.publish(reality, reply_to, final, ack=True, trace_context=trace)
        print(f"job {job.job_id} refused", flush=True)
        return
    for step in range(1, steps + 1):
        await asyncio.sleep(step_delay)
        progress = NvmJobResult(job_id=job.job_id, progress=step / (steps + 1))
        await bus.publish(reality, reply_to, progress, ack=True, trace_context=trace)
    await asyncio.sleep(step_delay)
    final = NvmJobResult(job_id=job.job_id, final=True, progress=1.0, data=simulate(job, steps))
    await bus.publish(reality, reply_to, final, ack=True, trace_context=trace)
    print(f"job {job.job_id} done ({steps} progress results) -> {reply_to}", flush=True)


async def serve(
    url: str,
    realities: list,
    steps: int = 3,
    step_delay: float = 0.05,
    max_concurrent: int = 64,
    max_jobs: int = 0,
    token: str = None,
    ca: str = None,
    cert: str = None,
    key: str = None,
) -> int:
    """Runs the operator until cancelled (or after `max_jobs` jobs when non-zero). `ca`, `cert`
    and `key` are for tls:// and wss:// URLs (see `Bus`)."""
    limit = asyncio.Semaphore(max_concurrent)
    done = asyncio.Event()
    answered = 0
    tasks: set = set()

    async with Bus.connect(
        url, token=token, name="nvm-reference-operator", manifest=manifest(), ca=ca, cert=cert, key=key
    ) as bus:

        async def run_one(pulse: Pulse) -> None:
            nonlocal answered
            async with limit:
                try:
                    await answer(bus, pulse, steps, step_delay)
                except Exception as exc:  # one bad job must not stop the operator
                    print(f"answering job pulse {pulse.sequence} failed: {exc!r}", file=sys.stderr, flush=True)
            answered += 1
            if max_jobs and answered >= max_jobs:
                done.set()

        async def listen(reality: str) -> None:
            async with bus.subscribe(reality, SUBMIT_TOPIC) as sub:
                ready.append(reality)
                if len(ready) == len(realities):
                    print("ready", flush=True)
                async for pulse in sub:
                    task = asyncio.ensure_future(run_one(pulse))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

        ready: list = []
        listeners = [asyncio.ensure_future(listen(r)) for r in realities]
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait([waiter, *listeners], return_when=asyncio.FIRST_COMPLETED)
            for listener in listeners:
                if listener.done() and listener.exception() is not None:
                    raise listener.exception()
        finally:
            for t in [*listeners, waiter]:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=10)
    return answered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Reference NVM operator for ArqonBus")
    parser.add_argument("--url", default=arqonbus.DEFAULT_URL)
    parser.add_argument("--token", default=None)
    parser.add_argument("--reality", action="append", help="reality to serve (repeatable; default: lab)")
    parser.add_argument("--steps", type=int, default=3, help="progress results before the final one")
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds between results")
    parser.add_argument("--max-concurrent", type=int, default=64)
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs (0: never)")
    parser.add_argument("--ca", default=None, help="tls:// and wss://: PEM file of the CA that signed the bus")
    parser.add_argument("--cert", default=None, help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", default=None, help="its private key, if not in --cert")
    args = parser.parse_args(argv)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            serve(
                args.url,
                args.reality or ["lab"],
                args.steps,
                args.step_delay,
                args.max_concurrent,
                args.max_jobs,
                args.token,
                args.ca,
                args.cert,
                args.key,
            )
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    answered = asyncio.run(run())
    print(f"answered {answered} jobs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
