"""Retained realities (a `[[retention]]` rule in the server's configuration): bounded history,
replay-then-live subscriptions, gap-free resumption after a restart; and causal delivery."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio, read_all

import arqonbus
from arqonbus import Bus, Start

RETAINED = """
[[retention]]
realities = "kept-*"
sync = "always"
"""


@pytest.fixture
def retained_server(server_factory):
    return server_factory(RETAINED)


@aio(timeout=60)
async def test_history_returns_a_bounded_range_of_a_retained_reality(retained_server):
    url, reality = retained_server.url, "kept-history"
    async with Bus.connect(url) as bus:
        acks = [await bus.publish(reality, f"h.t{i % 2}", str(i), ack=True) for i in range(1, 11)]
        assert [a.sequence for a in acks] == list(range(1, 11))

        part = await bus.history(reality, "h.>", from_sequence=3, to_sequence=8)
        assert [(p.sequence, p.value) for p in part] == [(s, str(s)) for s in range(3, 8)]
        assert (part.count, part.next_sequence) == (5, 8)

        odd = await bus.history(reality, "h.t1")
        assert [p.sequence for p in odd] == [1, 3, 5, 7, 9]

        first3 = await bus.history(reality, limit=3)
        assert [p.sequence for p in first3] == [1, 2, 3] and first3.next_sequence == 4

        by_time = await bus.history(
            reality,
            from_time_unix_nanos=acks[4].timestamp_unix_nanos,
            to_time_unix_nanos=acks[6].timestamp_unix_nanos,
        )
        assert [p.sequence for p in by_time] == [5, 6]

        streamed = [p.sequence async for p in bus.history(reality, from_sequence=9)]
        assert streamed == [9, 10]

    # A reader that only replays history takes the pulses' causal context too.
    async with Bus.connect(url) as reader:
        await reader.history(reality, from_sequence=1)
        assert reader.causal[reality] == 10

    async with Bus.connect(url) as bus:
        with pytest.raises(arqonbus.HistoryUnavailable):
            await bus.history("not-kept", "h.>")


@aio(timeout=60)
async def test_subscriptions_replay_then_go_live_without_gap_or_duplicate(retained_server):
    url, reality = retained_server.url, "kept-replay"
    async with Bus.connect(url) as bus:
        for i in range(1, 11):
            await bus.publish(reality, "r.x", bytes([i]), ack=True)
        async with bus.subscribe(reality, "r.>", start=Start.from_sequence(8)) as sub:
            assert sub.next_sequence == 8
            await bus.publish(reality, "r.x", b"live", ack=True)
            assert [p.sequence for p in await read_all(sub)] == [8, 9, 10, 11]
        async with bus.subscribe(reality, "r.>", start=Start.last(2)) as sub:
            assert [p.sequence for p in await read_all(sub)] == [10, 11]


@aio(timeout=90)
async def test_reconnect_resumes_a_retained_subscription_where_it_left_off(retained_server):
    url, reality = retained_server.url, "kept-resume"
    async with Bus.connect(url, reconnect=False) as bus:
        sub = await bus.subscribe(reality, "k.>")
        for i in range(1, 4):
            await bus.publish(reality, "k.x", bytes([i]), ack=True)
        assert [p.sequence for p in await read_all(sub)] == [1, 2, 3]

        await asyncio.to_thread(retained_server.kill)
        with pytest.raises(arqonbus.ConnectionLost):
            await sub.get(timeout=10)
        await asyncio.to_thread(retained_server.start)
        # Published while the subscriber is away; the reality survived the restart.
        async with Bus.connect(url) as other:
            assert (await other.publish(reality, "k.x", bytes([4]), ack=True)).sequence == 4
            await other.publish(reality, "k.x", bytes([5]), ack=True)

        await bus.reconnect()
        assert sub.next_sequence == 4  # resumed after the last pulse it had
        await bus.publish(reality, "k.x", bytes([6]), ack=True)
        got = await read_all(sub)
        assert [(p.sequence, p.data) for p in got] == [(4, b"\x04"), (5, b"\x05"), (6, b"\x06")]
        # The retained reality did not restart, so the causal entry was not lowered.
        assert bus.causal[reality] == 6


@aio(timeout=60)
async def test_causal_delivery_holds_a_pulse_until_its_dependency_is_delivered(url, reality):
    a_reality, b_reality = reality + "-a", reality + "-b"
    async with Bus.connect(url) as producer, Bus.connect(url) as reader:
        on_a = await reader.subscribe(a_reality, "c.x", causal=True)
        on_b = await reader.subscribe(b_reality, "c.x", causal=True)
        # The producer claims to have seen a_reality@2 when it publishes in b_reality...
        producer.causal.merge({a_reality: 2})
        await producer.publish(b_reality, "c.x", b"effect", ack=True)
        # ...so the reader does not get that pulse before a_reality@2 exists and was delivered.
        with pytest.raises(arqonbus.ArqonTimeout):
            await on_b.get(timeout=0.5)
        producer.causal.forget(b_reality)
        await producer.publish(a_reality, "c.x", b"cause 1", ack=True)
        await producer.publish(a_reality, "c.x", b"cause 2", ack=True)
        assert [p.sequence for p in await read_all(on_a)] == [1, 2]
        effect = await on_b.get(timeout=5)
        assert effect.value == b"effect" and effect.causal[a_reality] == 2
