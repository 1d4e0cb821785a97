"""Reconnecting after the server restarts (each test has a server of its own)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio

import arqonbus
from arqonbus import Bus


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


async def restart(server) -> None:
    """Stops and starts the server on the same port, off the event loop."""
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


@aio(timeout=90)
async def test_automatic_reconnect_resubscribes_after_server_restart(private_server):
    url, reality = private_server.url, "reconnect-auto"
    async with Bus.connect(url, reconnect=True, reconnect_timeout=30) as bus:
        sub = await bus.subscribe(reality, "rc.>")
        for _ in range(3):
            await bus.publish(reality, "rc.before", b"x", ack=True)
        assert [(await sub.get(timeout=5)).sequence for _ in range(3)] == [1, 2, 3]
        assert bus.causal[reality] == 3

        await asyncio.to_thread(private_server.stop)
        await wait_until(lambda: not bus.connected, what="disconnect noticed")
        # A publish issued while the server is down waits for the reconnection.
        pending = asyncio.ensure_future(bus.publish(reality, "rc.during", b"queued", ack=True))
        await asyncio.sleep(0.3)
        assert not pending.done()
        await asyncio.to_thread(private_server.start)

        ack = await asyncio.wait_for(pending, 30)
        # At least one reconnection; more when a shard of the stopping server still welcomed a
        # session and then closed it (the current server does so during shutdown).
        assert bus.connected and bus.connections >= 2 and 1 <= sub.resubscribed <= bus.connections - 1
        # The ephemeral reality restarted at 1 with the server.
        assert sub.next_sequence == 1 and ack.sequence == 1
        pulse = await sub.get(timeout=10)
        assert (pulse.topic, pulse.sequence, pulse.value) == ("rc.during", 1, b"queued")
        # The client's causal entry for the restarted reality was lowered, not kept at 3.
        assert bus.causal[reality] == 1
        async with Bus.connect(url) as other:
            await other.publish(reality, "rc.after", b"y", ack=True)
        assert (await sub.get(timeout=10)).topic == "rc.after"


@aio(timeout=90)
async def test_explicit_reconnect_after_server_restart(private_server):
    url, reality = private_server.url, "reconnect-explicit"
    async with Bus.connect(url, reconnect=False) as bus:
        sub = await bus.subscribe(reality, "rx.*")
        await bus.publish(reality, "rx.a", b"1", ack=True)
        assert (await sub.get(timeout=5)).value == b"1"

        await asyncio.to_thread(private_server.kill)
        with pytest.raises(arqonbus.ConnectionLost):
            await sub.get(timeout=10)
        with pytest.raises(arqonbus.ConnectionLost):
            await bus.publish(reality, "rx.a", b"lost", ack=True)
        with pytest.raises(arqonbus.ConnectionLost):
            await bus.ping()

        await asyncio.to_thread(private_server.start)
        await bus.reconnect()
        assert bus.connected and sub.active and sub.resubscribed == 1
        ack = await bus.publish(reality, "rx.a", b"2", ack=True)
        assert ack.sequence == 1
        assert (await sub.get(timeout=5)).value == b"2"


@aio(timeout=60)
async def test_reconnect_gives_up_after_reconnect_timeout(private_server):
    url, reality = private_server.url, "reconnect-giveup"
    async with Bus.connect(url, reconnect=True, reconnect_timeout=1.0) as bus:
        sub = await bus.subscribe(reality, "g.x")
        await asyncio.to_thread(private_server.stop)
        with pytest.raises(arqonbus.ConnectionLost, match="could not reconnect"):
            await sub.get(timeout=20)
        with pytest.raises(arqonbus.ConnectionLost):
            await bus.publish(reality, "g.x", b"", ack=True)
        # An explicit reconnect still works once the server is back.
        await asyncio.to_thread(private_server.start)
        await bus.reconnect()
        await bus.publish(reality, "g.x", b"back", ack=True)
        assert (await sub.get(timeout=5)).value == b"back"


def test_blocking_facade_reconnects(private_server):
    from arqonbus import sync

    with sync.connect(private_server.url, reconnect=False) as bus:
        bus.publish("blocking-rc", "b.x", b"", ack=True)
        private_server.stop()
        private_server.start()
        with pytest.raises(arqonbus.ConnectionLost):
            bus.publish("blocking-rc", "b.x", b"", ack=True)
        bus.reconnect()
        assert bus.publish("blocking-rc", "b.x", b"", ack=True).sequence == 1
