"""The US-02 circuit from Python: `examples/circuits/hybrid.toml` applied with the CLI, its five
stages run by the stand-in operators of `examples/circuits/stand_ins.py` (SDK sessions with
manifests), every frame through in order; a Python session of the wrong type on an edge gets
`TypeMismatch`; a stage whose manifest disagrees with the circuit is refused at connect."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from conftest import REPO_DIR, aio, python_subprocess

from arqonbus import Bus, OperatorManifest, SchemaRef
from arqonbus.errors import TypeMismatch

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
