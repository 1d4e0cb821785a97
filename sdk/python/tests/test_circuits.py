"""The US-02 circuit from Python: `examples/circuits/hybrid.toml` applied with the CLI, its five
stages run by the stand-in operators of `examples/circuits/stand_ins.py` (SDK sessions with
manifests), every frame through in order; a Python session of the wrong type on an edge gets
`TypeMismatch`; a stage whose manifest disagrees with the circuit is refused at connect. Circuits
applied and removed from the SDK; strict manifests whose payloads must decode as their type."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from conftest import REPO_DIR, aio, python_subprocess

from arqonbus import Bus, OperatorManifest, SchemaRef, SpectralMetadata, circuit_message, descriptor_set
from arqonbus.errors import InvalidRequest, PermissionDenied, TypeMismatch

from google.protobuf.any_pb2 import Any

TOKEN = "python-circuit-controller-token-012"
HYBRID = REPO_DIR / "examples" / "circuits" / "hybrid.toml"
STAND_INS = REPO_DIR / "examples" / "circuits" / "stand_ins.py"


@pytest.fixture
def circuit_server(server_factory, server_binary):
    proc = server_factory(f'[control]\ncontroller_tokens = ["{TOKEN}"]\n')
    address = proc.url.removeprefix("tcp://")
    applied = subprocess.run(
        [str(server_binary), "circuit", "--server", address, "--token", TOKEN, "apply", str(HYBRID)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert applied.returncode == 0, applied.stderr
    return proc


def test_the_stand_ins_carry_every_frame_through_five_stages(circuit_server):
    proc = python_subprocess(
        STAND_INS, str(HYBRID), "--url", circuit_server.url, "--frames", "300", "--rate", "1000",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    out, _ = proc.communicate(timeout=90)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "300 of 300 frames through 5 stages" in text, text


@aio(timeout=30)
async def test_wrong_types_are_refused_at_the_hop_and_at_connect(circuit_server):
    url = circuit_server.url
    async with Bus.connect(url) as rogue:
        with pytest.raises(TypeMismatch) as refused:
            bad = Any(type_url="type.googleapis.com/arqon.demo.Audio", value=b"x")
            await rogue.publish("lab-audio", "audio.bowl.modes", bad, ack=True)
        assert "bowlnet -> features" in str(refused.value)
        # Elsewhere the topic is not an edge.
        await rogue.publish(f"other-{uuid.uuid4().hex[:6]}", "audio.bowl.modes", bad, ack=True)
    switched = OperatorManifest(
        name="features",
        input_schemas=[SchemaRef(topic_pattern="audio.bowl.modes", type_url="type.googleapis.com/arqon.demo.BowlModes")],
        output_schemas=[SchemaRef(topic_pattern="audio.features.vector", type_url="type.googleapis.com/arqon.demo.FeaturesV2")],
    )
    with pytest.raises(TypeMismatch) as at_hello:
        async with Bus.connect(url, manifest=switched, reconnect=False):
            pass
    assert "stage `features`" in str(at_hello.value)


@aio(timeout=30)
async def test_a_circuit_applied_from_the_sdk_is_checked_at_apply_and_at_the_hop(server_factory):
    proc = server_factory(f'[control]\ncontroller_tokens = ["{TOKEN}"]\n')
    reality = f"lab-sdk-{uuid.uuid4().hex[:6]}"
    x, y = "type.googleapis.com/lab.X", "type.googleapis.com/lab.Y"
    spec = {
        "name": "pair",
        "reality": reality,
        "stages": [
            {"name": "a", "operator": "pa", "output": {"topic": "lab.a.out", "type": x}},
            {"name": "b", "operator": "pb", "input": {"topic": "lab.a.out", "type": x}},
        ],
    }
    broken = {**spec, "stages": [spec["stages"][0], {**spec["stages"][1], "input": {"topic": "lab.a.out", "type": y}}]}
    async with Bus.connect(proc.url, token=TOKEN) as ctl, Bus.connect(proc.url) as rogue:
        with pytest.raises(InvalidRequest) as refused:
            await ctl.apply_circuit(broken)
        assert "edge `lab.a.out` (a -> b)" in str(refused.value) and "lab.Y" in str(refused.value)
        with pytest.raises(PermissionDenied):
            await rogue.apply_circuit(spec)
        with pytest.raises(ValueError):
            circuit_message({**spec, "stages": [{"name": "a", "operator": "pa", "output": {"topic": "t"}}]})
        ack = await ctl.apply_circuit(spec)
        assert ack.sequence >= 0
        with pytest.raises(TypeMismatch) as at_hop:
            await rogue.publish(reality, "lab.a.out", Any(type_url=y, value=b"v"), ack=True)
        assert "a -> b" in str(at_hop.value)
        await rogue.publish(reality, "lab.a.out", Any(type_url=x, value=b"v"), ack=True)
        # The same circuit as TOML text, under another name, goes in too.
        toml = HYBRID.read_text()
        assert (await ctl.apply_circuit(toml)) is not None
        await ctl.remove_circuit("pair")
        await rogue.publish(reality, "lab.a.out", Any(type_url=y, value=b"v"), ack=True)


@aio(timeout=30)
async def test_strict_manifests_must_decode_as_their_declared_type(url):
    spectral = "type.googleapis.com/arqon.v1.SpectralMetadata"
    manifest = OperatorManifest(
        name="strict-op",
        output_schemas=[SchemaRef(topic_pattern="lab.strict.*", type_url=spectral)],
        descriptor_set=descriptor_set(SpectralMetadata),
    )
    reality = f"lab-strict-{uuid.uuid4().hex[:6]}"
    async with Bus.connect(url, manifest=manifest, reconnect=False) as op:
        good = SpectralMetadata(coherence=0.5, eigenvalues=[1.0, 2.0])
        await op.publish(reality, "lab.strict.out", good, ack=True)
        for value, why in [
            (b"\xff\xff\xff", "does not decode"),
            # A field (number 99) SpectralMetadata does not declare.
            (good.SerializeToString() + b"\x98\x06\x01", "field number 99 is not a field of `arqon.v1.SpectralMetadata`"),
        ]:
            with pytest.raises(TypeMismatch) as refused:
                await op.publish(reality, "lab.strict.out", Any(type_url=spectral, value=value), ack=True)
            assert why in str(refused.value), str(refused.value)
        # Uncovered topics are not decoded.
        await op.publish(reality, "lab.other.out", Any(type_url=spectral, value=b"\xff"), ack=True)
    missing = OperatorManifest(
        name="strict-op",
        output_schemas=[SchemaRef(topic_pattern="lab.strict.*", type_url="type.googleapis.com/lab.Nope")],
        descriptor_set=descriptor_set(SpectralMetadata),
    )
    with pytest.raises(InvalidRequest) as at_hello:
        async with Bus.connect(url, manifest=missing, reconnect=False):
            pass
    assert "no message `lab.Nope`" in str(at_hello.value)
