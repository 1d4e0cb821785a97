"""tls://, ws:// and wss:// against a real server listening on all four transports.

The same scenario (wildcard subscription, acked and unacked publishes, order, history of a
retained reality, ping, causal context, close) runs on each transport; pulses cross from one
transport to another; reconnection after a server restart works on each; and what fails on
the way in (an untrusted server certificate, a missing or unknown client certificate under
mTLS, a refused WebSocket upgrade, the wrong port) raises `ConnectFailed` saying so. The CA and
certificates are made for the session by `trustme` (`tls_files` in conftest.py).
"""

from __future__ import annotations

import asyncio
import ssl
import uuid

import pytest
from conftest import ServerProcess, aio, read_all

import arqonbus
import arqonbus.sync
from arqonbus import Bus, ConnectFailed, ConnectionLost

RETAINED = """
[[retention]]
realities = "kept-*"
sync = "os"
"""

SCHEMES = ["tcp", "tls", "ws", "wss"]


@pytest.fixture(scope="module")
def transport_server(server_binary, tls_files, tmp_path_factory):
    """TCP, TLS, WebSocket and secure WebSocket on one server; client certificates optional."""
    folder = tmp_path_factory.mktemp("transports")
    proc = ServerProcess(server_binary, folder / "arqonbus.log", config=RETAINED, tls=tls_files, ws=True).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mtls_server(server_binary, tls_files, tmp_path_factory):
    """TLS and secure WebSocket with a client certificate required (mTLS)."""
    folder = tmp_path_factory.mktemp("mtls")
    proc = ServerProcess(server_binary, folder / "arqonbus.log", tls=tls_files, require_client_cert=True).start()
    yield proc
    proc.stop()


def tls_options(scheme: str, tls_files, **extra):
    """The CA to trust for the encrypted schemes; nothing for the others."""
    return {"ca": tls_files.ca, **extra} if scheme in ("tls", "wss") else {}


@pytest.mark.parametrize("scheme", SCHEMES)
@aio(timeout=30)
async def test_the_same_session_works_on_every_transport(transport_server, tls_files, scheme):
    url = transport_server.url_for(scheme)
    reality = f"kept-{scheme}-{uuid.uuid4().hex[:8]}"
    big = bytes(range(256)) * 2048  # 512 KiB: many TCP segments, TLS records, one WS message
    async with Bus.connect(url, name=f"pytest-{scheme}", **tls_options(scheme, tls_files)) as bus:
        assert bus.connected and bus.url.startswith(f"{scheme}://")
        assert bus.welcome.max_frame_bytes == 1 << 20
        async with bus.subscribe(reality, "rig.>") as sub, bus.subscribe(reality, "rig.*.temp") as temps:
            acks = [await bus.publish(reality, f"rig.r{i}.temp", f"t{i}", ack=True) for i in range(1, 6)]
            assert [a.sequence for a in acks] == [1, 2, 3, 4, 5]
            assert (await bus.publish(reality, "rig.big.blob", big, ack=True)).sequence == 6
            # A burst of unacked publishes: queued, written together, delivered in order.
            for i in range(200):
                await bus.publish(reality, "rig.burst.n", i.to_bytes(2, "big"))
            assert (await bus.publish(reality, "rig.end", "end", ack=True)).sequence == 207

            got = [await sub.get(timeout=10) for _ in range(207)]
            assert [p.sequence for p in got] == list(range(1, 208))
            assert [p.value for p in got[:5]] == ["t1", "t2", "t3", "t4", "t5"]
            assert got[5].data == big and got[5].topic == "rig.big.blob"
            assert [int.from_bytes(p.data, "big") for p in got[6:206]] == list(range(200))
            assert got[206].value == "end"
            assert [p.sequence for p in await read_all(temps)] == [1, 2, 3, 4, 5]
            assert bus.causal[reality] == 207

        history = await bus.history(reality, "rig.*.temp", from_sequence=2, limit=3)
        assert [(p.sequence, p.value) for p in history] == [(2, "t2"), (3, "t3"), (4, "t4")]
        assert (await bus.history(reality, from_sequence=6, limit=1))[0].data == big
        assert (await bus.ping()).rtt_seconds >= 0
        # The server's errors come back the same way.
        with pytest.raises(arqonbus.InvalidTopic):
            await bus.publish(reality, "Not A Topic", ack=True)
        conn = bus._conn
    assert conn is not None and conn.lost and not bus.connected


