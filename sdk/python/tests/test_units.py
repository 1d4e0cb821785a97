"""Pieces of the SDK that need no server: URLs, payloads, errors, causal context."""

from __future__ import annotations

import re
import ssl
import sys

import pytest
from conftest import aio
from google.protobuf import any_pb2, wrappers_pb2

import arqonbus
from arqonbus import Bus, errors, payload
from arqonbus.causal import CausalContext
from arqonbus.proto import ArqonMessage, ErrorCode, NvmJob, NvmJobResult
from arqonbus.pulse import Pulse
from arqonbus.url import parse_url


def test_default_url_is_loopback_4720():
    assert arqonbus.DEFAULT_URL == "tcp://127.0.0.1:4720"
    ep = parse_url(arqonbus.DEFAULT_URL)
    assert (ep.scheme, ep.host, ep.port) == ("tcp", "127.0.0.1", 4720)


def test_url_forms():
    assert parse_url("tcp://example.local").port == 4720
    assert parse_url("localhost:5000") == parse_url("tcp://localhost:5000")
    assert parse_url("tcp://[::1]:9").host == "::1"
    assert str(parse_url("tcp://[::1]:9")) == "tcp://[::1]:9"
    with pytest.raises(ValueError):
        parse_url("tcp://host:notaport")
    with pytest.raises(ValueError):
        parse_url("tcp://host:1/path")


def test_tls_and_websocket_url_forms():
    ep = parse_url("tls://bus.example:9")
    assert (ep.scheme, ep.host, ep.port, ep.path) == ("tls", "bus.example", 9, "")
    assert ep.uses_tls and not ep.is_websocket
    # A missing port is the one of the server's documented listener for the scheme.
    assert [parse_url(f"{s}://h").port for s in ("tcp", "tls", "ws", "wss")] == [4720, 4722, 4723, 4724]
    ws = parse_url("ws://127.0.0.1:4723")
    assert (ws.path, ws.uses_tls, ws.is_websocket, str(ws)) == ("/", False, True, "ws://127.0.0.1:4723/")
    wss = parse_url("WSS://[::1]:1/bus/v1?tenant=lab")
    assert (wss.scheme, wss.host, wss.path, wss.uses_tls) == ("wss", "::1", "/bus/v1?tenant=lab", True)
    assert str(wss) == "wss://[::1]:1/bus/v1?tenant=lab"
    with pytest.raises(ValueError, match="no path"):
        parse_url("tls://host:1/path")
    with pytest.raises(ValueError, match="fragment"):
        parse_url("ws://host:1/#frag")
    with pytest.raises(ValueError, match="credentials"):
        parse_url("wss://user:secret@host:1/")


@aio(timeout=10)
async def test_tls_options_are_checked_before_connecting(tmp_path):
    with pytest.raises(ValueError, match="tls:// and wss://"):
        Bus("tcp://127.0.0.1:1", ca="ca.pem")
    with pytest.raises(ValueError, match="tls:// and wss://"):
        Bus("ws://127.0.0.1:1", cert="client.pem")
    with pytest.raises(ValueError, match="not both"):
        Bus("tls://127.0.0.1:1", ca="ca.pem", ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="give cert="):
        Bus("tls://127.0.0.1:1", key="client.key")
    with pytest.raises(FileNotFoundError):
        Bus("tls://127.0.0.1:1", ca=tmp_path / "missing.pem")
    # The default context: TLS 1.3 at least, the server verified under the URL's host name.
    context = Bus("wss://127.0.0.1:1").ssl_context
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    own = ssl.create_default_context()
    assert Bus("tls://127.0.0.1:1", ssl_context=own).ssl_context is own
    assert Bus("tcp://127.0.0.1:1").ssl_context is None


@aio(timeout=10)
async def test_websocket_urls_without_the_websockets_package_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "websockets", None)  # `import websockets` now fails
    monkeypatch.setitem(sys.modules, "websockets.asyncio", None)
    monkeypatch.setitem(sys.modules, "websockets.asyncio.client", None)
    for url in ("ws://127.0.0.1:1", "wss://127.0.0.1:1"):
        with pytest.raises(ImportError, match=re.escape("pip install 'arqonbus[ws]'")):
            Bus(url)
    Bus("tls://127.0.0.1:1")  # TLS needs only the standard library


def test_unknown_scheme_is_refused():
    with pytest.raises(errors.UnsupportedScheme, match="http://"):
        parse_url("http://127.0.0.1:4720")


