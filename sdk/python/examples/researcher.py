#!/usr/bin/env python3
"""The researcher's story, end to end, with the blocking facade a notebook would use.

    python examples/nvm_operator.py --reality lab &      # someone runs the rig's operator
    python examples/researcher.py --reality lab          # the researcher

1. connect (and measure a round trip);
2. follow the reality live: subscribe to every topic in it (`*.>`);
3. submit an `NvmJob` on `nvm.job.submit` and print each streamed `NvmJobResult` until the
   final one;
4. publish an observation with spectral metadata and a W3C trace context;
5. keep following the reality for `--follow-seconds`, printing every pulse seen
   (the job, its results, the observation, and anything else published there).

Exits non-zero if the job fails or times out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import arqonbus
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import arqonbus

from arqonbus import ALL, NvmJob, NvmJobResult, sync


def describe(pulse: arqonbus.Pulse) -> str:
    value = pulse.value
    if isinstance(value, NvmJobResult):
        value = f"NvmJobResult(final={value.final}, progress={value.progress:.2f})"
    elif isinstance(value, NvmJob):
        value = f"NvmJob(job_id={value.job_id!r}, program={value.program!r})"
    spectral = ""
    if pulse.spectral is not None:
        spectral = f" coherence={pulse.spectral.coherence:.2f} eigenvalues={list(pulse.spectral.eigenvalues)}"
    return f"[{pulse.reality} #{pulse.sequence}] {pulse.topic}: {value!r}{spectral} causal={pulse.causal}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ArqonBus researcher walkthrough")
    parser.add_argument("--url", default=arqonbus.DEFAULT_URL)
    parser.add_argument("--token", default=None)
    parser.add_argument("--reality", default="lab")
    parser.add_argument("--program", default="rabi-oscillation")
    parser.add_argument("--energy", type=float, default=0.5, help="energy_joules of the job")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the final result")
    parser.add_argument("--follow-seconds", type=float, default=5.0, help="how long to follow the reality live")
    parser.add_argument("--ca", default=None, help="tls:// and wss://: PEM file of the CA that signed the bus")
    parser.add_argument("--cert", default=None, help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", default=None, help="its private key, if not in --cert")
    args = parser.parse_args(argv)

    with sync.connect(args.url, token=args.token, name="researcher", ca=args.ca, cert=args.cert, key=args.key) as bus:
        ping = bus.ping()
        print(f"connected to {args.url}: session {bus.welcome.session_id}, rtt {ping.rtt_seconds * 1e3:.2f} ms")

        live = bus.subscribe(args.reality, ALL)
        print(f"following reality {args.reality!r} live from sequence {live.next_sequence}")

        job = NvmJob(program=args.program, energy_joules=args.energy, parameters={"shots": "100"})
        submitted = bus.submit(args.reality, "nvm.job.submit", job, timeout=args.timeout)
        print(f"submitted job {submitted.job_id}; results on {submitted.reply_to}")
        try:
            for pulse in submitted:
                result = pulse.unpack(NvmJobResult)
                if not result.final:
                    print(f"  progress {result.progress:.0%}")
                elif result.error:
                    print(f"  final: error: {result.error}")
                    return 1
                else:
                    report = json.loads(result.data) if result.data else {}
                    print(f"  final: {len(report.get('samples', []))} samples: {report.get('samples')}")
        except arqonbus.JobTimeout as exc:
            print(f"job timed out: {exc}", file=sys.stderr)
            return 2

        bus.publish(
            args.reality,
            "lab.observation.spectrum",
            f"observation after job {submitted.job_id}",
            spectral={"coherence": 0.93, "criticality": 0.12, "eigenvalues": [1.0, 0.5, 0.25]},
            trace_context={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            ack=True,
        )

        deadline = time.monotonic() + args.follow_seconds
        seen = 0
        with live:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pulse = live.get(timeout=remaining)
                except arqonbus.ArqonTimeout:
                    break
                seen += 1
                print("live", describe(pulse))
        print(f"followed {seen} pulses; causal context now {dict(bus.causal.snapshot())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
