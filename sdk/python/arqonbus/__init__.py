"""ArqonBus Python SDK.

    import asyncio, arqonbus

    async def main():
        async with arqonbus.Bus.connect("tcp://127.0.0.1:4720", name="notebook") as bus:
            async with bus.subscribe("lab", "rig.*.temp") as sub:
                await bus.publish("lab", "rig.a.temp", "21.5", ack=True)
                print(await sub.get(timeout=5))

    asyncio.run(main())

The asyncio client is `Bus` (`arqonbus.client`); the blocking facade for notebooks is
`arqonbus.sync.connect` / `BlockingBus`; exceptions are in `arqonbus.errors`, the protobuf
messages in `arqonbus.proto`; delta-only topics are rebuilt by `arqonbus.delta` and reality
parameters followed by `arqonbus.params`. See README.md.
"""

from arqonbus.causal import CausalContext
from arqonbus.client import ALL, Bus, History, HistoryResult, PingResult, Start, Subscription, connect
from arqonbus.errors import *  # noqa: F401,F403 - the exception classes are part of the API
from arqonbus.errors import __all__ as _errors_all
from arqonbus.circuits import circuit_message, descriptor_set
from arqonbus.jobs import Job, new_reply_topic
from arqonbus.params import LiveParams, ParamInfo, ParamValues
from arqonbus.proto import NvmJob, NvmJobResult, OperatorManifest, Param, SchemaRef, SpectralMetadata
from arqonbus.pulse import Pulse, PulseDelta
from arqonbus.sync import BlockingBus
from arqonbus.url import DEFAULT_URL, parse_url

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "BlockingBus",
    "Bus",
    "CausalContext",
    "DEFAULT_URL",
    "History",
    "HistoryResult",
    "Job",
    "LiveParams",
    "NvmJob",
    "NvmJobResult",
    "OperatorManifest",
    "Param",
    "ParamInfo",
    "ParamValues",
    "PingResult",
    "Pulse",
    "PulseDelta",
    "SchemaRef",
    "SpectralMetadata",
    "Start",
    "Subscription",
    "circuit_message",
    "connect",
    "descriptor_set",
    "new_reply_topic",
    "parse_url",
    *_errors_all,
]
