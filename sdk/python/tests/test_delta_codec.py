"""ArqonDelta 1 (docs/delta.md) without a server: the doc's examples, every error the format
names, encode-then-apply round trips on random states, and the SDK's reconstruction of delta
chains in subscriptions and history reads (against tests/fake_server.py, frames by hand)."""

from __future__ import annotations

import random
import zlib
from typing import List, Optional, Tuple

import pytest
from conftest import aio
from fake_server import FakeServer

import arqonbus
from arqonbus import Bus, DeltaError, delta
from arqonbus.proto import ArqonMessage, Deliver, DeltaInfo, HistoryChunk, HistoryEnd, ServerFrame

# --------------------------------------------------------------------------------------------
# The byte format

# (B, T, delta hex, whether the bus's encoder makes exactly this delta): docs/delta.md, Examples.
DOC_EXAMPLES = [
    (b"hello world", b"hello world", "0b 2c", True),
    (b"hello world", b"hello World", "0b 18 05 57 10", True),
    (b"", b"abc", "03 0d 61 62 63", True),
    (b"abcdef", b"cd", "02 0a 02", False),
]


@pytest.mark.parametrize("base,target,hex_delta,made_by_encoder", DOC_EXAMPLES)
def test_the_examples_of_the_doc_apply_and_encode_as_written(base, target, hex_delta, made_by_encoder):
    d = bytes.fromhex(hex_delta)
    assert delta.apply(base, d) == target
    if made_by_encoder:
        assert delta.encode(base, target) == d
    else:
        assert delta.encode(base, target) == bytes.fromhex("02 09 63 64")  # INSERT `cd`, as the doc says


def test_different_lengths_insert_the_middle_and_copy_the_suffix_from_its_offset():
    # prefix "abc", suffix "XYZ" at offset 3 of B: len 9; SKIP 3; INSERT 3 "QQQ"; COPY 3 from 3.
    assert delta.encode(b"abcXYZ", b"abcQQQXYZ") == bytes.fromhex("09 0c 0d 515151 0e 03")
    # Shorter target: SKIP 2 ("ab"), COPY 2 from 4 ("ef").
    assert delta.encode(b"abcdef", b"abef") == bytes.fromhex("04 08 0a 04")


def test_unchanged_runs_shorter_than_four_join_the_inserts_around_them():
    base = b"0123456789abcdef"
    # Changes at 2 and 5 (a 2-byte unchanged run between: merged), then 10 (a 4-byte run: SKIP).
    target = b"01X34Y6789Zbcdef"
    assert delta.encode(base, target) == bytes.fromhex("10 08 11 583334 59 10 05 5a 14")


def test_empty_base_and_empty_target_are_fine():
    assert delta.encode(b"", b"") == b"\x00"
    assert delta.apply(b"", b"\x00") == b""
    assert delta.apply(b"abc", b"\x00") == b""
    assert delta.apply(b"abc", delta.encode(b"abc", b"")) == b""


ERRORS = [
    ("an op of length 0 (SKIP)", b"ab", "01 00", "length 0"),
    ("an op of length 0 (INSERT)", b"ab", "01 01", "length 0"),
    ("the reserved tag 3", b"ab", "01 07", "reserved tag"),
    ("a SKIP past the end of B", b"ab", "03 0c", "past its end"),
    ("a SKIP past the end of B after output", b"abc", "04 05 7a 0c", "past its end"),
    ("a COPY past the end of B", b"ab", "02 0a 01", "past the end of the base"),
    ("a COPY at an offset past B", b"ab", "01 06 05", "past the end of the base"),
    ("an INSERT past the end of the delta", b"", "03 0d 61 62", "past the end of the delta"),
    ("output past len(T)", b"", "01 09 61 62", "past the target length"),
    ("a SKIP past len(T)", b"abcdef", "02 0c", "past the target length"),
    ("a final length other than len(T)", b"", "05 09 61 62", "header says 5"),
    ("no ops for a non-empty T", b"abc", "03", "header says 3"),
    ("an empty delta (no length)", b"", "", "cut off"),
    ("a length varint cut off", b"", "80", "cut off"),
    ("an op varint cut off", b"a", "01 84", "cut off"),
    ("a COPY offset missing", b"ab", "02 0a", "cut off"),
    ("a varint of 11 bytes", b"", "ff ff ff ff ff ff ff ff ff ff 01", "longer than 10"),
    ("a varint above 2**64 - 1", b"", "ff ff ff ff ff ff ff ff ff 02", "overflows"),
]


