"""Server errors arrive as the typed exceptions of `arqonbus.errors`."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio

import arqonbus
from arqonbus import Bus


@pytest.mark.parametrize(
    "topic",
    ["Lab.Upper", "single", "a..b", "a.b.c.d.e.f.g.h.i", "a.b*", "a.>", "sp ace.x", "x." + "a" * 260],
)
@aio()
async def test_bad_topic_raises_invalid_topic_from_an_acked_publish(url, reality, topic):
    async with Bus.connect(url) as bus:
        with pytest.raises(arqonbus.InvalidTopic) as info:
            await bus.publish(reality, topic, b"x", ack=True)
        assert info.value.code == 4 and info.value.message
        # INVALID_TOPIC does not close the connection.
        assert (await bus.publish(reality, "ok.topic", b"x", ack=True)).sequence >= 1


@aio()
async def test_bad_reality_raises_invalid_reality(url):
    async with Bus.connect(url) as bus:
        for reality in ["", "has space", "x" * 129, "slash/no"]:
            with pytest.raises(arqonbus.InvalidReality):
                await bus.publish(reality, "ok.topic", b"x", ack=True)
        await bus.ping()


@aio()
async def test_unacked_publish_error_goes_to_on_error(url, reality):
    seen = []
    async with Bus.connect(url, on_error=seen.append) as bus:
        await bus.publish(reality, "NOT.valid", b"x")
        await bus.ping()  # answered after the error frame of the publish before it
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 1 and isinstance(seen[0], arqonbus.InvalidTopic)
        assert bus.last_error is seen[0]


@aio()
async def test_bad_pattern_is_refused_at_subscribe(url, reality):
    async with Bus.connect(url) as bus:
        for pattern in ["a.>.b", "A.b", "a", "a.b>"]:
            with pytest.raises(arqonbus.InvalidTopic):
                await bus.subscribe(reality, pattern)
        assert not bus._subscriptions
        await bus.ping()


@aio()
async def test_oversize_publish_is_refused_locally_before_sending(url, reality):
    async with Bus.connect(url) as bus:
        big = b"\0" * (bus.max_frame_bytes + 1)
        with pytest.raises(arqonbus.FrameTooLarge) as info:
            await bus.publish(reality, "big.frame", big, ack=True)
        assert info.value.local
        assert (await bus.publish(reality, "big.frame", b"small", ack=True)).sequence == 1


@aio()
async def test_oversize_frame_gets_frame_too_large_and_the_connection_closes(url, reality):
    """With the local check off, the server sees the frame: Error{FRAME_TOO_LARGE}, then close."""
    async with Bus.connect(url, check_frame_size=False, reconnect=False) as bus:
        big = b"\0" * (bus.max_frame_bytes + 1)
        with pytest.raises(arqonbus.ConnectionLost) as info:
            await bus.publish(reality, "big.frame", big, ack=True, timeout=10)
        assert isinstance(info.value.cause, arqonbus.FrameTooLarge), (
            f"expected the server's FRAME_TOO_LARGE before the close, got {info.value!r}"
        )
        assert not bus.connected
        with pytest.raises(arqonbus.ConnectionLost):
            await bus.ping()


@aio()
async def test_history_is_unavailable_for_ephemeral_realities(url, reality):
    async with Bus.connect(url) as bus:
        await bus.publish(reality, "hist.a", b"x", ack=True)
        with pytest.raises(arqonbus.HistoryUnavailable) as info:
            await bus.history(reality, "hist.>", from_sequence=1)
        assert info.value.code == 12
        with pytest.raises(arqonbus.HistoryUnavailable):
            async for _ in bus.history(reality):
                pass
        await bus.ping()


@aio()
async def test_client_errors_after_close(url):
    bus = await Bus.connect(url)
    await bus.close()
    with pytest.raises(arqonbus.ClientClosed):
        await bus.publish("r", "a.b", b"")


@aio()
async def test_replay_start_positions_need_a_retained_reality(url, reality):
    """Ephemeral realities only take `latest` subscriptions; the others raise HistoryUnavailable."""
    async with Bus.connect(url) as bus:
        await bus.publish(reality, "st.a", b"x", ack=True)
        for start in (arqonbus.Start.from_sequence(1), arqonbus.Start.last(5), arqonbus.Start.from_time(1)):
            with pytest.raises(arqonbus.HistoryUnavailable):
                await bus.subscribe(reality, "st.a", start=start)
        assert not bus._subscriptions
        async with bus.subscribe(reality, "st.a", start=arqonbus.Start.latest()) as sub:
            assert sub.next_sequence == 2