def test_every_error_code_has_its_exception_class():
    codes = [v.number for v in ErrorCode.DESCRIPTOR.values if v.number != 0]
    assert sorted(errors.ERROR_CLASSES) == sorted(codes)
    for code in codes:
        cls = errors.ERROR_CLASSES[code]
        assert issubclass(cls, errors.ArqonError)
        exc = errors.error_from_proto(arqonbus.proto.Error(code=code, message="m"), correlation_id=7)
        assert type(exc) is cls and exc.code == code and exc.message == "m" and exc.correlation_id == 7
        assert ErrorCode.Name(code) in str(exc)


def test_error_classes_follow_the_close_table_of_the_readme():
    closing = {n for n, c in errors.ERROR_CLASSES.items() if c.closes_connection}
    expected = {
        ErrorCode.Value(name)
        for name in (
            "FRAME_TOO_LARGE",
            "DECODE_FAILED",
            "HELLO_REQUIRED",
            "UNAUTHENTICATED",
            "SLOW_CONSUMER",
            "UNSUPPORTED_VERSION",
            "SHUTTING_DOWN",
            "TIMED_OUT",
        )
    }
    assert closing == expected


def test_unknown_error_code_still_maps_to_arqon_error():
    exc = errors.error_from_proto(arqonbus.proto.Error(code=999, message="future"), 3)
    assert isinstance(exc, errors.ArqonError) and exc.code == 999 and "UNKNOWN_999" in str(exc)


def test_history_unavailable_carries_first_available_sequence():
    exc = errors.error_from_proto(
        arqonbus.proto.Error(code=ErrorCode.Value("HISTORY_UNAVAILABLE"), first_available_sequence=42)
    )
    assert isinstance(exc, errors.HistoryUnavailable) and exc.first_available_sequence == 42


def test_timeouts_are_builtin_timeout_errors():
    assert issubclass(errors.JobTimeout, TimeoutError) and issubclass(errors.JobTimeout, errors.ArqonError)


def test_payload_packing_round_trips():
    assert payload.decode(payload.pack(b"\x00\x01")) == b"\x00\x01"
    assert payload.decode(payload.pack("héllo")) == "héllo"
    job = NvmJob(job_id="j", program="p", energy_joules=1.5, parameters={"a": "b"})
    packed = payload.pack(job)
    assert packed.type_url == "type.googleapis.com/arqon.nvm.v1.NvmJob"
    assert payload.decode(packed) == job
    assert payload.unpack(packed, NvmJob) == job
    with pytest.raises(TypeError):
        payload.unpack(packed, NvmJobResult)
    raw = any_pb2.Any(type_url="type.googleapis.com/unknown.Type", value=b"zz")
    assert payload.pack(raw) is raw and payload.decode(raw) is raw
    assert payload.pack(None) is None
    with pytest.raises(TypeError):
        payload.pack(12)


def test_bytes_and_text_use_the_rust_client_and_cli_convention():
    """Raw bytes travel as `application/octet-stream` (Rust `Outgoing::bytes`, `arqonbus pub`)."""
    assert (payload.pack(b"x").type_url, payload.pack(b"x").value) == ("application/octet-stream", b"x")
    assert (payload.pack("é").type_url, payload.pack("é").value) == ("text/plain; charset=utf-8", "é".encode())
    # Other clients may use the protobuf wrappers; they decode too.
    wrapped = any_pb2.Any()
    wrapped.Pack(wrappers_pb2.StringValue(value="w"))
    assert payload.decode(wrapped) == "w"
    wrapped.Pack(wrappers_pb2.BytesValue(value=b"w"))
    assert payload.decode(wrapped) == b"w"
    assert payload.decode(any_pb2.Any(type_url="application/json", value=b"{}")).value == b"{}"


def test_pulse_view():
    msg = ArqonMessage(topic="a.b", reality_id="r", sequence=3, reply_to="x.y", causal={"r": 3, "q": 1})
    msg.payload.CopyFrom(payload.pack("text"))
    p = Pulse(msg, 9)
    assert (p.topic, p.reality, p.sequence, p.subscription_id, p.reply_to) == ("a.b", "r", 3, 9, "x.y")
    assert p.value == "text" and p.text == "text" and p.data == b"text" and p.causal == {"r": 3, "q": 1}
    assert p.spectral is None and not p.is_(NvmJob)


def test_causal_context_only_moves_forward():
    c = CausalContext({"a": 3})
    c.observe("a", 2)
    c.observe("b", 5)
    c.merge({"a": 7, "b": 1, "c": 2})
    assert c.snapshot() == {"a": 7, "b": 5, "c": 2}
    c.forget("a")
    assert c["a"] == 0 and len(c) == 2


def test_reply_topics_are_valid_topics():
    import re

    topic = arqonbus.new_reply_topic()
    parts = topic.split(".")
    assert 2 <= len(parts) <= 8 and all(re.fullmatch(r"[a-z0-9_-]+", s) for s in parts)
    assert topic.startswith("nvm.job.result.") and topic != arqonbus.new_reply_topic()
