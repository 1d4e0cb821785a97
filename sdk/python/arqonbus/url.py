"""Bus URLs: `tcp://host:port` today; `tls://`, `ws://` and `wss://` are planned."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from arqonbus.errors import UnsupportedScheme

__all__ = ["DEFAULT_PORT", "DEFAULT_URL", "Endpoint", "parse_url"]

DEFAULT_PORT = 4720
DEFAULT_URL = f"tcp://127.0.0.1:{DEFAULT_PORT}"

SUPPORTED_SCHEMES = ("tcp",)
PLANNED_SCHEMES = ("tls", "ws", "wss")


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """Parses a bus URL. A bare `host:port` means `tcp://host:port`; the port defaults to 4720.

    Raises `UnsupportedScheme` for a scheme this SDK cannot connect with, naming it, and
    `ValueError` for a malformed URL.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"bus URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        url = "tcp://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in PLANNED_SCHEMES:
        raise UnsupportedScheme(
            f"the {scheme}:// scheme is not supported yet by the arqonbus Python SDK "
            f"(supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}); got {url!r}"
        )
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedScheme(
            f"unknown scheme {scheme + '://'!r} in bus URL {url!r} "
            f"(supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)})"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a tcp:// bus URL has no path, query or fragment: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"bus URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in bus URL {url!r}: {exc}") from None
    return Endpoint(scheme, host, DEFAULT_PORT if port is None else port)
