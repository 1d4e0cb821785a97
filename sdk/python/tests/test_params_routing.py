"""Reality parameters on the SDK's side, against tests/fake_server.py (which follows the bus's
rules for them): values of each kind, the live mapping and its versions, callbacks, and the
routing of `sys.param.*` pulses that reach a subscription beyond its pattern."""

from __future__ import annotations

import asyncio
import collections.abc
from typing import List, Tuple

import pytest
from conftest import aio, read_all
from fake_server import PARAM_TYPE_URL, FakeServer

import arqonbus
from arqonbus import Bus, ParamValues
from arqonbus.params import param_message, param_value
from arqonbus.proto import ArqonMessage, Deliver, Param, ServerFrame
from arqonbus.topics import matches

TOKEN = "controller-token"
R = "lab-1"


async def fake() -> Tuple[FakeServer, str]:
    server = FakeServer(controller_tokens=[TOKEN])
    port = await server.start()
    return server, f"tcp://127.0.0.1:{port}"


async def settle(*buses: Bus) -> None:
    """Every frame the fake server sent before now has been read by each bus."""
    for bus in buses:
        await bus.ping()


def test_topic_patterns_match_as_the_server_matches_them():
    cases = [
        ("sys.param.>", "sys.param.gain", True),
        ("sys.param.>", "sys.param.lab.gain", True),
        ("sys.param.>", "sys.param", False),
        ("sys.*.gain", "sys.param.gain", True),
        ("sys.*", "sys.param.gain", False),
        ("*.>", "sys.param.gain", True),
        ("rig.>", "sys.param.gain", False),
        ("sys.param.gain", "sys.param.gain", True),
        ("sys.param.gain", "sys.param.gains", False),
        ("sys.param.gain.x", "sys.param.gain", False),
    ]
    for pattern, topic, expected in cases:
        assert matches(pattern, topic) is expected, (pattern, topic)


def test_values_travel_as_number_text_or_binary_and_bools_are_refused():
    assert param_message("gain", 2).number == 2.0 and param_message("gain", 2).WhichOneof("value") == "number"
    assert param_message("gain", 0.5).number == 0.5
    assert param_message("mode", "fast").text == "fast"
    assert param_message("mask", b"\x00\xff").binary == b"\x00\xff"
    assert param_message("mask", bytearray(b"\x01")).binary == b"\x01"
    with pytest.raises(TypeError, match="bool"):
        param_message("on", True)
    with pytest.raises(TypeError, match="list"):
        param_message("gain", [1.0])
    with pytest.raises(ValueError):
        param_message("", 1.0)
    assert param_value(Param(name="x")) is None
    assert param_value(Param(name="x", text="t")) == "t"


@aio(timeout=20)
async def test_a_controller_sets_values_of_each_kind_and_get_params_returns_them_with_versions():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN, name="ctl") as ctl, Bus.connect(url) as other:
            ack1 = await ctl.set_param(R, "gain", 2)
            ack2 = await ctl.set_param(R, "mode", "fast")
            ack3 = await ctl.set_param(R, "lab.mask", b"\x01\x02")
            ack4 = await ctl.set_param(R, "gain", 0.25)
            assert [a.sequence for a in (ack1, ack2, ack3, ack4)] == [1, 2, 3, 4]
            values = await other.get_params(R)
            assert isinstance(values, ParamValues) and values.reality == R
            assert values == {"gain": 0.25, "mode": "fast", "lab.mask": b"\x01\x02"}
            assert (values.version("gain"), values.version("mode")) == (2, 1)
            assert values.info["gain"].sequence == 4 and values.info["gain"].set_by.startswith("fake-")
            assert await other.get_params("elsewhere") == {}
            with pytest.raises(arqonbus.PermissionDenied):
                await other.set_param(R, "gain", 1.0)
            with pytest.raises(TypeError):
                await ctl.set_param(R, "gain", False)
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_broadcast_beyond_the_pattern_updates_params_and_is_not_yielded():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            rig = await bus.subscribe(R, "rig.>")
            live = await bus.params(R)
            assert isinstance(live, collections.abc.Mapping) and dict(live) == {}
            with pytest.raises(TypeError):
                live["gain"] = 1.0  # type: ignore[index]  # read-only
            # The bus has a subscription in R: it opens none of its own.
            assert [s.pattern for s in bus._subscriptions.values()] == ["rig.>"]
            await ctl.set_param(R, "gain", 1.5)
            await ctl.publish(R, "rig.a.temp", b"21", ack=True)
            await settle(bus)
            assert live["gain"] == 1.5 and live.version("gain") == 1
            assert [p.topic for p in await read_all(rig, idle=0.2)] == ["rig.a.temp"]
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_matching_subscription_yields_the_parameter_pulse_and_params_follow_it_too():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            everything = await bus.subscribe(R, arqonbus.ALL)
            rig = await bus.subscribe(R, "rig.>")
            live = await bus.params(R)
            ack = await ctl.set_param(R, "gain", 3.0)
            await settle(bus)
            got = await read_all(everything, idle=0.2)
            assert [(p.topic, p.sequence) for p in got] == [("sys.param.gain", ack.sequence)]
            assert got[0].unpack(Param).version == 1 and got[0].unpack(Param).number == 3.0
            assert await read_all(rig, idle=0.1) == []
            assert live["gain"] == 3.0
            assert everything.last_sequence == ack.sequence
    finally:
        await server.stop()


