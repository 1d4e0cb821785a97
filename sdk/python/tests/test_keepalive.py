"""The server's keepalive: a session idle for half of `limits.idle_timeout_ms` gets a
`ServerFrame.ping`, which the SDK answers, so an idle but healthy `Bus` is not closed."""

from __future__ import annotations

import asyncio

from conftest import aio

from arqonbus import Bus

IDLE = "[limits]\nidle_timeout_ms = 600\n"


@aio()
async def test_an_idle_bus_answers_keepalive_pings_and_stays_open(server_factory):
    server = server_factory(IDLE)
    bus = await Bus.connect(server.url)
    try:
        conn, session = bus._conn, bus.welcome.session_id
        # Four idle limits without a request of its own: only the answers to Pings keep it.
        await asyncio.sleep(2.4)
        assert bus._conn is conn and not conn.lost, "the session was closed (and reconnected)"
        result = await bus.ping()
        assert result.rtt_seconds < 1.0
        assert bus.welcome.session_id == session
    finally:
        await bus.close()
