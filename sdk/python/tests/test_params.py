"""Reality parameters against a real server: a controller sets them, every session subscribed in
the reality hears each change once whatever its patterns, a late joiner gets the current values
first, the SDK's live mapping follows, and a session that is not a controller is refused."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import List, Tuple

import pytest
from conftest import aio, read_all

import arqonbus
from arqonbus import BlockingBus, Bus, Param

TOKEN = "python-params-controller-token-0123"
CONFIG = f"""
[control]
controller_tokens = ["{TOKEN}"]
"""


@pytest.fixture
def params_server(server_factory):
    return server_factory(CONFIG)


def reality() -> str:
    return f"params-{uuid.uuid4().hex[:10]}"


async def until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.01)


@aio(timeout=60)
async def test_a_controller_sets_and_subscribers_of_any_pattern_hear_it(params_server):
    r = reality()
    url = params_server.url
    async with Bus.connect(url, token=TOKEN, name="ctl") as ctl, Bus.connect(url) as a, Bus.connect(url) as b:
        rig = await a.subscribe(r, "rig.>")  # does not match sys.param.*
        params_sub = await b.subscribe(r, "sys.param.>")
        live_a = await a.params(r)
        live_b = await b.params(r)
        ack = await ctl.set_param(r, "pump.gain", 2.5)
        assert ack.reality_id == r and ack.sequence >= 1
        pulse = await params_sub.get(timeout=10)
        assert (pulse.topic, pulse.sequence) == ("sys.param.pump.gain", ack.sequence)
        param = pulse.unpack(Param)
        assert (param.name, param.number, param.version) == ("pump.gain", 2.5, 1)
        assert param.set_by, "the bus names the controller that set it"
        await until(lambda: live_a.get("pump.gain") == 2.5 and live_b.get("pump.gain") == 2.5, what="both mappings")
        assert live_a.version("pump.gain") == live_b.version("pump.gain") == 1
        await ctl.publish(r, "rig.a.temp", b"21", ack=True)
        assert [p.topic for p in await read_all(rig, idle=0.3)] == ["rig.a.temp"], "not yielded beyond its pattern"


@aio(timeout=60)
async def test_values_of_each_kind_and_versions_per_name(params_server):
    r = reality()
    async with Bus.connect(params_server.url, token=TOKEN) as ctl, Bus.connect(params_server.url) as bus:
        assert await bus.get_params(r) == {}
        await ctl.set_param(r, "gain", 1)
        await ctl.set_param(r, "mode", "fast")
        await ctl.set_param(r, "lab.mask", b"\x00\x01\xff")
        last = await ctl.set_param(r, "gain", 0.125)
        values = await bus.get_params(r)
        assert values == {"gain": 0.125, "mode": "fast", "lab.mask": b"\x00\x01\xff"}
        assert (values.version("gain"), values.version("mode"), values.version("lab.mask")) == (2, 1, 1)
        assert values.info["gain"].sequence == last.sequence
        assert values.info["gain"].timestamp_unix_nanos > 0
        with pytest.raises(TypeError):
            await ctl.set_param(r, "flag", True)


@aio(timeout=60)
async def test_a_session_that_is_not_a_controller_is_refused(params_server):
    r = reality()
    async with Bus.connect(params_server.url) as bus:
        with pytest.raises(arqonbus.PermissionDenied):
            await bus.set_param(r, "gain", 1.0)
        assert await bus.get_params(r) == {}


@aio(timeout=60)
async def test_an_invalid_name_is_refused(params_server):
    async with Bus.connect(params_server.url, token=TOKEN) as ctl:
        with pytest.raises(arqonbus.InvalidRequest, match="Not A Name"):
            await ctl.set_param(reality(), "Not A Name", 1.0)
        with pytest.raises(arqonbus.InvalidRequest):
            await ctl.set_param(reality(), "a..b", 1.0)
        # Only the bus writes sys.param.*: publishing there directly is refused even to a controller.
        with pytest.raises(arqonbus.PermissionDenied):
            await ctl.publish(reality(), "sys.param.gain", b"1", ack=True)


@aio(timeout=60)
async def test_a_late_joiner_gets_the_current_values_first(params_server):
    r = reality()
    async with Bus.connect(params_server.url, token=TOKEN) as ctl, Bus.connect(params_server.url) as late:
        await ctl.set_param(r, "gain", 1.0)
        mode = await ctl.set_param(r, "mode", "slow")
        gain = await ctl.set_param(r, "gain", 2.0)
        sub = await late.subscribe(r, "sys.param.>")
        now = await ctl.set_param(r, "mode", "fast")
        got = [await sub.get(timeout=10) for _ in range(3)]
        first = sorted((p.topic, p.sequence, p.unpack(Param).version) for p in got[:2])
        assert first == [("sys.param.gain", gain.sequence, 2), ("sys.param.mode", mode.sequence, 1)]
        assert (got[2].topic, got[2].sequence, got[2].unpack(Param).text) == ("sys.param.mode", now.sequence, "fast")
        # A late joiner with another pattern does not see the snapshot, but its mapping has it.
        rig = await late.subscribe(r, "rig.>")
        live = await late.params(r)
        assert dict(live) == {"gain": 2.0, "mode": "fast"}
        assert await read_all(rig, idle=0.3) == []


@aio(timeout=60)
async def test_the_live_mapping_follows_without_a_subscription_of_the_program(params_server):
    r = reality()
    async with Bus.connect(params_server.url, token=TOKEN) as ctl, Bus.connect(params_server.url) as bus:
        await ctl.set_param(r, "gain", 1.0)
        seen: List[Tuple[str, object, int]] = []
        bus.on_param(r, lambda name, value, version: seen.append((name, value, version)))
        live = await bus.params(r)
        assert live["gain"] == 1.0
        for value in (2.0, 3.0, 4.0):
            await ctl.set_param(r, "gain", value)
        await ctl.set_param(r, "mode", "x")
        await until(lambda: live.get("mode") == "x", what="the live mapping")
        assert (live["gain"], live.version("gain")) == (4.0, 4)
        assert sorted(live) == ["gain", "mode"] and len(live) == 2
        assert seen == [("gain", 1.0, 1), ("gain", 2.0, 2), ("gain", 3.0, 3), ("gain", 4.0, 4), ("mode", "x", 1)]
        with pytest.raises(TypeError):
            live["gain"] = 5.0  # read-only


@aio(timeout=60)
async def test_each_change_reaches_a_connection_once_whatever_its_subscriptions(params_server):
    r = reality()
    async with Bus.connect(params_server.url, token=TOKEN) as ctl, Bus.connect(params_server.url) as bus:
        subs = [await bus.subscribe(r, p) for p in ("rig.>", "lab.>", "sys.param.>", "*.>")]
        heard: List[Tuple[int, int]] = []
        original = bus._on_param_pulse

        def counting(sub, message):
            heard.append((sub.id if sub else 0, message.sequence))
            original(sub, message)

        bus._on_param_pulse = counting
        acks = [await ctl.set_param(r, "gain", float(i)) for i in range(3)]
        await until(lambda: len(heard) >= 3, what="three deliveries")
        await bus.ping()
        await asyncio.sleep(0.2)
        assert [s for _, s in heard] == [a.sequence for a in acks], "once per connection"
        assert {i for i, _ in heard} <= {subs[2].id, subs[3].id}, "to a subscription whose pattern matches"
        yielded = [len(await read_all(s, idle=0.2)) for s in subs]
        assert yielded[:2] == [0, 0] and sum(yielded[2:]) == 3


def test_the_blocking_facade(params_server):
    r = reality()
    with BlockingBus.connect(params_server.url, token=TOKEN) as ctl, BlockingBus.connect(params_server.url) as bus:
        ack = ctl.set_param(r, "gain", 0.5)
        assert ack.sequence >= 1
        assert bus.get_params(r) == {"gain": 0.5}
        changed = threading.Event()
        versions: List[int] = []

        def on_change(name, value, version):
            versions.append(version)
            if version == 2:
                changed.set()

        bus.on_param(r, on_change)
        live = bus.params(r)
        ctl.set_param(r, "gain", 0.75)
        assert changed.wait(10)
        assert live["gain"] == 0.75 and live.version("gain") == 2 and versions == [1, 2]
        with pytest.raises(arqonbus.PermissionDenied):
            bus.set_param(r, "gain", 1.0)


@aio(timeout=90)
async def test_the_live_mapping_follows_a_server_restart_that_forgot_the_parameters(params_server):
    r = reality()
    url = params_server.url
    async with Bus.connect(url, token=TOKEN, reconnect_timeout=30) as ctl, Bus.connect(
        url, reconnect_timeout=30
    ) as bus:
        rig = await bus.subscribe(r, "rig.>")
        live = await bus.params(r)
        for value in (1.0, 2.0, 3.0):
            await ctl.set_param(r, "gain", value)
        await ctl.set_param(r, "mode", "old")
        await until(lambda: live.get("mode") == "old", what="the values before the restart")
        assert live.version("gain") == 3

        await asyncio.to_thread(params_server.stop)  # an ephemeral reality: its parameters go too
        await until(lambda: not bus.connected, timeout=20, what="the disconnect noticed")
        await asyncio.to_thread(params_server.start)
        await until(lambda: bus.connected and ctl.connected, timeout=30, what="both reconnected")
        await until(lambda: "mode" not in live, timeout=10, what="the forgotten parameter dropped")
        ack = await ctl.set_param(r, "gain", 7.0)  # version 1 on the new server, below the 3 held
        await until(lambda: live.get("gain") == 7.0, what="the new server's value")
        assert live.version("gain") == 1 and live.info("gain").sequence == ack.sequence
        assert rig.resubscribed >= 1 and await read_all(rig, idle=0.2) == []
