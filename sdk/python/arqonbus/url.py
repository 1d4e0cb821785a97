"""Bus URLs: `tcp://`, `tls://`, `ws://` and `wss://`.

| URL | transport | default port (the server's documented listener) |
| --- | --- | ---: |
| `tcp://host:port` (or a bare `host:port`) | plain TCP, length-prefixed frames (`listen`) | 4720 |
| `tls://host:port` | TLS 1.3 over TCP, length-prefixed frames (`tls_listen`) | 4722 |
| `ws://host:port[/path]` | WebSocket, one binary message per frame (`ws_listen`) | 4723 |
| `wss://host:port[/path]` | WebSocket over TLS 1.3 (`wss_listen`) | 4724 |

The server accepts WebSocket connections on any path; `ws://`/`wss://` URLs keep the path (and
query) they are given, `/` when none. `tcp://` and `tls://` URLs have no path.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from arqonbus.errors import UnsupportedScheme

__all__ = ["DEFAULT_PORT", "DEFAULT_PORTS", "DEFAULT_URL", "Endpoint", "parse_url"]

DEFAULT_PORT = 4720
#: The port a URL without one gets, per scheme: those of the server's documented listeners
#: (`listen`, `tls_listen`, `ws_listen`, `wss_listen` in `arqonbus config`).
DEFAULT_PORTS = {"tcp": DEFAULT_PORT, "tls": 4722, "ws": 4723, "wss": 4724}
DEFAULT_URL = f"tcp://127.0.0.1:{DEFAULT_PORT}"

SUPPORTED_SCHEMES = ("tcp", "tls", "ws", "wss")
WEBSOCKET_SCHEMES = ("ws", "wss")
TLS_SCHEMES = ("tls", "wss")


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    #: The request target of a WebSocket URL (path and query, `/` when none); "" otherwise.
    path: str = ""

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted (`tls://`, `wss://`)."""
        return self.scheme in TLS_SCHEMES

    @property
    def is_websocket(self) -> bool:
        """Whether frames travel as WebSocket messages (`ws://`, `wss://`)."""
        return self.scheme in WEBSOCKET_SCHEMES

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_url(url: str) -> Endpoint:
    """Parses a bus URL (see the module's table). A bare `host:port` means `tcp://host:port`;
    a missing port is the scheme's default.

    Raises `UnsupportedScheme` for a scheme this SDK cannot connect with, naming it, and
    `ValueError` for a malformed URL.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"bus URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        url = "tcp://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedScheme(
            f"unknown scheme {scheme + '://'!r} in bus URL {url!r} "
            f"(supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)})"
        )
    if parts.fragment:
        raise ValueError(f"a bus URL has no fragment: {url!r}")
    if scheme in WEBSOCKET_SCHEMES:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
    else:
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"a {scheme}:// bus URL has no path or query: {url!r}")
        path = ""
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"a bus URL carries no credentials (use token=): {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"bus URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in bus URL {url!r}: {exc}") from None
    return Endpoint(scheme, host, DEFAULT_PORTS[scheme] if port is None else port, path)
