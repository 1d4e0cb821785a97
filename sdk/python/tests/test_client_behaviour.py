"""Client behaviours a real server cannot be made to show on demand, against tests/fake_server.py
(a stand-in written from proto/README.md), plus the SDK's local overflow against the real one."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio
from fake_server import FakeServer

import arqonbus
from arqonbus import Bus
from arqonbus.proto import Error, ServerFrame


async def fake() -> tuple:
    server = FakeServer()
    port = await server.start()
    return server, f"tcp://127.0.0.1:{port}"


@aio()
async def test_error_code_newer_than_the_sdk_is_still_an_arqon_error():
    server, url = await fake()

    def answer_with_code_999(conn, frame):
        if frame.WhichOneof("kind") == "ping":
            conn.send(ServerFrame(correlation_id=frame.correlation_id, error=Error(code=999, message="new")))
            return True
        return False

    server.intercept = answer_with_code_999
    try:
        async with Bus.connect(url) as bus:
            with pytest.raises(arqonbus.ServerError) as info:
                await bus.ping()
            assert info.value.code == 999 and type(info.value) is arqonbus.ServerError
    finally:
        await server.stop()


@aio()
async def test_unanswered_request_times_out():
    server, url = await fake()
    server.intercept = lambda conn, frame: frame.WhichOneof("kind") == "publish"  # swallow publishes
    try:
        async with Bus.connect(url, request_timeout=0.3) as bus:
            with pytest.raises(arqonbus.ArqonTimeout, match="no answer to Publish"):
                await bus.publish("r", "a.b", b"", ack=True)
            assert not bus._pending
            await bus.ping()
    finally:
        await server.stop()


@aio()
async def test_corrupt_length_prefix_closes_the_connection_with_protocol_violation():
    server, url = await fake()

    def corrupt(conn, frame):
        conn.writer.write((1 << 31).to_bytes(4, "big"))
        return True

    server.intercept = corrupt
    try:
        async with Bus.connect(url, reconnect=False) as bus:
            with pytest.raises(arqonbus.ConnectionLost) as info:
                await bus.ping()
            assert isinstance(info.value.cause, arqonbus.ProtocolViolation)
    finally:
        await server.stop()


@aio()
async def test_dropped_frames_are_counted_on_the_subscription():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("r", "a.b")
            from arqonbus.proto import Dropped

            server.connections[0].send(ServerFrame(dropped=Dropped(subscription_id=sub.id, count=7)))
            await bus.ping()
            assert sub.dropped == 7
    finally:
        await server.stop()


@aio()
async def test_local_overflow_drops_and_counts_beyond_max_pending(url, reality):
    async with Bus.connect(url) as bus:
        async with bus.subscribe(reality, "ovf.x", max_pending=5) as sub:
            for i in range(12):
                await bus.publish(reality, "ovf.x", bytes([i]), ack=True)
            await bus.ping()
            got = []
            while True:
                try:
                    got.append((await sub.get(timeout=0.3)).value)
                except arqonbus.ArqonTimeout:
                    break
            assert got == [bytes([i]) for i in range(5)]
            assert sub.dropped == sub.dropped_locally == 7
        await asyncio.sleep(0)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 1 << 20])
@aio()
async def test_frames_split_anywhere_across_reads_are_reassembled(chunk):
    """The reader gets the byte stream in arbitrary pieces; every frame must come out whole."""
    from arqonbus.proto import ArqonMessage, Deliver
    from arqonbus.transport import StreamConnection

    bus = Bus("tcp://127.0.0.1:1")
    conn = StreamConnection(bus, 1 << 26)
    sub = bus.subscribe("r", "a.>", max_pending=1000)
    sub._started = True
    bus._subscriptions[sub.id] = sub
    stream = bytearray()
    for seq in range(1, 51):
        message = ArqonMessage(sequence=seq, topic="a.b", reality_id="r", causal={"r": seq, "q": 7})
        message.payload.type_url = "application/octet-stream"
        message.payload.value = bytes([seq]) * (seq * 37)
        body = ServerFrame(deliver=Deliver(subscription_id=sub.id, message=message)).SerializeToString()
        stream += len(body).to_bytes(4, "big") + body
    for i in range(0, len(stream), chunk):
        conn.data_received(bytes(stream[i : i + chunk]))
    got = [await sub.get(timeout=1) for _ in range(50)]
    assert [p.sequence for p in got] == list(range(1, 51))
    assert all(p.data == bytes([p.sequence]) * (p.sequence * 37) for p in got)
    assert bus.causal.snapshot() == {"r": 50, "q": 7}
    assert not conn._buf


def _deliver_stream(subscription_id: int, sizes) -> bytes:
    from arqonbus.proto import ArqonMessage, Deliver, Dropped

    stream = bytearray()
    for seq, size in enumerate(sizes, start=1):
        message = ArqonMessage(sequence=seq, topic="a.b", reality_id="r", causal={"r": seq})
        message.payload.type_url = "application/octet-stream"
        message.payload.value = bytes([seq % 256]) * size
        frames = [ServerFrame(deliver=Deliver(subscription_id=subscription_id, message=message))]
        if seq % 5 == 0:
            frames.append(ServerFrame(dropped=Dropped(subscription_id=subscription_id, count=seq)))
        for frame in frames:
            body = frame.SerializeToString()
            stream += len(body).to_bytes(4, "big") + body
    return bytes(stream)


def _record_server_frames(bus: Bus) -> list:
    """Routes what reaches `bus._on_frame` through a record of each frame's kind."""
    kinds = []
    inner = bus._on_frame

    def on_frame(conn, frame):
        kinds.append(frame.WhichOneof("kind"))
        inner(conn, frame)

    bus._on_frame = on_frame
    return kinds


