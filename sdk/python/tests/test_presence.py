"""Presence from Python against a real server: `bus.presence(reality)` lists the sessions
subscribed there (with their name, manifest and patterns), `presence_changes` follows joins and
leaves, and a process killed with SIGKILL is announced as gone."""

from __future__ import annotations

import signal
import subprocess
import uuid

import pytest
from conftest import aio, python_subprocess

from arqonbus import BlockingBus, Bus, OperatorManifest
from arqonbus.proto import PresenceChange

SUBSCRIBER = """
import asyncio, sys
from arqonbus import Bus

async def main(url, reality):
    async with Bus.connect(url, name="doomed") as bus:
        await bus.subscribe(reality, "x.>")
        print("ready", flush=True)
        await asyncio.sleep(60)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def next_change(sub, timeout: float = 10.0) -> PresenceChange:
    pulse = await sub.get(timeout=timeout)
    assert pulse.topic == "sys.presence.changes"
    return pulse.unpack(PresenceChange)


@pytest.fixture
def announcing_server(server_factory):
    return server_factory('[presence]\nannounce = ["presence-*"]\n')


@aio(timeout=60)
async def test_presence_lists_and_follows_sessions(announcing_server, tmp_path):
    server = announcing_server
    reality = f"presence-{uuid.uuid4().hex[:10]}"
    async with Bus.connect(server.url, name="watcher") as watcher:
        changes = await watcher.presence_changes(reality)
        me = await next_change(changes)
        assert [e.client_name for e in me.present] == ["watcher"]
        manifest = OperatorManifest(name="bowlnet", capabilities=["audio.features"])
        async with Bus.connect(server.url, name="op", manifest=manifest) as op:
            await op.subscribe(reality, "audio.>")
            joined = await next_change(changes)
            entry = joined.present[0]
            assert (entry.client_name, entry.manifest_name, list(entry.patterns)) == ("op", "bowlnet", ["audio.>"])
            listed = await watcher.presence(reality)
            assert sorted(e.client_name for e in listed) == ["op", "watcher"]
        left = await next_change(changes)
        assert list(left.left) == [entry.session_id]

        script = tmp_path / "doomed.py"
        script.write_text(SUBSCRIBER)
        proc = python_subprocess(script, server.url, reality, stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            joined = await next_change(changes)
            doomed = joined.present[0].session_id
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            left = await next_change(changes, timeout=5)
            assert list(left.left) == [doomed]
        finally:
            if proc.poll() is None:
                proc.kill()

    async with Bus.connect(server.url) as bus:
        assert await bus.presence(reality) == [], "everyone left"


def test_presence_from_the_blocking_facade(server):
    reality = f"presence-{uuid.uuid4().hex[:10]}"
    with BlockingBus.connect(server.url, name="notebook") as bus:
        assert bus.presence(reality) == []
        bus.subscribe(reality, "lab.>")
        assert [e.client_name for e in bus.presence(reality)] == ["notebook"]