@pytest.mark.parametrize("what,base,hex_delta,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_every_error_of_the_format_raises_delta_error(what, base, hex_delta, message):
    with pytest.raises(DeltaError, match=message):
        delta.apply(base, bytes.fromhex(hex_delta))


def test_the_largest_varint_is_read_and_then_refused_as_a_length():
    # 2**64 - 1 is a valid varint (10 bytes); no ops make that many bytes.
    with pytest.raises(DeltaError, match="header says 18446744073709551615"):
        delta.apply(b"", bytes.fromhex("ff ff ff ff ff ff ff ff ff 01"))


def test_a_declared_length_over_the_limit_is_refused_before_anything_is_made():
    # 1 MiB declared, made of COPY ops that repeat a 4-byte base: refused with max_len.
    d = bytearray.fromhex("80 80 40")
    d += bytes.fromhex("12 00") * 3  # COPY 4 from 0, three times (not enough anyway)
    with pytest.raises(DeltaError, match="over the limit of 1000"):
        delta.apply(b"abcd", bytes(d), max_len=1000)
    assert delta.apply(b"abcd", bytes.fromhex("0c 12 00 12 00 12 00"), max_len=12) == b"abcd" * 3


def test_delta_error_is_an_arqon_error():
    assert issubclass(DeltaError, arqonbus.ArqonError) and DeltaError.code is None


# --------------------------------------------------------------------------------------------
# Round trips


def ops_of(d: bytes) -> List[Tuple[int, int]]:
    """(tag, n) of each op of a delta, read independently of the SDK's decoder."""

    def varint(pos: int) -> Tuple[int, int]:
        value = shift = 0
        while True:
            byte = d[pos]
            value |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                return value, pos
            shift += 7

    _, pos = varint(0)
    out = []
    while pos < len(d):
        word, pos = varint(pos)
        tag, n = word & 3, word >> 2
        out.append((tag, n))
        if tag == 1:
            pos += n
        elif tag == 2:
            _, pos = varint(pos)
    return out


def scattered_change(rng: random.Random, base: bytes, fraction: float) -> bytes:
    out = bytearray(base)
    for _ in range(max(1, int(len(base) * fraction))):
        i = rng.randrange(len(out))
        out[i] = (out[i] + rng.randrange(1, 256)) % 256
    return bytes(out)


def random_pair(rng: random.Random) -> Tuple[bytes, bytes]:
    size = rng.choice([0, 1, 2, 3, 5, 17, 64, 1000])
    alphabet = rng.choice([2, 16, 256])  # few symbols make long equal runs and coincidences
    base = bytes(rng.randrange(alphabet) for _ in range(size))
    kind = rng.randrange(6)
    if kind == 0:
        return base, b""
    if kind == 1:
        return b"", base
    if kind == 2 and base:
        return base, scattered_change(rng, base, rng.choice([0.01, 0.05, 0.3]))
    if kind == 3:  # cut, grow or splice somewhere
        i, j = sorted(rng.randrange(len(base) + 1) for _ in range(2))
        middle = bytes(rng.randrange(alphabet) for _ in range(rng.randrange(0, 40)))
        return base, base[:i] + middle + base[j:]
    if kind == 4:
        return base, base
    other = bytes(rng.randrange(alphabet) for _ in range(rng.choice([0, 1, 7, 300, 1000])))
    return base, other


def test_encode_then_apply_gives_the_target_for_random_states():
    rng = random.Random(20261203)
    for case in range(3000):
        base, target = random_pair(rng)
        d = delta.encode(base, target)
        assert delta.apply(base, d) == target, f"case {case}: {base.hex()} -> {target.hex()}: {d.hex()}"
        ops = ops_of(d)
        assert all(n > 0 for _, n in ops), f"case {case}: an op of length 0 in {d.hex()}"
        if len(base) == len(target):
            # In place: SKIP and INSERT only, no two INSERTs in a row, inner SKIPs at least 4.
            assert all(tag in (0, 1) for tag, _ in ops), d.hex()
            assert all(not (a == b == 1) for (a, _), (b, _) in zip(ops, ops[1:])), d.hex()
            assert all(n >= delta.MIN_SKIP_RUN for tag, n in ops[1:-1] if tag == 0), d.hex()


def test_a_one_percent_change_of_a_kilobyte_state_is_a_small_delta():
    rng = random.Random(7)
    state = bytes(rng.randrange(256) for _ in range(1024))
    for _ in range(50):
        nxt = scattered_change(rng, state, 0.01)
        d = delta.encode(state, nxt)
        assert delta.apply(state, d) == nxt
        assert len(d) < 120, f"{len(d)} bytes for 10 changed bytes"
        state = nxt


def test_checksum_is_zlib_crc32():
    assert delta.checksum(b"hello world") == zlib.crc32(b"hello world") == 0x0D4A1185


# --------------------------------------------------------------------------------------------
# Reconstruction (fake server, frames by hand)


class Producer:
    """Makes the frames the bus would send for one delta-only topic: keyframes and deltas."""

    def __init__(self, reality: str = "lab-1", topic: str = "sim.state.a"):
        self.reality = reality
        self.topic = topic
        self.sequence = 0
        self.state = b""

    def pulse(self, state: bytes, *, keyframe: bool = False, base: Optional[int] = None, crc: Optional[int] = None):
        previous, self.state = (self.sequence, self.state), state
        self.sequence += 1
        message = ArqonMessage(topic=self.topic, reality_id=self.reality, sequence=self.sequence)
        message.payload.type_url = "application/octet-stream"
        message.payload.value = state if keyframe else delta.encode(previous[1], state)
        message.delta.CopyFrom(
            DeltaInfo(
                keyframe=keyframe,
                base_sequence=previous[0] if base is None else base,
                checksum=zlib.crc32(state) if crc is None else crc,
            )
        )
        return message


def deliver(sub_id: int, message: ArqonMessage) -> ServerFrame:
    return ServerFrame(deliver=Deliver(subscription_id=sub_id, message=message))


async def fake() -> Tuple[FakeServer, str]:
    server = FakeServer()
    port = await server.start()
    return server, f"tcp://127.0.0.1:{port}"


@aio(timeout=20)
async def test_keyframe_then_deltas_yield_whole_states():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("lab-1", "sim.state.>")
            conn = server.connections[0]
            p = Producer()
            rng = random.Random(1)
            states = [bytes(rng.randrange(256) for _ in range(1024))]
            for _ in range(20):
                states.append(scattered_change(rng, states[-1], 0.01))
            conn.send(deliver(sub.id, p.pulse(states[0], keyframe=True)))
            for s in states[1:]:
                conn.send(deliver(sub.id, p.pulse(s)))
            got = [await sub.get(timeout=5) for _ in states]
            assert [g.value for g in got] == states
            assert [g.sequence for g in got] == list(range(1, 22))
            assert got[0].delta == delta.PulseDelta(True, 0, zlib.crc32(states[0]))
            assert got[5].delta.keyframe is False and got[5].delta.base_sequence == 5
            assert got[5].delta.checksum == zlib.crc32(states[5])
            assert got[5].payload.value == states[5] and got[5].data == states[5]
            assert sub.last_sequence == 21
    finally:
        await server.stop()


@aio(timeout=20)
async def test_pulses_without_delta_info_are_untouched_and_text_states_decode():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("lab-1", "sim.>")
            await bus.publish("lab-1", "sim.plain", b"\x01\x02", ack=True)
            plain = await sub.get(timeout=5)
            assert plain.delta is None and plain.value == b"\x01\x02"
            p = Producer(topic="sim.state.text")
            first = p.pulse(b"temperature=21.5", keyframe=True)
            second = p.pulse(b"temperature=21.7")
            for m in (first, second):
                m.payload.type_url = "text/plain; charset=utf-8"
                server.connections[0].send(deliver(sub.id, m))
            assert (await sub.get(timeout=5)).value == "temperature=21.5"
            assert (await sub.get(timeout=5)).value == "temperature=21.7"
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_delta_against_another_base_raises_delta_error_and_the_next_keyframe_recovers():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("lab-1", "sim.state.>")
            conn = server.connections[0]
            p = Producer()
            conn.send(deliver(sub.id, p.pulse(b"state-one", keyframe=True)))  # 1
            conn.send(deliver(sub.id, p.pulse(b"state-two")))  # 2
            conn.send(deliver(sub.id, p.pulse(b"state-333", base=1)))  # 3, but this holds 2
            conn.send(deliver(sub.id, p.pulse(b"state-444")))  # 4: the chain is gone
            conn.send(deliver(sub.id, p.pulse(b"state-555", keyframe=True)))  # 5
            conn.send(deliver(sub.id, p.pulse(b"state-666")))  # 6
            assert (await sub.get(timeout=5)).value == b"state-one"
            assert (await sub.get(timeout=5)).value == b"state-two"
            with pytest.raises(DeltaError) as wrong:
                await sub.get(timeout=5)
            text = str(wrong.value)
            assert "'sim.state.a'" in text and "applies to sequence 1" in text and "sequence 2" in text
            assert (wrong.value.topic, wrong.value.sequence) == ("sim.state.a", 3)
            with pytest.raises(DeltaError, match="holds no state of that topic"):
                await sub.get(timeout=5)
            assert [(await sub.get(timeout=5)).value for _ in range(2)] == [b"state-555", b"state-666"]
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_bad_checksum_is_an_error_never_a_state():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("lab-1", "sim.state.>")
            conn = server.connections[0]
            p = Producer()
            conn.send(deliver(sub.id, p.pulse(b"whole", keyframe=True, crc=12345)))
            conn.send(deliver(sub.id, p.pulse(b"again", keyframe=True)))
            conn.send(deliver(sub.id, p.pulse(b"agaiN", crc=zlib.crc32(b"agaiX"))))
            with pytest.raises(DeltaError, match=r"\(keyframe\) has CRC-32 0x[0-9a-f]{8}, the pulse says 0x00003039"):
                await sub.get(timeout=5)
            assert (await sub.get(timeout=5)).value == b"again"
            with pytest.raises(DeltaError, match="delta against sequence 2"):
                await sub.get(timeout=5)
            # A malformed delta names the pulse and the byte at fault.
            bad = p.pulse(b"x", keyframe=True)
            conn.send(deliver(sub.id, bad))
            broken = p.pulse(b"y")
            broken.payload.value = bytes.fromhex("01 07")
            conn.send(deliver(sub.id, broken))
            assert (await sub.get(timeout=5)).value == b"x"
            with pytest.raises(DeltaError, match="at sequence 5: invalid delta: the op at byte 1 has the reserved tag"):
                await sub.get(timeout=5)
    finally:
        await server.stop()


@aio(timeout=20)
async def test_chains_are_per_topic_and_per_subscription():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            one = await bus.subscribe("lab-1", "sim.state.>")
            two = await bus.subscribe("lab-1", "sim.state.a")
            conn = server.connections[0]
            a, b = Producer(topic="sim.state.a"), Producer(topic="sim.state.b")
            b.sequence = 100
            conn.send(deliver(one.id, a.pulse(b"a0", keyframe=True)))
            conn.send(deliver(one.id, b.pulse(b"b0", keyframe=True)))
            conn.send(deliver(one.id, a.pulse(b"a1")))
            conn.send(deliver(one.id, b.pulse(b"b1")))
            assert [(await one.get(timeout=5)).value for _ in range(4)] == [b"a0", b"b0", b"a1", b"b1"]
            # `two` never had the keyframe: a delta to it is refused, even though `one` holds the base.
            conn.send(deliver(two.id, a.pulse(b"a2")))
            with pytest.raises(DeltaError, match=r"subscription \d+ \('sim.state.a' in 'lab-1'\) holds no state"):
                await two.get(timeout=5)
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_resubscription_starts_new_chains():
    server, url = await fake()
    try:
        async with Bus.connect(url) as bus:
            sub = await bus.subscribe("lab-1", "sim.state.>")
            p = Producer()
            server.connections[0].send(deliver(sub.id, p.pulse(b"before", keyframe=True)))
            assert (await sub.get(timeout=5)).value == b"before"
            await bus.reconnect()
            # The server's new subscription has no chain: a delta first is an error.
            server.connections[-1].send(deliver(sub.id, p.pulse(b"beforE")))
            with pytest.raises(DeltaError):
                await sub.get(timeout=5)
    finally:
        await server.stop()


def history_answer(cid: int, messages: List[ArqonMessage], split: int) -> List[ServerFrame]:
    return [
        ServerFrame(correlation_id=cid, history_chunk=HistoryChunk(messages=messages[:split])),
        ServerFrame(correlation_id=cid, history_chunk=HistoryChunk(messages=messages[split:])),
        ServerFrame(correlation_id=cid, history_end=HistoryEnd(count=len(messages), next_sequence=len(messages) + 1)),
    ]


@aio(timeout=20)
async def test_history_reads_rebuild_their_own_chains():
    server, url = await fake()
    rng = random.Random(3)
    p = Producer()
    states = [bytes(rng.randrange(256) for _ in range(300))]
    for _ in range(9):
        states.append(scattered_change(rng, states[-1], 0.02))
    messages = [p.pulse(states[0], keyframe=True)] + [p.pulse(s) for s in states[1:]]

    def answer(conn, frame):
        if frame.WhichOneof("kind") != "history_get":
            return False
        for f in history_answer(frame.correlation_id, messages, 4):
            conn.send(f)
        return True

    server.intercept = answer
    try:
        async with Bus.connect(url) as bus:
            got = await bus.history("lab-1", "sim.state.>")
            assert [g.value for g in got] == states and got.count == 10
            again = [g.value async for g in bus.history("lab-1", "sim.state.>")]
            assert again == states  # a second read rebuilds from its own keyframe
            # A read whose chain breaks raises in place of the pulse it cannot prove.
            messages[6].delta.checksum ^= 1
            with pytest.raises(DeltaError, match="at sequence 7"):
                await bus.history("lab-1", "sim.state.>")
            seen = []
            with pytest.raises(DeltaError):
                async for g in bus.history("lab-1", "sim.state.>"):
                    seen.append(g.value)
            assert seen == states[:6]
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_delta_declaring_a_state_larger_than_a_frame_is_refused():
    server, url = await fake()
    try:
        async with Bus.connect(url, max_incoming_frame_bytes=4096) as bus:
            sub = await bus.subscribe("lab-1", "sim.state.>")
            p = Producer()
            server.connections[0].send(deliver(sub.id, p.pulse(b"abcd", keyframe=True)))
            big = p.pulse(b"abcd" * 2000)  # declares 8000 bytes in a delta of 14
            big.payload.value = bytes.fromhex("c0 3e") + bytes.fromhex("c2 3e 00") * 4
            assert len(big.payload.value) < 20
            server.connections[0].send(deliver(sub.id, big))
            assert (await sub.get(timeout=5)).value == b"abcd"
            with pytest.raises(DeltaError, match="8000 bytes, over the limit of 4096"):
                await sub.get(timeout=5)
    finally:
        await server.stop()