@aio(timeout=30)
async def test_pulses_cross_transports(transport_server, tls_files):
    reality = f"cross-{uuid.uuid4().hex[:8]}"
    buses = {
        scheme: await Bus.connect(transport_server.url_for(scheme), **tls_options(scheme, tls_files))
        for scheme in SCHEMES
    }
    try:
        subs = {scheme: await bus.subscribe(reality, "x.>") for scheme, bus in buses.items()}
        for scheme, bus in buses.items():
            await bus.publish(reality, f"x.from.{scheme}", scheme, ack=True)
        for scheme, sub in subs.items():
            got = [await sub.get(timeout=5) for _ in SCHEMES]
            assert [(p.sequence, p.value) for p in got] == list(zip(range(1, 5), SCHEMES)), scheme
    finally:
        for bus in buses.values():
            await bus.close()


def test_blocking_facade_over_wss(transport_server, tls_files):
    reality = f"sync-{uuid.uuid4().hex[:8]}"
    with arqonbus.sync.connect(transport_server.url_for("wss"), ca=tls_files.ca, connect_timeout=10) as bus:
        sub = bus.subscribe(reality, "s.*", timeout=5)
        assert bus.publish(reality, "s.a", b"one", ack=True).sequence == 1
        assert sub.get().value == b"one"
        assert bus.ping().rtt_seconds >= 0


@aio(timeout=30)
async def test_a_ready_ssl_context_is_used_as_given(transport_server, tls_files):
    context = ssl.create_default_context()
    tls_files.ca_obj.configure_trust(context)
    for scheme in ("tls", "wss"):
        async with Bus.connect(transport_server.url_for(scheme), ssl_context=context) as bus:
            assert (await bus.ping()).rtt_seconds >= 0
    # A context that trusts nothing of ours fails as a default one would.
    with pytest.raises(ConnectFailed, match="certificate did not verify"):
        await Bus.connect(transport_server.url_for("tls"), ssl_context=ssl.create_default_context())


@pytest.mark.parametrize("scheme", ["tls", "wss"])
@aio(timeout=30)
async def test_an_untrusted_server_certificate_fails_clearly(transport_server, tls_files, scheme):
    url = transport_server.url_for(scheme)
    for options in ({"ca": tls_files.other_ca}, {}):  # another CA; the system's CAs
        with pytest.raises(ConnectFailed, match="TLS handshake failed: the server's certificate did not verify") as err:
            await Bus.connect(url, connect_timeout=5, **options)
        assert isinstance(err.value, ConnectionLost) and isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
    # The certificate is for 127.0.0.1 and localhost: another name does not pass.
    with pytest.raises(ConnectFailed, match="mismatch.*server_hostname="):
        await Bus.connect(url, ca=tls_files.ca, server_hostname="bus.example", connect_timeout=5)
    async with Bus.connect(url.replace("127.0.0.1", "localhost"), ca=tls_files.ca) as bus:
        assert bus.connected


@aio(timeout=30)
async def test_the_wrong_port_fails_clearly(transport_server, tls_files):
    with pytest.raises(ConnectFailed, match="did not answer in TLS"):
        await Bus.connect(f"tls://127.0.0.1:{transport_server.port}", ca=tls_files.ca, connect_timeout=5)
    # The plain TCP listener reads the upgrade request as a frame and closes: no HTTP answer.
    with pytest.raises(ConnectFailed, match="WebSocket upgrade failed.*ws_listen"):
        await Bus.connect(f"ws://127.0.0.1:{transport_server.port}", connect_timeout=5)


@aio(timeout=30)
async def test_a_refused_websocket_upgrade_names_the_http_status():
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    gate = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = gate.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectFailed, match=r"refused the WebSocket upgrade \(HTTP 403 Forbidden\)"):
            await Bus.connect(f"ws://127.0.0.1:{port}/bus", connect_timeout=5)
    finally:
        gate.close()
        await gate.wait_closed()


