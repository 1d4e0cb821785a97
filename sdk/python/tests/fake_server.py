"""A small in-process stand-in for `arqonbus serve`, written from proto/README.md.

It is NOT the server under test: the suite's server tests run against the real binary (see
conftest.py). This fake exists for the few client behaviours the real server cannot be made to
show on demand: `Dropped` frames, error codes newer than this SDK, a server that never answers,
hand-made delta chains (wrong bases, bad checksums). It also follows the reality-parameter
rules (`sys.control.param.set` from a controller token, the `sys.param.<name>` broadcast to one
subscription per connection, the snapshot after `Subscribed`, `ParamsGet`), so the SDK's routing
of them can be tested pulse by pulse.
It speaks the same CLI (`fake_server.py serve --listen HOST:PORT`) so it can also stand in
for the binary while developing (`ARQONBUS_BIN` pointing at a wrapper), which is how the SDK was
first exercised before the server existed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arqonbus._proto.arqon.v1 import arqon_pb2 as pb  # noqa: E402

SEGMENT = re.compile(r"^[a-z0-9_-]+$")
REALITY = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")


def valid_topic(topic: str) -> bool:
    parts = topic.split(".")
    return len(topic) <= 255 and 2 <= len(parts) <= 8 and all(SEGMENT.match(p) for p in parts)


def valid_pattern(pattern: str) -> bool:
    parts = pattern.split(".")
    if len(pattern) > 255 or not 2 <= len(parts) <= 8:
        return False
    for i, p in enumerate(parts):
        if p == ">" and i == len(parts) - 1:
            continue
        if p != "*" and not SEGMENT.match(p):
            return False
    return True


def matches(pattern: str, topic: str) -> bool:
    pp, tp = pattern.split("."), topic.split(".")
    for i, p in enumerate(pp):
        if p == ">":
            return len(tp) > i
        if i >= len(tp) or (p != "*" and p != tp[i]):
            return False
    return len(pp) == len(tp)


PARAM_TYPE_URL = "type.googleapis.com/arqon.v1.Param"


class FakeServer:
    def __init__(self, max_frame_bytes: int = 1 << 20, controller_tokens: Iterable[str] = ()):
        self.max_frame_bytes = max_frame_bytes
        self.controller_tokens = set(controller_tokens)
        self.sequences: Dict[str, int] = {}
        #: reality -> name -> the latest `sys.param.<name>` pulse.
        self.params: Dict[str, Dict[str, pb.ArqonMessage]] = {}
        self.connections: List["FakeConnection"] = []
        self.server: Optional[asyncio.AbstractServer] = None
        #: When set, called with (connection, ClientFrame) before normal handling; return True to
        #: swallow the frame.
        self.intercept: Optional[Callable[["FakeConnection", pb.ClientFrame], bool]] = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.writer.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConnection(self, writer)
        self.connections.append(conn)
        try:
            await conn.run(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connections.remove(conn)
            writer.close()

    def sequence(self, msg: pb.ArqonMessage) -> int:
        seq = self.sequences.get(msg.reality_id, 0) + 1
        self.sequences[msg.reality_id] = seq
        msg.sequence = seq
        msg.timestamp_unix_nanos = time.time_ns()
        if not msg.id:
            msg.id = str(uuid.uuid4())
        msg.causal[msg.reality_id] = seq
        return seq

    def ack(self, conn: "FakeConnection", cid: int, msg: pb.ArqonMessage) -> None:
        conn.send(
            pb.ServerFrame(
                correlation_id=cid,
                pub_ack=pb.PubAck(
                    reality_id=msg.reality_id,
                    sequence=msg.sequence,
                    id=msg.id,
                    timestamp_unix_nanos=msg.timestamp_unix_nanos,
                ),
            )
        )

    def set_param(self, conn: "FakeConnection", cid: int, publish: pb.Publish) -> None:
        """`sys.control.param.set`: sequence `sys.param.<name>` and deliver it once to every
        connection with a subscription in the reality (a matching one first)."""
        if not conn.controller:
            conn.error(cid, pb.PERMISSION_DENIED, "setting a reality parameter needs a controller token")
            return
        msg = publish.message
        if msg.payload.type_url != PARAM_TYPE_URL:
            conn.error(cid, pb.INVALID_REQUEST, "sys.control.param.set carries an arqon.v1.Param")
            return
        param = pb.Param.FromString(msg.payload.value)
        if not param.name or not valid_topic("sys.param." + param.name) or param.WhichOneof("value") is None:
            conn.error(cid, pb.INVALID_REQUEST, f"invalid parameter {param.name!r}")
            return
        pulse = self.put_param(msg.reality_id, param, conn.session, msg.producer_id)
        if publish.ack:
            self.ack(conn, cid, pulse)

    def put_param(self, reality: str, param: pb.Param, set_by: str, producer_id: str = "") -> pb.ArqonMessage:
        """Sequences `param` (its next version) on `sys.param.<name>` and delivers it."""
        topic = "sys.param." + param.name
        held = self.params.setdefault(reality, {})
        previous = held.get(param.name)
        param.version = 1 if previous is None else pb.Param.FromString(previous.payload.value).version + 1
        param.set_by = set_by
        pulse = pb.ArqonMessage(topic=topic, reality_id=reality, producer_id=producer_id)
        pulse.payload.type_url = PARAM_TYPE_URL
        pulse.payload.value = param.SerializeToString()
        self.sequence(pulse)
        held[param.name] = pulse
        for other in self.connections:
            in_reality = [(sid, pat) for sid, (r, pat) in other.subscriptions.items() if r == reality]
            if not in_reality:
                continue
            matching = [sid for sid, pat in in_reality if matches(pat, topic)]
            sid = matching[0] if matching else in_reality[0][0]
            other.send(pb.ServerFrame(deliver=pb.Deliver(subscription_id=sid, message=pulse)))
        return pulse

    def params_get(self, conn: "FakeConnection", cid: int, reality: str) -> None:
        answer = pb.Params(reality_id=reality)
        for pulse in self.params.get(reality, {}).values():
            answer.params.add(
                param=pb.Param.FromString(pulse.payload.value),
                sequence=pulse.sequence,
                timestamp_unix_nanos=pulse.timestamp_unix_nanos,
            )
        conn.send(pb.ServerFrame(correlation_id=cid, params=answer))

    def publish(self, conn: "FakeConnection", cid: int, publish: pb.Publish) -> None:
        msg = publish.message
        if msg.topic == "sys.control.param.set":
            self.set_param(conn, cid, publish)
            return
        if not valid_topic(msg.topic):
            conn.error(cid, pb.INVALID_TOPIC, f"invalid topic {msg.topic!r}")
            return
        if not REALITY.match(msg.reality_id):
            conn.error(cid, pb.INVALID_REALITY, f"invalid reality {msg.reality_id!r}")
            return
        self.sequence(msg)
        for other in self.connections:
            for sid, (reality, pattern) in list(other.subscriptions.items()):
                if reality == msg.reality_id and matches(pattern, msg.topic):
                    other.send(pb.ServerFrame(deliver=pb.Deliver(subscription_id=sid, message=msg)))
        if publish.ack:
            self.ack(conn, cid, msg)


class FakeConnection:
    _sessions = itertools.count(1)

    def __init__(self, server: FakeServer, writer: asyncio.StreamWriter):
        self.server = server
        self.writer = writer
        self.subscriptions: Dict[int, tuple] = {}
        self.session = f"fake-{next(self._sessions)}"
        self.controller = False

    def send(self, frame: pb.ServerFrame) -> None:
        body = frame.SerializeToString()
        self.writer.write(len(body).to_bytes(4, "big") + body)

    def error(self, cid: int, code: int, message: str) -> None:
        self.send(pb.ServerFrame(correlation_id=cid, error=pb.Error(code=code, message=message)))

    async def run(self, reader: asyncio.StreamReader) -> None:
        hello_seen = False
        while True:
            length = int.from_bytes(await reader.readexactly(4), "big")
            if length > self.server.max_frame_bytes:
                self.error(0, pb.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds max_frame_bytes")
                await self.writer.drain()
                return
            frame = pb.ClientFrame.FromString(await reader.readexactly(length))
            cid = frame.correlation_id
            kind = frame.WhichOneof("kind")
            if not hello_seen:
                if kind != "hello":
                    self.error(cid, pb.HELLO_REQUIRED, "hello first")
                    await self.writer.drain()
                    return
                hello_seen = True
                self.controller = frame.hello.token in self.server.controller_tokens
                self.send(
                    pb.ServerFrame(
                        correlation_id=cid,
                        welcome=pb.Welcome(
                            session_id=self.session,
                            server_version="fake",
                            protocol_version=1,
                            max_frame_bytes=self.server.max_frame_bytes,
                        ),
                    )
                )
                continue
            if self.server.intercept is not None and self.server.intercept(self, frame):
                continue
            if kind == "publish":
                self.server.publish(self, cid, frame.publish)
            elif kind == "subscribe":
                s = frame.subscribe
                if not valid_pattern(s.pattern):
                    self.error(cid, pb.INVALID_TOPIC, f"invalid pattern {s.pattern!r}")
                elif s.subscription_id == 0 or s.subscription_id in self.subscriptions:
                    self.error(cid, pb.INVALID_REQUEST, "zero or duplicate subscription id")
                else:
                    self.subscriptions[s.subscription_id] = (s.reality_id, s.pattern)
                    nxt = self.server.sequences.get(s.reality_id, 0) + 1
                    self.send(
                        pb.ServerFrame(
                            correlation_id=cid,
                            subscribed=pb.Subscribed(subscription_id=s.subscription_id, next_sequence=nxt),
                        )
                    )
                    # The reality's parameters first, each as its latest pulse.
                    for pulse in self.server.params.get(s.reality_id, {}).values():
                        self.send(pb.ServerFrame(deliver=pb.Deliver(subscription_id=s.subscription_id, message=pulse)))
            elif kind == "unsubscribe":
                self.subscriptions.pop(frame.unsubscribe.subscription_id, None)
            elif kind == "ping":
                self.send(
                    pb.ServerFrame(
                        correlation_id=cid, pong=pb.Pong(nonce=frame.ping.nonce, server_time_unix_nanos=time.time_ns())
                    )
                )
            elif kind == "history_get":
                self.error(cid, pb.HISTORY_UNAVAILABLE, "no history")
            elif kind == "params_get":
                self.server.params_get(self, cid, frame.params_get.reality_id)
            else:
                self.error(cid, pb.INVALID_REQUEST, f"unexpected {kind}")
            await self.writer.drain()


async def _serve(host: str, port: int) -> None:
    server = FakeServer()
    await server.start(host, port)
    print(f"fake arqonbus listening on {host}:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--listen", default="127.0.0.1:4720")
    serve.add_argument("--shards", type=int, default=1)
    serve.add_argument("--config")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    try:
        asyncio.run(_serve(host, int(port)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
