"""Delta-only topics against a real server (docs/delta.md): a producer publishes 1 KB states that
change by about 1% per step; subscribers receive keyframes and deltas on the wire and the SDK
hands them the whole states, which must be the producer's byte for byte."""

from __future__ import annotations

import hashlib
import random
import uuid
import zlib
from typing import List

import pytest
from conftest import aio, read_all

from arqonbus import BlockingBus, Bus

KEYFRAME_EVERY = 100
CONFIG = f"""
[[delta]]
realities = "lab-*"
topics = "sim.state.>"
keyframe_every = {KEYFRAME_EVERY}

[[retention]]
realities = "lab-*"
sync = "os"
"""
STATE_BYTES = 1024


@pytest.fixture
def delta_server(server_factory):
    return server_factory(CONFIG)


def lab() -> str:
    return f"lab-{uuid.uuid4().hex[:10]}"


def states(steps: int, seed: int) -> List[bytes]:
    """A 1 KB state and `steps` successors, each changing ~1% of the bytes of the one before."""
    rng = random.Random(seed)
    out = [bytes(rng.randrange(256) for _ in range(STATE_BYTES))]
    for _ in range(steps):
        nxt = bytearray(out[-1])
        for _ in range(STATE_BYTES // 100):
            nxt[rng.randrange(STATE_BYTES)] = rng.randrange(256)
        out.append(bytes(nxt))
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def publish_all(bus: Bus, reality: str, topic: str, sequence_of_states: List[bytes]) -> List[int]:
    acks = [await bus.publish(reality, topic, s, ack=True) for s in sequence_of_states]
    return [a.sequence for a in acks]


@aio(timeout=90)
async def test_a_subscriber_receives_every_state_whole_while_deltas_travel(delta_server):
    reality = lab()
    produced = states(300, seed=1)
    async with Bus.connect(delta_server.url) as producer, Bus.connect(delta_server.url) as consumer:
        sub = await consumer.subscribe(reality, "sim.state.>")
        sequences = await publish_all(producer, reality, "sim.state.lattice", produced)
        got = [await sub.get(timeout=10) for _ in produced]
    assert [p.sequence for p in got] == sequences
    assert [p.value for p in got] == produced
    assert sha(got[-1].value) == sha(produced[-1])
    assert all(p.delta is not None for p in got), "every pulse of a delta-only topic carries DeltaInfo"
    assert all(p.delta.checksum == zlib.crc32(p.value) for p in got)
    keyframes = [i for i, p in enumerate(got) if p.delta.keyframe]
    assert keyframes[0] == 0, "the first pulse of a topic is a keyframe"
    # Keyframes only where the chain rules put them: periodically, not for every pulse.
    assert 2 <= len(keyframes) <= len(produced) // KEYFRAME_EVERY + 2, keyframes
    assert all(b - a <= KEYFRAME_EVERY for a, b in zip(keyframes, keyframes[1:] + [len(got)])), keyframes
    for i, p in enumerate(got):
        if not p.delta.keyframe:
            assert p.delta.base_sequence == got[i - 1].sequence


@aio(timeout=90)
async def test_a_late_joiner_starts_from_the_current_state_and_converges(delta_server):
    reality = lab()
    produced = {"sim.state.a": states(150, seed=2), "sim.state.b": states(150, seed=3)}
    async with Bus.connect(delta_server.url) as producer, Bus.connect(delta_server.url) as late:
        current = {}
        for step in range(60):
            for topic, chain in produced.items():
                current[topic] = (await producer.publish(reality, topic, chain[step], ack=True)).sequence
        sub = await late.subscribe(reality, "sim.state.>")
        # Right after Subscribed: the current state of each topic, a keyframe with its sequence.
        first = [await sub.get(timeout=10) for _ in produced]
        assert sorted((p.topic, p.sequence) for p in first) == sorted(current.items())
        assert all(p.delta.keyframe and p.value == produced[p.topic][59] for p in first)
        for step in range(60, 151):
            for topic, chain in produced.items():
                await producer.publish(reality, topic, chain[step], ack=True)
        got = [await sub.get(timeout=10) for _ in range(2 * 91)]
        assert await read_all(sub, idle=0.3) == []
    for topic, chain in produced.items():
        pulses = [p for p in got if p.topic == topic]
        assert [p.value for p in pulses] == chain[60:]
        assert sha(pulses[-1].value) == sha(chain[-1]), f"{topic}: the late joiner converged"
        # Deltas from the given state on (the topic's periodic keyframe falls at its 100th pulse).
        assert all(not p.delta.keyframe for p in pulses[:30]), f"{topic}: no deltas after the current state"


@aio(timeout=90)
async def test_overlapping_subscriptions_rebuild_their_own_chains(delta_server):
    reality = lab()
    produced = states(120, seed=4)
    async with Bus.connect(delta_server.url) as producer, Bus.connect(delta_server.url) as consumer:
        wide = await consumer.subscribe(reality, "sim.state.>")
        narrow = await consumer.subscribe(reality, "sim.*.one")
        for s in produced[:50]:
            await producer.publish(reality, "sim.state.one", s, ack=True)
        first = [await narrow.get(timeout=10) for _ in range(50)]
        await narrow.unsubscribe()
        again = await consumer.subscribe(reality, "sim.state.one")  # a new chain mid-stream
        for s in produced[50:]:
            await producer.publish(reality, "sim.state.one", s, ack=True)
        all_wide = [await wide.get(timeout=10) for _ in produced]
        rest = [await again.get(timeout=10) for _ in produced[49:]]  # the current state first
    assert [p.value for p in all_wide] == produced
    assert [p.value for p in first] == produced[:50]
    assert [p.value for p in rest] == produced[49:]
    assert rest[0].delta.keyframe and not rest[1].delta.keyframe


@aio(timeout=90)
async def test_other_topics_and_realities_travel_whole_without_delta_info(delta_server):
    produced = states(5, seed=5)
    reality, other = lab(), f"other-{uuid.uuid4().hex[:8]}"
    async with Bus.connect(delta_server.url) as bus:
        in_lab = await bus.subscribe(reality, "sim.>")
        elsewhere = await bus.subscribe(other, "sim.>")
        for s in produced:
            await bus.publish(reality, "sim.plain.x", s, ack=True)
            await bus.publish(other, "sim.state.x", s, ack=True)
        plain = [await in_lab.get(timeout=10) for _ in produced]
        outside = [await elsewhere.get(timeout=10) for _ in produced]
    assert [p.value for p in plain] == produced and all(p.delta is None for p in plain)
    assert [p.value for p in outside] == produced and all(p.delta is None for p in outside)


@aio(timeout=90)
async def test_history_and_replay_give_whole_states(delta_server):
    reality = lab()
    produced = states(130, seed=6)
    async with Bus.connect(delta_server.url) as bus:
        sequences = await publish_all(bus, reality, "sim.state.h", produced)
        history = await bus.history(reality, "sim.state.>")
        assert [p.sequence for p in history] == sequences
        assert [p.value for p in history] == produced
        assert history[0].delta is not None and history[0].delta.keyframe
        assert sum(not p.delta.keyframe for p in history) >= len(produced) - 3, "history serves deltas too"
        assert all(p.delta.checksum == zlib.crc32(p.value) for p in history)
        part = await bus.history(reality, "sim.state.h", from_sequence=sequences[70])
        assert [p.value for p in part] == produced[70:] and part[0].delta.keyframe
        # A subscription that starts in the past: replay, then live, one chain.
        from arqonbus import Start

        replay = await bus.subscribe(reality, "sim.state.h", start=Start.from_sequence(sequences[100]))
        more = states(10, seed=7)[1:]
        await publish_all(bus, reality, "sim.state.h", more)
        got = [await replay.get(timeout=10) for _ in range(len(produced) - 100 + len(more))]
    assert [p.value for p in got] == produced[100:] + more
    assert got[0].delta.keyframe


def test_the_blocking_facade_hands_out_whole_states(delta_server):
    reality = lab()
    produced = states(40, seed=8)
    with BlockingBus.connect(delta_server.url) as bus:
        sub = bus.subscribe(reality, "sim.state.>", timeout=10)
        for s in produced:
            bus.publish(reality, "sim.state.sync", s, ack=True)
        got = [next(sub) for _ in produced]
    assert sha(got[-1].value) == sha(produced[-1])
    assert [p.value for p in got] == produced
    assert sum(1 for p in got if not p.delta.keyframe) >= len(produced) - 2
