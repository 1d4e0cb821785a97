"""The hand-written Publish encoding (arqonbus._wire) against the generated classes: the same
bytes where the encoding is deterministic, the same message where a map's order may differ, and
`Bus.publish` taking the generated path for everything the encoder does not cover."""

from __future__ import annotations

import itertools
import types

import pytest
from conftest import aio

from arqonbus import Bus
from arqonbus._proto.arqon.v1 import arqon_pb2 as pb
from arqonbus._wire import MAX_TEMPLATES, PublishEncoder, varint
from arqonbus.causal import CausalContext
from arqonbus.payload import BYTES_TYPE_URL, TEXT_TYPE_URL
from arqonbus.proto import NvmJob
from arqonbus.transport import StreamConnection


def reference(cid, reality, topic, pid, payload, clock, id="", reply_to="", ack=False) -> pb.ClientFrame:
    """What `Bus.publish` builds with the generated classes."""
    holder = types.SimpleNamespace(causal=CausalContext(clock))
    return Bus._publish_frame(holder, cid, reality, topic, payload, pid, id, reply_to, None, None, ack)


def encoded(encoder, cid, reality, topic, pid, payload, clock, id="", reply_to="", ack=False) -> bytes:
    if payload is None:
        type_url, value = None, b""
    elif isinstance(payload, bytes):
        type_url, value = BYTES_TYPE_URL, payload
    else:
        type_url, value = TEXT_TYPE_URL, payload.encode("utf-8")
    return encoder.encode(cid, reality, topic, pid, type_url, value, dict(clock), id, reply_to, ack)


def test_varint_matches_the_generated_encoding_at_every_width():
    assert varint(0) == b"\x00"
    for n in [1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35 + 5, 2**63, 2**64 - 1]:
        assert varint(n) == pb.Ping(nonce=n).SerializeToString()[1:], n
    with pytest.raises(ValueError):
        varint(2**64)


SIZES = [0, 1, 127, 128, 1024, 16383, 16384, 70_000, 2**21 + 3]
CIDS = [1, 127, 128, 16384, 2**21, 2**40]
STRINGS = [
    ("lab", "rig.one.temp", "py-client"),
    ("perf-0a1b2c3d", "perf.pulse", ""),
    ("réalité", "capteur.température.lu", "producteur-✓"),
    ("r" * 200, "a." + "b" * 150, "p" * 130),  # lengths past one varint byte
]


@pytest.mark.parametrize("reality,topic,pid", STRINGS)
def test_hand_encoded_publish_is_byte_for_byte_what_the_generated_classes_write(reality, topic, pid):
    encoder = PublishEncoder()
    cases = itertools.product(
        CIDS,
        [None, b"", b"x", "text ✓", *(bytes(range(256)) * (n // 256) + bytes(n % 256) for n in SIZES)],
        [{}, {reality: 17}, {"other": 2**40}],
        [("", ""), ("0190f0c2-7b7e-7d3a-9c1e-5a8b2f4e6d10", "reply.to.me")],
        [False, True],
    )
    for cid, payload, clock, (id, reply_to), ack in cases:
        want = reference(cid, reality, topic, pid, payload, clock, id, reply_to, ack).SerializeToString()
        got = encoded(encoder, cid, reality, topic, pid, payload, clock, id, reply_to, ack)
        assert got == want, (cid, payload if payload is None else len(payload), clock, id, reply_to, ack)


def test_a_causal_map_of_many_realities_parses_to_the_same_frame():
    encoder = PublishEncoder()
    clock = {f"reality-{i}": i * 1000 + 1 for i in range(40)}
    want = reference(9, "lab", "a.b", "p", b"payload", clock)
    got = pb.ClientFrame.FromString(encoded(encoder, 9, "lab", "a.b", "p", b"payload", clock))
    assert got == want
    assert dict(got.publish.message.causal) == clock


def test_the_encoder_follows_each_change_of_the_causal_map():
    encoder = PublishEncoder()
    clock = {}
    for step in range(1, 30):
        if step % 3 == 0:
            clock[f"r{step % 7}"] = step
        if step == 20:
            clock.clear()
        got = pb.ClientFrame.FromString(encoded(encoder, step, "lab", "a.b", "p", b"x", clock))
        assert dict(got.publish.message.causal) == clock, step


def test_the_template_cache_is_bounded_and_still_right_after_it_starts_again():
    encoder = PublishEncoder()
    for i in range(MAX_TEMPLATES * 2 + 5):
        topic = f"t.n{i}"
        assert (
            encoded(encoder, i + 1, "lab", topic, "p", b"x" * (i % 3), {})
            == reference(i + 1, "lab", topic, "p", b"x" * (i % 3), {}).SerializeToString()
        )
        assert len(encoder._templates) <= MAX_TEMPLATES


class _RecordingTransport:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def frames_in(stream: bytes) -> list:
    out, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos : pos + 4], "big")
        out.append(pb.ClientFrame.FromString(bytes(stream[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    return out


@aio()
async def test_bus_publish_sends_the_reference_frame_for_every_kind_of_payload_and_option():
    bus = Bus("tcp://127.0.0.1:1", name="ref-client")
    conn = StreamConnection(bus, 1 << 26)
    transport = _RecordingTransport()
    conn.connection_made(transport)
    bus._conn = conn
    bus.welcome = pb.Welcome(max_frame_bytes=1 << 22)
    bus._connected.set()
    bus.causal.observe("lab", 41)
    calls = [
        dict(payload=b"raw"),
        dict(payload="text"),
        dict(payload=None),
        dict(payload=b""),
        dict(payload=bytearray(b"ba")),
        dict(payload=memoryview(b"mv")),
        dict(payload=NvmJob(program="rabi")),
        dict(payload=b"x", spectral={"coherence": 0.5}),
        dict(payload=b"x", trace_context={"traceparent": "00-abc-def-01"}),
        dict(payload=b"x", id="my-id", reply_to="answers.here", producer_id="someone"),
        dict(payload=b"x", producer_id=""),
        dict(payload="\ud800 lone surrogate"),  # not encodable: the generated path decides
    ]
    expected = []
    for cid, call in enumerate(calls, start=1):
        call = dict(call)
        try:
            want = reference(
                cid,
                "lab",
                "a.b",
                call.pop("producer_id", "ref-client"),
                call.pop("payload"),
                {"lab": 41},
                call.pop("id", ""),
                call.pop("reply_to", ""),
            )
            if "spectral" in call:
                want.publish.message.spectral.coherence = call["spectral"]["coherence"]
            if "trace_context" in call:
                want.publish.message.trace_context.update(call["trace_context"])
            expected.append(want)
        except Exception as exc:  # what the generated classes refuse, publish refuses too
            expected.append(type(exc))
    bus._correlation_ids = itertools.count(1)
    got_errors = []
    for call in calls:
        try:
            await bus.publish("lab", "a.b", **call)
        except Exception as exc:
            got_errors.append(type(exc))
    conn.flush()
    sent = frames_in(transport.written)
    assert sent == [e for e in expected if isinstance(e, pb.ClientFrame)]
    assert got_errors == [e for e in expected if not isinstance(e, pb.ClientFrame)]
