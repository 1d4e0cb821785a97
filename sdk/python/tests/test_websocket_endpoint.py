"""The bus's WebSocket listener (`ws_listen`) speaks to a non-Rust client.

Python's `websockets` package connects to `arqonbus serve --ws-listen ...`, says Hello,
subscribes, publishes and receives its pulse back — one protobuf frame per binary message, no
length prefix — while a plain TCP client of the SDK's own protocol is not involved at all. The
server is the real binary (`$ARQONBUS_BIN`, else target/debug or target/release), started here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SDK_DIR.parents[1]
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))

from arqonbus._proto.arqon.v1 import arqon_pb2 as pb  # noqa: E402


def _server_binary() -> Path:
    env = os.environ.get("ARQONBUS_BIN")
    candidates = [Path(env)] if env else []
    candidates += [REPO_DIR / "target" / "debug" / "arqonbus", REPO_DIR / "target" / "release" / "arqonbus"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail("no arqonbus binary: set ARQONBUS_BIN or run cargo build", pytrace=False)
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ws_server(tmp_path):
    tcp, ws = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [str(_server_binary()), "serve", "--listen", f"127.0.0.1:{tcp}", "--ws-listen",
         f"127.0.0.1:{ws}", "--shards", "2", "--data-dir", str(tmp_path / "data")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", ws), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail((tmp_path / "server.log").read_text(), pytrace=False)
            time.sleep(0.05)
    yield f"ws://127.0.0.1:{ws}/"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _frame(correlation_id: int, **kind) -> bytes:
    return pb.ClientFrame(correlation_id=correlation_id, **kind).SerializeToString()


async def _recv(ws) -> pb.ServerFrame:
    message = await asyncio.wait_for(ws.recv(), timeout=10)
    assert isinstance(message, bytes), "frames are binary messages"
    frame = pb.ServerFrame()
    frame.ParseFromString(message)
    return frame


def test_python_websockets_client_round_trips_a_pulse(ws_server):
    async def scenario():
        async with websockets.connect(ws_server) as ws:
            await ws.send(_frame(1, hello=pb.Hello(protocol_version=1, client_name="py-ws")))
            welcome = await _recv(ws)
            assert welcome.WhichOneof("kind") == "welcome", welcome

            await ws.send(_frame(2, subscribe=pb.Subscribe(
                subscription_id=9, reality_id="py-lab", pattern="rig.>")))
            subscribed = await _recv(ws)
            assert subscribed.WhichOneof("kind") == "subscribed", subscribed

            message = pb.ArqonMessage(topic="rig.a.temp", reality_id="py-lab", producer_id="py")
            message.payload.type_url = "text/plain"
            message.payload.value = b"21.5"
            await ws.send(_frame(3, publish=pb.Publish(message=message, ack=True)))

            got = {}
            while len(got) < 2:
                frame = await _recv(ws)
                got[frame.WhichOneof("kind")] = frame
            assert got["pub_ack"].correlation_id == 3
            assert got["pub_ack"].pub_ack.sequence == 1
            deliver = got["deliver"].deliver
            assert deliver.subscription_id == 9
            assert deliver.message.payload.value == b"21.5"
            assert deliver.message.sequence == 1

            # A bad topic is refused for that request; the session goes on.
            bad = pb.ArqonMessage(topic="Not A Topic", reality_id="py-lab")
            await ws.send(_frame(4, publish=pb.Publish(message=bad, ack=True)))
            error = await _recv(ws)
            assert error.error.code == pb.INVALID_TOPIC
            await ws.send(_frame(5, ping=pb.Ping(nonce=42)))
            assert (await _recv(ws)).pong.nonce == 42

    asyncio.run(scenario())
