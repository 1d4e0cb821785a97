"""Publish and subscribe against a real `arqonbus serve`."""

from __future__ import annotations

import asyncio

import pytest
from conftest import aio

import arqonbus
from arqonbus import Bus, NvmJob, SpectralMetadata, Start
from arqonbus.proto import Welcome


async def drain(sub, n: int, timeout: float = 5.0):
    return [await sub.get(timeout=timeout) for _ in range(n)]


async def nothing_more(sub, wait: float = 0.3) -> None:
    with pytest.raises(arqonbus.ArqonTimeout):
        extra = await sub.get(timeout=wait)
        pytest.fail(f"unexpected pulse {extra!r}")


@aio()
async def test_connect_handshake_and_ping(url):
    async with Bus.connect(url, name="pytest-handshake") as bus:
        assert isinstance(bus.welcome, Welcome)
        assert bus.welcome.protocol_version == 1
        assert bus.welcome.session_id
        assert bus.max_frame_bytes > 0
        pong = await bus.ping()
        assert pong.rtt_seconds < 5 and pong.server_time_unix_nanos > 1_600_000_000 * 10**9
    assert not bus.connected


@aio()
async def test_connecting_to_a_closed_port_raises_connection_lost():
    from conftest import free_port

    with pytest.raises(arqonbus.ConnectionLost):
        await Bus.connect(f"tcp://127.0.0.1:{free_port()}", connect_timeout=3)


@aio()
async def test_publish_then_subscribe_delivers_matching_pulses_with_wildcards(url, reality):
    async with Bus.connect(url) as pub, Bus.connect(url) as subc:
        star = await subc.subscribe(reality, "lab.*.temp")
        rest = await subc.subscribe(reality, "lab.>")
        exact = await subc.subscribe(reality, "lab.rig1.temp")
        topics = ["lab.rig1.temp", "lab.rig2.temp", "lab.rig1.sensor.temp", "lab.rig1", "other.rig1.temp"]
        for t in topics:
            await pub.publish(reality, t, t.encode(), ack=True)
        got_star = [p.topic for p in await drain(star, 2)]
        got_rest = [p.topic for p in await drain(rest, 4)]
        got_exact = [p.topic for p in await drain(exact, 1)]
        assert got_star == ["lab.rig1.temp", "lab.rig2.temp"]
        assert got_rest == ["lab.rig1.temp", "lab.rig2.temp", "lab.rig1.sensor.temp", "lab.rig1"]
        assert got_exact == ["lab.rig1.temp"]
        for sub in (star, rest, exact):
            await nothing_more(sub)


@aio()
async def test_gt_needs_at_least_one_more_segment(url, reality):
    async with Bus.connect(url) as bus:
        async with bus.subscribe(reality, "lab.>") as sub:
            await bus.publish(reality, "lab.x", b"1", ack=True)
            await bus.publish(reality, "labx.y", b"2", ack=True)
            assert (await sub.get(timeout=5)).topic == "lab.x"
            await nothing_more(sub)


@aio()
async def test_subscriptions_are_scoped_to_their_reality(url, reality):
    async with Bus.connect(url) as bus:
        async with bus.subscribe(reality, "a.b") as sub:
            await bus.publish(reality + "-other", "a.b", b"elsewhere", ack=True)
            await bus.publish(reality, "a.b", b"here", ack=True)
            assert (await sub.get(timeout=5)).value == b"here"
            await nothing_more(sub)


@aio()
async def test_acked_publish_returns_the_stamped_sequence(url, reality):
    async with Bus.connect(url) as bus:
        first = await bus.publish(reality, "seq.test", b"a", ack=True)
        second = await bus.publish(reality, "seq.test", b"b", ack=True)
        assert first.reality_id == reality and first.sequence == 1
        assert second.sequence == 2
        assert first.id and first.id != second.id
        assert second.timestamp_unix_nanos >= first.timestamp_unix_nanos > 0
        assert await bus.publish(reality, "seq.test", b"c") is None


@aio(timeout=60)
async def test_delivery_is_in_sequence_order_from_next_sequence(url, reality):
    n = 2000
    async with Bus.connect(url) as pub, Bus.connect(url) as subc:
        await pub.publish(reality, "order.pre", b"before", ack=True)
        async with subc.subscribe(reality, "order.>") as sub:
            assert sub.next_sequence == 2
            for i in range(n):
                await pub.publish(reality, "order.n", i.to_bytes(4, "big"), ack=(i == n - 1))
            pulses = await drain(sub, n, timeout=20)
        seqs = [p.sequence for p in pulses]
        assert seqs[0] == sub.next_sequence
        assert all(b == a + 1 for a, b in zip(seqs, seqs[1:])), "sequences must increase by one"
        assert [int.from_bytes(p.data, "big") for p in pulses] == list(range(n))
        stamps = [p.timestamp_unix_nanos for p in pulses]
        assert all(b >= a for a, b in zip(stamps, stamps[1:]))
        assert sub.dropped == 0


@aio(timeout=60)
async def test_pipelined_acked_publishes_from_tasks_each_get_their_own_ack(url, reality):
    async with Bus.connect(url) as bus:
        acks = await asyncio.gather(*(bus.publish(reality, "pipe.x", bytes([i]), ack=True) for i in range(200)))
        assert sorted(a.sequence for a in acks) == list(range(1, 201))


