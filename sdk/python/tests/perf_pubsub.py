#!/usr/bin/env python3
"""Throughput and latency of the Python SDK against a real server (not collected by pytest).

    ARQONBUS_BIN=target/release/arqonbus python sdk/python/tests/perf_pubsub.py
    python sdk/python/tests/perf_pubsub.py --url tcp://127.0.0.1:4720   # an already running server

Without --url it starts `arqonbus serve --listen 127.0.0.1:<free port> --shards 2` itself, the
binary found like the test fixture does ($ARQONBUS_BIN, target/debug, target/release).

1. pub/sub throughput: one publisher process to one subscriber process, `--count` pulses of
   `--payload-bytes` (1 KB) each on one reality. The publisher sends without acks except one
   acked publish every `--ack-every` pulses, which bounds what is in flight. Reported: the
   publisher's rate, the subscriber's delivered rate (first to last delivery), and pulses lost
   (server `Dropped` plus local overflow).
2. job round trip: `--jobs` jobs submitted one after another to the reference operator
   (examples/nvm_operator.py, no progress results, no delay), from `submit` to the final
   result; p50/p99/max. A ping round trip is measured the same way as a floor.

Everything runs on 127.0.0.1, bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SDK_DIR.parents[1]
sys.path.insert(0, str(SDK_DIR))

import arqonbus  # noqa: E402
from arqonbus import Bus, NvmJob  # noqa: E402


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def find_binary() -> Path:
    env = os.environ.get("ARQONBUS_BIN")
    candidates = [Path(env)] if env else []
    candidates += [REPO_DIR / "target" / "debug" / "arqonbus", REPO_DIR / "target" / "release" / "arqonbus"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    sys.exit("no arqonbus binary: set ARQONBUS_BIN or pass --url")


def start_server() -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = find_binary()
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--shards", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"tcp://127.0.0.1:{port}", binary
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited with {proc.returncode}")
            time.sleep(0.05)
    proc.kill()
    sys.exit("server did not start")


# -- throughput --------------------------------------------------------------------------------


def subscriber_process(url: str, reality: str, count: int, ready, results) -> None:
    async def run():
        async with Bus.connect(url, name="perf-sub", max_pending=1_000_000) as bus:
            async with bus.subscribe(reality, "perf.>", max_pending=1_000_000) as sub:
                ready.set()
                received = 0
                first = last = 0.0
                cpu0 = time.process_time()
                last_seq = 0
                out_of_order = 0
                while received + sub.dropped < count:
                    try:
                        pulse = await sub.get(timeout=5)
                    except arqonbus.ArqonTimeout:
                        break
                    now = time.perf_counter()
                    if not received:
                        first = now
                    last = now
                    received += 1
                    if pulse.sequence <= last_seq:
                        out_of_order += 1
                    last_seq = pulse.sequence
                results.put((received, sub.dropped, first, last, out_of_order, time.process_time() - cpu0))

    asyncio.run(run())


async def publish_all(url: str, reality: str, count: int, payload: bytes, ack_every: int) -> tuple:
    async with Bus.connect(url, name="perf-pub") as bus:
        started = time.perf_counter()
        cpu0 = time.process_time()
        for i in range(1, count + 1):
            await bus.publish(reality, "perf.pulse", payload, ack=(i % ack_every == 0 or i == count))
        return started, time.perf_counter(), time.process_time() - cpu0


def throughput(url: str, count: int, payload_bytes: int, ack_every: int) -> dict:
    reality = f"perf-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=subscriber_process, args=(url, reality, count, ready, results))
    child.start()
    if not ready.wait(30):
        child.kill()
        sys.exit("subscriber did not start")
    started, finished, pub_cpu = asyncio.run(publish_all(url, reality, count, os.urandom(payload_bytes), ack_every))
    received, dropped, first, last, out_of_order, sub_cpu = results.get(timeout=120)
    child.join(30)
    publish_seconds = finished - started
    deliver_seconds = max(last - started, 1e-9)
    return {
        "count": count,
        "payload_bytes": payload_bytes,
        "publish_per_s": count / publish_seconds,
        "delivered": received,
        "dropped": dropped,
        "out_of_order": out_of_order,
        "delivered_per_s": received / deliver_seconds,
        "delivered_mb_per_s": received * payload_bytes / deliver_seconds / 1e6,
        # Client cost, less sensitive than wall time to other load on the machine.
        "publish_per_cpu_s": count / max(pub_cpu, 1e-9),
        "receive_per_cpu_s": received / max(sub_cpu, 1e-9),
    }


# -- latency -----------------------------------------------------------------------------------


def start_operator(url: str, reality: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SDK_DIR), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [
            sys.executable,
            str(SDK_DIR / "examples" / "nvm_operator.py"),
            "--url",
            url,
            "--reality",
            reality,
            "--steps",
            "0",
            "--step-delay",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
    )


async def job_latency(url: str, reality: str, operator: subprocess.Popen, jobs: int, pings: int) -> dict:
    line = await asyncio.wait_for(asyncio.to_thread(operator.stdout.readline), 30)
    assert b"ready" in line, line
    # Keep reading its one line per job, or it blocks on a full pipe.
    threading.Thread(target=operator.stdout.read, daemon=True).start()
    async with Bus.connect(url, name="perf-jobs") as bus:
        ping_s = [(await bus.ping()).rtt_seconds for _ in range(pings)]
        for _ in range(10):  # warm up
            await bus.submit(reality, "nvm.job.submit", NvmJob(program="warm"), timeout=10).result()
        job_s = []
        for i in range(jobs):
            t0 = time.perf_counter()
            await bus.submit(reality, "nvm.job.submit", NvmJob(program=f"j{i}"), timeout=10).result()
            job_s.append(time.perf_counter() - t0)
    return {
        "pings": pings,
        "ping_p50_ms": percentile(ping_s, 50) * 1e3,
        "ping_p99_ms": percentile(ping_s, 99) * 1e3,
        "jobs": jobs,
        "job_p50_ms": percentile(job_s, 50) * 1e3,
        "job_p99_ms": percentile(job_s, 99) * 1e3,
        "job_max_ms": max(job_s) * 1e3,
        "job_mean_ms": statistics.mean(job_s) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--ack-every", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pings", type=int, default=1000)
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server, url, binary = start_server()
        print(f"server: {binary} on {url} (--shards 2)")
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        tp = throughput(url, args.count, args.payload_bytes, args.ack_every)
        print(
            f"pubsub 1->1, {tp['count']} pulses of {tp['payload_bytes']} B (ack every {args.ack_every}): "
            f"publish {tp['publish_per_s']:,.0f} pulses/s; delivered {tp['delivered']} "
            f"at {tp['delivered_per_s']:,.0f} pulses/s ({tp['delivered_mb_per_s']:.1f} MB/s); "
            f"dropped {tp['dropped']}; out of order {tp['out_of_order']}"
        )
        print(
            f"client CPU: publisher {tp['publish_per_cpu_s']:,.0f} pulses per CPU-second, "
            f"subscriber {tp['receive_per_cpu_s']:,.0f} pulses per CPU-second"
        )
        reality = f"perf-jobs-{uuid.uuid4().hex[:8]}"
        operator = start_operator(url, reality)
        try:
            lat = asyncio.run(job_latency(url, reality, operator, args.jobs, args.pings))
        finally:
            operator.terminate()
            operator.wait(10)
        print(f"ping round trip ({lat['pings']}): p50 {lat['ping_p50_ms']:.3f} ms, p99 {lat['ping_p99_ms']:.3f} ms")
        print(
            f"job round trip ({lat['jobs']} sequential, operator with no progress results): "
            f"p50 {lat['job_p50_ms']:.3f} ms, p99 {lat['job_p99_ms']:.3f} ms, "
            f"max {lat['job_max_ms']:.3f} ms, mean {lat['job_mean_ms']:.3f} ms"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