@aio(timeout=20)
async def test_without_a_subscription_in_the_reality_params_opens_its_own_and_nobody_sees_it():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            await ctl.set_param(R, "gain", 1.0)
            other = await bus.subscribe("elsewhere", "rig.>")
            live = await bus.params(R)
            assert live["gain"] == 1.0  # seeded by ParamsGet (and the snapshot after Subscribed)
            feeds = [s for s in bus._subscriptions.values() if s.reality == R]
            assert [(s.pattern, s._params_only) for s in feeds] == [("sys.param.>", True)]
            assert await bus.params(R) is live
            for value in (2.0, 3.0):
                await ctl.set_param(R, "gain", value)
            await settle(bus)
            assert (live["gain"], live.version("gain")) == (3.0, 3)
            assert not feeds[0]._queue  # what the bus's own subscription gets goes nowhere else
            assert await read_all(other, idle=0.1) == []
    finally:
        await server.stop()


@aio(timeout=20)
async def test_a_late_subscription_gets_the_current_values_first_but_only_a_matching_one_yields_them():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            await ctl.set_param(R, "gain", 1.0)
            await ctl.set_param(R, "mode", "slow")
            await ctl.set_param(R, "gain", 2.0)
            params_sub = await bus.subscribe(R, "sys.param.>")
            rig = await bus.subscribe(R, "rig.>")
            await ctl.publish(R, "rig.a.temp", b"1", ack=True)
            await settle(bus)
            snapshot = await read_all(params_sub, idle=0.2)
            assert sorted((p.topic, p.sequence) for p in snapshot) == [("sys.param.gain", 3), ("sys.param.mode", 2)]
            # A snapshot pulse, older than what the subscription saw, does not move it back.
            assert [p.topic for p in await read_all(rig, idle=0.1)] == ["rig.a.temp"]
            assert rig.last_sequence == 4
    finally:
        await server.stop()


def param_pulse(name: str, value: float, version: int, sequence: int) -> ArqonMessage:
    message = ArqonMessage(topic=f"sys.param.{name}", reality_id=R, sequence=sequence)
    message.payload.type_url = PARAM_TYPE_URL
    message.payload.value = Param(name=name, number=value, version=version, set_by="x").SerializeToString()
    return message


@aio(timeout=20)
async def test_older_versions_are_ignored_and_callbacks_see_each_version_once():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            await ctl.set_param(R, "gain", 1.0)
            seen: List[Tuple[str, object, int]] = []
            async_seen: List[int] = []

            async def slow(name, value, version):
                await asyncio.sleep(0)
                async_seen.append(version)

            sub = await bus.subscribe(R, "rig.>")  # gets the snapshot: version 1
            remove = bus.on_param(R, lambda *args: seen.append(args))
            bus.on_param(R, slow)
            live = await bus.params(R)  # ParamsGet: version 1 again
            await ctl.set_param(R, "gain", 2.0)
            await settle(bus)
            conn = next(c for c in server.connections if not c.controller)
            conn.send(ServerFrame(deliver=Deliver(subscription_id=sub.id, message=param_pulse("gain", 9.0, 1, 1))))
            conn.send(ServerFrame(deliver=Deliver(subscription_id=sub.id, message=param_pulse("gain", 2.0, 2, 4))))
            await settle(bus)
            assert seen == [("gain", 1.0, 1), ("gain", 2.0, 2)]
            assert (live["gain"], live.version("gain")) == (2.0, 2)
            remove()
            await ctl.set_param(R, "gain", 3.0)
            await settle(bus)
            await asyncio.sleep(0.05)
            assert seen[-1] == ("gain", 2.0, 2) and async_seen == [1, 2, 3]
            assert live.info("gain").set_by.startswith("fake-")
    finally:
        await server.stop()


@aio(timeout=20)
async def test_when_the_last_subscription_in_the_reality_ends_params_open_their_own():
    server, url = await fake()
    try:
        async with Bus.connect(url, token=TOKEN) as ctl, Bus.connect(url) as bus:
            rig = await bus.subscribe(R, "rig.>")
            live = await bus.params(R)
            await rig.unsubscribe()
            for _ in range(50):
                if any(s.pattern == "sys.param.>" for s in bus._subscriptions.values()):
                    break
                await asyncio.sleep(0.01)
            await settle(bus)
            await ctl.set_param(R, "gain", 4.0)
            await settle(bus)
            assert live["gain"] == 4.0
    finally:
        await server.stop()


@aio(timeout=30)
async def test_after_a_server_restart_the_values_of_the_new_server_win_whatever_their_versions():
    server, url = await fake()
    port = int(url.rsplit(":", 1)[1])
    try:
        async with Bus.connect(url, token=TOKEN, reconnect_timeout=10) as ctl, Bus.connect(url) as bus:
            for value in (1.0, 2.0, 3.0):
                await ctl.set_param(R, "gain", value)
            await ctl.set_param(R, "mode", "old")
            live = await bus.params(R)
            assert live.version("gain") == 3 and "mode" in live
            await server.stop()
            server = FakeServer(controller_tokens=[TOKEN])  # an ephemeral reality forgets all
            await server.start(port=port)
            # Set again on the new server before the clients are back: version 1 there, below
            # the 3 the bus holds, and it must win (by the snapshot and the ParamsGet after the
            # reconnection); "mode" the new server does not have.
            server.put_param(R, Param(name="gain", number=7.0), "restarted")
            for _ in range(200):
                if ctl.connected and bus.connected and live.get("gain") == 7.0 and "mode" not in live:
                    break
                await asyncio.sleep(0.05)
            assert (live["gain"], live.version("gain"), live.info("gain").set_by) == (7.0, 1, "restarted")
            assert "mode" not in live
            await ctl.set_param(R, "gain", 8.0)
            await settle(bus)
            assert (live["gain"], live.version("gain")) == (8.0, 2)
    finally:
        await server.stop()