@aio()
async def test_payload_kinds_and_envelope_fields_round_trip(url, reality):
    async with Bus.connect(url, name="pytest-env", producer_id="producer-7") as bus:
        async with bus.subscribe(reality, "env.*") as sub:
            job = NvmJob(job_id="j1", program="rabi", energy_joules=0.25, parameters={"steps": "3"})
            await bus.publish(
                reality,
                "env.msg",
                job,
                ack=True,
                spectral={"coherence": 0.9, "criticality": 0.1, "eigenvalues": [1.0, -2.5]},
                trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                reply_to="env.reply",
            )
            await bus.publish(reality, "env.text", "héllo", ack=True)
            await bus.publish(reality, "env.bytes", b"\x00\xff", ack=True)
            packed = arqonbus.payload.pack(job)
            await bus.publish(reality, "env.any", packed, spectral=SpectralMetadata(coherence=0.5), ack=True)
            await bus.publish(reality, "env.none", ack=True)
            p_job, p_text, p_bytes, p_any, p_none = await drain(sub, 5)
        assert p_job.is_(NvmJob) and p_job.unpack(NvmJob) == job and p_job.value == job
        assert p_job.producer_id == "producer-7"
        # Who published is what the bus authenticated: this session has no token.
        assert p_job.tenant == "anonymous"
        assert p_job.subject == f"session-{bus.welcome.session_id}"
        assert p_job.spectral.coherence == pytest.approx(0.9)
        assert p_job.spectral.criticality == pytest.approx(0.1)
        assert list(p_job.spectral.eigenvalues) == [1.0, -2.5]
        assert p_job.trace_context["traceparent"].startswith("00-0af7")
        assert p_job.reply_to == "env.reply"
        assert p_job.id and p_job.timestamp_unix_nanos > 0
        assert p_text.value == "héllo" and p_bytes.value == b"\x00\xff"
        assert p_any.unpack(NvmJob) == job and p_any.spectral.coherence == pytest.approx(0.5)
        assert p_none.payload is None and p_none.spectral is None


@aio()
async def test_causal_context_is_merged_and_attached(url, reality):
    other = reality + "-b"
    async with Bus.connect(url) as alice, Bus.connect(url) as bob:
        async with bob.subscribe(other, "c.>") as on_other, alice.subscribe(reality, "c.>") as on_mine:
            for _ in range(3):
                await alice.publish(reality, "c.a", b"x", ack=True)
            assert alice.causal[reality] == 3  # from the PubAcks
            await drain(on_mine, 3)
            # Bob has seen nothing of `reality` yet; his pulse in `other` carries only itself.
            await bob.publish(other, "c.b", b"y", ack=True)
            first = await on_other.get(timeout=5)
            assert first.causal == {other: 1}
            # Alice publishes in `other`: her causal context (reality -> 3) travels with it.
            await alice.publish(other, "c.a", b"z", ack=True)
            second = await on_other.get(timeout=5)
            assert second.causal.get(reality) == 3 and second.causal.get(other) == 2
            # Bob received it, so his own next pulse depends on reality@3 too.
            assert bob.causal[reality] == 3 and bob.causal[other] == 2
            await bob.publish(other, "c.b", b"w", ack=True)
            third = await on_other.get(timeout=5)
            assert third.causal == {reality: 3, other: 3}


@aio()
async def test_subscribe_forms_and_unsubscribe(url, reality):
    async with Bus.connect(url) as bus:
        # `async for` directly: unsubscribed when the loop ends.
        async def first_two():
            out = []
            async for pulse in bus.subscribe(reality, "form.x"):
                out.append(pulse.sequence)
                if len(out) == 2:
                    break
            return out

        reader = asyncio.ensure_future(first_two())
        await asyncio.sleep(0.2)  # let it subscribe
        for _ in range(2):
            await bus.publish(reality, "form.x", b"", ack=True)
        assert await asyncio.wait_for(reader, 5) == [1, 2]
        await asyncio.sleep(0.1)
        assert not bus._subscriptions, "the loop's subscription must be gone"

        sub = await bus.subscribe(reality, "form.x")
        await sub.unsubscribe()
        await bus.publish(reality, "form.x", b"", ack=True)
        with pytest.raises(StopAsyncIteration):
            await sub.get(timeout=0.5)
        # Still a healthy connection.
        await bus.ping()


@aio()
async def test_start_positions_without_history(url, reality):
    """`latest` is what realities without history support; explicit Start.latest() is the same."""
    async with Bus.connect(url) as bus:
        await bus.publish(reality, "st.a", b"old", ack=True)
        async with bus.subscribe(reality, "st.a", start=Start.latest()) as sub:
            await bus.publish(reality, "st.a", b"new", ack=True)
            assert (await sub.get(timeout=5)).value == b"new"
            await nothing_more(sub)


def test_blocking_facade(url, reality):
    from arqonbus import sync

    with sync.connect(url, name="pytest-blocking") as bus:
        assert bus.ping().rtt_seconds < 5
        with bus.subscribe(reality, "blk.>", timeout=5) as sub:
            ack = bus.publish(reality, "blk.a", "one", ack=True)
            assert ack.sequence == 1
            bus.publish(reality, "blk.b", b"two")
            it = iter(sub)
            assert next(it).value == "one"
            assert next(it).value == b"two"
            with pytest.raises(arqonbus.ArqonTimeout, match="no pulse on 'blk.>'"):
                sub.get(timeout=0.3)
        with pytest.raises(arqonbus.InvalidTopic):
            bus.publish(reality, "BAD", b"", ack=True)


def test_blocking_facade_works_inside_a_running_event_loop(url, reality):
    """Jupyter runs an asyncio loop in the kernel's thread; the facade must not need it."""
    from arqonbus import sync

    async def notebook_cell():
        assert asyncio.get_running_loop().is_running()
        with sync.connect(url) as bus:
            with bus.subscribe(reality, "nb.cell", timeout=5) as sub:
                bus.publish(reality, "nb.cell", "from a cell", ack=True)
                return sub.get().value

    assert asyncio.run(notebook_cell()) == "from a cell"
