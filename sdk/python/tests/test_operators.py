"""Hosted operators from Python (US-04): a notebook records a Kuramoto simulation run inside the
bus, retunes its coupling mid-stream with `set_operator_param`, sees the change in the outputs,
and then replays and forks the recording with `arqonbus replay` and reads the divergence report.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from arqonbus import BlockingBus, Bus, PermissionDenied
from arqonbus.proto import KuramotoState

from conftest import REPO_DIR, aio

TOKEN = "python-operator-controller-token-0123"
REALITY = "sim-notebook"


def kuramoto_wasm() -> Path:
    """The example operator, built for wasm32 (the Rust tests build it; build it here if not)."""
    target = REPO_DIR / "target" / "operator-guest"
    wasm = target / "wasm32-unknown-unknown" / "release" / "examples" / "kuramoto.wasm"
    if not wasm.is_file():
        subprocess.run(
            ["cargo", "build", "--release", "--target", "wasm32-unknown-unknown", "--examples",
             "--manifest-path", str(REPO_DIR / "operator" / "guest" / "Cargo.toml"),
             "--target-dir", str(target)],
            check=True, timeout=600,
        )
    return wasm


def config() -> str:
    return f"""
[control]
controller_tokens = ["{TOKEN}"]

[[retention]]
realities = "sim-*"
sync = "os"

[[operators]]
name = "kuramoto"
wasm_path = "{kuramoto_wasm()}"
bindings = [{{ reality_glob = "sim-*", topic_pattern = "sim.kuramoto.tick" }}]
params = {{ k_c = 1.0, oscillators = 16, seed = 3 }}
"""


def coupling(pulse) -> float:
    assert pulse.type_url.endswith("arqon.sim.v1.KuramotoState")
    return pulse.unpack(KuramotoState).coupling


@aio(timeout=90)
async def test_record_retune_replay_and_fork_from_python(server_factory, server_binary, tmp_path):
    server = server_factory(config())
    async with Bus.connect(server.url) as notebook, Bus.connect(server.url, token=TOKEN) as controller:
        states = await notebook.subscribe(REALITY, "sim.kuramoto.state")
        for _ in range(200):
            await notebook.publish(REALITY, "sim.kuramoto.tick", b"tick")
        first = [await states.get(timeout=10) for _ in range(200)]
        assert all(p.emitted_by == "kuramoto" for p in first)
        assert all(p.input_sequence == p.sequence - 1 for p in first)
        assert {coupling(p) for p in first} == {1.0}
        assert 0.0 <= first[-1].spectral.coherence <= 1.0

        with pytest.raises(PermissionDenied):
            await notebook.set_operator_param(REALITY, "kuramoto", "k_c", 0.1)
        changed_at = await controller.set_operator_param(REALITY, "kuramoto", "k_c", 2.5)
        assert changed_at == first[-1].sequence + 1

        for _ in range(200):
            await notebook.publish(REALITY, "sim.kuramoto.tick", b"tick")
        after = [await states.get(timeout=10) for _ in range(200)]
        assert after[0].sequence == changed_at + 2
        assert {coupling(p) for p in after} == {2.5}

        # A live fork with a weak coupling from sequence 101: retained, readable, and live.
        fork, last = await controller.fork(REALITY, "weak", from_sequence=101, params={"kuramoto.k_c": 0.2})
        assert fork == REALITY + "~weak"
        assert last == after[-1].sequence
        forked = await notebook.history(fork, "sim.kuramoto.state")
        recorded = await notebook.history(REALITY, "sim.kuramoto.state")
        assert [p.sequence for p in forked] == [p.sequence for p in recorded]
        assert coupling(forked[0]) == 1.0 and coupling(forked[-1]) == 0.2
        assert forked[49].spectral == recorded[49].spectral  # sequence 100: before the fork
        assert forked[50].spectral != recorded[50].spectral  # 102: the fork point's output
        live = await notebook.subscribe(fork, "sim.kuramoto.state")
        await notebook.publish(fork, "sim.kuramoto.tick", b"tick")
        assert coupling(await live.get(timeout=10)) == 0.2
    server.stop()

    data_dir = server.workdir / "arqonbus-data"
    config_path = server.workdir / "arqonbus.toml"

    def replay(*extra: str) -> dict:
        run = subprocess.run(
            [str(server_binary), "replay", "--data-dir", str(data_dir), "--reality", REALITY,
             "--config", str(config_path), "--json", *extra],
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    same = replay()
    assert same["identical"] is True
    assert same["sha256"] == same["recorded_sha256"]
    assert same["inputs"] == 401

    fork_at = 101  # an input: inputs and outputs alternate from sequence 1
    fork = replay("--fork-at", str(fork_at), "--param", "kuramoto.k_c=0.2")
    assert fork["identical"] is False
    assert fork["first_divergence"]["a_sequence"] == fork_at + 1
    assert fork == replay("--fork-at", str(fork_at), "--param", "kuramoto.k_c=0.2"), "forks are deterministic"

    # The divergence report of the reality and its live fork, from the data directory.
    run = subprocess.run(
        [str(server_binary), "diff", "--data-dir", str(data_dir), REALITY, REALITY + "~weak", "--json",
         "--svg", str(tmp_path / "coherence.svg")],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["divergences"][0]["a_sequence"] == fork_at + 1
    assert report["divergences"][0]["fields"][0]["field"] == "spectral.coherence"
    assert (tmp_path / "coherence.svg").read_text().startswith("<svg")


def test_blocking_set_operator_param(server_factory):
    server = server_factory(config())
    with BlockingBus.connect(server.url, token=TOKEN) as controller:
        seq = controller.set_operator_param(REALITY + "-b", "kuramoto", "k_c", 0.5)
        assert seq == 1
        with pytest.raises(Exception) as refused:
            controller.set_operator_param(REALITY + "-b", "no-such-operator", "k_c", 0.5)
        assert "no operator named" in str(refused.value)
