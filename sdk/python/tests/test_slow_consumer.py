"""A subscriber that stops reading: the server sheds (Dropped) or disconnects (SLOW_CONSUMER)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio

import arqonbus
from arqonbus import Bus

SMALL_OUTBOUND = """
slow_consumer = "{policy}"
[limits]
max_outbound_bytes = 1048576
"""
PULSES = 20_000
PAYLOAD = b"\\xab" * 1024


async def flood(url: str, reality: str) -> None:
    async with Bus.connect(url, name="flooder") as pub:
        for i in range(PULSES):
            await pub.publish(reality, "slow.x", PAYLOAD, ack=(i == PULSES - 1), timeout=60)


@aio(timeout=120)
async def test_shed_policy_reports_dropped_pulses(server_factory):
    server = server_factory(SMALL_OUTBOUND.format(policy="shed"))
    reality = "slow-shed"
    async with Bus.connect(server.url, max_pending=PULSES) as bus:
        sub = await bus.subscribe(reality, "slow.>")
        bus._conn.transport.pause_reading()  # a subscriber that stopped reading
        await flood(server.url, reality)
        bus._conn.transport.resume_reading()
        received = []
        while True:
            try:
                received.append((await sub.get(timeout=2)).sequence)
            except arqonbus.ArqonTimeout:
                break
        await bus.ping()  # the connection survived
    assert sub.dropped_locally == 0
    assert sub.dropped > 0, f"received {len(received)} of {PULSES} and no Dropped frame"
    assert all(b > a for a, b in zip(received, received[1:]))
    assert len(received) + sub.dropped == PULSES, (
        f"received {len(received)} + Dropped {sub.dropped} != published {PULSES}"
    )


@aio(timeout=120)
async def test_disconnect_policy_sends_slow_consumer_and_closes(server_factory):
    server = server_factory(SMALL_OUTBOUND.format(policy="disconnect"))
    reality = "slow-disconnect"
    async with Bus.connect(server.url, reconnect=False, max_pending=PULSES) as bus:
        sub = await bus.subscribe(reality, "slow.>")
        bus._conn.transport.pause_reading()
        await flood(server.url, reality)
        bus._conn.transport.resume_reading()
        with pytest.raises(arqonbus.ConnectionLost) as info:
            for _ in range(PULSES + 1):
                await sub.get(timeout=10)
        assert isinstance(info.value.cause, arqonbus.SlowConsumer), repr(info.value)
        await asyncio.sleep(0)
        assert not bus.connected
