#!/usr/bin/env python3
"""Stand-in operators for a circuit file (the US-02 example: examples/circuits/hybrid.toml).

    arqonbus circuit check examples/circuits/hybrid.toml
    arqonbus circuit --token "$ARQONBUS_CONTROLLER_TOKEN" apply examples/circuits/hybrid.toml
    python3 examples/circuits/stand_ins.py examples/circuits/hybrid.toml --frames 2000

Every stage connects as its own session with a manifest that declares exactly its stage's
types (the SAM handshake), so the bus counts it online for the circuit. Each stage but the source
forwards what it takes to its output, with its output type; the source publishes `--frames`
frames stamped with their send time, and a watcher on the last stage's output reports the
end-to-end latency (p50, p99, max) and checks every frame came through, in order. Exit status 1
when one did not.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
import tomllib
from pathlib import Path

from google.protobuf.any_pb2 import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from arqonbus import Bus, OperatorManifest, SchemaRef  # noqa: E402


def manifest(stage: dict) -> OperatorManifest:
    def schemas(port: dict | None) -> list[SchemaRef]:
        return [SchemaRef(topic_pattern=port["topic"], type_url=port["type"])] if port else []

    return OperatorManifest(
        name=stage["operator"],
        version="stand-in",
        input_schemas=schemas(stage.get("input")),
        output_schemas=schemas(stage.get("output")),
    )


async def forward(bus: Bus, reality: str, stage: dict, ready: asyncio.Event) -> None:
    out = stage["output"]
    async with bus.subscribe(reality, stage["input"]["topic"]) as sub:
        ready.set()
        async for pulse in sub:
            payload = Any(type_url=out["type"], value=pulse.payload.value)
            await bus.publish(reality, out["topic"], payload)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("circuit", type=Path)
    parser.add_argument("--url", default="tcp://127.0.0.1:4720")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="frames per second")
    args = parser.parse_args()
    circuit = tomllib.loads(args.circuit.read_text())
    reality, stages = circuit["reality"], circuit["stages"]
    source, sink = stages[0], stages[-1]

    buses = [await Bus.connect(args.url, name=f"stand-in-{s['name']}", manifest=manifest(s)) for s in stages]
    watcher = await Bus.connect(args.url, name="stand-in-watcher")
    tasks = []
    for bus, stage in zip(buses[1:], stages[1:]):
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(forward(bus, reality, stage, ready)))
        await ready.wait()

    latencies: list[float] = []
    received: list[int] = []
    async with watcher.subscribe(reality, sink["output"]["topic"]) as sub:

        async def watch() -> None:
            async for pulse in sub:
                index, sent = struct.unpack(">Qd", pulse.payload.value)
                latencies.append(time.time() - sent)
                received.append(index)
                if len(received) == args.frames:
                    return

        watching = asyncio.create_task(watch())
        period = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(args.frames):
            delay = start + i * period - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = Any(type_url=source["output"]["type"], value=struct.pack(">Qd", i, time.time()))
            await buses[0].publish(reality, source["output"]["topic"], frame)
        await asyncio.wait_for(watching, timeout=30)
    for t in tasks:
        t.cancel()
    for bus in [*buses, watcher]:
        await bus.close()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6  # noqa: E731
    print(
        f"{len(received)} of {args.frames} frames through {len(stages)} stages "
        f"({len(stages) - 1} hops); end to end p50 {pick(0.5):.0f} us, p99 {pick(0.99):.0f} us, "
        f"max {latencies[-1] * 1e6:.0f} us"
    )
    if received != list(range(args.frames)):
        print("frames were lost or reordered", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
