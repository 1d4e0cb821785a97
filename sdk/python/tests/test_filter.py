"""Spectral filters (`subscribe(filter=...)`) against a real `arqonbus serve`."""

from __future__ import annotations

import random

import pytest
from conftest import aio

import arqonbus
import arqonbus.sync
from arqonbus import Bus

PRODUCERS = ["omega-7", "omega-8"]


def random_pulses(n: int, seed: int):
    rng = random.Random(seed)
    return [
        {
            "index": i,
            "producer": rng.choice(PRODUCERS),
            "coherence": rng.randint(0, 20) / 20,
            "criticality": rng.randint(0, 20) / 40,
            "eigenvalues": [rng.randint(0, 12) / 4 for _ in range(rng.randint(0, 4))],
        }
        for i in range(n)
    ]


async def publish_all(bus: Bus, reality: str, pulses) -> None:
    for p in pulses:
        spectral = {k: p[k] for k in ("coherence", "criticality", "eigenvalues")}
        await bus.publish(
            reality,
            "rig.a.spectra",
            str(p["index"]).encode(),
            spectral=spectral,
            producer_id=p["producer"],
            ack=p is pulses[-1],
        )


async def indexes(sub, n: int):
    return [int((await sub.get(timeout=5)).value) for _ in range(n)]


async def nothing_more(sub, wait: float = 0.3) -> None:
    with pytest.raises(arqonbus.ArqonTimeout):
        extra = await sub.get(timeout=wait)
        pytest.fail(f"unexpected pulse {extra!r}")


@aio()
async def test_subscribe_filter_delivers_exactly_the_admitted_pulses(url, reality):
    pulses = random_pulses(300, seed=11)
    cases = [
        ("coherence >= 0.9 && criticality < 0.1", lambda p: p["coherence"] >= 0.9 and p["criticality"] < 0.1),
        ("eigenvalues[0] > 1.5", lambda p: bool(p["eigenvalues"]) and p["eigenvalues"][0] > 1.5),
        ('len(eigenvalues) >= 3 || producer == "omega-7"', lambda p: len(p["eigenvalues"]) >= 3 or p["producer"] == "omega-7"),
        (None, lambda p: True),
    ]
    async with Bus.connect(url) as pub, Bus.connect(url) as subc:
        subs = [await subc.subscribe(reality, "rig.>", filter=f) for f, _ in cases]
        await publish_all(pub, reality, pulses)
        for sub, (text, rule) in zip(subs, cases):
            expected = [p["index"] for p in pulses if rule(p)]
            assert 0 < len(expected) <= len(pulses), text
            assert await indexes(sub, len(expected)) == expected, text
            await nothing_more(sub)
            assert sub.filter == (text or "")


@aio()
async def test_a_bad_filter_raises_invalid_request_naming_the_byte(url, reality):
    async with Bus.connect(url) as bus:
        with pytest.raises(arqonbus.InvalidRequest, match="at byte 13"):
            await bus.subscribe(reality, ">", filter="coherence >= ")
        with pytest.raises(arqonbus.InvalidRequest, match="at byte 9"):
            await bus.subscribe(reality, ">", filter='producer < "x"')
        # The connection is still usable.
        sub = await bus.subscribe(reality, ">", filter="coherence > 0.5")
        await bus.publish(reality, "a.b", b"low", spectral={"coherence": 0.25}, ack=True)
        await bus.publish(reality, "a.b", b"high", spectral={"coherence": 0.75}, ack=True)
        assert (await sub.get(timeout=5)).value == b"high"


def test_blocking_subscribe_takes_a_filter(url, reality):
    with arqonbus.sync.connect(url) as bus:
        sub = bus.subscribe(reality, "a.*", filter="criticality < 0.1", timeout=5)
        bus.publish(reality, "a.b", b"hot", spectral={"criticality": 0.5}, ack=True)
        bus.publish(reality, "a.b", b"calm", spectral={"criticality": 0.05}, ack=True)
        assert sub.get().value == b"calm"
        with pytest.raises(arqonbus.InvalidRequest, match="at byte 0"):
            bus.subscribe(reality, "a.*", filter="coherenc > 1")
