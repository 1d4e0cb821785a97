#!/usr/bin/env python3
"""Pub/sub throughput of the Python SDK against a real bus: one publisher process, one
subscriber process, 1 KB pulses, 127.0.0.1 only.

    ARQONBUS_BIN=target/release/arqonbus python sdk/python/scripts/throughput.py
    python sdk/python/scripts/throughput.py --url tcp://127.0.0.1:4720   # a bus already running

Without --url it starts `$ARQONBUS_BIN serve --shards 2 --listen 127.0.0.1:<free port>
--admin-listen 127.0.0.1:0` (embedded defaults) and stops it at the end; it starts nothing else.

The subscriber subscribes to `perf.>` in a fresh reality and reads with `Subscription.get`,
touching each pulse's `sequence` and `data`. Then the publisher sends up to `--count` pulses
(default 1,000,000) for at most `--seconds` (default 20) as fast as `Bus.publish` goes (or at
`--rate` pulses/s, checked every 100 pulses), without
acks except one acked publish every `--ack-every` pulses (that bounds what is in flight) and
the last one. The subscriber stops when every pulse sent is accounted for (received, or shed
by the bus and reported in a `Dropped` frame, or dropped locally past `max_pending`), or
`--idle-seconds` after the last pulse it got.

Printed: the publisher's rate (sent/s, from its first publish to its last ack), the delivered
rate (received / time from the first publish to the last pulse received), what the bus shed
and what the SDK dropped locally, each process's CPU per pulse, and the load average before
and after (this runs on machines shared with other work: read the figures with it).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SDK_DIR))

import arqonbus  # noqa: E402
from arqonbus import Bus  # noqa: E402

TOPIC = "perf.pulse"


def start_server(binary: str) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "serve", "--shards", "2", "--listen", f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"tcp://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{' '.join(args)} exited with {proc.returncode} (ulimit -l unlimited may help)")
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{' '.join(args)} did not accept connections within 30 s")


# -- the subscriber process --------------------------------------------------------------------


def subscriber(url: str, reality: str, count: int, idle_seconds: float, sent, ready, results) -> None:
    """Reads until every pulse sent is accounted for. `sent` (a shared integer) is 0 until the
    publisher has finished, then how many it sent."""

    async def run() -> tuple:
        async with Bus.connect(url, name="perf-sub", max_pending=count) as bus:
            async with bus.subscribe(reality, "perf.>", max_pending=count) as sub:
                ready.set()
                received = 0
                touched = 0
                first = last = 0.0
                last_seq = 0
                out_of_order = 0
                idle_since = 0.0  # when the subscriber first saw the publisher done
                cpu0 = os.times()
                while received + sub.dropped < count:
                    try:
                        pulse = await sub.get(timeout=0.25)
                    except arqonbus.ArqonTimeout:
                        target = sent.value
                        if target:
                            now = time.monotonic()
                            idle_since = idle_since or now
                            if received + sub.dropped >= target or now - max(last, idle_since) > idle_seconds:
                                break
                        continue
                    last = time.monotonic()
                    if not received:
                        first = last
                    received += 1
                    sequence = pulse.sequence
                    if sequence <= last_seq:
                        out_of_order += 1
                    last_seq = sequence
                    touched += len(pulse.data)
                cpu1 = os.times()
                cpu = (cpu1.user - cpu0.user, cpu1.system - cpu0.system)
                shed = sub.dropped - sub.dropped_locally
                return received, shed, sub.dropped_locally, first, last, out_of_order, cpu, bus.welcome.shard

    results.put(asyncio.run(run()))


# -- the publisher process ---------------------------------------------------------------------


def publisher(
    url: str, reality: str, count: int, seconds: float, ack_every: int, payload_bytes: int, rate: float, results
) -> None:
    async def run() -> tuple:
        payload = os.urandom(payload_bytes)
        async with Bus.connect(url, name="perf-pub") as bus:
            publish = bus.publish
            started = time.monotonic()
            deadline = started + seconds
            cpu0 = os.times()
            sent = 0
            while sent < count:
                sent += 1
                if rate and sent % 100 == 0:
                    ahead = started + sent / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if sent % ack_every == 0:
                    await publish(reality, TOPIC, payload, ack=True)
                    if time.monotonic() >= deadline:
                        break
                else:
                    await publish(reality, TOPIC, payload)
            if sent % ack_every:
                await publish(reality, TOPIC, payload, ack=True)  # the last one: everything was taken
            finished = time.monotonic()
            cpu1 = os.times()
            return sent, started, finished, (cpu1.user - cpu0.user, cpu1.system - cpu0.system), bus.welcome.shard

    results.put(asyncio.run(run()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a bus already running (default: start $ARQONBUS_BIN)")
    parser.add_argument("--count", type=int, default=1_000_000, help="pulses at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time at most")
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--ack-every", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0, help="pulses/s the publisher keeps to (0: as fast as it can)")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        binary = os.environ.get("ARQONBUS_BIN")
        if not binary:
            sys.exit("set ARQONBUS_BIN to an arqonbus binary, or pass --url of a running bus")
        server, url = start_server(binary)
        print(f"bus: {binary} serve --shards 2 on {url}")
    if not url.startswith(("tcp://127.0.0.1:", "127.0.0.1:")):
        sys.exit("this measurement runs over 127.0.0.1 only")
    load_before = os.getloadavg()
    try:
        ctx = multiprocessing.get_context("spawn")
        reality = f"perf-{uuid.uuid4().hex[:8]}"
        sent_value = ctx.Value("q", 0, lock=False)
        ready, sub_results, pub_results = ctx.Event(), ctx.Queue(), ctx.Queue()
        sub = ctx.Process(
            target=subscriber, args=(url, reality, args.count, args.idle_seconds, sent_value, ready, sub_results)
        )
        sub.start()
        if not ready.wait(30):
            sub.kill()
            sys.exit("the subscriber did not subscribe within 30 s")
        pub = ctx.Process(
            target=publisher,
            args=(url, reality, args.count, args.seconds, args.ack_every, args.payload_bytes, args.rate, pub_results),
        )
        pub.start()
        sent, started, finished, pub_cpu, pub_shard = pub_results.get(timeout=args.seconds + 120)
        sent_value.value = sent
        received, shed, dropped_locally, first, last, out_of_order, sub_cpu, sub_shard = sub_results.get(timeout=120)
        pub.join(30)
        sub.join(30)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    load_after = os.getloadavg()
    publish_seconds = finished - started
    deliver_seconds = max(last - started, 1e-9)
    lost = sent - received - shed - dropped_locally
    print(
        f"sent {sent:,} pulses of {args.payload_bytes} B in {publish_seconds:.2f} s: {sent / publish_seconds:,.0f}/s"
        f" (ack every {args.ack_every})"
    )
    print(
        f"delivered {received:,} in {deliver_seconds:.2f} s: {received / deliver_seconds:,.0f}/s "
        f"({received * args.payload_bytes / deliver_seconds / 1e6:.0f} MB/s of payload); "
        f"shed by the bus {shed:,} ({shed / max(sent, 1):.1%}); dropped locally {dropped_locally:,}; "
        f"unaccounted {lost:,}; out of order {out_of_order:,}"
    )
    print(
        f"CPU: publisher {sum(pub_cpu) / max(sent, 1) * 1e6:.2f} us per pulse sent "
        f"({pub_cpu[0] / max(sent, 1) * 1e6:.2f} user + {pub_cpu[1] / max(sent, 1) * 1e6:.2f} system), "
        f"subscriber {sum(sub_cpu) / max(received, 1) * 1e6:.2f} us per pulse received "
        f"({sub_cpu[0] / max(received, 1) * 1e6:.2f} user + {sub_cpu[1] / max(received, 1) * 1e6:.2f} system)"
    )
    # The kernel spreads connections over the shards (SO_REUSEPORT): whether the two sessions
    # share a shard changes what the bus does per pulse, and so the figures.
    print(f"sessions: publisher on shard {pub_shard}, subscriber on shard {sub_shard}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