@pytest.mark.parametrize("subscription_id", [1, 127, 128, 300])
@aio()
async def test_frames_cut_at_random_points_dispatch_exactly_as_the_whole_stream(subscription_id):
    """Reads end anywhere: inside a length prefix, inside a frame, right after one, and a frame
    may span many reads; what comes out does not depend on where. Deliver frames of 128 B to
    16 KiB messages for subscription ids below 128 take the reader's short path, the others
    (and Dropped frames) the ServerFrame path: both give the same pulses."""
    import random

    from arqonbus.transport import StreamConnection

    sizes = [0, 1, 3, 90, 200, 1024, 1024, 16_300, 16_380, 70_000, 5, 300_000, 1024, 2, 1024] * 3
    outcomes = []
    rng = random.Random(21)
    for attempt in range(12):
        bus = Bus("tcp://127.0.0.1:1")
        conn = StreamConnection(bus, 1 << 26)
        sub = bus.subscribe("r", "a.>", max_pending=1000)
        sub.id = subscription_id
        sub._started = True
        bus._subscriptions[sub.id] = sub
        through_server_frame = _record_server_frames(bus)
        stream = _deliver_stream(sub.id, sizes)
        if attempt == 0:
            cuts = [len(stream)]  # one read
        else:
            top = rng.choice([6, 50, 3000, 200_000])
            cuts, pos = [], 0
            while pos < len(stream):
                pos = min(len(stream), pos + rng.randint(1, top))
                cuts.append(pos)
        start = 0
        for cut in cuts:
            conn.data_received(stream[start:cut])
            start = cut
        assert not conn._buf and not conn.lost
        got = [await sub.get(timeout=1) for _ in sizes]
        outcomes.append(([(p.sequence, p.data) for p in got], sub.dropped, bus.causal.snapshot()))
        delivers = through_server_frame.count("deliver")
        if attempt > 0:
            continue  # a frame that spans reads is completed on the ServerFrame path
        if subscription_id < 128:  # payloads of 90 B to 16,300 B make messages of 137 B to 16,351 B
            assert delivers == sum(1 for size in sizes if not 90 <= size <= 16_300)
        else:
            assert delivers == len(sizes)
    want = [(seq, bytes([seq % 256]) * size) for seq, size in enumerate(sizes, start=1)]
    assert outcomes[0][0] == want
    assert outcomes[0][1] == sum(seq for seq in range(1, len(sizes) + 1) if seq % 5 == 0)
    assert all(outcome == outcomes[0] for outcome in outcomes)


class _AbortRecordingTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.parametrize("cut", [1, 2, 3])
@aio()
async def test_an_oversized_length_cut_across_reads_closes_the_connection(cut):
    from arqonbus.transport import StreamConnection

    bus = Bus("tcp://127.0.0.1:1")
    conn = StreamConnection(bus, 1000)
    transport = _AbortRecordingTransport()
    conn.connection_made(transport)
    prefix = (1001).to_bytes(4, "big")
    conn.data_received(prefix[:cut])
    assert not transport.aborted
    conn.data_received(prefix[cut:] + b"\0" * 10)
    assert transport.aborted
    assert isinstance(conn.close_error, arqonbus.ProtocolViolation)
    assert "max_incoming_frame_bytes" in str(conn.close_error)


@aio()
async def test_get_with_a_timeout_returns_what_arrives_in_time_and_times_out_otherwise():
    from arqonbus.proto import ArqonMessage

    bus = Bus("tcp://127.0.0.1:1")
    sub = bus.subscribe("r", "a.>")
    sub._started = True
    bus._subscriptions[sub.id] = sub
    loop = asyncio.get_running_loop()

    loop.call_later(0.05, sub._push, arqonbus.Pulse(ArqonMessage(sequence=1), sub.id))
    assert (await sub.get(timeout=10)).sequence == 1
    with pytest.raises(arqonbus.ArqonTimeout, match="no pulse on 'a.>'"):
        await sub.get(timeout=0.05)
    assert sub._waiter is None

    # A reader cancelled while it waits leaves nothing behind: the next pulse is the next get's.
    waiting = loop.create_task(sub.get(timeout=10))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sub._waiter is None
    sub._push(arqonbus.Pulse(ArqonMessage(sequence=2), sub.id))
    assert (await sub.get(timeout=0)).sequence == 2
