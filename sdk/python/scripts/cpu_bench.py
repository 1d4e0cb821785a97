#!/usr/bin/env python3
"""The SDK's CPU cost per pulse, without a server or a network.

    python sdk/python/scripts/cpu_bench.py receive            # pulses/s parsed, dispatched, read
    python sdk/python/scripts/cpu_bench.py publish            # publishes/s encoded and queued
    python sdk/python/scripts/cpu_bench.py receive --profile  # cProfile of one round

`receive`: pre-encoded `Deliver` frames, like those the bus sends to `scripts/throughput.py`'s
subscriber (a UUIDv7-length id, sequence, topic, producer, reality, a 1 KB bytes payload,
timestamp, a one-entry causal map, tenant and subject), are fed to the stream parser in
`--chunk-bytes` reads (asyncio's socket transport reads at most 256 KiB at a time); after each
read the event loop turns once and a reader task takes every pulse queued so far with
`Subscription.get(timeout=...)`, touching `sequence` and `data`.

`publish`: `Bus.publish` without ack of 1 KB bytes payloads into a connection whose transport
discards what it is given.

Both measure what bounds the end-to-end rate of one Python process (`scripts/throughput.py`):
its own CPU per pulse. Rates are pulses per CPU-second of this process (`time.process_time`), so
other load on the machine disturbs them less than wall time would; they are printed per round
with the median, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SDK_DIR))

from arqonbus import Bus  # noqa: E402
from arqonbus.proto import ArqonMessage, Deliver, ServerFrame, Welcome  # noqa: E402
from arqonbus.transport import StreamConnection  # noqa: E402


def encoded_stream(count: int, payload_bytes: int, subscription_id: int) -> bytes:
    reality = "perf-" + uuid.uuid4().hex[:8]
    payload = os.urandom(payload_bytes)
    out = bytearray()
    for seq in range(1, count + 1):
        message = ArqonMessage(
            id=str(uuid.uuid4()),
            sequence=seq,
            topic="perf.pulse",
            producer_id="perf-pub",
            reality_id=reality,
            timestamp_unix_nanos=time.time_ns(),
            causal={reality: seq},
            tenant="anonymous",
            subject="session-17",
        )
        message.payload.type_url = "application/octet-stream"
        message.payload.value = payload
        body = ServerFrame(deliver=Deliver(subscription_id=subscription_id, message=message)).SerializeToString()
        out += len(body).to_bytes(4, "big") + body
    return bytes(out)


async def receive_round(pieces: list, count: int) -> float:
    """CPU seconds to parse, dispatch and read `count` pulses."""
    bus = Bus("tcp://127.0.0.1:1", max_pending=count)
    conn = StreamConnection(bus, 1 << 26)
    sub = bus.subscribe("r", "perf.>")
    sub._started = True
    bus._subscriptions[sub.id] = sub
    loop = asyncio.get_running_loop()

    async def reader() -> int:
        total = 0
        for _ in range(count):
            pulse = await sub.get(timeout=5)
            total += pulse.sequence + len(pulse.data)
        return total

    started = time.process_time()
    task = loop.create_task(reader())
    for piece in pieces:
        conn.data_received(piece)
        await asyncio.sleep(0)  # one turn: the reader runs, as it would between two reads
    await task
    return time.process_time() - started


class _DiscardingTransport:
    def __init__(self) -> None:
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.bytes_written += len(data)

    def is_closing(self) -> bool:
        return False


async def publish_round(count: int, payload_bytes: int) -> float:
    bus = Bus("tcp://127.0.0.1:1")
    conn = StreamConnection(bus, 1 << 26)
    conn.connection_made(_DiscardingTransport())  # type: ignore[arg-type]
    bus._conn = conn
    bus.welcome = Welcome(max_frame_bytes=1 << 20)
    bus._connected.set()
    bus.causal.observe("perf-abcdef12", 1000)  # what one acked publish leaves in the context
    payload = os.urandom(payload_bytes)
    publish = bus.publish
    started = time.process_time()
    for _ in range(count):
        await publish("perf-abcdef12", "perf.pulse", payload)
    conn.flush()
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["receive", "publish"])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--chunk-bytes", type=int, default=256 * 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one round, print the top functions")
    args = parser.parse_args()

    if args.mode == "receive":
        stream = encoded_stream(args.count, args.payload_bytes, subscription_id=1)
        pieces = [stream[i : i + args.chunk_bytes] for i in range(0, len(stream), args.chunk_bytes)]
        print(f"{args.count} Deliver frames of {len(stream) // args.count} B in {len(pieces)} reads")

        def run() -> float:
            return asyncio.run(receive_round(pieces, args.count))
    else:
        print(f"{args.count} publishes of {args.payload_bytes} B payloads, no ack")

        def run() -> float:
            return asyncio.run(publish_round(args.count, args.payload_bytes))

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    rates = sorted(args.count / run() for _ in range(args.rounds))
    print(
        f"{args.mode}: pulses per CPU-second, per round "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + f"; median {rates[len(rates) // 2]:,.0f} ({1e6 / rates[len(rates) // 2]:.2f} us per pulse)"
        + f", best {rates[-1]:,.0f} ({1e6 / rates[-1]:.2f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