@pytest.mark.parametrize("scheme", ["tls", "wss"])
@aio(timeout=30)
async def test_mtls_refuses_a_client_without_a_certificate_and_accepts_one_with_it(mtls_server, tls_files, scheme):
    url = mtls_server.url_for(scheme)
    with pytest.raises(ConnectFailed, match="the server requires a client certificate"):
        await Bus.connect(url, ca=tls_files.ca, reconnect=False, connect_timeout=5)
    # A certificate from a CA the server does not know is refused too.
    with pytest.raises(ConnectFailed, match="refused the client certificate"):
        await Bus.connect(url, ca=tls_files.ca, cert=tls_files.stranger_client, reconnect=False, connect_timeout=5)

    reality = f"mtls-{uuid.uuid4().hex[:8]}"
    async with Bus.connect(url, ca=tls_files.ca, cert=tls_files.client) as bus:
        async with bus.subscribe(reality, "m.>") as sub:
            assert (await bus.publish(reality, "m.a", "hi", ack=True)).sequence == 1
            assert (await sub.get(timeout=5)).value == "hi"
    # The same with a context built by hand.
    context = ssl.create_default_context()
    tls_files.ca_obj.configure_trust(context)
    tls_files.client_obj.configure_cert(context)
    async with Bus.connect(url, ssl_context=context) as bus:
        assert (await bus.ping()).rtt_seconds >= 0


@aio(timeout=90)
async def test_reconnect_after_a_restart_on_every_transport(server_factory, tls_files):
    server = server_factory(RETAINED, tls=tls_files, ws=True)
    reality = "kept-reconnect"
    schemes = ["tls", "ws", "wss"]
    buses = {
        s: await Bus.connect(server.url_for(s), reconnect_timeout=30, **tls_options(s, tls_files)) for s in schemes
    }
    try:
        subs = {s: await bus.subscribe(reality, f"rc.{s}.>") for s, bus in buses.items()}
        for s, bus in buses.items():
            assert (await bus.publish(reality, f"rc.{s}.before", "1", ack=True)) is not None
            assert (await subs[s].get(timeout=5)).value == "1"

        await asyncio.to_thread(server.stop)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while any(bus.connected for bus in buses.values()):
            assert loop.time() < deadline, "disconnects not noticed"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(server.start)

        for s, bus in buses.items():
            ack = await asyncio.wait_for(bus.publish(reality, f"rc.{s}.after", "2", ack=True), 30)
            assert bus.connected and bus.connections >= 2 and subs[s].resubscribed >= 1
            # The retained reality kept its sequence across the restart; the subscription resumed
            # right after the last pulse it had, so it gets exactly the new one.
            pulse = await subs[s].get(timeout=10)
            assert (pulse.topic, pulse.value, pulse.sequence) == (f"rc.{s}.after", "2", ack.sequence)
            assert ack.sequence > 3
    finally:
        for bus in buses.values():
            await bus.close()


def test_the_examples_run_over_encrypted_transports(transport_server, tls_files):
    """The reference operator over wss:// and the researcher over tls:// with a client
    certificate, both trusting the test CA given with --ca: the job round trip crosses
    transports."""
    import subprocess

    from conftest import EXAMPLES_DIR, LineReader, python_subprocess, run_researcher, stop_process

    reality = f"examples-{uuid.uuid4().hex[:8]}"
    operator = python_subprocess(
        EXAMPLES_DIR / "nvm_operator.py",
        "--url", transport_server.url_for("wss"),
        "--ca", str(tls_files.ca),
        "--reality", reality,
        "--steps", "3",
        "--step-delay", "0.01",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        LineReader(operator).wait_for("ready", timeout=30)
        text = run_researcher(
            "--url", transport_server.url_for("tls"),
            "--ca", str(tls_files.ca),
            "--cert", str(tls_files.client),
            "--reality", reality,
            "--timeout", "20",
            "--follow-seconds", "0.5",
        )  # fmt: skip
        assert "connected to tls://" in text and "final: 4 samples" in text, text
    finally:
        stop_process(operator)
