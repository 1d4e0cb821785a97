"""Jobs: `Bus.submit` against the reference operator in examples/nvm_operator.py."""

from __future__ import annotations

import json
import re

import pytest
from conftest import aio, run_researcher

import arqonbus
from arqonbus import Bus, NvmJob, NvmJobResult


@aio(timeout=60)
async def test_job_round_trip_streams_progress_then_final(url, reality, operator):
    async with Bus.connect(url, name="pytest-researcher") as bus:
        job = NvmJob(program="rabi", energy_joules=0.5, parameters={"shots": "10"})
        submitted = bus.submit(reality, "nvm.job.submit", job, timeout=20)
        pulses = [pulse async for pulse in submitted]
        assert re.fullmatch(r"nvm\.job\.result\.[0-9a-f]{32}", submitted.reply_to)
        results = [p.unpack(NvmJobResult) for p in pulses]
        assert [r.final for r in results] == [False, False, False, True]
        assert all(r.job_id == submitted.job_id for r in results) and submitted.job_id
        progress = [r.progress for r in results]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert all(p.topic == submitted.reply_to and p.reality == reality for p in pulses)
        report = json.loads(results[-1].data)
        assert report["program"] == "rabi" and report["parameters"] == {"shots": "10"}
        assert submitted.final == results[-1] and submitted.ack.sequence >= 1
        # The results causally follow the job: the operator had seen the job pulse.
        assert all(p.causal.get(reality, 0) >= submitted.ack.sequence for p in pulses)
        # The reply subscription is gone once the final result arrived.
        assert not bus._subscriptions


@aio(timeout=60)
async def test_concurrent_jobs_do_not_mix_results(url, reality, operator):
    import asyncio

    async with Bus.connect(url) as bus:

        async def one(i: int) -> NvmJobResult:
            return await bus.submit(reality, "nvm.job.submit", NvmJob(program=f"p{i}"), timeout=20).result()

        finals = await asyncio.gather(*(one(i) for i in range(8)))
        assert [json.loads(f.data)["program"] for f in finals] == [f"p{i}" for i in range(8)]


@aio(timeout=60)
async def test_operator_reports_job_errors_in_the_final_result(url, reality, operator):
    async with Bus.connect(url) as bus:
        final = await bus.submit(reality, "nvm.job.submit", NvmJob(energy_joules=-1), timeout=20).result()
        assert final.final and "negative" in final.error


@aio(timeout=30)
async def test_job_without_operator_times_out(url, reality):
    async with Bus.connect(url) as bus:
        job = bus.submit(reality, "nvm.job.submit", NvmJob(program="nobody"), timeout=0.5)
        with pytest.raises(arqonbus.JobTimeout):
            async for _ in job:
                pass
        assert not bus._subscriptions


@aio(timeout=30)
async def test_job_to_a_bad_topic_raises_and_cleans_up(url, reality):
    async with Bus.connect(url) as bus:
        with pytest.raises(arqonbus.InvalidTopic):
            await bus.submit(reality, "NVM.Submit", NvmJob(), timeout=5)
        assert not bus._subscriptions


def test_blocking_submit(url, reality, operator):
    from arqonbus import sync

    with sync.connect(url) as bus:
        job = bus.submit(reality, "nvm.job.submit", NvmJob(program="blocking"), timeout=20)
        results = [p.unpack(NvmJobResult) for p in job]
        assert results[-1].final and len(results) == 4
        assert json.loads(job.final.data)["program"] == "blocking"


def test_researcher_script_end_to_end(url, reality, operator):
    text = run_researcher("--url", url, "--reality", reality, "--timeout", "20", "--follow-seconds", "1")
    assert "progress" in text and "final: 4 samples" in text
    live = [line for line in text.splitlines() if line.startswith("live ")]
    # The job pulse, its 4 results and the observation were all seen on the live subscription.
    assert any("nvm.job.submit" in line for line in live), text
    assert sum("nvm.job.result." in line for line in live) == 4, text
    assert any("lab.observation.spectrum" in line and "coherence=0.93" in line for line in live), text
